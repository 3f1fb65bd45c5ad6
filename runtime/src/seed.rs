//! Reproducibility: one seed for every random stream fulmen draws (weight init, shuffling,
//! dropout), like Lightning's `seed_everything`.

use std::sync::atomic::{AtomicU64, Ordering};

use dfdx::tensor::Cpu;

static STATE: AtomicU64 = AtomicU64::new(0);
static SEEDED: std::sync::atomic::AtomicBool = std::sync::atomic::AtomicBool::new(false);

/// Seeds every random stream fulmen creates from now on. Two runs of the same program with the
/// same seed produce bitwise-identical weights on CPU.
pub fn seed_everything(seed: u64) -> u64 {
    STATE.store(seed, Ordering::SeqCst);
    SEEDED.store(true, Ordering::SeqCst);
    seed
}

/// The next seed of fulmen's global stream (splitmix64 over the seed set by
/// [`seed_everything`], or over the clock when no seed was set).
pub fn next_seed() -> u64 {
    if !SEEDED.swap(true, Ordering::SeqCst) {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or(0);
        STATE.store(
            nanos ^ (u64::from(std::process::id()) << 32),
            Ordering::SeqCst,
        );
    }
    mix(STATE.fetch_add(0x9E37_79B9_7F4A_7C15, Ordering::SeqCst), 1)
}

/// The `k`-th value of the splitmix64 stream that starts at `seed`: independent seeds for
/// numbered things (steps, epochs) drawn from one seed.
pub fn mix(seed: u64, k: u64) -> u64 {
    let mut z = seed.wrapping_add(k.wrapping_mul(0x9E37_79B9_7F4A_7C15));
    z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
    z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
    z ^ (z >> 31)
}

/// A CPU device whose random stream is drawn from fulmen's global seed. Every module built
/// through it (a `#[lightning_module]`'s `new` is) then runs at the trainer's speed outside a
/// trainer too: it calls [`crate::alloc::keep_freed_memory`] and
/// [`crate::threads::compute_here`].
pub fn cpu() -> Cpu {
    crate::alloc::keep_freed_memory();
    crate::threads::compute_here();
    Cpu::seed_from_u64(next_seed())
}

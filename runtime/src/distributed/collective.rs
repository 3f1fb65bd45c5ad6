//! The collectives a multi-process run needs, behind one small trait: sums across ranks,
//! a broadcast from one rank, a barrier. [`Single`] is the one-process run (every call a
//! no-op); MPI implements it on CPUs (feature `mpi`), NCCL on GPUs (feature `nccl`).

use std::any::TypeId;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::Result;

/// Operations every rank calls in the same order.
pub trait Collective: Send + Sync {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of processes in the run.
    fn world_size(&self) -> usize;
    /// Sums `values` element-wise across ranks; every rank ends with the sum.
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()>;
    /// Sums `values` element-wise across ranks, in f64; every rank ends with the sum.
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;
    /// Sums `values` element-wise onto rank `root` (the others' `values` are left as they
    /// were).
    fn reduce_sum_f32(&self, root: usize, values: &mut [f32]) -> Result<()>;
    /// Sums `values` element-wise onto rank `root`, in f64 (the others' `values` are left as they
    /// were).
    fn reduce_sum_f64(&self, root: usize, values: &mut [f64]) -> Result<()>;
    /// The element-wise maximum across ranks.
    fn all_reduce_max_f64(&self, values: &mut [f64]) -> Result<()>;
    /// Replaces `bytes` on every rank with rank `root`'s.
    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) -> Result<()>;
    /// Replaces `values` on every rank with rank `root`'s (of one length on all ranks).
    fn broadcast_f32(&self, root: usize, values: &mut [f32]) -> Result<()> {
        broadcast_as_bytes(self, root, values)
    }
    /// [`broadcast_f32`](Collective::broadcast_f32) in f64.
    fn broadcast_f64(&self, root: usize, values: &mut [f64]) -> Result<()> {
        broadcast_as_bytes(self, root, values)
    }
    /// Every rank's `mine` (one length on all ranks) into `all`, in rank order: block `r` of
    /// `all` (`world_size() · mine.len()` values) is rank `r`'s.
    fn all_gather_f32(&self, mine: &[f32], all: &mut [f32]) -> Result<()> {
        gather_by_broadcast(self, mine, all)
    }
    /// [`all_gather_f32`](Collective::all_gather_f32) in f64.
    fn all_gather_f64(&self, mine: &[f64], all: &mut [f64]) -> Result<()> {
        gather_by_broadcast(self, mine, all)
    }
    /// `all` (`world_size()` blocks of `mine.len()` values) summed element-wise across ranks;
    /// this rank gets its own block of the sum, block `rank()`, in `mine`.
    fn reduce_scatter_sum_f32(&self, all: &[f32], mine: &mut [f32]) -> Result<()> {
        let (rank, world) = (self.rank(), self.world_size());
        scatter_by_reduce(all, mine, rank, world, |root, v| {
            self.reduce_sum_f32(root, v)
        })
    }
    /// [`reduce_scatter_sum_f32`](Collective::reduce_scatter_sum_f32) in f64.
    fn reduce_scatter_sum_f64(&self, all: &[f64], mine: &mut [f64]) -> Result<()> {
        let (rank, world) = (self.rank(), self.world_size());
        scatter_by_reduce(all, mine, rank, world, |root, v| {
            self.reduce_sum_f64(root, v)
        })
    }
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Time spent in collectives so far (waiting for slower ranks included).
    fn busy(&self) -> Duration {
        Duration::ZERO
    }
    /// Averages gradients of the dtype `dtype` across the ranks where they live, when this
    /// collective can (NCCL, on the GPU's own buffers); `Ok(false)` when it cannot, and they
    /// go through the host. `each(f)` calls `f` on every gradient buffer as the device holds
    /// it (a `CudaSlice` on CUDA), in the same order on every rank and every call.
    fn average_in_place(&self, _dtype: TypeId, _each: &mut EachBuffer<'_>) -> Result<bool> {
        Ok(false)
    }
}

/// Calls the function it is given on every gradient buffer of a model, type-erased, in walk
/// order ([`Collective::average_in_place`]).
pub type EachBuffer<'a> =
    dyn FnMut(&mut dyn FnMut(&mut dyn std::any::Any) -> Result<()>) -> Result<()> + 'a;

/// A value that travels between ranks as its little-endian bytes.
pub(crate) trait Wire: Copy + Default {
    /// Appends the value's bytes to `out`.
    fn put(self, out: &mut Vec<u8>);
    /// The value whose bytes begin `bytes`.
    fn take(bytes: &[u8]) -> Self;
    /// How many bytes a value takes.
    const BYTES: usize;
}

macro_rules! wire {
    ($($t:ty),*) => {$(
        impl Wire for $t {
            fn put(self, out: &mut Vec<u8>) {
                out.extend(self.to_le_bytes());
            }
            fn take(bytes: &[u8]) -> Self {
                let mut b = [0; std::mem::size_of::<$t>()];
                b.copy_from_slice(&bytes[..std::mem::size_of::<$t>()]);
                <$t>::from_le_bytes(b)
            }
            const BYTES: usize = std::mem::size_of::<$t>();
        }
    )*};
}
wire!(f32, f64);

/// A typed broadcast through the byte one (a collective without its own).
fn broadcast_as_bytes<C: Collective + ?Sized, W: Wire>(
    c: &C,
    root: usize,
    values: &mut [W],
) -> Result<()> {
    let mut bytes = Vec::new();
    if c.rank() == root {
        bytes.reserve(values.len() * W::BYTES);
        values.iter().for_each(|v| v.put(&mut bytes));
    }
    c.broadcast(root, &mut bytes)?;
    if bytes.len() != values.len() * W::BYTES {
        return Err(crate::Error::msg(format!(
            "broadcast: rank {root} sent {} bytes where {} were expected",
            bytes.len(),
            values.len() * W::BYTES
        )));
    }
    for (v, b) in values.iter_mut().zip(bytes.chunks_exact(W::BYTES)) {
        *v = W::take(b);
    }
    Ok(())
}

/// The all-gather as one broadcast from each rank in turn (a collective without its own).
fn gather_by_broadcast<C: Collective + ?Sized, W: Wire>(
    c: &C,
    mine: &[W],
    all: &mut [W],
) -> Result<()> {
    let n = mine.len();
    check_blocks(c.world_size(), n, all.len())?;
    for (owner, block) in all.chunks_mut(n.max(1)).enumerate().take(c.world_size()) {
        let mut bytes = Vec::new();
        if owner == c.rank() {
            bytes.reserve(n * W::BYTES);
            mine.iter().for_each(|v| v.put(&mut bytes));
        }
        c.broadcast(owner, &mut bytes)?;
        if bytes.len() != n * W::BYTES {
            return Err(crate::Error::msg(format!(
                "all-gather: rank {owner} sent {} bytes where {} were expected; the ranks do not shard the same model",
                bytes.len(),
                n * W::BYTES
            )));
        }
        for (v, b) in block.iter_mut().zip(bytes.chunks_exact(W::BYTES)) {
            *v = W::take(b);
        }
    }
    Ok(())
}

/// The reduce-scatter as one reduce onto each rank in turn (a collective without its own).
fn scatter_by_reduce<W: Wire>(
    all: &[W],
    mine: &mut [W],
    rank: usize,
    world: usize,
    mut reduce: impl FnMut(usize, &mut [W]) -> Result<()>,
) -> Result<()> {
    let n = mine.len();
    check_blocks(world, n, all.len())?;
    for (owner, block) in all.chunks(n.max(1)).enumerate() {
        let mut sum = block.to_vec();
        reduce(owner, &mut sum)?;
        if owner == rank {
            mine.copy_from_slice(&sum);
        }
    }
    Ok(())
}

/// `total` values must be `world` blocks of `n`.
pub(crate) fn check_blocks(world: usize, n: usize, total: usize) -> Result<()> {
    if world * n != total {
        return Err(crate::Error::msg(format!(
            "a collective over {world} ranks of {n} values each was given {total} values"
        )));
    }
    Ok(())
}

/// The one-process run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_max_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn reduce_sum_f32(&self, _: usize, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn reduce_sum_f64(&self, _: usize, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: usize, _: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Ends the run when a collective waits longer than its timeout: the other ranks are gone or
/// stuck (a rank that died leaves the rest blocked in MPI, Lightning's most reported
/// distributed hang), and no call returns to report it. `stop` ends the run (MPI's abort,
/// which takes every rank down) and must not return.
#[cfg_attr(not(any(feature = "mpi", feature = "nccl")), allow(dead_code))]
pub(crate) struct Watchdog {
    arm: Sender<Option<&'static str>>,
}

#[cfg_attr(not(any(feature = "mpi", feature = "nccl")), allow(dead_code))]
impl Watchdog {
    pub fn new(rank: usize, timeout: Duration, stop: fn() -> !) -> Self {
        let (arm, armed) = channel::<Option<&'static str>>();
        std::thread::spawn(move || {
            let mut waiting: Option<&'static str> = None;
            loop {
                let next = match waiting {
                    None => armed.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(_) => armed.recv_timeout(timeout),
                };
                match next {
                    Ok(what) => waiting = what,
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        eprintln!(
                            "error: rank {rank}: {} waited {:.0} s for the other ranks; one of them died or hangs, so this rank stops (the timeout is the trainer's `collective_timeout`)",
                            waiting.unwrap_or("a collective"),
                            timeout.as_secs_f64()
                        );
                        stop();
                    }
                }
            }
        });
        Self { arm }
    }

    /// Runs `f`, ending the process if it takes longer than the timeout.
    pub fn guard<R>(&self, what: &'static str, f: impl FnOnce() -> R) -> R {
        let _ = self.arm.send(Some(what));
        let r = f();
        let _ = self.arm.send(None);
        r
    }
}

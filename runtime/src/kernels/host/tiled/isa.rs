//! Which instruction set runs the tiles, detected once, and the two tiles every product is
//! made of, dispatched to it: [`tile`] (`MR × 48` outputs of a product over a left operand,
//! packed or, on AVX2, read in place) and [`weight_tile`] (`WR × WC` sums of row products). Each instruction set's
//! tiles are a file of their own: [`avx512`](super::avx512) (16 lanes, 32 registers) and
//! [`avx2`](super::avx2) (8 lanes and FMA, 16 registers), with the same contracts.

use super::*;

/// The instruction set the tiles run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Isa {
    /// AVX-512F with VL: without VL, LLVM keeps accumulators out of registers 16 to 31 and
    /// spills them.
    Avx512,
    /// AVX2 with FMA: most x86 CPUs of the last decade without AVX-512.
    Avx2,
}

/// The instruction set this CPU runs the tiles on, read once: AVX-512 unless the environment
/// variable `FULMEN_NO_AVX512` is set, then AVX2 unless `FULMEN_NO_AVX2` is set, as on a CPU
/// without them; `None` leaves products to the `gemm` crate (im2col convolutions) and dense
/// layers to dfdx's ops.
pub fn isa() -> Option<Isa> {
    static ISA: std::sync::OnceLock<Option<Isa>> = std::sync::OnceLock::new();
    *ISA.get_or_init(|| {
        let on = |isa: Isa, switch: &str| isa.on_this_cpu() && std::env::var_os(switch).is_none();
        [
            (Isa::Avx512, "FULMEN_NO_AVX512"),
            (Isa::Avx2, "FULMEN_NO_AVX2"),
        ]
        .into_iter()
        .find(|&(isa, switch)| on(isa, switch))
        .map(|(isa, _)| isa)
    })
}

impl Isa {
    /// Whether this CPU has the instruction set, whatever the environment says.
    pub(super) fn on_this_cpu(self) -> bool {
        match self {
            Isa::Avx512 => {
                std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512vl")
            }
            Isa::Avx2 => {
                std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
            }
        }
    }
}

/// Whether this CPU runs the tiles (see [`isa`]).
pub fn available() -> bool {
    isa().is_some()
}

/// Columns of a strip that [`tile`]s read from L1 while every block of rows passes over it:
/// 48 on AVX-512 (a whole tile), 24 on AVX2 (a quarter's).
pub(super) fn strip_width() -> usize {
    match isa() {
        Some(Isa::Avx2) => 24,
        _ => 16 * NV,
    }
}

/// Reduction rows per pass (at most `KC`): 512 on AVX-512; 256 on AVX2, whose strips of
/// 24 columns then fit L1 (24 KiB).
pub(super) fn depth() -> usize {
    match isa() {
        Some(Isa::Avx2) => 256,
        _ => KC,
    }
}

/// The passes `(first row, rows)` over a reduction `k` deep: as few as [`depth`] allows, of
/// equal depth (784 as 196 × 4, not 256 × 3 + 16: a pass loads and stores its outputs once,
/// which a shallow last pass pays for a handful of rows).
pub(super) fn passes(k: usize) -> impl Iterator<Item = (usize, usize)> {
    let each = k.div_ceil(k.div_ceil(depth()).max(1)).max(1);
    (0..k).step_by(each).map(move |k0| (k0, each.min(k - k0)))
}

/// One `MR × 48` tile of a product over `kc = offs.len()` reduction rows, as [`tile`]
/// computes it: `c[i·ldc + j] (+)= Σ_kk a[i·a_rs + kk·a_cs] · b[offs[kk] + j]` for
/// `i < rows`, `j < live ≤ 48`. Rows `rows..MR` of `a` are never read: the tile computes on
/// copies of its last row there, and drops them.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tile<'a> {
    /// The left operand's value at the tile's first row and first reduction row: a packed
    /// block's (`a_rs` 1, `a_cs` `MR`), or a matrix's read in place (AVX2 only).
    pub(super) a: *const f32,
    /// The distances in `a` between rows and between reduction rows.
    pub(super) a_rs: usize,
    pub(super) a_cs: usize,
    /// The strip's first column.
    pub(super) b: *const f32,
    /// Where each reduction row of `b` starts.
    pub(super) offs: &'a [usize],
    /// The tile's first output; rows `ldc` apart.
    pub(super) c: *mut f32,
    pub(super) ldc: usize,
    pub(super) rows: usize,
    pub(super) live: usize,
    /// Columns of each row of `b` that may be read (`≥ live`): a panel's whole slice, whose
    /// columns past `live` are computed on and dropped, so that their loads need no mask.
    pub(super) readable: usize,
    /// Adds to `c` instead of overwriting it.
    pub(super) add: bool,
}

/// Computes `t` on this CPU's instruction set.
///
/// # Safety
/// [`available`]; `a[i·a_rs + kk·a_cs]`, `b[offs[kk] + j]` and `c[i·ldc + j']` are in bounds
/// for `i < rows`, `kk < kc`, `j < readable`, `j' < live`; on AVX-512, `a` is packed.
pub(super) unsafe fn tile(t: Tile<'_>) {
    debug_assert!(t.rows <= MR && t.live <= 16 * NV && t.live <= t.readable);
    match isa().expect("tiled kernels on a CPU without AVX2") {
        Isa::Avx512 => super::avx512::tile(t),
        Isa::Avx2 => super::avx2::tile(t),
    }
}

/// The `WR × WC` sums `Σ_images Σ_{j < n} dy[dy_rows[i] + j] · x[x_rows[r] + j]`.
///
/// # Safety
/// [`available`]; every image's `dy` holds `dy_rows[i] + n` values and its `x` holds
/// `x_rows[r] + n`.
pub(super) unsafe fn weight_tile(
    images: &[(&[f32], &[f32])],
    dy_rows: &[usize; WR],
    x_rows: &[usize; WC],
    n: usize,
) -> [[f32; WC]; WR] {
    match isa().expect("tiled kernels on a CPU without AVX2") {
        Isa::Avx512 => super::avx512::weight_tile(images, dy_rows, x_rows, n),
        Isa::Avx2 => super::avx2::weight_tile(images, dy_rows, x_rows, n),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every instruction set this CPU has, whatever the environment turned off.
    fn sets() -> Vec<Isa> {
        [Isa::Avx512, Isa::Avx2]
            .into_iter()
            .filter(|isa| isa.on_this_cpu())
            .collect()
    }

    fn values(len: usize, seed: usize) -> Vec<f32> {
        (0..len)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    #[test]
    fn product_tiles_match_the_sums_on_every_instruction_set() {
        let (ldc, stride) = (53, 61);
        for set in sets() {
            for (kc, rows, live, add) in [
                (1, 1, 1usize, false),
                (5, 8, 48, true),
                (9, 3, 24, false),
                (17, 5, 25, true),
                (33, 8, 47, false),
                (2, 4, 7, true),
                (64, 7, 40, false),
            ] {
                // Packed, and on AVX2 read in place: rows along memory and across it, the
                // buffer ending at the last row's last value (rows past `rows` are not there).
                let mut layouts = vec![(values(kc * MR, 1), 1, MR)];
                if set == Isa::Avx2 {
                    let (along, across) = (kc + 2, rows + 1);
                    layouts.push((values((rows - 1) * along + kc, 4), along, 1));
                    layouts.push((values((kc - 1) * across + rows, 5), 1, across));
                }
                for (readable, (a, a_rs, a_cs)) in [live, live.next_multiple_of(24)]
                    .into_iter()
                    .flat_map(|r| layouts.iter().map(move |l| (r, l)))
                {
                    let (a_rs, a_cs) = (*a_rs, *a_cs);
                    let offs: Vec<usize> = (0..kc).map(|kk| (kk * 7) % kc * stride).collect();
                    // The right operand ends at its last readable column: a read past it would
                    // fault only by luck, so the exact end is what the test can check.
                    let reach = offs.iter().max().map_or(0, |&o| o + readable);
                    let mut b = values(reach, 2);
                    // Readable columns past `live` are computed on and dropped: NaN there shows
                    // in no output.
                    for &o in &offs {
                        b[o + live..o + readable].fill(f32::NAN);
                    }
                    let start = values((MR - 1) * ldc + 48, 3);
                    let mut got = start.clone();
                    // SAFETY: `set` is this CPU's; every read and write is within the buffers above.
                    unsafe {
                        let t = Tile {
                            a: a.as_ptr(),
                            a_rs,
                            a_cs,
                            b: b.as_ptr(),
                            offs: &offs,
                            c: got.as_mut_ptr(),
                            ldc,
                            rows,
                            live,
                            readable,
                            add,
                        };
                        match set {
                            Isa::Avx512 => super::super::avx512::tile(t),
                            Isa::Avx2 => super::super::avx2::tile(t),
                        }
                    }
                    for i in 0..MR {
                        for j in 0..48 {
                            let at = i * ldc + j;
                            let want = if i < rows && j < live {
                                let sum: f64 = (0..kc)
                                    .map(|kk| {
                                        f64::from(a[i * a_rs + kk * a_cs])
                                            * f64::from(b[offs[kk] + j])
                                    })
                                    .sum();
                                (sum + if add { f64::from(start[at]) } else { 0.0 }) as f32
                            } else {
                                start[at]
                            };
                            assert!(
                                (got[at] - want).abs() <= 1e-5 * (1.0 + kc as f32),
                                "{set:?} kc {kc} rows {rows} live {live} readable {readable} \
                                 a {a_rs}×{a_cs}: ({i}, {j}) {} vs {want}",
                                got[at]
                            );
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn weight_tiles_match_the_sums_on_every_instruction_set() {
        for set in sets() {
            for n in [1, 7, 8, 15, 16, 17, 40] {
                let dy_rows: [usize; WR] = std::array::from_fn(|i| i * n + 3);
                let x_rows: [usize; WC] = std::array::from_fn(|r| (WC - r) * 5);
                let (dy_len, x_len) = (dy_rows[WR - 1] + n, x_rows[0] + n);
                let data: Vec<(Vec<f32>, Vec<f32>)> = (0..3)
                    .map(|s| (values(dy_len, s), values(x_len, s + 7)))
                    .collect();
                let images: Vec<(&[f32], &[f32])> =
                    data.iter().map(|(d, x)| (&d[..], &x[..])).collect();
                // SAFETY: `set` is this CPU's; every row holds `n` values from its start.
                let got = unsafe {
                    match set {
                        Isa::Avx512 => {
                            super::super::avx512::weight_tile(&images, &dy_rows, &x_rows, n)
                        }
                        Isa::Avx2 => super::super::avx2::weight_tile(&images, &dy_rows, &x_rows, n),
                    }
                };
                for i in 0..WR {
                    for r in 0..WC {
                        let want: f64 = images
                            .iter()
                            .flat_map(|(dy, x)| {
                                (0..n).map(move |j| {
                                    f64::from(dy[dy_rows[i] + j]) * f64::from(x[x_rows[r] + j])
                                })
                            })
                            .sum();
                        assert!(
                            (f64::from(got[i][r]) - want).abs() <= 1e-5 * (1.0 + n as f64),
                            "{set:?} n {n}: ({i}, {r}) {} vs {want}",
                            got[i][r]
                        );
                    }
                }
            }
        }
    }
}

//! The tiles on AVX2 with FMA ([`isa`](super::isa) has their contracts). With 16 registers of
//! 8 lanes, a product tile's `MR × 48` outputs are computed a quarter at a time, `4 × 24`
//! (12 accumulators, 3 vectors of the right operand, 1 broadcast), and a weight tile's
//! `WR × WC` sums two rows at a time (12 accumulators).

use super::*;

/// Rows × vectors of a product tile's quarter.
const QR: usize = 4;
const QV: usize = 2;

/// The lanes before `left` (all 8 from 8 on).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn mask(left: usize) -> __m256i {
    let left = left.min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(left),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// The 8 values at `p`, of which those from `left` on are zero and not read.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load(p: *const f32, left: usize) -> __m256 {
    if left >= 8 {
        _mm256_loadu_ps(p)
    } else {
        _mm256_maskload_ps(p, mask(left))
    }
}

/// `v`'s lanes before `left` to `p`; the rest of `p` untouched.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(p: *mut f32, v: __m256, left: usize) {
    if left >= 8 {
        _mm256_storeu_ps(p, v);
    } else if left > 0 {
        _mm256_maskstore_ps(p, mask(left), v);
    }
}

/// See [`isa::tile`](super::isa::tile).
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offs: &[usize],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    live: usize,
    add: bool,
) {
    // `wrapping_add`: a quarter past `rows` or `live` is skipped, so its address is never used.
    for j0 in (0..live).step_by(8 * QV) {
        for r0 in (0..rows).step_by(QR) {
            let (a, b, c) = (a.add(r0), b.wrapping_add(j0), c.wrapping_add(r0 * ldc + j0));
            let (rows, live) = ((rows - r0).min(QR), (live - j0).min(8 * QV));
            if live == 8 * QV {
                quarter::<true>(kc, a, b, offs, c, ldc, rows, live, add);
            } else {
                quarter::<false>(kc, a, b, offs, c, ldc, rows, live, add);
            }
        }
    }
}

/// `QR × 8·QV` outputs of a [`tile`] (`a` at the quarter's first row, `MR` apart per
/// reduction row); `FULL` when every column is live, so that the right operand's loads need
/// no mask.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx2,fma")]
unsafe fn quarter<const FULL: bool>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offs: &[usize],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    live: usize,
    add: bool,
) {
    let left: [usize; QV] = std::array::from_fn(|v| live.saturating_sub(8 * v));
    let mut acc = [[_mm256_setzero_ps(); QV]; QR];
    if add {
        for (i, row) in acc.iter_mut().enumerate().take(rows) {
            for (v, lane) in row.iter_mut().enumerate() {
                *lane = load(c.wrapping_add(i * ldc + 8 * v), left[v]);
            }
        }
    }
    // Index loops over constant bounds, which unroll into registers: iterator adaptors here
    // left accumulators on the stack (all 16 registers are in use).
    for (kk, &off) in offs.iter().enumerate().take(kc) {
        let src = b.wrapping_add(off);
        let mut bv = [_mm256_setzero_ps(); QV];
        #[allow(clippy::needless_range_loop)]
        for v in 0..QV {
            bv[v] = if FULL {
                _mm256_loadu_ps(src.add(8 * v))
            } else {
                load(src.wrapping_add(8 * v), left[v])
            };
        }
        let ak = a.add(kk * MR);
        #[allow(clippy::needless_range_loop)]
        for i in 0..QR {
            let ai = _mm256_broadcast_ss(&*ak.add(i));
            for v in 0..QV {
                acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (v, &lane) in row.iter().enumerate() {
            store(c.wrapping_add(i * ldc + 8 * v), lane, left[v]);
        }
    }
}

/// See [`isa::weight_tile`](super::isa::weight_tile).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn weight_tile(
    images: &[(&[f32], &[f32])],
    dy_rows: &[usize; WR],
    x_rows: &[usize; WC],
    n: usize,
) -> [[f32; WC]; WR] {
    let mut sums = [[0f32; WC]; WR];
    for (pair, out) in sums.chunks_exact_mut(2).enumerate() {
        let mut acc = [[_mm256_setzero_ps(); WC]; 2];
        for (dy, x) in images {
            let (dy, x) = (dy.as_ptr(), x.as_ptr());
            let dy_at = [dy.add(dy_rows[2 * pair]), dy.add(dy_rows[2 * pair + 1])];
            let x_at: [*const f32; WC] = std::array::from_fn(|r| x.add(x_rows[r]));
            for j in (0..n).step_by(8) {
                let left = n - j;
                let d = [load(dy_at[0].add(j), left), load(dy_at[1].add(j), left)];
                #[allow(clippy::needless_range_loop)]
                for r in 0..WC {
                    let xv = load(x_at[r].add(j), left);
                    acc[0][r] = _mm256_fmadd_ps(d[0], xv, acc[0][r]);
                    acc[1][r] = _mm256_fmadd_ps(d[1], xv, acc[1][r]);
                }
            }
        }
        for (sum, row) in out.iter_mut().zip(&acc) {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s = lane_total(v);
            }
        }
    }
    sums
}

/// The sum of `v`'s 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lane_total(v: __m256) -> f32 {
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
}

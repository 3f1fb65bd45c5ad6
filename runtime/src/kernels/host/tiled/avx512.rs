//! The tiles on AVX-512 ([`isa`](super::isa) has their contracts): a product tile is all
//! `MR × 48` outputs at once, 24 of the 32 registers; a weight tile `WR × WC` sums, 24
//! registers of 16 lanes each, summed across lanes at the end.

use super::*;

/// Masks of the lanes of a tile's `NV` vectors that lie before column `live`.
fn lane_masks(live: usize) -> [__mmask16; NV] {
    std::array::from_fn(|v| {
        let n = live.saturating_sub(16 * v).min(16);
        ((1u32 << n) - 1) as __mmask16
    })
}

/// See [`isa::tile`](super::isa::tile): masked loads cost what whole ones do here, so
/// `readable` is not needed.
#[target_feature(enable = "avx512f,avx512vl")]
pub(super) unsafe fn tile(t: Tile<'_>) {
    debug_assert!(t.a_rs == 1 && t.a_cs == MR, "a packed left operand");
    let Tile {
        a,
        b,
        offs,
        c,
        ldc,
        rows,
        live,
        add,
        ..
    } = t;
    let masks = lane_masks(live);
    // `wrapping_add` for lane addresses: a masked-off vector's may lie past its buffer (it is
    // never read or written, but `add` past the end would be undefined behaviour).
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if add {
        for (i, row) in acc.iter_mut().enumerate().take(rows) {
            for (v, lane) in row.iter_mut().enumerate() {
                *lane = _mm512_maskz_loadu_ps(masks[v], c.wrapping_add(i * ldc + 16 * v));
            }
        }
    }
    for (kk, &off) in offs.iter().enumerate() {
        let src = b.add(off);
        // Loops, not `array::from_fn` or `map`: closures do not inherit the target feature,
        // and an intrinsic that is not inlined is a call per vector.
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, lane) in bv.iter_mut().enumerate() {
            *lane = _mm512_maskz_loadu_ps(masks[v], src.wrapping_add(16 * v));
        }
        let ak = a.add(kk * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ak.add(i));
            for (lane, &bj) in row.iter_mut().zip(&bv) {
                *lane = _mm512_fmadd_ps(ai, bj, *lane);
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (v, &lane) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(c.wrapping_add(i * ldc + 16 * v), masks[v], lane);
        }
    }
}

/// See [`isa::weight_tile`](super::isa::weight_tile).
#[target_feature(enable = "avx512f,avx512vl")]
pub(super) unsafe fn weight_tile(
    images: &[(&[f32], &[f32])],
    dy_rows: &[usize; WR],
    x_rows: &[usize; WC],
    n: usize,
) -> [[f32; WC]; WR] {
    let mut acc = [[_mm512_setzero_ps(); WC]; WR];
    for (dy, x) in images {
        let (dy, x) = (dy.as_ptr(), x.as_ptr());
        // Plain pointer arithmetic: no intrinsic in these closures to miss the target feature.
        let dy_at: [*const f32; WR] = std::array::from_fn(|i| dy.add(dy_rows[i]));
        let x_at: [*const f32; WC] = std::array::from_fn(|r| x.add(x_rows[r]));
        for j in (0..n).step_by(16) {
            let mask = ((1u32 << (n - j).min(16)) - 1) as __mmask16;
            // Index loops over constant bounds, which unroll into registers (iterator
            // adaptors here left accumulators on the stack).
            let mut d = [_mm512_setzero_ps(); WR];
            #[allow(clippy::needless_range_loop)]
            for i in 0..WR {
                d[i] = _mm512_maskz_loadu_ps(mask, dy_at[i].add(j));
            }
            #[allow(clippy::needless_range_loop)]
            for r in 0..WC {
                let xv = _mm512_maskz_loadu_ps(mask, x_at[r].add(j));
                for i in 0..WR {
                    acc[i][r] = _mm512_fmadd_ps(d[i], xv, acc[i][r]);
                }
            }
        }
    }
    let mut sums = [[0f32; WC]; WR];
    for (sum, row) in sums.iter_mut().zip(&acc) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s = _mm512_reduce_add_ps(v);
        }
    }
    sums
}

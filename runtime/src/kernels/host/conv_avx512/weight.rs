//! The weight gradient's product: the output gradient times the image's rows transposed
//! ([`weight_product`], in `WR × WC` tiles, [`weight_tile`]).

use super::*;

/// `dw[i·k + kk] += Σ_images Σ_j dy[i·ldy + j] · x[offs[kk] + j]` for `i < m`, `j < n`: each
/// image is a pair (its output gradient rows, its input rows).
pub(super) fn weight_product(
    images: &[(&[f32], &[f32])],
    m: usize,
    ldy: usize,
    offs: &[usize],
    n: usize,
    dw: &mut [f32],
) {
    let k = offs.len();
    if n == 0 || m == 0 || k == 0 || images.is_empty() {
        return;
    }
    let reach = offs.iter().max().map_or(0, |&o| o + n);
    for (dy, x) in images {
        assert!(
            (m - 1) * ldy + n <= dy.len(),
            "output gradient out of bounds"
        );
        assert!(reach <= x.len(), "input rows out of bounds");
    }
    assert!(dw.len() >= m * k, "weight gradient out of bounds");
    assert!(available(), "AVX-512 kernels on a CPU without AVX-512");
    for i0 in (0..m).step_by(WR) {
        for r0 in (0..k).step_by(WC) {
            let (rows, cols) = (WR.min(m - i0), WC.min(k - r0));
            // Rows and columns past the edge repeat the last one; their sums are dropped.
            let dy_rows: [usize; WR] = std::array::from_fn(|i| (i0 + i.min(rows - 1)) * ldy);
            let x_rows: [usize; WC] = std::array::from_fn(|r| offs[r0 + r.min(cols - 1)]);
            // SAFETY: AVX-512 is present; every lane read is `dy_rows[i] + j` or
            // `x_rows[r] + j` with j < n (masked), inside each image's slices (asserted).
            let sums = unsafe { weight_tile(images, &dy_rows, &x_rows, n) };
            for (i, row) in sums.iter().enumerate().take(rows) {
                for (r, &s) in row.iter().enumerate().take(cols) {
                    dw[(i0 + i) * k + r0 + r] += s;
                }
            }
        }
    }
}

/// The `WR × WC` sums of one [`weight_product`] tile.
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

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
    assert!(available(), "tiled kernels on a CPU without AVX2");
    for i0 in (0..m).step_by(WR) {
        for r0 in (0..k).step_by(WC) {
            let (rows, cols) = (WR.min(m - i0), WC.min(k - r0));
            // Rows and columns past the edge repeat the last one; their sums are dropped.
            let dy_rows: [usize; WR] = std::array::from_fn(|i| (i0 + i.min(rows - 1)) * ldy);
            let x_rows: [usize; WC] = std::array::from_fn(|r| offs[r0 + r.min(cols - 1)]);
            // SAFETY: the tiles run here (asserted); every lane read is `dy_rows[i] + j` or
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

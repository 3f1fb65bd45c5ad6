//! The weight gradient's product, `dW (+)= dY · Xᵀ` summed over images ([`weight_product`]):
//! for narrow layers, dot products of rows in `WR × WC` tiles ([`weight_tile`]), which read
//! the image in place; for layers of [`PRODUCT_ROWS`] output channels or more, one plain
//! product on the tiles ([`block_rows`]): the output gradients' rows side by side times the
//! image's taps ([`Taps`]: reduction row `(image, pixel)`, column `kk`).
//!
//! Why both: a dot product's loaded vectors feed at most six FMAs and its rows stream from L2
//! for every tile (about 1.6 times the tiles' time per FLOP, measured on ResNet-18); the
//! product keeps a strip of taps in L1 while every row of output gradients passes over it,
//! but copies the taps (the column matrix's values) first, which costs more than it saves
//! below about a hundred output channels (the small ResNet and the MNIST net got slower).

use super::matmul::{block_rows, Lhs, Rhs};
use super::*;

/// Output channels from which [`weight_product`] is one product.
const PRODUCT_ROWS: usize = 128;

/// The taps of a block's images as a `(images·n) × k` matrix: row `img·n + j`, column `kk` is
/// `images[img].1[offs[kk] + j]`.
struct Taps<'a> {
    images: &'a [(&'a [f32], &'a [f32])],
    offs: &'a [usize],
    n: usize,
}

impl Rhs for Taps<'_> {
    fn pack(&self, (k0, kc): (usize, usize), (j0, width): (usize, usize), panel: &mut Panel) {
        // The pass's rows, image by image: of each tap, one contiguous run per image, whose
        // 8 × 8 blocks of 8 taps are transposed at once and whose edges go one by one.
        let whole = width / 8 * 8;
        let mut row = k0;
        while row < k0 + kc {
            let (img, j) = (row / self.n, row % self.n);
            let take = (self.n - j).min(k0 + kc - row);
            let (x, blocks) = (self.images[img].1, take / 8 * 8);
            let run = |col: usize, from: usize| &x[self.offs[j0 + col] + j + from..];
            for col in (0..whole).step_by(8) {
                for r in (0..blocks).step_by(8) {
                    let runs = std::array::from_fn(|c| &run(col + c, r)[..8]);
                    panel.put_block(row - k0 + r, col, runs);
                }
            }
            for col in 0..width {
                let from = if col < whole { blocks } else { 0 };
                if from < take {
                    let values = run(col, from)[..take - from].iter().copied();
                    panel.put_column(row - k0 + from, col, values);
                }
            }
            row += take;
        }
    }
}

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
    if m >= PRODUCT_ROWS {
        // The output gradients packed for the tiles: blocks of MR rows, each reduction row
        // `img·n + j` of them MR values (rows past m zero).
        let depth = images.len() * n;
        let mut data = vec![0f32; m.div_ceil(MR) * MR * depth];
        for (blk, block) in data.chunks_mut(MR * depth).enumerate() {
            for i in 0..MR.min(m - blk * MR) {
                let lanes = block[i..].iter_mut().step_by(MR);
                let rows = images
                    .iter()
                    .map(|(dy, _)| &dy[(blk * MR + i) * ldy..][..n]);
                lanes.zip(rows.flatten()).for_each(|(d, &v)| *d = v);
            }
        }
        let a = Packed { m, k: depth, data };
        block_rows(Lhs::Packed(&a), &Taps { images, offs, n }, k, dw, k, true);
        return;
    }
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

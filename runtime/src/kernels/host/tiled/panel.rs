//! A right operand's strip packed for the tiles ([`Panel`]: up to `KC` rows of up to `NB`
//! columns) and one pass of every block of a packed left operand over it ([`Panel::pass`]).
//!
//! The panel keeps its columns in slices of [`isa::strip_width`] (48 on AVX-512, 24 on AVX2),
//! each slice's rows one after the other: a tile then reads its slice as one contiguous run,
//! which stays in L1 while every block of rows passes over it (with rows `NB` apart, the same
//! values spanned twice the cache lines and were read again from L2 for each block).

use super::*;

/// Up to `KC × NB` values, column `j` of row `kk` at `(j / w)·kc·w + kk·w + j % w` (`w` the
/// strip width, `kc` the rows of the current pass).
pub(super) struct Panel {
    data: Lines,
    kc: usize,
    w: usize,
}

impl Panel {
    /// A panel for passes at most `depth` rows deep.
    pub(super) fn new(depth: usize) -> Panel {
        Panel {
            data: Lines::zeros(depth.min(KC) * NB),
            kc: 0,
            w: isa::strip_width(),
        }
    }

    /// Starts a pass of `kc` rows (what `put`, `put_column` and `put_block` then fill).
    pub(super) fn rows(&mut self, kc: usize) {
        assert!(kc * NB <= self.data.len(), "a pass deeper than the panel");
        self.kc = kc;
    }

    /// Row `kk`'s columns from `col` on: `src`, split at the slices' edges.
    pub(super) fn put(&mut self, kk: usize, mut col: usize, mut src: &[f32]) {
        let (kc, w) = (self.kc, self.w);
        while !src.is_empty() {
            let (slice, at) = (col / w, col % w);
            let take = (w - at).min(src.len());
            let to = slice * kc * w + kk * w + at;
            self.data[to..to + take].copy_from_slice(&src[..take]);
            (col, src) = (col + take, &src[take..]);
        }
    }

    /// Column `j` from row `kk` on: `values`, one per row.
    pub(super) fn put_column(&mut self, kk: usize, j: usize, values: impl Iterator<Item = f32>) {
        let (kc, w) = (self.kc, self.w);
        let lanes = self.data[(j / w) * kc * w + kk * w + j % w..].iter_mut();
        lanes.step_by(w).zip(values).for_each(|(d, v)| *d = v);
    }

    /// Rows `kk..kk + 8` of columns `j..j + 8` (`j` a multiple of 8): column `j + c` is
    /// `runs[c]`.
    pub(super) fn put_block(&mut self, kk: usize, j: usize, runs: [&[f32]; 8]) {
        let (kc, w) = (self.kc, self.w);
        assert!(
            j.is_multiple_of(8) && kk + 8 <= kc,
            "a block across the panel's slices"
        );
        transpose8(runs, &mut self.data[(j / w) * kc * w + kk * w + j % w..], w);
    }

    /// `c[i·ldc + j] (+)= Σ_kk a[i, k0 + kk] · panel[kk, j]` for `i < a.m`, `j < width ≤ NB`,
    /// `kk < kc` (the pass's rows): slice by slice of the panel, every block of `a`'s rows.
    pub(super) fn pass(
        &self,
        a: Left<'_>,
        k0: usize,
        width: usize,
        c: &mut [f32],
        ldc: usize,
        add: bool,
    ) {
        let (kc, w) = (self.kc, self.w);
        if a.m == 0 || width == 0 || kc == 0 {
            return;
        }
        assert!(k0 + kc <= a.k && width <= NB, "pass out of bounds");
        assert!(
            width <= ldc && (a.m - 1) * ldc + width <= c.len(),
            "dst out of bounds"
        );
        assert!(available(), "tiled kernels on a CPU without AVX2");
        let offs: Vec<usize> = (0..kc).map(|kk| kk * w).collect();
        for j0 in (0..width).step_by(w) {
            let slice = &self.data[(j0 / w) * kc * w..][..kc * w];
            for blk in 0..a.m.div_ceil(MR) {
                let rows = MR.min(a.m - blk * MR);
                // SAFETY: the tiles run here (asserted). Left values of rows `blk·MR + i`,
                // i < rows, at reduction rows k0..k0 + kc ≤ k (asserted), in `a`; slice lanes
                // `kk·w + j`, kk < kc, j < w (all readable), within the slice; dst lanes
                // `(blk·MR + i)·ldc + j0 + j`, i < rows, j0 + j < width, within c (asserted).
                unsafe {
                    tile(Tile {
                        a: a.at(blk, k0),
                        a_rs: a.rs,
                        a_cs: a.cs,
                        b: slice.as_ptr(),
                        offs: &offs,
                        c: c.as_mut_ptr().add(blk * MR * ldc + j0),
                        ldc,
                        rows,
                        live: (width - j0).min(w),
                        readable: w,
                        add,
                    });
                }
            }
        }
    }
}

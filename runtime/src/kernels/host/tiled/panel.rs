//! A right operand's strip packed for the tiles ([`Panel`]: up to `KC` rows of up to `NB`
//! columns) and one pass of every block of a left operand over it ([`Panel::pass`]).
//!
//! The panel keeps its columns in slices of [`isa::strip_width`] (48 on AVX-512, 24 on AVX2),
//! each slice's rows one after the other: a tile then reads its slice as one contiguous run,
//! which stays in L1 while every block of rows passes over it (with rows `NB` apart, the same
//! values spanned twice the cache lines and were read again from L2 for each block).

use super::matmul::Rhs;
use super::*;

/// Up to `KC × NB` values, column `j` of row `kk` at `(j / w)·kc·w + kk·w + j % w` (`w` the
/// strip width, `kc` the rows of the current pass).
pub(super) struct Panel {
    /// Allocated (zeroed) by the first pass.
    data: Lines,
    depth: usize,
    /// Columns at most, a whole number of slices.
    cols: usize,
    kc: usize,
    w: usize,
}

impl Panel {
    /// A panel for passes at most `depth` rows deep of at most `cols` columns (up to `NB`).
    pub(super) fn new(depth: usize, cols: usize) -> Panel {
        let w = isa::strip_width();
        Panel {
            data: Lines::zeros(0),
            depth: depth.min(KC),
            cols: cols.min(NB).next_multiple_of(w),
            kc: 0,
            w,
        }
    }

    /// Starts a pass of `kc` rows (what `put`, `put_column` and `put_block` then fill).
    pub(super) fn rows(&mut self, kc: usize) {
        assert!(kc <= self.depth, "a pass deeper than the panel");
        if self.data.len() < self.depth * self.cols {
            self.data = Lines::zeros(self.depth * self.cols);
        }
        self.kc = kc;
    }

    /// The rows of the current pass.
    pub(super) fn pass_rows(&self) -> usize {
        self.kc
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

    /// Columns `col..col + len` of every row of the pass: row `kk`'s from `b[from + offs[kk]..]`
    /// (a run of a gathered product). Split at the slices' edges once, then each part column
    /// by column down its slice, which is written in order, 8 values at a time: most runs are
    /// a few dozen values, and a `put` (a `memcpy` per part) per run and row had taken 9% of
    /// ResNet-18's training step.
    pub(super) fn put_rows(
        &mut self,
        mut col: usize,
        len: usize,
        b: &[f32],
        mut from: usize,
        offs: &[usize],
    ) {
        let (kc, w) = (self.kc, self.w);
        assert!(offs.len() == kc, "one offset per row of the pass");
        let reach = offs.iter().max().map_or(0, |&o| from + o + len);
        assert!(reach <= b.len(), "rows out of bounds");
        let end = col + len;
        while col < end {
            let take = (w - col % w).min(end - col);
            let slice = &mut self.data[(col / w) * kc * w + col % w..];
            for (dst, &off) in slice.chunks_mut(w).zip(offs) {
                let (dst, src) = (&mut dst[..take], &b[from + off..][..take]);
                let mut whole = dst.chunks_exact_mut(8);
                let mut eights = src.chunks_exact(8);
                for (d, s) in (&mut whole).zip(&mut eights) {
                    d.copy_from_slice(s);
                }
                for (d, s) in whole.into_remainder().iter_mut().zip(eights.remainder()) {
                    *d = *s;
                }
            }
            (col, from) = (col + take, from + take);
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

/// A right operand, `k × n`, packed whole: its panel of every pass ([`isa::passes`]) and strip
/// of `NB` columns, as [`block_rows`](super::matmul::block_rows) reads them. Packed once,
/// across rayon's threads, when several tasks each read every panel (a product's tasks split
/// its rows, and each used to pack all of the right operand for itself), or when the operand
/// is read again by later products (a dense layer's weights while they stay unchanged,
/// [`keep_packed_weights`](crate::kernels::keep_packed_weights)).
pub struct Panels {
    k: usize,
    n: usize,
    /// Pass by pass, strip by strip.
    panels: Vec<Panel>,
}

impl Panels {
    /// `b`, a matrix `k × n`, packed.
    pub fn of(b: Mat<'_>, k: usize, n: usize) -> Panels {
        assert!(
            k == 0 || n == 0 || (k - 1) * b.rs + (n - 1) * b.cs < b.data.len(),
            "operand out of bounds"
        );
        Panels::pack(&b, k, n)
    }

    /// `b`, `k × n`, packed.
    pub(super) fn pack(b: &(impl Rhs + Sync), k: usize, n: usize) -> Panels {
        let passes: Vec<_> = isa::passes(k).collect();
        let strips = n.div_ceil(NB);
        let mut panels: Vec<Panel> = (0..passes.len() * strips)
            .map(|i| Panel::new(passes[i / strips].1, n - i % strips * NB))
            .collect();
        let one = |(i, panel): (usize, &mut Panel)| {
            let ((k0, kc), j0) = (passes[i / strips], i % strips * NB);
            panel.rows(kc);
            b.pack((k0, kc), (j0, NB.min(n - j0)), panel);
        };
        if panels.len() > 1 && rayon::current_num_threads() > 1 {
            panels.par_iter_mut().enumerate().for_each(one);
        } else {
            panels.iter_mut().enumerate().for_each(one);
        }
        Panels { k, n, panels }
    }

    /// The rows and columns of the operand.
    pub(super) fn shape(&self) -> (usize, usize) {
        (self.k, self.n)
    }

    /// The panel of the pass from reduction row `k0` and the strip from column `j0`.
    pub(super) fn at(&self, k0: usize, j0: usize) -> &Panel {
        let each = isa::passes(self.k).next().map_or(1, |(_, kc)| kc);
        &self.panels[k0 / each * self.n.div_ceil(NB) + j0 / NB]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rows_put_by_run_match_rows_put_one_at_a_time() {
        if !available() {
            return;
        }
        let w = isa::strip_width();
        let kc = 5;
        let b: Vec<f32> = (0..4000).map(|i| i as f32).collect();
        let offs: Vec<usize> = (0..kc).map(|kk| (kk * 37) % 11 * 100).collect();
        // Runs of every length up to two slices, from lanes at and inside a slice's edges.
        for col in [0, 3, w - 1, w, w + 5] {
            for len in 0..=2 * w {
                let (mut by_run, mut by_row) = (Panel::new(kc, NB), Panel::new(kc, NB));
                assert!(col + len <= NB, "a test run past the panel");
                by_run.rows(kc);
                by_row.rows(kc);
                by_run.put_rows(col, len, &b, 7, &offs);
                for (kk, &off) in offs.iter().enumerate() {
                    by_row.put(kk, col, &b[7 + off..][..len]);
                }
                assert_eq!(by_run.data[..], by_row.data[..], "col {col} len {len}");
            }
        }
    }
}

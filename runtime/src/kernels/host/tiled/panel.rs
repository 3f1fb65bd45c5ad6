//! A right operand's strip packed for the tiles ([`Panel`]: up to `KC` rows of up to `NB`
//! columns) and one pass of every block of a left operand over it ([`Panel::pass`]).
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
                let (mut by_run, mut by_row) = (Panel::new(kc), Panel::new(kc));
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

//! Scores counted at `t` thresholds evenly spaced over `[0, 1]` ([`Binned`]): what the binned
//! ranking metrics keep instead of every score (torchmetrics' `thresholds=t`), in memory that
//! does not grow with the data.
//!
//! A batch is counted in one pass over its probabilities, across rayon's threads: each score
//! adds one to a histogram of how many thresholds it reaches, and each threshold then counts
//! the scores that reach it. Over many classes most probabilities reach only the first
//! threshold (0): those negatives are not written one by one but known from the rows counted,
//! so that a thousand-class batch costs little more than reading it.

use super::scores::{Read, Scores};
use super::truth::Truth;

/// Counting at `t` thresholds, `w` scores a row.
pub(crate) struct Binned {
    t: usize,
    w: usize,
    /// The thresholds `k / (t-1)`, then +∞.
    bounds: Vec<f64>,
}

/// One batch's histograms (u32: a batch's counts fit), by thresholds reached, then column: a
/// row's counts lie next to each other.
struct Hist {
    pos: Vec<u32>,
    neg: Vec<u32>,
    /// Multiclass rows counted: their negatives below the second threshold are not written.
    rows: u32,
}

impl Binned {
    /// `t` (at least 2) thresholds for `w` scores a row.
    pub fn new(t: usize, w: usize) -> Self {
        let t = t.max(2);
        let mut bounds: Vec<f64> = (0..t).map(|k| k as f64 / (t - 1) as f64).collect();
        bounds.push(f64::INFINITY);
        Self { t, w, bounds }
    }

    /// The thresholds, rising.
    pub fn thresholds(&self) -> Vec<f64> {
        self.bounds[..self.t].to_vec()
    }

    /// How many thresholds are at or below `p` (a probability, so at least one): the
    /// arithmetic guess, moved a step where rounding put `p` across a threshold.
    fn reached(&self, p: f64) -> usize {
        let g = ((p * (self.t - 1) as f64) as usize).min(self.t - 1);
        g + 1 + usize::from(self.bounds[g + 1] <= p) - usize::from(self.bounds[g] > p)
    }

    /// `scores` (read as `read`) counted against `truth`: each column's positives at each
    /// threshold (`w × t`, column-major by threshold), its negatives, and its positives and
    /// negatives in all.
    pub fn count(&self, scores: &Scores, read: Read, truth: &Truth) -> [Vec<f64>; 4] {
        let (w, stride, second) = (self.w, self.t + 1, self.bounds[1]);
        let empty = || Hist {
            pos: vec![0; w * stride],
            neg: vec![0; w * stride],
            rows: 0,
        };
        let each = |h: &mut Hist, row: usize, p: &[f64]| match truth {
            Truth::Class(classes) => {
                let Some(class) = classes[row] else { return };
                h.rows += 1;
                // Every column a negative (those below the second threshold only counted),
                // then the class's moved to the positives.
                for (col, &p) in p.iter().enumerate() {
                    if p >= second {
                        h.neg[self.reached(p) * w + col] += 1;
                    }
                }
                let r = self.reached(p[class]);
                if r > 1 {
                    h.neg[r * w + class] -= 1;
                }
                h.pos[r * w + class] += 1;
            }
            Truth::Flags(flags) => {
                let flags = &flags[row * w..(row + 1) * w];
                for (col, (&p, &flag)) in p.iter().zip(flags).enumerate() {
                    match flag {
                        Some(true) => h.pos[self.reached(p) * w + col] += 1,
                        Some(false) => h.neg[self.reached(p) * w + col] += 1,
                        None => {}
                    }
                }
            }
        };
        let join = |mut a: Hist, b: Hist| {
            a.pos.iter_mut().zip(b.pos).for_each(|(a, b)| *a += b);
            a.neg.iter_mut().zip(b.neg).for_each(|(a, b)| *a += b);
            a.rows += b.rows;
            a
        };
        let mut h = scores.fold_rows(read, empty, each, join);
        if h.rows > 0 {
            // The multiclass negatives that reached one threshold: the rest of each column's.
            for col in 0..w {
                let positives: u32 = (0..stride).map(|k| h.pos[k * w + col]).sum();
                let higher: u32 = (2..stride).map(|k| h.neg[k * w + col]).sum();
                h.neg[w + col] = h.rows - positives - higher;
            }
        }
        let t = self.t;
        let mut out = [
            vec![0.0; w * t],
            vec![0.0; w * t],
            vec![0.0; w],
            vec![0.0; w],
        ];
        for (part, hist) in [(0, &h.pos), (1, &h.neg)] {
            for col in 0..w {
                let n = |k: usize| f64::from(hist[k * w + col]);
                out[part + 2][col] = (0..stride).map(n).sum();
                // Threshold k counts the scores that reached more than k thresholds.
                let mut reaching = 0.0;
                for k in (0..t).rev() {
                    reaching += n(k + 1);
                    out[part][col * t + k] = reaching;
                }
            }
        }
        out
    }
}

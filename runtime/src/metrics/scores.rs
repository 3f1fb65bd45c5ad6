//! A batch's scores on the host ([`Scores`]), kept in the precision they came in, and what the
//! metrics read from them, row by row across rayon's threads: whether they are logits, the
//! first NaN and each row's top class (found once per batch, in one pass, and shared by every
//! metric a collection updates), and the rows themselves, as they are or as probabilities.
//!
//! Logits become probabilities in their own precision, as torchmetrics computes them: f32
//! scores through 8-lane `exp` (within one ulp of the correctly rounded one), f64 scores
//! through `f64::exp`. A row's probabilities are handed over in `f64`.
//!
//! ```
//! use fulmen::metrics::Scores;
//! let scores = Scores::new(2, 3, vec![0.1f32, 0.7, 0.2, 0.5, 0.2, 0.3])?;
//! assert_eq!((scores.rows(), scores.cols()), (2, 3));
//! assert!(Scores::new(2, 3, vec![0.0f64; 5]).is_err());
//! # Ok::<(), fulmen::Error>(())
//! ```

use std::ops::Range;
use std::sync::OnceLock;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::Tensor;
use rayon::prelude::*;
use wide::f32x8;

use crate::device::{FloatDtype, HostAccess};
use crate::kernels::host::values::Values;
use crate::{Error, Result};

/// `rows × cols` scores, row-major: logits or probabilities, one column for a binary score.
#[derive(Debug, Clone)]
pub struct Scores {
    rows: usize,
    cols: usize,
    values: Values,
    summary: OnceLock<Summary>,
}

impl PartialEq for Scores {
    fn eq(&self, other: &Self) -> bool {
        let same = match (&self.values, &other.values) {
            (Values::F32(a), Values::F32(b)) => a[..] == b[..],
            (Values::F64(a), Values::F64(b)) => a[..] == b[..],
            _ => false,
        };
        (self.rows, self.cols) == (other.rows, other.cols) && same
    }
}

/// What one pass over the scores finds.
#[derive(Debug, Clone)]
struct Summary {
    /// The first NaN's index.
    nan: Option<usize>,
    /// Some score lies outside `[0, 1]`.
    logits: bool,
    /// Each row's highest score's column (the lowest of equal ones, as `argmax`).
    top1: Vec<usize>,
}

/// How [`Scores::fold_rows`] hands the rows over.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Read {
    /// As they are.
    Raw,
    /// As probabilities: scores within `[0, 1]` as they are; logits (a score outside) through
    /// the softmax over each row (`softmax`), or else the sigmoid of each.
    Probabilities { softmax: bool },
}

/// Rows fewer than this many values are read on the calling thread.
const PARALLEL_FROM: usize = 1 << 15;

impl Scores {
    /// `rows × cols` scores, row-major (f32 and f64 kept as they are, half precision as f32);
    /// an error unless there are `rows × cols` values.
    pub fn new<E: FloatDtype>(rows: usize, cols: usize, values: Vec<E>) -> Result<Self> {
        Self::checked(rows, cols, Values::from_vec(values))
    }

    /// The scores of `t` (`rows × cols` values): on the CPU an f32 or f64 tensor is read in
    /// place, any other copied once.
    pub(crate) fn of_tensor<S: Shape, E: FloatDtype, D: HostAccess<E>>(
        rows: usize,
        cols: usize,
        t: &Tensor<S, E, D>,
    ) -> Result<Self> {
        if t.shape().num_elements() == 0 {
            return Self::checked(rows, cols, Values::F32(Vec::new().into()));
        }
        Self::checked(rows, cols, Values::of(t)?)
    }

    fn checked(rows: usize, cols: usize, values: Values) -> Result<Self> {
        if rows.checked_mul(cols) != Some(values.len()) {
            return Err(Error::msg(format!(
                "scores of {rows} rows × {cols} columns given {} values",
                values.len()
            )));
        }
        Ok(Self {
            rows,
            cols,
            values,
            summary: OnceLock::new(),
        })
    }

    /// Samples.
    pub fn rows(&self) -> usize {
        self.rows
    }
    /// Scores per sample.
    pub fn cols(&self) -> usize {
        self.cols
    }

    /// The values, row-major, in f64.
    pub fn to_f64(&self) -> Vec<f64> {
        match &self.values {
            Values::F32(v) => v.iter().map(|&x| f64::from(x)).collect(),
            Values::F64(v) => v.to_vec(),
        }
    }

    /// An error naming the row and column of the first NaN.
    pub(crate) fn check_finite(&self, metric: &str) -> Result<()> {
        match self.summary().nan {
            None => Ok(()),
            Some(i) => Err(Error::msg(format!(
                "{metric}: the score in row {}, column {} is NaN",
                i / self.cols.max(1),
                i % self.cols.max(1)
            ))),
        }
    }
    /// Whether some score lies outside `[0, 1]`: logits, not probabilities.
    pub(crate) fn are_logits(&self) -> bool {
        self.summary().logits
    }
    /// Each row's highest score's column (the lowest of equal ones).
    pub(crate) fn top1(&self) -> &[usize] {
        &self.summary().top1
    }

    /// `each(acc, row, values)` over every row, read as `read` says: the rows are split into
    /// one run of consecutive rows per thread, each folded into its own `init()`, and the runs'
    /// results joined in row order. Integer counts come out the same for any split; keep a
    /// value per row (see [`map_rows`](Self::map_rows)) where a float sum must not depend on it.
    pub(crate) fn fold_rows<A: Send>(
        &self,
        read: Read,
        init: impl Fn() -> A + Sync,
        each: impl Fn(&mut A, usize, &[f64]) + Sync,
        join: impl Fn(A, A) -> A + Sync,
    ) -> A {
        let how = match read {
            Read::Probabilities { softmax } if self.are_logits() => {
                if softmax {
                    How::Softmax
                } else {
                    How::Sigmoid
                }
            }
            _ => How::Raw,
        };
        match &self.values {
            Values::F32(v) => self.fold_typed(v, how, init, each, join),
            Values::F64(v) => self.fold_typed(v, how, init, each, join),
        }
    }

    /// `f(row, values)` of every row, in row order (rows read as in
    /// [`fold_rows`](Self::fold_rows)).
    pub(crate) fn map_rows<R: Send>(
        &self,
        read: Read,
        f: impl Fn(usize, &[f64]) -> R + Sync,
    ) -> Vec<R> {
        let each = |out: &mut Vec<R>, row, values: &[f64]| out.push(f(row, values));
        self.fold_rows(read, Vec::new, each, concat)
    }

    fn fold_typed<T: Element, A: Send>(
        &self,
        values: &[T],
        how: How,
        init: impl Fn() -> A + Sync,
        each: impl Fn(&mut A, usize, &[f64]) + Sync,
        join: impl Fn(A, A) -> A + Sync,
    ) -> A {
        let cols = self.cols;
        let run = |rows: Range<usize>| {
            let mut acc = init();
            let mut buf = vec![0.0; cols];
            for r in rows {
                let row = &values[r * cols..(r + 1) * cols];
                match how {
                    How::Raw => buf.iter_mut().zip(row).for_each(|(b, &v)| *b = v.into()),
                    How::Softmax => T::softmax_into(row, &mut buf),
                    How::Sigmoid => (buf.iter_mut().zip(row))
                        .for_each(|(b, &v)| *b = 1.0 / (1.0 + (-v.into()).exp())),
                }
                each(&mut acc, r, &buf);
            }
            acc
        };
        in_runs(self.rows, cols, run, join).unwrap_or_else(init)
    }

    fn summary(&self) -> &Summary {
        self.summary.get_or_init(|| match &self.values {
            Values::F32(v) => self.summarize(v),
            Values::F64(v) => self.summarize(v),
        })
    }

    fn summarize<T: Element>(&self, values: &[T]) -> Summary {
        let cols = self.cols;
        let run = |rows: Range<usize>| {
            let mut s = Summary {
                nan: None,
                logits: false,
                top1: Vec::with_capacity(rows.len()),
            };
            for r in rows {
                let row = &values[r * cols..(r + 1) * cols];
                let (nan, outside) = row.iter().fold((false, false), |(n, o), &v| {
                    (n | v.is_nan(), o | !(v >= T::ZERO && v <= T::ONE))
                });
                if nan && s.nan.is_none() {
                    s.nan = row.iter().position(|v| v.is_nan()).map(|c| r * cols + c);
                }
                s.logits |= outside;
                let max = T::max_of(row);
                s.top1.push(row.iter().position(|&v| v == max).unwrap_or(0));
            }
            s
        };
        let join = |mut a: Summary, b: Summary| {
            a.nan = a.nan.or(b.nan);
            a.logits |= b.logits;
            a.top1.extend(b.top1);
            a
        };
        in_runs(self.rows, cols, run, join).unwrap_or(Summary {
            nan: None,
            logits: false,
            top1: Vec::new(),
        })
    }
}

/// `a` followed by `b`: how row-ordered results join.
pub(crate) fn concat<T>(mut a: Vec<T>, b: Vec<T>) -> Vec<T> {
    a.extend(b);
    a
}

/// `run` over `rows` split into one run of consecutive rows per thread (one run when the rows
/// are small), the results joined in order; `None` for no rows.
fn in_runs<A: Send>(
    rows: usize,
    cols: usize,
    run: impl Fn(Range<usize>) -> A + Sync,
    join: impl Fn(A, A) -> A + Sync,
) -> Option<A> {
    if rows == 0 {
        return None;
    }
    let runs = match rows * cols < PARALLEL_FROM {
        true => 1,
        false => rayon::current_num_threads().clamp(1, rows),
    };
    if runs == 1 {
        return Some(run(0..rows));
    }
    let per = rows.div_ceil(runs);
    (0..runs)
        .into_par_iter()
        .map(|i| run(i * per..((i + 1) * per).min(rows)))
        .reduce_with(&join)
}

#[derive(Debug, Clone, Copy)]
enum How {
    Raw,
    Softmax,
    Sigmoid,
}

/// A score's precision: what the row kernels need of it.
trait Element: Copy + Send + Sync + PartialOrd + Into<f64> {
    const ZERO: Self;
    const ONE: Self;
    fn is_nan(self) -> bool;
    /// The row's largest value (`-inf` for an empty row); NaN is found separately.
    fn max_of(row: &[Self]) -> Self;
    /// The row's softmax, computed in this precision, into `out`.
    fn softmax_into(row: &[Self], out: &mut [f64]);
}

/// `exps`' sum in eight interleaved partial sums (the adds run in parallel lanes).
fn sum(exps: &[f64]) -> f64 {
    let mut lanes = [0.0; 8];
    let mut chunks = exps.chunks_exact(8);
    for c in chunks.by_ref() {
        lanes.iter_mut().zip(c).for_each(|(l, &e)| *l += e);
    }
    lanes.iter().sum::<f64>() + chunks.remainder().iter().sum::<f64>()
}

impl Element for f32 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn is_nan(self) -> bool {
        f32::is_nan(self)
    }
    fn max_of(row: &[f32]) -> f32 {
        let mut chunks = row.chunks_exact(8);
        let mut lanes = f32x8::splat(f32::NEG_INFINITY);
        for c in chunks.by_ref() {
            let mut lane = [0.0; 8];
            lane.copy_from_slice(c);
            lanes = lanes.max(f32x8::from(lane));
        }
        let tail = chunks.remainder().iter().copied();
        lanes
            .to_array()
            .into_iter()
            .chain(tail)
            .fold(f32::NEG_INFINITY, f32::max)
    }
    fn softmax_into(row: &[f32], out: &mut [f64]) {
        let max = f32x8::splat(Self::max_of(row));
        // exp in f32 lanes, written out and added up in f64 lanes as it goes.
        let mut total = [0.0; 8];
        let mut exp = |lane: [f32; 8], out: &mut [f64]| {
            let e = (f32x8::from(lane) - max).exp().to_array();
            for ((o, t), e) in out.iter_mut().zip(&mut total).zip(e) {
                *o = f64::from(e);
                *t += *o;
            }
        };
        let (mut rows, mut outs) = (row.chunks_exact(8), out.chunks_exact_mut(8));
        for (c, o) in rows.by_ref().zip(outs.by_ref()) {
            let mut lane = [0.0; 8];
            lane.copy_from_slice(c);
            exp(lane, o);
        }
        let (tail, mut lane) = (rows.remainder(), [f32::NEG_INFINITY; 8]);
        lane[..tail.len()].copy_from_slice(tail);
        exp(lane, outs.into_remainder());
        // Times the reciprocal: within an ulp of f64 of the quotient, far below f32's exp.
        let scale = 1.0 / total.iter().sum::<f64>();
        out.iter_mut().for_each(|p| *p *= scale);
    }
}

impl Element for f64 {
    const ZERO: Self = 0.0;
    const ONE: Self = 1.0;
    fn is_nan(self) -> bool {
        f64::is_nan(self)
    }
    fn max_of(row: &[f64]) -> f64 {
        let mut lanes = [f64::NEG_INFINITY; 4];
        let mut chunks = row.chunks_exact(4);
        for c in chunks.by_ref() {
            lanes.iter_mut().zip(c).for_each(|(l, &v)| *l = l.max(v));
        }
        let tail = chunks.remainder().iter().copied();
        lanes
            .into_iter()
            .chain(tail)
            .fold(f64::NEG_INFINITY, f64::max)
    }
    fn softmax_into(row: &[f64], out: &mut [f64]) {
        let max = Self::max_of(row);
        out.iter_mut()
            .zip(row)
            .for_each(|(o, &v)| *o = (v - max).exp());
        let total = sum(out);
        out.iter_mut().for_each(|p| *p /= total);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn f32_softmax_is_as_close_to_f64s_as_f32_arithmetic_allows() {
        let row: Vec<f32> = (0..37).map(|i| (i as f32 * 0.77).sin() * 9.0).collect();
        let wide: Vec<f64> = row.iter().map(|&v| f64::from(v)).collect();
        let (mut a, mut b) = (vec![0.0; 37], vec![0.0; 37]);
        f32::softmax_into(&row, &mut a);
        f64::softmax_into(&wide, &mut b);
        let max = wide.iter().copied().fold(f64::MIN, f64::max);
        for ((a, b), x) in a.iter().zip(&b).zip(&wide) {
            // x - max rounded to f32 (half an ulp of it) and exp's own ulp, relative.
            let bound = ((max - x) + 2.0) * f64::from(f32::EPSILON);
            assert!(((a - b) / b).abs() < bound, "{a} {b}");
        }
    }

    #[test]
    fn runs_split_rows_and_join_them_in_order() {
        let (rows, cols) = (4099, 17);
        let values: Vec<f32> = (0..rows * cols).map(|i| (i % 23) as f32 - 3.0).collect();
        let scores = Scores::new(rows, cols, values.clone()).unwrap();
        let got = scores.map_rows(Read::Raw, |row, v| (row, v[0]));
        let want: Vec<(usize, f64)> = (0..rows)
            .map(|r| (r, f64::from(values[r * cols])))
            .collect();
        assert_eq!(got, want);
        let top: Vec<usize> = (values.chunks(cols))
            .map(|r| (0..cols).fold(0, |b, i| if r[i] > r[b] { i } else { b }))
            .collect();
        assert_eq!(scores.top1(), top);
        assert!(scores.are_logits());
    }
}

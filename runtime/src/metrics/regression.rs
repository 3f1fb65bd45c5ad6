//! Regression metrics: [`MeanSquaredError`], [`RootMeanSquaredError`], [`MeanAbsoluteError`], [`R2Score`], [`ExplainedVariance`], [`PearsonCorrCoef`],
//! [`SpearmanCorrCoef`]. Predictions and targets are values of any shape, taken as one flat
//! output (a tensor, or a slice of numbers), in the same number. Every state but Spearman's is
//! the count, sums of errors (f64 keeps 10 M values' sums to far better than 1e-6) and, for
//! R², explained variance and Pearson's, means and co-moments merged by Chan's formulas
//! (targets far from zero keep their variance's digits); Spearman's keeps every value to rank
//! them.
//!
//! ```
//! use fulmen::metrics::{Metric, R2Score};
//! let mut r2 = R2Score::default();
//! r2.update(&[2.5, 0.0, 2.0, 8.0][..], &[3.0, -0.5, 2.0, 7.0][..])?;
//! assert!((r2.compute()? - 0.948_608_137_044_967_9).abs() < 1e-12);
//! # Ok::<(), fulmen::Error>(())
//! ```

use dfdx::shapes::{Dtype, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;
use num_traits::ToPrimitive;

use super::collection::HostUpdate;
use super::inputs::{HostPreds, HostTargets};
use super::moments::{self, Moments};
use super::state::{Merge, State};
use super::{Metric, Tracked};
use crate::{Error, Result};

/// Numbers a regression metric takes: a tensor of any shape, or a slice.
pub trait Values {
    /// The numbers, flat, on the host.
    fn values(&self) -> Vec<f64>;
}

impl<S: Shape, E: Dtype + ToPrimitive, D: Device<E>, T> Values for Tensor<S, E, D, T> {
    fn values(&self) -> Vec<f64> {
        super::inputs::f64s(self)
    }
}
impl Values for [f64] {
    fn values(&self) -> Vec<f64> {
        self.to_vec()
    }
}
impl Values for [f32] {
    fn values(&self) -> Vec<f64> {
        self.iter().map(|&v| f64::from(v)).collect()
    }
}
impl Values for Vec<f64> {
    fn values(&self) -> Vec<f64> {
        self.clone()
    }
}
impl<V: Values + ?Sized> Values for &V {
    fn values(&self) -> Vec<f64> {
        (**self).values()
    }
}

/// The predictions and targets of one update, checked: as many, and all numbers.
fn pairs(metric: &str, preds: &dyn Values, target: &dyn Values) -> Result<(Vec<f64>, Vec<f64>)> {
    checked(metric, preds.values(), target.values())
}

/// The predictions and targets a [`MetricCollection`](super::MetricCollection) hands over,
/// checked as [`pairs`].
fn host_pairs(
    metric: &str,
    preds: &HostPreds,
    target: &HostTargets,
) -> Result<(Vec<f64>, Vec<f64>)> {
    let HostPreds::Scores(scores) = preds else {
        return Err(Error::msg(format!(
            "{metric}: takes values, not class indices"
        )));
    };
    checked(metric, scores.to_f64(), target.values.clone())
}

fn checked(metric: &str, p: Vec<f64>, t: Vec<f64>) -> Result<(Vec<f64>, Vec<f64>)> {
    if p.len() != t.len() {
        return Err(Error::msg(format!(
            "{metric}: {} predictions for {} targets",
            p.len(),
            t.len()
        )));
    }
    for (what, v) in [("prediction", &p), ("target", &t)] {
        if let Some(i) = v.iter().position(|x| !x.is_finite()) {
            return Err(Error::msg(format!("{metric}: {what} {i} is {}", v[i])));
        }
    }
    Ok((p, t))
}

/// One batch's state: the count, means and co-moments of `vars` of each (prediction,
/// target) pair (`moments`: the count alone for none), and the sums of `sums` of them.
fn batch(
    p: &[f64],
    t: &[f64],
    vars: &[fn(f64, f64) -> f64],
    sums: &[fn(f64, f64) -> f64],
) -> State {
    let mut state = fresh(vars.len(), sums.len());
    let column = |f: fn(f64, f64) -> f64| p.iter().zip(t).map(move |(&a, &b)| f(a, b));
    let columns: Vec<Vec<f64>> = vars.iter().map(|&f| column(f).collect()).collect();
    *state.get_mut(0) = moments::of(&columns);
    // The count, also where there are no variables to keep moments of.
    state.get_mut(0)[0] = p.len() as f64;
    for (i, f) in sums.iter().enumerate() {
        state.get_mut(1)[i] = column(*f).sum();
    }
    state
}

fn fresh(vars: usize, sums: usize) -> State {
    State::new(&[
        ("moments", Merge::Moments, moments::len(vars)),
        ("sums", Merge::Sum, sums),
    ])
}

/// A regression metric: its state is [`batch`]'s of `vars` and `sums`; its value, of the
/// moments `m` and sums `s` (NaN before any pair).
macro_rules! regression_metric {
    ($(#[$doc:meta])* $name:ident, [$($var:expr),*], [$($f:expr),*], |$m:ident, $s:ident| $value:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            tracked: Tracked,
        }

        impl $name {
            const VARS: &'static [fn(f64, f64) -> f64] = &[$($var),*];
            const SUMS: &'static [fn(f64, f64) -> f64] = &[$($f),*];

            /// Adds a batch of predictions against its targets (as many; an error names a
            /// mismatch or a value that is not a number, and adds nothing).
            pub fn update(&mut self, preds: impl Values, target: impl Values) -> Result<()> {
                let (p, t) = pairs(stringify!($name), &preds, &target)?;
                self.tracked.add(batch(&p, &t, Self::VARS, Self::SUMS))
            }
        }

        impl HostUpdate for $name {
            fn batch_state(&self, preds: &HostPreds, target: &HostTargets) -> Result<State> {
                let (p, t) = host_pairs(stringify!($name), preds, target)?;
                Ok(batch(&p, &t, Self::VARS, Self::SUMS))
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    tracked: Tracked::new(fresh(Self::VARS.len(), Self::SUMS.len())),
                }
            }
        }

        impl Metric for $name {
            fn name(&self) -> &'static str {
                stringify!($name)
            }
            fn tracked(&self) -> &Tracked {
                &self.tracked
            }
            fn tracked_mut(&mut self) -> &mut Tracked {
                &mut self.tracked
            }
            fn value_of(&self, state: &State) -> Result<f64> {
                let ($m, $s) = (Moments(state.get(0)), state.get(1));
                if $m.n() == 0.0 {
                    return Ok(f64::NAN);
                }
                Ok($value)
            }
        }
    };
}

regression_metric!(
    /// The mean of the squared errors.
    MeanSquaredError,
    [],
    [|p, t| (p - t) * (p - t)],
    |m, s| s[0] / m.n()
);

regression_metric!(
    /// The root of the mean squared error (torchmetrics' `MeanSquaredError(squared=False)`).
    RootMeanSquaredError,
    [],
    [|p, t| (p - t) * (p - t)],
    |m, s| (s[0] / m.n()).sqrt()
);

regression_metric!(
    /// The mean of the absolute errors.
    MeanAbsoluteError,
    [],
    [|p, t| (p - t).abs()],
    |m, s| s[0] / m.n()
);

regression_metric!(
    /// The coefficient of determination: 1 − Σ(t − p)² / Σ(t − mean t)² (scikit-learn's
    /// `r2_score`; NaN when every target is the same).
    R2Score,
    [|_p, t| t],
    [|p, t| (p - t) * (p - t)],
    |m, s| {
        let total = m.c(0, 0);
        if total == 0.0 { f64::NAN } else { 1.0 - s[0] / total }
    }
);

regression_metric!(
    /// 1 − Var(t − p) / Var(t) (scikit-learn's `explained_variance_score`; NaN when every
    /// target is the same).
    ExplainedVariance,
    [|_p, t| t, |p, t| t - p],
    [],
    |m, _s| {
        let var_t = m.c(0, 0);
        if var_t == 0.0 { f64::NAN } else { 1.0 - m.c(1, 1) / var_t }
    }
);

regression_metric!(
    /// Pearson's correlation of predictions and targets (SciPy's `pearsonr`).
    PearsonCorrCoef,
    [|p, _t| p, |_p, t| t],
    [],
    |m, _s| m.c(0, 1) / (m.c(0, 0) * m.c(1, 1)).sqrt()
);

/// Spearman's rank correlation (SciPy's `spearmanr`: ties get their mean rank): keeps every
/// value, to rank them all at once.
#[derive(Debug, Clone, PartialEq)]
pub struct SpearmanCorrCoef {
    tracked: Tracked,
}

impl Default for SpearmanCorrCoef {
    fn default() -> Self {
        Self {
            tracked: Tracked::new(State::new(&[
                ("preds", Merge::Cat, 0),
                ("target", Merge::Cat, 0),
            ])),
        }
    }
}

impl SpearmanCorrCoef {
    /// Adds a batch (see [`MeanSquaredError::update`]).
    pub fn update(&mut self, preds: impl Values, target: impl Values) -> Result<()> {
        let (p, t) = pairs("SpearmanCorrCoef", &preds, &target)?;
        let batch = self.kept(p, t);
        self.tracked.add(batch)
    }

    fn kept(&self, p: Vec<f64>, t: Vec<f64>) -> State {
        let mut batch = self.tracked.total().emptied();
        *batch.get_mut(0) = p;
        *batch.get_mut(1) = t;
        batch
    }
}

impl HostUpdate for SpearmanCorrCoef {
    fn batch_state(&self, preds: &HostPreds, target: &HostTargets) -> Result<State> {
        let (p, t) = host_pairs("SpearmanCorrCoef", preds, target)?;
        Ok(self.kept(p, t))
    }
}

/// Each value's rank from 1, ties their mean rank.
pub(crate) fn ranks(v: &[f64]) -> Vec<f64> {
    let mut order: Vec<usize> = (0..v.len()).collect();
    order.sort_by(|&a, &b| v[a].total_cmp(&v[b]));
    let mut out = vec![0.0; v.len()];
    let mut i = 0;
    while i < order.len() {
        let mut j = i;
        while j + 1 < order.len() && v[order[j + 1]] == v[order[i]] {
            j += 1;
        }
        let rank = (i + j) as f64 / 2.0 + 1.0;
        for &k in &order[i..=j] {
            out[k] = rank;
        }
        i = j + 1;
    }
    out
}

impl Metric for SpearmanCorrCoef {
    fn name(&self) -> &'static str {
        "SpearmanCorrCoef"
    }
    fn tracked(&self) -> &Tracked {
        &self.tracked
    }
    fn tracked_mut(&mut self) -> &mut Tracked {
        &mut self.tracked
    }
    fn value_of(&self, state: &State) -> Result<f64> {
        let (p, t) = (ranks(state.get(0)), ranks(state.get(1)));
        let mut pearson = PearsonCorrCoef::default();
        pearson.update(&p, &t)?;
        pearson.compute()
    }
}

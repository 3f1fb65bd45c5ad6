//! [`CalibrationError`]: how far predicted confidences are from observed frequencies, over
//! `n_bins` equal bins of confidence (torchmetrics' `CalibrationError`). Binary: the positive
//! class's probability against the target; multiclass: the top class's probability against
//! whether it is right. Its state is each bin's count, summed confidence and summed hits, which
//! add up exactly over batches and ranks.
//!
//! ```
//! use fulmen::metrics::{CalibrationError, Metric};
//! let mut ece = CalibrationError::binary(10);
//! ece.update(&[0.9, 0.9, 0.1, 0.1][..], &[1usize, 0, 0, 0][..])?;
//! // Two bins: confidence 0.9 right half the time, 0.1 right never.
//! assert!((ece.compute()? - (0.5 * 0.4 + 0.5 * 0.1)).abs() < 1e-12);
//! # Ok::<(), fulmen::Error>(())
//! ```

use super::collection::HostUpdate;
use super::inputs::{HostPreds, HostTargets, Preds, Targets};
use super::scores::Read;
use super::state::{Merge, State};
use super::task::Task;
use super::truth::Truth;
use super::{Metric, Tracked};
use crate::{Error, Result};

/// How the bins' gaps become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum CalibrationNorm {
    /// Σ weight · |gap|: the expected calibration error (the default).
    #[default]
    L1,
    /// √(Σ weight · gap²).
    L2,
    /// The largest |gap| of a bin that holds samples: the maximum calibration error.
    Max,
}

/// The calibration error over equal bins of confidence.
#[derive(Debug, Clone, PartialEq)]
pub struct CalibrationError {
    task: Task,
    bins: usize,
    norm: CalibrationNorm,
    tracked: Tracked,
}

impl CalibrationError {
    fn new(task: Task, bins: usize) -> Self {
        let bins = bins.max(1);
        Self {
            task,
            bins,
            norm: CalibrationNorm::L1,
            tracked: Tracked::new(State::new(&[
                ("count", Merge::Sum, bins),
                ("confidence", Merge::Sum, bins),
                ("hits", Merge::Sum, bins),
            ])),
        }
    }
    /// For a positive-class probability (or logit) per sample, over `bins` bins.
    pub fn binary(bins: usize) -> Self {
        Self::new(Task::Binary, bins)
    }
    /// For a score per class, over `bins` bins of the top class's probability.
    pub fn multiclass(classes: usize, bins: usize) -> Self {
        Self::new(Task::Multiclass(classes), bins)
    }
    /// How the bins' gaps become one number.
    pub fn norm(mut self, norm: CalibrationNorm) -> Self {
        self.norm = norm;
        self
    }

    /// Adds a batch of scores against its targets; an error names what does not fit.
    pub fn update(&mut self, preds: impl Preds, target: impl Targets) -> Result<()> {
        self.update_host(&preds.host()?, &target.host())
    }
}

impl HostUpdate for CalibrationError {
    fn batch_state(&self, preds: &HostPreds, target: &HostTargets) -> Result<State> {
        let HostPreds::Scores(scores) = preds else {
            return Err(Error::msg(
                "CalibrationError: takes scores, not class indices",
            ));
        };
        let (rows, cols) = (scores.rows(), scores.cols());
        if let Task::Multiclass(0) = self.task {
            return Err(Error::config(
                "CalibrationError.task",
                "needs at least one class",
            ));
        }
        let width = self.task.width();
        if rows != target.rows || target.cols != 1 || target.values.len() != rows || cols != width {
            return Err(Error::msg(format!(
                "CalibrationError: {rows} rows of {cols} scores for {} targets; the {:?} task takes {width} a row",
                target.values.len(),
                self.task
            )));
        }
        scores.check_finite("CalibrationError")?;
        let truth = Truth::check("CalibrationError", self.task, None, target)?;
        // Each row's confidence and whether it was right: the top class's probability (logits
        // through the softmax) and whether it is the target, or the positive class's (the
        // sigmoid) and whether the target is positive.
        let multiclass = matches!(self.task, Task::Multiclass(_));
        let read = Read::Probabilities {
            softmax: multiclass,
        };
        let confidences = scores.map_rows(read, |row, p| {
            let best = (0..p.len()).fold(0, |b, i| if p[i] > p[b] { i } else { b });
            let col = if multiclass { best } else { 0 };
            (p[best], truth.of(row, col, 1) == Some(true))
        });
        let mut batch = self.tracked.total().emptied();
        for (confidence, hit) in confidences {
            // Bins [0, 1/n), [1/n, 2/n), ...; 1 joins the last (torchmetrics' bucketing).
            let bin = ((confidence * self.bins as f64).floor() as usize).min(self.bins - 1);
            batch.get_mut(0)[bin] += 1.0;
            batch.get_mut(1)[bin] += confidence;
            batch.get_mut(2)[bin] += f64::from(u8::from(hit));
        }
        Ok(batch)
    }
}

impl Metric for CalibrationError {
    fn name(&self) -> &'static str {
        "CalibrationError"
    }
    fn tracked(&self) -> &Tracked {
        &self.tracked
    }
    fn tracked_mut(&mut self) -> &mut Tracked {
        &mut self.tracked
    }
    fn value_of(&self, state: &State) -> Result<f64> {
        let (count, conf, hits) = (state.get(0), state.get(1), state.get(2));
        let total: f64 = count.iter().sum();
        if total == 0.0 {
            return Ok(f64::NAN);
        }
        let gaps = (0..self.bins)
            .filter(|&b| count[b] > 0.0)
            .map(|b| (count[b] / total, (hits[b] - conf[b]) / count[b]));
        Ok(match self.norm {
            CalibrationNorm::L1 => gaps.map(|(w, g)| w * g.abs()).sum(),
            CalibrationNorm::L2 => gaps.map(|(w, g)| w * g * g).sum::<f64>().sqrt(),
            CalibrationNorm::Max => gaps.map(|(_, g)| g.abs()).fold(0.0, f64::max),
        })
    }
}

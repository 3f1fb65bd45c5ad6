//! The counting classification metrics (torchmetrics' `StatScores` family): [`Accuracy`],
//! [`Precision`], [`Recall`], [`F1Score`], [`FBetaScore`], [`Specificity`]. Each keeps the
//! true and false positives and negatives per class or label, which add up exactly over
//! batches and ranks, and computes its score from them: over all of them (`Micro`), as the
//! mean of the per-class scores (`Macro`, over the classes that occur in the targets or the
//! predictions), or weighted by each class's support (`Weighted`).
//!
//! ```
//! use fulmen::metrics::{Average, F1Score, Metric};
//! let mut f1 = F1Score::multiclass(3).average(Average::Macro);
//! f1.update(&[0usize, 1, 2, 2][..], &[0usize, 1, 1, 2][..])?;
//! f1.update(&[1usize][..], &[1usize][..])?;
//! // Class 0: F1 1; class 1: 2·2/(2·2+1) = 0.8; class 2: 2/(2+1).
//! assert!((f1.compute()? - (1.0 + 0.8 + 2.0 / 3.0) / 3.0).abs() < 1e-12);
//! # Ok::<(), fulmen::Error>(())
//! ```

use super::classify::{Classify, FN, FP, TN, TP};
use super::collection::HostUpdate;
use super::inputs::{HostPreds, HostTargets, Preds, Targets};
use super::state::State;
use super::task::Task;
use super::{Metric, Tracked};
use crate::{Error, Result};

/// How per-class scores become one number.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Average {
    /// From the counts summed over every class or label.
    Micro,
    /// The mean of the per-class scores, over the classes that occur (in the targets or the
    /// predictions).
    Macro,
    /// The per-class scores weighted by each class's number of targets.
    Weighted,
}

/// Which score a counting metric computes from its counts.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Score {
    Accuracy,
    Precision,
    Recall,
    Specificity,
    FBeta(f64),
}

/// `num / den`, 0 when `den` is 0 (scikit-learn's and torchmetrics' `zero_division=0`).
fn ratio(num: f64, den: f64) -> f64 {
    if den == 0.0 {
        0.0
    } else {
        num / den
    }
}

impl Score {
    /// The score of one class's (or the summed) counts; `labels` for accuracy over yes/no
    /// labels (binary, multilabel), which counts the true negatives.
    fn of(self, [tp, fp, tn, fn_]: [f64; 4], labels: bool) -> f64 {
        match self {
            Score::Accuracy if labels => ratio(tp + tn, tp + fp + tn + fn_),
            Score::Accuracy | Score::Recall => ratio(tp, tp + fn_),
            Score::Precision => ratio(tp, tp + fp),
            Score::Specificity => ratio(tn, tn + fp),
            Score::FBeta(beta) => {
                let b2 = beta * beta;
                ratio((1.0 + b2) * tp, (1.0 + b2) * tp + b2 * fn_ + fp)
            }
        }
    }
}

/// What every counting metric is: the task, the average, the score, the counts.
#[derive(Debug, Clone, PartialEq)]
struct Counting {
    name: &'static str,
    classify: Classify,
    average: Average,
    score: Score,
    tracked: Tracked,
}

impl Counting {
    fn new(name: &'static str, task: Task, score: Score, average: Average) -> Self {
        let classify = Classify::new(task);
        let tracked = Tracked::new(classify.state());
        Counting {
            name,
            classify,
            average,
            score,
            tracked,
        }
    }

    fn counts(state: &State, i: usize) -> [f64; 4] {
        [TP, FP, TN, FN].map(|p| state.get(p).get(i).copied().unwrap_or(0.0))
    }

    /// Each class's (or label's) score.
    fn per_class(&self, state: &State) -> Vec<f64> {
        let labels = !matches!(self.classify.task, Task::Multiclass(_));
        (0..self.classify.task.width())
            .map(|i| self.score.of(Self::counts(state, i), labels))
            .collect()
    }

    fn value_of(&self, state: &State) -> Result<f64> {
        let n = self.classify.task.width();
        let labels = !matches!(self.classify.task, Task::Multiclass(_));
        if self.classify.task == Task::Binary {
            return Ok(self.score.of(Self::counts(state, 0), true));
        }
        let per_class = self.per_class(state);
        let weights: Vec<f64> = (0..n)
            .map(|i| {
                let [tp, fp, _, fn_] = Self::counts(state, i);
                match self.average {
                    Average::Weighted => tp + fn_,
                    _ if tp + fp + fn_ == 0.0 => 0.0,
                    _ => 1.0,
                }
            })
            .collect();
        Ok(match self.average {
            Average::Micro => {
                let mut sum = [0.0; 4];
                for i in 0..n {
                    for (s, c) in sum.iter_mut().zip(Self::counts(state, i)) {
                        *s += c;
                    }
                }
                self.score.of(sum, labels)
            }
            Average::Macro | Average::Weighted => {
                let total: f64 = weights.iter().sum();
                let weighted: f64 = per_class.iter().zip(&weights).map(|(s, w)| s * w).sum();
                ratio(weighted, total)
            }
        })
    }
}

macro_rules! counting_metric {
    ($(#[$doc:meta])* $name:ident, $score:expr, $default_average:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name(Counting);

        impl $name {
            /// For one binary score or class per sample (a score above the threshold, 0.5 by
            /// default, is positive).
            pub fn binary() -> Self {
                Self(Counting::new(stringify!($name), Task::Binary, $score, Average::Micro))
            }
            /// For one of `classes` classes per sample.
            pub fn multiclass(classes: usize) -> Self {
                Self(Counting::new(stringify!($name), Task::Multiclass(classes), $score, $default_average))
            }
            /// For `labels` yes/no labels per sample.
            pub fn multilabel(labels: usize) -> Self {
                Self(Counting::new(stringify!($name), Task::Multilabel(labels), $score, Average::Macro))
            }
            /// How the per-class scores become one number.
            pub fn average(mut self, average: Average) -> Self {
                self.0.average = average;
                self
            }
            /// The probability above which a binary or label score is positive.
            pub fn threshold(mut self, threshold: f64) -> Self {
                self.0.classify.threshold = threshold;
                self
            }
            /// Multiclass: a sample counts as predicted for each of its `k` highest scores.
            pub fn top_k(mut self, k: usize) -> Self {
                self.0.classify.top_k = k;
                self
            }
            /// Leaves out the samples (or, multilabel, the labels) whose target is `index`.
            pub fn ignore_index(mut self, index: i64) -> Self {
                self.0.classify.ignore_index = Some(index);
                self
            }
            /// Adds a batch: `preds` (scores or classes) against `target`. An error names a
            /// target or prediction that does not fit the task, and adds nothing.
            pub fn update(&mut self, preds: impl Preds, target: impl Targets) -> Result<()> {
                self.update_host(&preds.host()?, &target.host())
            }
            /// Each class's (or label's) score over what it was updated with.
            pub fn per_class(&self) -> Vec<f64> {
                self.0.per_class(self.0.tracked.total())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::binary()
            }
        }

        impl HostUpdate for $name {
            fn batch_state(&self, preds: &HostPreds, target: &HostTargets) -> Result<State> {
                self.0.classify.counts(self.0.name, preds, target)
            }
        }

        impl Metric for $name {
            fn name(&self) -> &'static str {
                stringify!($name)
            }
            fn tracked(&self) -> &Tracked {
                &self.0.tracked
            }
            fn tracked_mut(&mut self) -> &mut Tracked {
                &mut self.0.tracked
            }
            fn value_of(&self, state: &State) -> Result<f64> {
                self.0.value_of(state)
            }
        }
    };
}

counting_metric!(
    /// The fraction of samples predicted right (multiclass `Micro`, the default); `Macro` is
    /// the mean per-class recall (scikit-learn's macro recall). Binary and multilabel: the
    /// fraction of yes/no decisions right.
    Accuracy,
    Score::Accuracy,
    Average::Micro
);
counting_metric!(
    /// Of the samples predicted as a class, the fraction that are (`Macro` by default).
    Precision,
    Score::Precision,
    Average::Macro
);
counting_metric!(
    /// Of the samples of a class, the fraction predicted as it (`Macro` by default).
    Recall,
    Score::Recall,
    Average::Macro
);
counting_metric!(
    /// Of the samples not of a class, the fraction not predicted as it (`Macro` by default).
    Specificity,
    Score::Specificity,
    Average::Macro
);
counting_metric!(
    /// The harmonic mean of precision and recall (`Macro` by default).
    F1Score,
    Score::FBeta(1.0),
    Average::Macro
);
counting_metric!(
    /// F-beta: recall weighted `beta` times as much as precision (`Macro` by default; `beta`
    /// 1 unless [`beta`](FBetaScore::beta) says).
    FBetaScore,
    Score::FBeta(1.0),
    Average::Macro
);

impl FBetaScore {
    /// The weight of recall against precision (> 0).
    pub fn beta(mut self, beta: f64) -> Result<Self> {
        if !(beta > 0.0 && beta.is_finite()) {
            return Err(Error::config(
                "FBetaScore.beta",
                format!("{beta} is not a finite number > 0"),
            ));
        }
        self.0.score = Score::FBeta(beta);
        Ok(self)
    }
}

//! The metrics of scores ranked against targets: [`Auroc`], [`AveragePrecision`],
//! [`RocCurve`], [`PrecisionRecallCurve`]. Exact (every score kept, as scikit-learn) or
//! binned ([`thresholds`](Auroc::thresholds): counts at `n` thresholds evenly spaced over
//! `[0, 1]`, in bounded memory, as torchmetrics' `thresholds=n`). Binary, multiclass
//! (one-vs-rest over the class probabilities) and multilabel (each label's scores); scores
//! outside `[0, 1]` are logits (sigmoid, or softmax for classes).
//!
//! Averages over classes or labels: `Macro` over those with both positives and negatives
//! (the others have no curve), `Weighted` by their positives, `Micro` (multilabel) over
//! every score at once. A binary task with one kind of target has no AUROC: NaN.
//!
//! ```
//! use fulmen::metrics::{Auroc, Metric};
//! let mut auroc = Auroc::binary();
//! auroc.update(&[0.1, 0.4, 0.35, 0.8][..], &[0usize, 0, 1, 1][..])?;
//! assert_eq!(auroc.compute()?, 0.75);
//! # Ok::<(), fulmen::Error>(())
//! ```

use super::binned::Binned;
use super::classification::Average;
use super::classify::check_shapes;
use super::collection::HostUpdate;
use super::inputs::{HostPreds, HostTargets, Preds, Targets};
use super::scores::{concat, Read, Scores};
use super::state::{Merge, State};
use super::task::Task;
use super::truth::Truth;
use super::{Metric, Tracked};
use crate::{Error, Result};

/// One column's curve points, from the highest threshold down: at each, how many positives
/// and negatives score at or above it; and the column's positives and negatives.
struct Counts {
    thresholds: Vec<f64>,
    tps: Vec<f64>,
    fps: Vec<f64>,
    pos: f64,
    neg: f64,
}

/// What the ranking metrics share: the task, the binning, the kept scores or counts.
#[derive(Debug, Clone, PartialEq)]
struct Ranked {
    name: &'static str,
    task: Task,
    average: Average,
    bins: Option<usize>,
    ignore_index: Option<i64>,
    tracked: Tracked,
}

impl Ranked {
    fn new(name: &'static str, task: Task) -> Self {
        let mut r = Ranked {
            name,
            task,
            average: Average::Macro,
            bins: None,
            ignore_index: None,
            tracked: Tracked::default(),
        };
        r.tracked = Tracked::new(r.fresh());
        r
    }

    fn fresh(&self) -> State {
        let w = self.task.width();
        match self.bins {
            None => State::new(&[("scores", Merge::Cat, 0), ("targets", Merge::Cat, 0)]),
            Some(t) => State::new(&[
                ("tp", Merge::Sum, w * t),
                ("fp", Merge::Sum, w * t),
                ("pos", Merge::Sum, w),
                ("neg", Merge::Sum, w),
            ]),
        }
    }

    /// The scores of an update, checked against the targets: an error names what does not fit.
    fn scores<'a>(&self, preds: &'a HostPreds, target: &HostTargets) -> Result<&'a Scores> {
        let (name, w) = (self.name, self.task.width());
        if w == 0 {
            return Err(Error::config(
                format!("{name}.task"),
                "needs at least one class or label",
            ));
        }
        let HostPreds::Scores(scores) = preds else {
            return Err(Error::msg(format!(
                "{name}: takes scores, not class indices"
            )));
        };
        check_shapes(name, self.task, scores.rows(), target)?;
        if scores.cols() != w {
            return Err(Error::msg(format!(
                "{name}: predictions have {} columns, the {:?} task takes {w}",
                scores.cols(),
                self.task
            )));
        }
        scores.check_finite(name)?;
        Ok(scores)
    }

    /// One batch's state: its scores with their targets, or its counts at each threshold.
    fn batch(&self, preds: &HostPreds, target: &HostTargets) -> Result<State> {
        let scores = self.scores(preds, target)?;
        let truth = Truth::check(self.name, self.task, self.ignore_index, target)?;
        let w = self.task.width();
        // Logits become probabilities: softmax over classes, else the sigmoid.
        let read = Read::Probabilities {
            softmax: matches!(self.task, Task::Multiclass(_)),
        };
        let mut batch = self.fresh();
        let Some(t) = self.bins else {
            // Row-major, as the predictions; a left-out target is kept as -1, so that every
            // score stays in its column.
            let target = |row, col| {
                truth
                    .of(row, col, w)
                    .map_or(-1.0, |y| f64::from(u8::from(y)))
            };
            let each = |(s, y): &mut (Vec<f64>, Vec<f64>), row, p: &[f64]| {
                s.extend_from_slice(p);
                y.extend((0..w).map(|col| target(row, col)));
            };
            let join = |(a, b), (c, d)| (concat(a, c), concat(b, d));
            let (kept, targets) = scores.fold_rows(read, Default::default, each, join);
            *batch.get_mut(0) = kept;
            *batch.get_mut(1) = targets;
            return Ok(batch);
        };
        let counts = Binned::new(t, w).count(scores, read, &truth);
        for (i, part) in counts.into_iter().enumerate() {
            *batch.get_mut(i) = part;
        }
        Ok(batch)
    }

    /// The counts of column `col` (`None`: every column at once, multilabel micro).
    fn counts(&self, state: &State, col: Option<usize>) -> Counts {
        let w = self.task.width();
        match self.bins {
            None => {
                let (scores, targets) = (state.get(0), state.get(1));
                let mut pairs: Vec<(f64, bool)> = (0..scores.len())
                    .filter(|i| col.is_none_or(|c| i % w == c) && targets[*i] >= 0.0)
                    .map(|i| (scores[i], targets[i] == 1.0))
                    .collect();
                pairs.sort_by(|a, b| b.0.total_cmp(&a.0));
                let (mut c, mut tp, mut fp) = (
                    Counts {
                        thresholds: vec![],
                        tps: vec![],
                        fps: vec![],
                        pos: 0.0,
                        neg: 0.0,
                    },
                    0.0,
                    0.0,
                );
                for (i, &(s, p)) in pairs.iter().enumerate() {
                    if p {
                        tp += 1.0
                    } else {
                        fp += 1.0
                    }
                    if pairs.get(i + 1).is_none_or(|next| next.0 != s) {
                        c.thresholds.push(s);
                        c.tps.push(tp);
                        c.fps.push(fp);
                    }
                }
                (c.pos, c.neg) = (tp, fp);
                c
            }
            Some(t) => {
                let cols: Vec<usize> = col.map_or((0..w).collect(), |c| vec![c]);
                let sum = |part: usize, k: usize| {
                    cols.iter()
                        .map(|&c| state.get(part)[c * t + k])
                        .sum::<f64>()
                };
                let thresholds = Binned::new(t, w).thresholds();
                let mut c = Counts {
                    thresholds: vec![],
                    tps: vec![],
                    fps: vec![],
                    pos: 0.0,
                    neg: 0.0,
                };
                for k in (0..t).rev() {
                    c.thresholds.push(thresholds[k]);
                    c.tps.push(sum(0, k));
                    c.fps.push(sum(1, k));
                }
                c.pos = cols.iter().map(|&k| state.get(2)[k]).sum();
                c.neg = cols.iter().map(|&k| state.get(3)[k]).sum();
                c
            }
        }
    }

    /// `per_column(counts)` averaged as the task and average say.
    fn averaged(&self, state: &State, per_column: fn(&Counts) -> f64) -> Result<f64> {
        if self.task == Task::Binary {
            return Ok(per_column(&self.counts(state, Some(0))));
        }
        if self.average == Average::Micro {
            if let Task::Multiclass(_) = self.task {
                return Err(Error::config(format!("{}.average", self.name), "Micro applies to binary and multilabel tasks; a multiclass task averages Macro or Weighted"));
            }
            return Ok(per_column(&self.counts(state, None)));
        }
        let (mut sum, mut weights) = (0.0, 0.0);
        for col in 0..self.task.width() {
            let c = self.counts(state, Some(col));
            if c.pos == 0.0 || c.neg == 0.0 {
                continue;
            }
            let w = if self.average == Average::Weighted {
                c.pos
            } else {
                1.0
            };
            sum += w * per_column(&c);
            weights += w;
        }
        Ok(if weights == 0.0 {
            f64::NAN
        } else {
            sum / weights
        })
    }
}

/// The ROC curve's points (fpr, tpr), from (0, 0).
fn roc_points(c: &Counts) -> (Vec<f64>, Vec<f64>) {
    let mut fpr = vec![0.0];
    let mut tpr = vec![0.0];
    fpr.extend(c.fps.iter().map(|f| f / c.neg));
    tpr.extend(c.tps.iter().map(|t| t / c.pos));
    (fpr, tpr)
}

fn auroc(c: &Counts) -> f64 {
    if c.pos == 0.0 || c.neg == 0.0 {
        return f64::NAN;
    }
    let (x, y) = roc_points(c);
    x.windows(2)
        .zip(y.windows(2))
        .map(|(x, y)| (x[1] - x[0]) * (y[1] + y[0]) / 2.0)
        .sum()
}

fn average_precision(c: &Counts) -> f64 {
    if c.pos == 0.0 {
        return f64::NAN;
    }
    let mut prev_recall = 0.0;
    let mut ap = 0.0;
    for (tp, fp) in c.tps.iter().zip(&c.fps) {
        if tp + fp == 0.0 {
            continue;
        }
        let recall = tp / c.pos;
        ap += (recall - prev_recall) * tp / (tp + fp);
        prev_recall = recall;
    }
    ap
}

macro_rules! ranked_metric {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name(Ranked);

        impl $name {
            /// For one score per sample.
            pub fn binary() -> Self {
                Self(Ranked::new(stringify!($name), Task::Binary))
            }
            /// For a score per class (one-vs-rest), `Macro` by default.
            pub fn multiclass(classes: usize) -> Self {
                Self(Ranked::new(stringify!($name), Task::Multiclass(classes)))
            }
            /// For a score per label, `Macro` by default.
            pub fn multilabel(labels: usize) -> Self {
                Self(Ranked::new(stringify!($name), Task::Multilabel(labels)))
            }
            /// How the classes' or labels' values become one.
            pub fn average(mut self, average: Average) -> Self {
                self.0.average = average;
                self
            }
            /// Counts at `n` thresholds evenly spaced over `[0, 1]` (at least 2) instead of
            /// every score: bounded memory, the curve's resolution `1/(n-1)`.
            pub fn thresholds(mut self, n: usize) -> Self {
                self.0.bins = Some(n.max(2));
                self.0.tracked = Tracked::new(self.0.fresh());
                self
            }
            /// Leaves out the samples (labels) whose target is `index`.
            pub fn ignore_index(mut self, index: i64) -> Self {
                self.0.ignore_index = Some(index);
                self
            }
            /// Adds a batch of scores against its targets; an error names what does not fit,
            /// and adds nothing.
            pub fn update(&mut self, preds: impl Preds, target: impl Targets) -> Result<()> {
                self.update_host(&preds.host()?, &target.host())
            }
        }

        impl Default for $name {
            fn default() -> Self {
                Self::binary()
            }
        }

        impl HostUpdate for $name {
            fn batch_state(&self, preds: &HostPreds, target: &HostTargets) -> Result<State> {
                self.0.batch(preds, target)
            }
        }
    };
}

ranked_metric!(
    /// The area under the ROC curve (scikit-learn's `roc_auc_score`).
    Auroc
);
ranked_metric!(
    /// The precision averaged over the recall's steps (scikit-learn's
    /// `average_precision_score`).
    AveragePrecision
);
ranked_metric!(
    /// The ROC curve: false and true positive rates at each threshold (read with
    /// [`curves`](RocCurve::curves)).
    RocCurve
);
ranked_metric!(
    /// The precision-recall curve (read with [`curves`](PrecisionRecallCurve::curves)).
    PrecisionRecallCurve
);

/// A curve of one class or label: its `x`, `y` and thresholds, as scikit-learn returns them
/// (`roc_curve` with `drop_intermediate=False`: fpr, tpr, thresholds from +∞ down;
/// `precision_recall_curve`: precision, recall, thresholds rising).
#[derive(Debug, Clone, PartialEq)]
pub struct Curve {
    /// False positive rates, or precisions.
    pub x: Vec<f64>,
    /// True positive rates, or recalls.
    pub y: Vec<f64>,
    /// The threshold of each point.
    pub thresholds: Vec<f64>,
}

impl RocCurve {
    /// Each class's or label's curve (one for binary).
    pub fn curves(&self) -> Vec<Curve> {
        self.curves_of(self.0.tracked.total())
    }

    fn curves_of(&self, state: &State) -> Vec<Curve> {
        (0..self.0.task.width())
            .map(|col| {
                let c = self.0.counts(state, Some(col));
                let (x, y) = roc_points(&c);
                let mut thresholds = vec![f64::INFINITY];
                thresholds.extend(c.thresholds);
                Curve { x, y, thresholds }
            })
            .collect()
    }
}

impl PrecisionRecallCurve {
    /// Each class's or label's curve (one for binary), ending at precision 1, recall 0.
    pub fn curves(&self) -> Vec<Curve> {
        self.curves_of(self.0.tracked.total())
    }

    fn curves_of(&self, state: &State) -> Vec<Curve> {
        (0..self.0.task.width())
            .map(|col| {
                let c = self.0.counts(state, Some(col));
                let (mut x, mut y, mut thresholds) = (vec![], vec![], vec![]);
                for i in (0..c.tps.len()).rev() {
                    let (tp, fp) = (c.tps[i], c.fps[i]);
                    x.push(if tp + fp == 0.0 { 1.0 } else { tp / (tp + fp) });
                    y.push(if c.pos == 0.0 { 0.0 } else { tp / c.pos });
                    thresholds.push(c.thresholds[i]);
                }
                x.push(1.0);
                y.push(0.0);
                Curve { x, y, thresholds }
            })
            .collect()
    }
}

macro_rules! ranked_value {
    ($name:ident, $value:expr, $picture:expr) => {
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
                let value: Option<fn(&Counts) -> f64> = $value;
                match value {
                    Some(f) => self.0.averaged(state, f),
                    None => Err(Error::msg(concat!(
                        stringify!($name),
                        " is a curve, not a number: read curves()"
                    ))),
                }
            }
            fn is_picture(&self) -> bool {
                let picture: Option<fn(&Self, &State) -> Result<Vec<u8>>> = $picture;
                picture.is_some()
            }
            fn picture_of(&self, state: &State) -> Result<Vec<u8>> {
                let picture: Option<fn(&Self, &State) -> Result<Vec<u8>>> = $picture;
                match picture {
                    Some(draw) => draw(self, state),
                    None => Err(Error::msg(concat!(stringify!($name), " is not a picture"))),
                }
            }
        }
    };
}

ranked_value!(Auroc, Some(auroc), None);
ranked_value!(AveragePrecision, Some(average_precision), None);
ranked_value!(
    RocCurve,
    None,
    Some(|m, state| super::plot::curves(
        &m.curves_of(state),
        "False positive rate",
        "True positive rate"
    ))
);
ranked_value!(
    PrecisionRecallCurve,
    None,
    Some(|m, state| {
        // Recall across, precision up.
        let turned: Vec<Curve> = (m.curves_of(state).into_iter())
            .map(|c| Curve {
                x: c.y,
                y: c.x,
                thresholds: c.thresholds,
            })
            .collect();
        super::plot::curves(&turned, "Recall", "Precision")
    })
);

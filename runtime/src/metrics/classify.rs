//! What the classification metrics share: the task ([`Task`]: binary, multiclass, multilabel)
//! with its settings (threshold, `top_k`, `ignore_index`), and one batch's counts of true and
//! false positives and negatives per class or label, checked as they are read.

use super::inputs::{HostPreds, HostTargets};
use super::scores::{concat, Read};
use super::state::{Merge, State};
use super::task::Task;
use super::truth::Truth;
use crate::{Error, Result};

/// A task with its settings.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Classify {
    pub task: Task,
    /// A binary or label score above it is positive (probabilities; logits are turned into
    /// probabilities first, as torchmetrics does when a score falls outside `[0, 1]`).
    pub threshold: f64,
    /// Multiclass: a sample counts as predicted for each of its `top_k` highest scores.
    pub top_k: usize,
    /// Targets of this value are left out (torchmetrics' `ignore_index`).
    pub ignore_index: Option<i64>,
}

/// The parts of a counting state: true positives, false positives, true negatives, false
/// negatives, one number per class or label each.
pub(crate) const TP: usize = 0;
pub(crate) const FP: usize = 1;
pub(crate) const TN: usize = 2;
pub(crate) const FN: usize = 3;

impl Classify {
    pub fn new(task: Task) -> Self {
        Self {
            task,
            threshold: 0.5,
            top_k: 1,
            ignore_index: None,
        }
    }

    /// A fresh counting state.
    pub fn state(&self) -> State {
        let n = self.task.width();
        State::new(&[
            ("tp", Merge::Sum, n),
            ("fp", Merge::Sum, n),
            ("tn", Merge::Sum, n),
            ("fn", Merge::Sum, n),
        ])
    }

    /// The settings a metric was given, checked: an error naming the one that is wrong.
    pub fn check(&self, metric: &str) -> Result<()> {
        let bad =
            |setting: &str, why: String| Err(Error::config(format!("{metric}.{setting}"), why));
        match self.task {
            Task::Multiclass(0) | Task::Multilabel(0) => {
                return bad("task", "needs at least one class or label".into())
            }
            Task::Multiclass(c) if self.top_k == 0 || self.top_k > c => {
                return bad("top_k", format!("{} is not in 1..={c}", self.top_k))
            }
            Task::Binary | Task::Multilabel(_) if self.top_k != 1 => {
                return bad("top_k", "applies to multiclass tasks only".into())
            }
            _ => {}
        }
        if !(0.0..=1.0).contains(&self.threshold) {
            return bad("threshold", format!("{} is not in [0, 1]", self.threshold));
        }
        Ok(())
    }

    /// One batch's counts (a state of [`state`](Self::state)'s parts); an error names the
    /// row of a target or prediction that does not fit the task.
    pub fn counts(&self, metric: &str, preds: &HostPreds, target: &HostTargets) -> Result<State> {
        self.check(metric)?;
        let n = self.task.width();
        check_shapes(metric, self.task, preds.rows(), target)?;
        let truth = Truth::check(metric, self.task, self.ignore_index, target)?;
        let mut counts = self.state();
        let (mut tp, mut fp, mut fn_) = (vec![0.0; n], vec![0.0; n], vec![0.0; n]);
        // Samples counted per column (multiclass: every sample counts in every column).
        let (mut seen, mut samples) = (vec![0.0; n], 0.0);
        match &truth {
            Truth::Flags(flags) => {
                let positive = self.positives(metric, preds, n)?;
                for (i, (&t, &p)) in flags.iter().zip(&positive).enumerate() {
                    let (Some(t), col) = (t, i % n) else { continue };
                    seen[col] += 1.0;
                    match (p, t) {
                        (true, true) => tp[col] += 1.0,
                        (true, false) => fp[col] += 1.0,
                        (false, true) => fn_[col] += 1.0,
                        (false, false) => {}
                    }
                }
            }
            Truth::Class(classes) => {
                let predicted = self.top_classes(metric, preds, n)?;
                let k = self.top_k;
                for (&t, set) in classes.iter().zip(predicted.chunks_exact(k)) {
                    let Some(t) = t else { continue };
                    samples += 1.0;
                    for &p in set {
                        match p == t {
                            true => tp[p] += 1.0,
                            false => fp[p] += 1.0,
                        }
                    }
                    if !set.contains(&t) {
                        fn_[t] += 1.0;
                    }
                }
            }
        }
        let tn: Vec<f64> = (0..n)
            .map(|i| seen[i] + samples - tp[i] - fp[i] - fn_[i])
            .collect();
        *counts.get_mut(TP) = tp;
        *counts.get_mut(FP) = fp;
        *counts.get_mut(TN) = tn;
        *counts.get_mut(FN) = fn_;
        Ok(counts)
    }

    /// Each counted sample's (or, multilabel, label's) column, target and top-1 prediction:
    /// what a confusion matrix counts.
    pub fn pairs(
        &self,
        metric: &str,
        preds: &HostPreds,
        target: &HostTargets,
    ) -> Result<Vec<(usize, usize, usize)>> {
        let top1 = Classify {
            top_k: 1,
            ..self.clone()
        };
        top1.check(metric)?;
        let n = self.task.width();
        check_shapes(metric, self.task, preds.rows(), target)?;
        let truth = Truth::check(metric, self.task, self.ignore_index, target)?;
        Ok(match &truth {
            Truth::Flags(flags) => {
                let positive = top1.positives(metric, preds, n)?;
                (flags.iter().zip(&positive).enumerate())
                    .filter_map(|(i, (t, &p))| t.map(|t| (i % n, usize::from(t), usize::from(p))))
                    .collect()
            }
            Truth::Class(classes) => {
                let predicted = top1.top_classes(metric, preds, n)?;
                (classes.iter().zip(&predicted))
                    .filter_map(|(t, &p)| t.map(|t| (0, t, p)))
                    .collect()
            }
        })
    }

    /// Binary and multilabel: whether each score (row-major) is positive.
    fn positives(&self, metric: &str, preds: &HostPreds, n: usize) -> Result<Vec<bool>> {
        match preds {
            HostPreds::Classes(c) if n == 1 => c
                .iter()
                .enumerate()
                .map(|(row, &c)| match c {
                    0 | 1 => Ok(c == 1),
                    other => Err(Error::msg(format!(
                        "{metric}: predicted class {other} in row {row} is not 0 or 1"
                    ))),
                })
                .collect(),
            HostPreds::Classes(_) => Err(Error::msg(format!(
                "{metric}: a multilabel task takes a score per label, not class indices"
            ))),
            HostPreds::Scores(scores) => {
                if scores.cols() != n {
                    return Err(Error::msg(format!(
                        "{metric}: predictions have {} columns, the {:?} task takes {n}",
                        scores.cols(),
                        self.task
                    )));
                }
                scores.check_finite(metric)?;
                // Logits become probabilities through the sigmoid, as in torchmetrics.
                let threshold = self.threshold;
                let read = Read::Probabilities { softmax: false };
                Ok(scores.fold_rows(
                    read,
                    Vec::new,
                    |out, _, p| out.extend(p.iter().map(|&p| p > threshold)),
                    concat,
                ))
            }
        }
    }

    /// Multiclass: the `top_k` predicted classes of each row (highest score first; of equal
    /// scores, the lower class first, as `argmax` picks).
    fn top_classes(&self, metric: &str, preds: &HostPreds, c: usize) -> Result<Vec<usize>> {
        let k = self.top_k;
        match preds {
            HostPreds::Classes(classes) => {
                if k != 1 {
                    return Err(Error::msg(format!(
                        "{metric}: top_k {k} needs a score per class, not class indices"
                    )));
                }
                for (row, &p) in classes.iter().enumerate() {
                    if p >= c {
                        return Err(Error::msg(format!(
                            "{metric}: predicted class {p} in row {row} is not a class of 0..{c}"
                        )));
                    }
                }
                Ok(classes.clone())
            }
            HostPreds::Scores(scores) => {
                if scores.cols() != c {
                    return Err(Error::msg(format!(
                        "{metric}: predictions have {} columns for {c} classes",
                        scores.cols()
                    )));
                }
                scores.check_finite(metric)?;
                if k == 1 {
                    return Ok(scores.top1().to_vec());
                }
                let top = |out: &mut Vec<usize>, _, row: &[f64]| {
                    let mut order: Vec<usize> = (0..c).collect();
                    order.sort_by(|&a, &b| row[b].total_cmp(&row[a]).then(a.cmp(&b)));
                    out.extend_from_slice(&order[..k]);
                };
                Ok(scores.fold_rows(Read::Raw, Vec::new, top, concat))
            }
        }
    }
}

/// An error unless there are as many predictions (`rows`) as targets, and the targets have
/// the task's columns (one, or one per label).
pub(crate) fn check_shapes(
    metric: &str,
    task: Task,
    rows: usize,
    target: &HostTargets,
) -> Result<()> {
    if rows != target.rows {
        return Err(Error::msg(format!(
            "{metric}: {rows} predictions for {} targets",
            target.rows
        )));
    }
    if target.values.len() != target.rows * target.cols {
        return Err(Error::msg(format!(
            "{metric}: targets of {} rows × {} columns hold {} values",
            target.rows,
            target.cols,
            target.values.len()
        )));
    }
    let want_cols = if let Task::Multilabel(l) = task { l } else { 1 };
    if target.cols != want_cols {
        return Err(Error::msg(format!(
            "{metric}: targets have {} columns, the {task:?} task takes {want_cols}",
            target.cols
        )));
    }
    Ok(())
}

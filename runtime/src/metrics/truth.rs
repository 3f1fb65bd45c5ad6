//! An update's classification targets ([`Truth`]), checked once per batch: each row's class
//! (multiclass), or whether each score is a positive (binary, multilabel); `None` where
//! `ignore_index` leaves a target out. An error names the row of a target that fits no class.

use super::inputs::{class_of, flag_of, HostTargets};
use super::task::Task;
use crate::{Error, Result};

/// Checked targets.
pub(crate) enum Truth {
    /// Each row's class.
    Class(Vec<Option<usize>>),
    /// Each score's target, row-major.
    Flags(Vec<Option<bool>>),
}

impl Truth {
    /// `target` checked against `task`: an error (naming `metric`) names the row of a target
    /// that is no class of the task, or not 0 or 1.
    pub fn check(
        metric: &str,
        task: Task,
        ignore_index: Option<i64>,
        target: &HostTargets,
    ) -> Result<Self> {
        let left_out = |t: f64| ignore_index.is_some_and(|i| i as f64 == t);
        let row = |i: usize| i / target.cols.max(1);
        let values = target.values.iter().enumerate();
        match task {
            Task::Multiclass(c) => values
                .map(|(i, &t)| match class_of(t, c) {
                    _ if left_out(t) => Ok(None),
                    Some(t) => Ok(Some(t)),
                    None => Err(Error::msg(format!(
                        "{metric}: target {t} in row {} is not a class of 0..{c}",
                        row(i)
                    ))),
                })
                .collect::<Result<_>>()
                .map(Truth::Class),
            Task::Binary | Task::Multilabel(_) => values
                .map(|(i, &t)| match flag_of(t) {
                    _ if left_out(t) => Ok(None),
                    Some(y) => Ok(Some(y)),
                    None => Err(Error::msg(format!(
                        "{metric}: target {t} in row {} is not 0 or 1",
                        row(i)
                    ))),
                })
                .collect::<Result<_>>()
                .map(Truth::Flags),
        }
    }

    /// Whether the score at `row`, `col` (of `width` a row) is a positive.
    pub fn of(&self, row: usize, col: usize, width: usize) -> Option<bool> {
        match self {
            Truth::Class(c) => c[row].map(|t| t == col),
            Truth::Flags(f) => f[row * width + col],
        }
    }
}

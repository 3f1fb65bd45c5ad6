//! An update's targets as the ranking metrics read them ([`Truth`]), checked once per batch:
//! each row's class (multiclass), or whether each score is a positive (binary, multilabel);
//! `None` where `ignore_index` leaves a target out.

use super::classify::Task;
use super::inputs::HostTargets;
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
    /// that fits no class, or is not 0 or 1.
    pub fn check(
        metric: &str,
        task: Task,
        ignore_index: Option<i64>,
        target: &HostTargets,
    ) -> Result<Self> {
        let left_out = |t: i64| Some(t) == ignore_index;
        let values = target.values.iter().enumerate();
        match task {
            Task::Multiclass(c) => values
                .map(
                    |(row, &t)| match usize::try_from(t).ok().filter(|&t| t < c) {
                        _ if left_out(t) => Ok(None),
                        Some(t) => Ok(Some(t)),
                        None => Err(Error::msg(format!(
                            "{metric}: target {t} in row {row} is not a class of 0..{c}"
                        ))),
                    },
                )
                .collect::<Result<_>>()
                .map(Truth::Class),
            Task::Binary | Task::Multilabel(_) => values
                .map(|(i, &t)| match t {
                    _ if left_out(t) => Ok(None),
                    0 | 1 => Ok(Some(t == 1)),
                    other => Err(Error::msg(format!(
                        "{metric}: target {other} in row {} is not 0 or 1",
                        i / target.cols.max(1)
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

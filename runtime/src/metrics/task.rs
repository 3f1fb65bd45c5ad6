//! What a classification metric classifies ([`Task`]): one binary score, one of several
//! classes, or several yes/no labels per sample.

/// A classification task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Task {
    /// One score or class per sample, positive or not.
    Binary,
    /// One of this many classes per sample.
    Multiclass(usize),
    /// This many yes/no labels per sample.
    Multilabel(usize),
}

impl Task {
    /// Scores per sample: classes or labels, 1 for binary.
    pub fn width(self) -> usize {
        match self {
            Task::Binary => 1,
            Task::Multiclass(c) | Task::Multilabel(c) => c,
        }
    }
}

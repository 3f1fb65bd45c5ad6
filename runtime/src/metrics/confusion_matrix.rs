//! [`ConfusionMatrix`]: how many samples of each target class were predicted as each class
//! (rows: targets, columns: predictions), as scikit-learn's `confusion_matrix`; binary is
//! 2 × 2, multilabel one 2 × 2 per label. Normalized over the targets, the predictions or all
//! (`Normalize`). Not a number: it is read with [`matrix`](ConfusionMatrix::matrix), not
//! logged.
//!
//! ```
//! use fulmen::metrics::{ConfusionMatrix, Normalize};
//! let mut cm = ConfusionMatrix::multiclass(3);
//! cm.update(&[0usize, 2, 2, 1][..], &[0usize, 1, 2, 1][..])?;
//! assert_eq!(cm.matrix()?, [[1.0, 0.0, 0.0], [0.0, 1.0, 1.0], [0.0, 0.0, 1.0]]);
//! let rows = cm.normalize(Normalize::Target).matrix()?;
//! assert_eq!(rows[1], [0.0, 0.5, 0.5]);
//! # Ok::<(), fulmen::Error>(())
//! ```

use super::classify::Classify;
use super::collection::HostUpdate;
use super::inputs::{HostPreds, HostTargets, Preds, Targets};
use super::state::{Merge, State};
use super::task::Task;
use super::{Metric, Tracked};
use crate::{Error, Result};

/// What a confusion matrix's counts are divided by.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Normalize {
    /// Counts (the default).
    #[default]
    None,
    /// Each row by its sum: the fraction of each target class predicted as each class.
    Target,
    /// Each column by its sum.
    Pred,
    /// Every count by the total.
    All,
}

/// Counts of (target, prediction) pairs.
#[derive(Debug, Clone, PartialEq)]
pub struct ConfusionMatrix {
    classify: Classify,
    normalize: Normalize,
    tracked: Tracked,
}

impl ConfusionMatrix {
    fn new(task: Task) -> Self {
        let classify = Classify::new(task);
        let side = Self::side(&classify);
        let tracked = Tracked::new(State::new(&[(
            "counts",
            Merge::Sum,
            side * side * Self::blocks(&classify),
        )]));
        Self {
            classify,
            normalize: Normalize::None,
            tracked,
        }
    }
    fn side(c: &Classify) -> usize {
        match c.task {
            Task::Multiclass(n) => n,
            Task::Binary | Task::Multilabel(_) => 2,
        }
    }
    fn blocks(c: &Classify) -> usize {
        match c.task {
            Task::Multilabel(l) => l,
            _ => 1,
        }
    }

    /// 2 × 2: negatives then positives.
    pub fn binary() -> Self {
        Self::new(Task::Binary)
    }
    /// `classes` × `classes`.
    pub fn multiclass(classes: usize) -> Self {
        Self::new(Task::Multiclass(classes))
    }
    /// One 2 × 2 per label.
    pub fn multilabel(labels: usize) -> Self {
        Self::new(Task::Multilabel(labels))
    }
    /// The probability above which a binary or label score is positive.
    pub fn threshold(mut self, threshold: f64) -> Self {
        self.classify.threshold = threshold;
        self
    }
    /// Leaves out the samples whose target is `index`.
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.classify.ignore_index = Some(index);
        self
    }
    /// What the counts are divided by.
    pub fn normalize(mut self, normalize: Normalize) -> Self {
        self.normalize = normalize;
        self
    }

    /// Adds a batch (see [`Accuracy::update`](super::Accuracy::update)).
    pub fn update(&mut self, preds: impl Preds, target: impl Targets) -> Result<()> {
        self.update_host(&preds.host()?, &target.host())
    }
}

impl HostUpdate for ConfusionMatrix {
    fn batch_state(&self, preds: &HostPreds, target: &HostTargets) -> Result<State> {
        let pairs = self.classify.pairs("ConfusionMatrix", preds, target)?;
        let side = Self::side(&self.classify);
        let mut batch = self.tracked.total().emptied();
        let counts = batch.get_mut(0);
        for (block, t, p) in pairs {
            counts[block * side * side + t * side + p] += 1.0;
        }
        Ok(batch)
    }
}

impl ConfusionMatrix {
    /// The matrix (binary, multiclass): rows are targets, columns predictions.
    pub fn matrix(&self) -> Result<Vec<Vec<f64>>> {
        self.matrix_of(self.tracked.total())
    }

    fn matrix_of(&self, state: &State) -> Result<Vec<Vec<f64>>> {
        if let Task::Multilabel(_) = self.classify.task {
            return Err(Error::msg(
                "ConfusionMatrix: a multilabel matrix is one per label: read per_label()",
            ));
        }
        (self.blocks_of(state).into_iter().next())
            .ok_or_else(|| Error::msg("ConfusionMatrix: a task of no classes has no matrix"))
    }

    /// Multilabel: each label's 2 × 2 matrix.
    pub fn per_label(&self) -> Vec<Vec<Vec<f64>>> {
        self.blocks_of(self.tracked.total())
    }

    fn blocks_of(&self, state: &State) -> Vec<Vec<Vec<f64>>> {
        let side = Self::side(&self.classify);
        if side == 0 {
            return Vec::new();
        }
        state
            .get(0)
            .chunks(side * side)
            .map(|block| {
                let rows: Vec<Vec<f64>> = block.chunks(side).map(<[f64]>::to_vec).collect();
                normalized(rows, self.normalize)
            })
            .collect()
    }
}

/// `m` divided as `how` says (a zero sum leaves zeros).
fn normalized(mut m: Vec<Vec<f64>>, how: Normalize) -> Vec<Vec<f64>> {
    let div = |v: f64, d: f64| if d == 0.0 { 0.0 } else { v / d };
    match how {
        Normalize::None => {}
        Normalize::Target => {
            for row in m.iter_mut() {
                let s: f64 = row.iter().sum();
                row.iter_mut().for_each(|v| *v = div(*v, s));
            }
        }
        Normalize::Pred => {
            let n = m.first().map_or(0, Vec::len);
            for j in 0..n {
                let s: f64 = m.iter().map(|r| r[j]).sum();
                m.iter_mut().for_each(|r| r[j] = div(r[j], s));
            }
        }
        Normalize::All => {
            let s: f64 = m.iter().flatten().sum();
            m.iter_mut().flatten().for_each(|v| *v = div(*v, s));
        }
    }
    m
}

impl Default for ConfusionMatrix {
    fn default() -> Self {
        Self::binary()
    }
}

impl Metric for ConfusionMatrix {
    fn name(&self) -> &'static str {
        "ConfusionMatrix"
    }
    fn tracked(&self) -> &Tracked {
        &self.tracked
    }
    fn tracked_mut(&mut self) -> &mut Tracked {
        &mut self.tracked
    }
    fn value_of(&self, _state: &State) -> Result<f64> {
        Err(Error::msg(
            "ConfusionMatrix is a matrix, not a number: read matrix()",
        ))
    }
    fn is_picture(&self) -> bool {
        true
    }
    /// The matrix, shaded; multilabel, a panel per label.
    fn picture_of(&self, state: &State) -> Result<Vec<u8>> {
        match self.classify.task {
            Task::Multilabel(_) => super::plot::confusion_matrices(
                &(self.blocks_of(state).into_iter().enumerate())
                    .map(|(label, m)| (format!("Label {label}"), m))
                    .collect::<Vec<_>>(),
            ),
            _ => super::plot::confusion_matrix(&self.matrix_of(state)?),
        }
    }
}

//! Metrics that are right over an epoch and across ranks (torchmetrics for fulmen).
//!
//! A metric is a state machine: [`update`](Accuracy::update) adds a batch's predictions and
//! targets to its [`State`] (counts and sums, in `f64`), [`compute`](Metric::compute) gives
//! its value over everything since the last [`reset`](Metric::reset). The state adds up
//! exactly over batches and over ranks, so an epoch's F1 is the F1 of the epoch's samples, not
//! a mean of batch F1s.
//!
//! In a module, a metric is a `#[metric]` field, and logging it logs the metric, not a number:
//! the trainer computes it at the epoch's end from every rank's state (one collective call per
//! compute), logs it, and resets it, as Lightning does with torchmetrics objects; logged per
//! step, its value is the batch's. Its state is saved in checkpoints, so a resumed run computes
//! the same epoch value. Under DDP rank 0 writes the checkpoint with its own states (a save one
//! rank asks for alone must not wait on the others), except SLURM's requeue, where every rank's
//! are added up first: a run resumed from a mid-epoch checkpoint of another kind counts the
//! other ranks' share of that epoch from the checkpoint on (Lightning saves no metric state).
//!
//! ```
//! use fulmen::metrics::{Accuracy, Average, F1Score};
//! use fulmen::prelude::*;
//!
//! #[lightning_module]
//! struct Classifier {
//!     layer: Linear<4, 3>,
//!     #[metric(Accuracy::multiclass(3))]
//!     val_acc: Accuracy,
//!     #[metric(F1Score::multiclass(3).average(Average::Macro))]
//!     val_f1: F1Score,
//! }
//!
//! #[lightning_module]
//! impl Classifier {
//!     fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
//!         cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
//!     }
//!     fn validation_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> fulmen::Result<()> {
//!         let logits = self.layer.forward(x);
//!         self.val_acc.update(&logits, &y)?;
//!         self.val_f1.update(&logits, &y)?;
//!         ctx.log("val_acc", &self.val_acc);
//!         ctx.log("val_f1", &self.val_f1);
//!         Ok(())
//!     }
//!     fn configure_optimizers(&self) -> Optim { Optim::adam(1e-2) }
//! }
//! ```

mod aggregation;
mod binned;
mod calibration;
mod classification;
mod classify;
mod collection;
mod confusion_matrix;
mod functional;
mod inputs;
mod moments;
mod perplexity;
pub mod plot;
mod ranking;
mod regression;
mod scores;
mod state;
mod task;
mod truth;

pub use aggregation::{MaxMetric, MeanMetric, MinMetric, RunningMean, SumMetric};
pub use calibration::{CalibrationError, CalibrationNorm};
pub use classification::{Accuracy, Average, F1Score, FBetaScore, Precision, Recall, Specificity};
pub use collection::{BoxedUpdate, HostUpdate, MetricCollection, MetricField};
pub use confusion_matrix::{ConfusionMatrix, Normalize};
pub use functional::accuracy;
pub use inputs::{HostPreds, HostTargets, Preds, Targets};
pub use perplexity::Perplexity;
pub use ranking::{Auroc, AveragePrecision, Curve, PrecisionRecallCurve, RocCurve};
pub use regression::{
    ExplainedVariance, MeanAbsoluteError, MeanSquaredError, PearsonCorrCoef, R2Score,
    RootMeanSquaredError, SpearmanCorrCoef, Values,
};
pub use scores::Scores;
pub use state::{Merge, Part, State};
pub use task::Task;

use crate::distributed::Collective;
use crate::Result;

/// A metric: what it keeps ([`Tracked`]) and its value over a state.
pub trait Metric: Send {
    /// Its name in messages (`"F1Score"`).
    fn name(&self) -> &'static str;
    /// What it keeps.
    fn tracked(&self) -> &Tracked;
    /// What it keeps, to change.
    fn tracked_mut(&mut self) -> &mut Tracked;
    /// Its value over `state` (everything since the last reset, every rank's once synced, or
    /// one batch's). A metric that is not a number (a confusion matrix, a curve) refuses,
    /// naming what to read instead.
    fn value_of(&self, state: &State) -> Result<f64>;

    /// Whether it is a picture (a confusion matrix, curves): what
    /// [`MetricPlots`](crate::callbacks::MetricPlots) draws.
    fn is_picture(&self) -> bool {
        false
    }
    /// Its picture over `state` (every rank's once synced) as a PNG; an error for a metric
    /// that is no picture.
    fn picture_of(&self, _state: &State) -> Result<Vec<u8>> {
        Err(crate::Error::msg(format!(
            "{} is not a picture",
            self.name()
        )))
    }
    /// Its picture over everything it was updated with since the last reset, on this rank.
    fn picture(&self) -> Result<Vec<u8>> {
        self.picture_of(self.tracked().total())
    }

    /// Its value over everything it was updated with since the last reset, on this rank.
    fn compute(&self) -> Result<f64> {
        self.value_of(self.tracked().total())
    }
    /// Its value over every rank's updates (the same on every rank); this rank's state is
    /// left as it is.
    fn compute_synced(&self, collective: &dyn Collective) -> Result<f64> {
        self.value_of(&self.tracked().total().sync(collective)?)
    }
    /// Its value over the last batch alone (what a step logs); NaN before any update.
    fn batch_value(&self) -> Result<f64> {
        match self.tracked().last() {
            Some(last) => self.value_of(last),
            None => Ok(f64::NAN),
        }
    }
    /// Forgets every update.
    fn reset(&mut self) {
        self.tracked_mut().reset();
    }
}

/// What a metric keeps: the state since the last reset, the last batch's own, and the module
/// field it is (which the trainer sets, so that logging it logs the field).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Tracked {
    total: State,
    last: Option<State>,
    field: Option<String>,
}

impl Tracked {
    /// Nothing seen yet, in `fresh`'s shape.
    pub fn new(fresh: State) -> Self {
        Self {
            total: fresh,
            last: None,
            field: None,
        }
    }
    /// Adds one batch's state (of the same parts): the total and the last batch.
    pub fn add(&mut self, batch: State) -> Result<()> {
        self.total.merge(&batch)?;
        self.last = Some(batch);
        Ok(())
    }
    /// Everything since the last reset.
    pub fn total(&self) -> &State {
        &self.total
    }
    /// Everything since the last reset, to load a checkpoint's into.
    pub fn total_mut(&mut self) -> &mut State {
        &mut self.total
    }
    /// The last batch's state.
    pub fn last(&self) -> Option<&State> {
        self.last.as_ref()
    }
    /// Back to nothing seen.
    pub fn reset(&mut self) {
        self.total.reset();
        self.last = None;
    }
    /// The module field this metric is, once the trainer named it.
    pub fn field(&self) -> Option<&str> {
        self.field.as_deref()
    }
    pub(crate) fn set_field(&mut self, field: &str) {
        if self.field.as_deref() == Some(field) {
            return;
        }
        self.field = Some(field.to_string());
    }
}

/// The metrics of a module's `#[metric]` fields, by name (the macros implement it): a field's
/// name, or `field/member` for a [`MetricCollection`]'s members.
pub trait MetricFields {
    /// Each metric's name and metric, in declaration order.
    fn metric_fields(&self) -> Vec<(String, &dyn Metric)>;
    /// The same, to update, reset or load.
    fn metric_fields_mut(&mut self) -> Vec<(String, &mut dyn Metric)>;
}

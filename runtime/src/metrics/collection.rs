//! [`MetricCollection`]: several metrics updated from one batch (its predictions brought to
//! the host once) and logged together under a prefix, as torchmetrics' `MetricCollection`.
//! As a `#[metric]` field, each member is a metric of its own to the trainer
//! (`field/member`): computed over the epoch and every rank, reset, checkpointed.
//!
//! ```
//! use fulmen::metrics::{Accuracy, F1Score, Metric, MetricCollection};
//! let mut val = MetricCollection::new("val_")
//!     .with("acc", Accuracy::multiclass(3))
//!     .with("f1", F1Score::multiclass(3));
//! val.update(&[0usize, 1, 2][..], &[0usize, 1, 1][..])?;
//! let names: Vec<String> = val.iter().map(|(name, _)| name).collect();
//! assert_eq!(names, ["val_acc", "val_f1"]);
//! assert_eq!(val.get("acc").unwrap().compute()?, 2.0 / 3.0);
//! # Ok::<(), fulmen::Error>(())
//! ```
//!
//! In a step: `self.val.update(&logits, &y)?; ctx.log_dict(self.val.iter());`.

use super::inputs::{HostPreds, HostTargets, Preds, Targets};
use super::state::State;
use super::Metric;
use crate::Result;

/// A metric that a collection updates from host predictions and targets: the classification,
/// ranking and calibration metrics, the perplexity, and the regression metrics (predictions and
/// targets as values).
pub trait HostUpdate: Metric + BoxedUpdate {
    /// One batch's state (of the metric's parts) from predictions on the host; an error names
    /// what does not fit.
    fn batch_state(&self, preds: &HostPreds, target: &HostTargets) -> Result<State>;
    /// Adds a batch already on the host; an error adds nothing.
    fn update_host(&mut self, preds: &HostPreds, target: &HostTargets) -> Result<()> {
        let batch = self.batch_state(preds, target)?;
        self.tracked_mut().add(batch)
    }
}

/// A boxed copy of a [`HostUpdate`] (a collection is cloned with its module); every `Clone`
/// one has it.
pub trait BoxedUpdate {
    /// A copy.
    fn boxed(&self) -> Box<dyn HostUpdate>;
}

impl<M: HostUpdate + Clone + 'static> BoxedUpdate for M {
    fn boxed(&self) -> Box<dyn HostUpdate> {
        Box::new(self.clone())
    }
}

/// Metrics updated together and logged under one prefix.
pub struct MetricCollection {
    prefix: String,
    members: Vec<(String, Box<dyn HostUpdate>)>,
}

impl MetricCollection {
    /// An empty collection whose members are logged as `prefix` + their name.
    pub fn new(prefix: &str) -> Self {
        Self {
            prefix: prefix.to_string(),
            members: Vec::new(),
        }
    }

    /// Adds `metric` under `name`.
    pub fn with(mut self, name: &str, metric: impl HostUpdate + 'static) -> Self {
        self.members.push((name.to_string(), Box::new(metric)));
        self
    }

    /// Adds a batch to every member (the predictions brought to the host once). An error of
    /// any member adds the batch to none.
    pub fn update(&mut self, preds: impl Preds, target: impl Targets) -> Result<()> {
        let (preds, target) = (preds.host()?, target.host());
        let batches = (self.members.iter())
            .map(|(_, m)| m.batch_state(&preds, &target))
            .collect::<Result<Vec<_>>>()?;
        for ((_, m), batch) in self.members.iter_mut().zip(batches) {
            m.tracked_mut().add(batch)?;
        }
        Ok(())
    }

    /// The member `name`.
    pub fn get(&self, name: &str) -> Option<&dyn Metric> {
        let found = self.members.iter().find(|(n, _)| n == name);
        found.map(|(_, m)| &**m as &dyn Metric)
    }

    /// Each member under its logged name (prefix + name): what `ctx.log_dict` takes.
    pub fn iter(&self) -> impl Iterator<Item = (String, &dyn Metric)> {
        let prefix = &self.prefix;
        (self.members.iter()).map(move |(n, m)| (format!("{prefix}{n}"), &**m as &dyn Metric))
    }

    /// Every member, forgotten.
    pub fn reset(&mut self) {
        self.members.iter_mut().for_each(|(_, m)| m.reset());
    }
}

impl Default for MetricCollection {
    fn default() -> Self {
        Self::new("")
    }
}

impl Clone for MetricCollection {
    fn clone(&self) -> Self {
        Self {
            prefix: self.prefix.clone(),
            members: (self.members.iter())
                .map(|(n, m)| (n.clone(), m.boxed()))
                .collect(),
        }
    }
}

impl std::fmt::Debug for MetricCollection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let names: Vec<&str> = self.members.iter().map(|(n, _)| n.as_str()).collect();
        f.debug_struct("MetricCollection")
            .field("prefix", &self.prefix)
            .field("members", &names)
            .finish()
    }
}

/// What a `#[metric]` field is to the trainer: its metrics by name (one, named as the field;
/// a collection's members as `field/member`).
pub trait MetricField {
    /// The metrics, named under `field`.
    fn metrics(&self, field: &str) -> Vec<(String, &dyn Metric)>;
    /// The same, to update, reset or load.
    fn metrics_mut(&mut self, field: &str) -> Vec<(String, &mut dyn Metric)>;
}

impl<M: Metric> MetricField for M {
    fn metrics(&self, field: &str) -> Vec<(String, &dyn Metric)> {
        vec![(field.to_string(), self)]
    }
    fn metrics_mut(&mut self, field: &str) -> Vec<(String, &mut dyn Metric)> {
        vec![(field.to_string(), self)]
    }
}

impl MetricField for MetricCollection {
    fn metrics(&self, field: &str) -> Vec<(String, &dyn Metric)> {
        (self.members.iter())
            .map(|(n, m)| (format!("{field}/{n}"), &**m as &dyn Metric))
            .collect()
    }
    fn metrics_mut(&mut self, field: &str) -> Vec<(String, &mut dyn Metric)> {
        (self.members.iter_mut())
            .map(|(n, m)| (format!("{field}/{n}"), &mut **m as &mut dyn Metric))
            .collect()
    }
}

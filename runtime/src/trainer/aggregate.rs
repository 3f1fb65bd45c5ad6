//! Reduction of logged values over an epoch, as Lightning's `ResultCollection` does.

use std::collections::BTreeMap;

use crate::context::{LogEntry, Reduce};

#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
struct Running {
    reduce: Reduce,
    #[serde(with = "crate::checkpoint::float")]
    weighted_sum: f64,
    weight: f64,
    #[serde(with = "crate::checkpoint::float")]
    sum: f64,
    #[serde(with = "crate::checkpoint::float")]
    max: f64,
    #[serde(with = "crate::checkpoint::float")]
    min: f64,
    prog_bar: bool,
    logger: bool,
    on_step: bool,
}

/// Epoch-level values of the `on_epoch` entries logged during one loop.
/// Serializable, so that a checkpoint saved inside an epoch resumes its running values.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct EpochMetrics {
    running: BTreeMap<String, Running>,
}

/// One reduced metric, with the options it was logged with.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Reduced {
    pub value: f64,
    pub prog_bar: bool,
    pub logger: bool,
    pub on_step: bool,
}

impl Reduced {
    /// The name an epoch value is published under: `name_epoch` when the value is also
    /// logged per step (as `name_step`), else `name`.
    pub(crate) fn key(&self, name: &str) -> String {
        if self.on_step {
            format!("{name}_epoch")
        } else {
            name.to_string()
        }
    }
}

impl EpochMetrics {
    pub(crate) fn add(&mut self, entry: &LogEntry) {
        if !entry.on_epoch {
            return;
        }
        let r = self
            .running
            .entry(entry.name.clone())
            .or_insert_with(|| Running {
                reduce: entry.reduce,
                weighted_sum: 0.0,
                weight: 0.0,
                sum: 0.0,
                max: f64::NEG_INFINITY,
                min: f64::INFINITY,
                prog_bar: entry.prog_bar,
                logger: entry.logger,
                on_step: entry.on_step,
            });
        let w = entry.batch_size.max(1) as f64;
        r.weighted_sum += entry.value * w;
        r.weight += w;
        r.sum += entry.value;
        r.max = r.max.max(entry.value);
        r.min = r.min.min(entry.value);
    }

    /// The epoch value of every metric, and a fresh start for the next epoch.
    pub(crate) fn take(&mut self) -> BTreeMap<String, Reduced> {
        std::mem::take(&mut self.running)
            .into_iter()
            .map(|(name, r)| {
                let value = match r.reduce {
                    Reduce::Mean => r.weighted_sum / r.weight,
                    Reduce::Sum => r.sum,
                    Reduce::Max => r.max,
                    Reduce::Min => r.min,
                };
                let reduced = Reduced {
                    value,
                    prog_bar: r.prog_bar,
                    logger: r.logger,
                    on_step: r.on_step,
                };
                (name, reduced)
            })
            .collect()
    }
}

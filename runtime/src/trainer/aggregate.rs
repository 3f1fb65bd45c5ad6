//! Reduction of logged values over an epoch, as Lightning's `ResultCollection` does.

use std::collections::BTreeMap;

use crate::context::{LogEntry, Reduce};
use crate::distributed::Collective;
use crate::Result;

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
    #[serde(default)]
    sync_dist: bool,
    /// A metric object's module field: its value is the metric's, computed at the epoch's
    /// end ([`EpochMetrics::resolve`]), not a reduction of step values.
    #[serde(default)]
    metric: Option<String>,
    #[serde(default)]
    resolved: Option<crate::checkpoint::float::F64>,
}

/// Epoch-level values of the `on_epoch` entries logged during one loop.
/// Serializable, so that a checkpoint saved inside an epoch resumes its running values.
#[derive(Debug, Default, serde::Serialize, serde::Deserialize)]
pub(crate) struct EpochMetrics {
    running: BTreeMap<String, Running>,
    /// The metric objects logged this epoch, on step or on epoch (field → a name it was
    /// logged under): reset at its end.
    #[serde(default)]
    metrics_logged: BTreeMap<String, String>,
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
    /// logged per step (as `name_step`), else `name`; an evaluation loader's suffix stays last
    /// (`val_loss_epoch/dataloader_idx_1`, as Lightning forks the name).
    pub(crate) fn key(&self, name: &str) -> String {
        if !self.on_step {
            return name.to_string();
        }
        match name.rfind("/dataloader_idx_") {
            Some(at) => format!("{}_epoch{}", &name[..at], &name[at..]),
            None => format!("{name}_epoch"),
        }
    }
}

impl EpochMetrics {
    pub(crate) fn add(&mut self, entry: &LogEntry) {
        if let Some(field) = &entry.metric {
            (self.metrics_logged)
                .entry(field.clone())
                .or_insert_with(|| entry.name.clone());
        }
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
                sync_dist: entry.sync_dist,
                metric: entry.metric.clone(),
                resolved: None,
            });
        if r.metric.is_some() {
            return;
        }
        let w = entry.batch_size.max(1) as f64;
        r.weighted_sum += entry.value * w;
        r.weight += w;
        r.sum += entry.value;
        r.max = r.max.max(entry.value);
        r.min = r.min.min(entry.value);
    }

    /// Reduces the running values over every rank (those logged with `sync_dist`, or all):
    /// sums and weights add up, extremes take the extreme. The names are rank 0's, so every
    /// rank reduces the same values in the same order; a name rank 0 did not log is left as
    /// this rank has it.
    pub(crate) fn sync(&mut self, c: &dyn Collective, all: bool) -> Result<()> {
        if c.world_size() == 1 {
            return Ok(());
        }
        // A metric object's state is synced when it is computed.
        let mut names = self
            .running
            .iter()
            .filter(|(_, r)| r.metric.is_none() && (all || r.sync_dist))
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>()
            .join("\n")
            .into_bytes();
        c.broadcast(0, &mut names)?;
        let names = String::from_utf8(names)
            .map_err(|_| crate::Error::msg("rank 0 sent malformed metric names"))?;
        let names: Vec<&str> = names.split('\n').filter(|n| !n.is_empty()).collect();
        let (mut sums, mut extremes) = (Vec::new(), Vec::new());
        for name in &names {
            let r = self.running.get(*name);
            sums.extend(r.map_or([0.0; 3], |r| [r.weighted_sum, r.weight, r.sum]));
            extremes.extend(r.map_or([f64::NEG_INFINITY; 2], |r| [r.max, -r.min]));
        }
        c.all_reduce_sum_f64(&mut sums)?;
        c.all_reduce_max_f64(&mut extremes)?;
        for (i, name) in names.iter().enumerate() {
            if let Some(r) = self.running.get_mut(*name) {
                [r.weighted_sum, r.weight, r.sum] = [sums[3 * i], sums[3 * i + 1], sums[3 * i + 2]];
                r.max = extremes[2 * i];
                r.min = -extremes[2 * i + 1];
            }
        }
        Ok(())
    }

    /// The metric objects logged per epoch: (name logged, module field).
    pub(crate) fn metric_logs(&self) -> Vec<(String, String)> {
        (self.running.iter())
            .filter_map(|(name, r)| Some((name.clone(), r.metric.clone()?)))
            .collect()
    }

    /// The metric objects logged this epoch (field → a name it was logged under), forgotten.
    pub(crate) fn take_metrics_logged(&mut self) -> BTreeMap<String, String> {
        std::mem::take(&mut self.metrics_logged)
    }

    /// A metric object's epoch value, computed from its state.
    pub(crate) fn resolve(&mut self, name: &str, value: f64) {
        if let Some(r) = self.running.get_mut(name) {
            r.resolved = Some(crate::checkpoint::float::F64(value));
        }
    }

    /// The epoch value of every metric, and a fresh start for the next epoch.
    pub(crate) fn take(&mut self) -> BTreeMap<String, Reduced> {
        std::mem::take(&mut self.running)
            .into_iter()
            .map(|(name, r)| {
                let value = match r.reduce {
                    _ if r.metric.is_some() => r.resolved.map_or(f64::NAN, |v| v.0),
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

//! Logged values and the logger (Lightning's `logger_connector/`): step values into
//! `callback_metrics`, the progress bar and, every `log_every_n_steps`, the logger; epoch
//! values reduced, published and written; the hyperparameters.

use std::collections::BTreeMap;

use crate::checkpoint::Ckpt;
use crate::context::LogEntry;
use crate::datamodule::DataModule;
use crate::module::LightningModule;
use crate::trainer::aggregate::{EpochMetrics, Reduced};
use crate::trainer::loops::Run;
use crate::trainer::{LoggerChoice, Trainer};
use crate::{Error, Result, TrainDevice};

impl Trainer {
    /// Creates the logger on first use, so that building a trainer touches no file.
    pub(in crate::trainer) fn ensure_logger(&mut self) -> Result<()> {
        match self.logger_choice.take() {
            Some(LoggerChoice::Named(names)) => {
                self.view.logger = crate::loggers::by_name(&self.default_root_dir, &names)?;
            }
            Some(LoggerChoice::Custom(logger)) => self.view.logger = Some(logger),
            Some(LoggerChoice::Off) | None => {}
        }
        Ok(())
    }
}

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// The module's and the data module's hyperparameters, to the logger.
    pub(in crate::trainer) fn log_hparams(&mut self) -> Result<()> {
        let mut hparams = self.model.hparams();
        hparams.extend(&self.dm.hparams());
        match self.view.logger.as_deref_mut() {
            Some(logger) => logger.log_hyperparams(&hparams),
            None => Ok(()),
        }
    }

    /// The metric objects at a loop's end (`loop_stage`): the callbacks' `with_metrics`;
    /// then each logged per epoch is computed from every rank's state, and every one logged
    /// is reset (as Lightning does with torchmetrics objects). A metric that is no
    /// `#[metric]` field of the module is refused.
    pub(in crate::trainer) fn compute_metric_logs(
        &mut self,
        metrics: &mut EpochMetrics,
        loop_stage: crate::Stage,
    ) -> Result<()> {
        let mut fields = self.model.metric_fields_mut();
        if !fields.is_empty() {
            for cb in self.callbacks.iter_mut() {
                cb.with_metrics(self.view, loop_stage, &mut fields, &*self.dist.collective);
            }
        }
        drop(fields);
        self.view.take_error()?;
        let logged = metrics.take_metrics_logged();
        if let Some(name) = logged.get("") {
            return Err(Error::msg(format!(
                "`{name}` logs a metric that is not a #[metric] field of {}: make it one (the trainer then computes it over the epoch and every rank), or log its value (`metric.compute()?`)",
                M::NAME
            )));
        }
        for (name, field) in metrics.metric_logs() {
            let fields = self.model.metric_fields();
            let metric = fields.iter().find(|(f, _)| *f == field).ok_or_else(|| {
                Error::msg(format!(
                    "`{name}` logs metric field `{field}`, which {} does not have",
                    M::NAME
                ))
            })?;
            let value = (metric.1.compute_synced(&*self.dist.collective))
                .map_err(|e| Error::msg(format!("`{name}`: {e}")))?;
            metrics.resolve(&name, value);
        }
        for (field, metric) in self.model.metric_fields_mut() {
            if logged.contains_key(&field) {
                metric.reset();
            }
        }
        Ok(())
    }

    /// Step-level values: into `callback_metrics` and the progress bar now, into the logger
    /// every `log_every_n_steps` steps (`step`: the optimizer steps done, or under manual
    /// optimization the batches done, as Lightning's `_batches_that_stepped`); epoch-level
    /// values into the running reduction.
    pub(in crate::trainer) fn record_step_logs(
        &mut self,
        logs: &[LogEntry],
        step: usize,
    ) -> Result<()> {
        let write = self.view.logger.is_some()
            && (step + 1).is_multiple_of(self.settings.log_every_n_steps);
        let mut to_logger = BTreeMap::new();
        for entry in logs {
            self.position.epoch_metrics.add(entry);
            if !entry.on_step {
                continue;
            }
            let metrics = &mut self.view.callback_metrics;
            let key = if entry.on_epoch {
                let key = format!("{}_step", entry.name);
                metrics.insert(key.clone(), entry.value);
                key
            } else {
                entry.name.clone()
            };
            metrics.insert(entry.name.clone(), entry.value);
            if entry.prog_bar {
                self.view
                    .progress_bar_metrics
                    .insert(key.clone(), entry.value);
            }
            if write && entry.logger {
                to_logger.insert(key, entry.value);
            }
        }
        if to_logger.is_empty() {
            return Ok(());
        }
        to_logger.insert("epoch".to_string(), self.view.current_epoch as f64);
        match self.view.logger.as_deref_mut() {
            Some(logger) => logger.log_metrics(&to_logger, step),
            None => Ok(()),
        }
    }

    /// Epoch values into `callback_metrics` and the progress bar.
    pub(in crate::trainer) fn publish_epoch(&mut self, reduced: &BTreeMap<String, Reduced>) {
        for (name, r) in reduced {
            let key = r.key(name);
            self.view.callback_metrics.insert(name.clone(), r.value);
            self.view.callback_metrics.insert(key.clone(), r.value);
            if r.prog_bar {
                self.view.progress_bar_metrics.insert(key, r.value);
            }
        }
    }

    /// Epoch values into the logger, at the index of the last optimizer step.
    pub(in crate::trainer) fn log_epoch(
        &mut self,
        reduced: &BTreeMap<String, Reduced>,
    ) -> Result<()> {
        let mut row: BTreeMap<String, f64> = reduced
            .iter()
            .filter(|(_, r)| r.logger)
            .map(|(name, r)| (r.key(name), r.value))
            .collect();
        if row.is_empty() {
            return Ok(());
        }
        row.insert("epoch".to_string(), self.view.current_epoch as f64);
        let step = self.view.global_step.saturating_sub(1);
        match self.view.logger.as_deref_mut() {
            Some(logger) => logger.log_metrics(&row, step),
            None => Ok(()),
        }
    }
}

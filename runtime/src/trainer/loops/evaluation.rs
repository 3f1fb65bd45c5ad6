//! The validation and test loop (Lightning's `evaluation_loop.py`): every batch through
//! `validation_step` or `test_step`, the logged values reduced over the epoch and the ranks.

use std::collections::BTreeMap;

use super::{guard, sharded, Run};
use crate::checkpoint::Ckpt;
use crate::data::DataLoader;
use crate::datamodule::{DataModule, Stage};
use crate::module::LightningModule;
use crate::trainer::aggregate::EpochMetrics;
use crate::weights::At;
use crate::{Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// The validation or test loop over `loaders` (one after another); `limit` caps each
    /// one's batches (the sanity check), whose metrics are discarded. Returns the epoch's
    /// metrics: with several loaders, each loader's under its names ending in
    /// `/dataloader_idx_N` (Lightning's).
    pub(super) fn evaluate(
        &mut self,
        loaders: &[DataLoader<DM::EvalSample>],
        stage: Stage,
        limit: Option<usize>,
    ) -> Result<BTreeMap<String, f64>> {
        let test = stage == Stage::Test;
        let (allowed, setting) = match test {
            true => (&self.settings.limit_test_batches, "limit_test_batches"),
            false => (&self.settings.limit_val_batches, "limit_val_batches"),
        };
        // What the limit allows of the largest share (the same on every rank), of this one's.
        let totals = (loaders.iter())
            .map(|l| {
                Ok(allowed
                    .of(l.len_largest_share(), setting)?
                    .min(l.len())
                    .min(limit.unwrap_or(usize::MAX)))
            })
            .collect::<Result<Vec<usize>>>()?;
        let standalone = self.view.stage != Stage::Fit;
        if !self.view.sanity_checking && standalone {
            let label = if test { "Testing" } else { "Validation" };
            self.progress.start(label.into(), totals.iter().sum());
        }
        if test {
            self.model.on_test_model_eval(self.view);
        } else {
            self.model.on_validation_model_eval(self.view);
        }
        self.after_hook()?;
        if test {
            hook!(self, on_test_start());
            hook!(self, on_test_epoch_start());
        } else {
            hook!(self, on_validation_start());
            self.weights_hook(At::ValidationStart, false)?;
            hook!(self, on_validation_epoch_start());
        }
        let mut metrics = EpochMetrics::default();
        self.roots(true)?;
        let several = loaders.len() > 1;
        // The weights stay as they are: dense layers keep theirs packed (not FULL_SHARD's,
        // gathered anew every batch).
        let kept =
            (self.optimization.full_shard.is_none()).then(crate::kernels::keep_packed_weights);
        for (idx, (loader, &total)) in loaders.iter().zip(&totals).enumerate() {
            let loader_idx = several.then_some(idx);
            self.view.dataloader_idx = idx;
            for (batch_idx, samples) in loader.epoch(0).take(total).enumerate() {
                self.eval_batch(test, (batch_idx, loader_idx), samples, &mut metrics)?;
                self.check_signals()?;
                if standalone {
                    self.progress.advance(&self.view.progress_bar_metrics);
                }
            }
        }
        drop(kept);
        self.view.dataloader_idx = 0;
        self.roots(false)?;
        // Validation and test metrics are global: reduced over every rank's batches.
        let stage = if test { Stage::Test } else { Stage::Validate };
        self.compute_metric_logs(&mut metrics, stage)?;
        metrics.sync(&*self.dist.collective, true)?;
        let reduced = metrics.take();
        if !self.view.sanity_checking {
            self.publish_epoch(&reduced);
        }
        if test {
            hook!(self, on_test_epoch_end());
            hook!(self, on_test_end());
        } else {
            hook!(self, on_validation_epoch_end());
            hook!(self, on_validation_end());
            self.weights_hook(At::ValidationEnd, false)?;
        }
        if test {
            self.model.on_test_model_train(self.view);
        } else {
            self.model.on_validation_model_train(self.view);
        }
        self.after_hook()?;
        if !self.view.sanity_checking {
            self.log_epoch(&reduced)?;
            if standalone {
                self.progress.finish(&self.view.progress_bar_metrics);
            }
        }
        Ok(reduced
            .into_iter()
            .map(|(k, r)| (r.key(&k), r.value))
            .collect())
    }

    /// One batch (its index, and of several loaders the loader's) through `test_step` or
    /// `validation_step`, its logs into `metrics` (suffixed with the loader's index).
    fn eval_batch(
        &mut self,
        test: bool,
        (batch_idx, loader_idx): (usize, Option<usize>),
        samples: Vec<DM::EvalSample>,
        metrics: &mut EpochMetrics,
    ) -> Result<()> {
        let (rows, dataloader_idx) = (samples.len(), loader_idx.unwrap_or(0));
        // Lightning's order: the batch moves (through its transfer hooks) before its hooks.
        let batch = self.collated_eval(samples, batch_idx, dataloader_idx)?;
        if test {
            hook!(self, on_test_batch_start(batch_idx));
        } else {
            hook!(self, on_validation_batch_start(batch_idx));
        }
        let stage = if test { Stage::Test } else { Stage::Validate };
        let mut ctx = self.context(stage, batch_idx, rows);
        ctx.dataloader_idx = dataloader_idx;
        let (model, fsdp) = (&mut *self.model, &self.optimization.full_shard);
        if test {
            guard("test_step", batch_idx, || {
                sharded(fsdp, || model.test_step(batch, &mut ctx))
            })??;
        } else {
            guard("validation_step", batch_idx, || {
                sharded(fsdp, || model.validation_step(batch, &mut ctx))
            })??;
        }
        for entry in ctx.logs.iter_mut() {
            if let Some(idx) = loader_idx {
                entry.name = format!("{}/dataloader_idx_{idx}", entry.name);
            }
            metrics.add(entry);
        }
        if test {
            hook!(self, on_test_batch_end(batch_idx));
        } else {
            hook!(self, on_validation_batch_end(batch_idx));
        }
        Ok(())
    }
}

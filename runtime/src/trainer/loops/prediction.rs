//! The prediction loop (Lightning's `prediction_loop.py`): every batch through
//! `predict_step`, each prediction handed in order, with its samples' dataset indices, to the
//! run's sink (kept to be returned, written, or both; `prediction_writer.rs`).

use super::{guard, Run};
use crate::checkpoint::Ckpt;
use crate::data::DataLoader;
use crate::datamodule::{DataModule, Stage};
use crate::distributed::Ranks;
use crate::module::LightningModule;
use crate::{Error, Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// `predict_step` on every batch of `loader` (up to `limit_predict_batches`).
    pub(super) fn predict(&mut self, loader: &DataLoader<DM::PredictSample>) -> Result<()> {
        loader.validate("predict_dataloader")?;
        self.progress.start("Predicting".into(), loader.len());
        self.model.on_predict_model_eval(self.view);
        self.after_hook()?;
        hook!(self, on_predict_start());
        hook!(self, on_predict_epoch_start());
        let total =
            (self.settings.limit_predict_batches).of(loader.len(), "limit_predict_batches")?;
        let indices = loader.batch_indices(0);
        // The weights stay as they are: dense layers keep theirs packed (not FULL_SHARD's,
        // gathered anew every batch).
        let kept =
            (self.optimization.full_shard.is_none()).then(crate::kernels::keep_packed_weights);
        for ((batch_idx, samples), indices) in loader.epoch(0).take(total).enumerate().zip(indices)
        {
            let rows = samples.len();
            // Lightning's order: the batch moves (through its transfer hooks) before its hooks.
            let batch = self.collated_predict(samples, batch_idx)?;
            hook!(self, on_predict_batch_start(batch_idx));
            let mut ctx = self.context(Stage::Predict, batch_idx, rows);
            let model = &mut *self.model;
            let prediction = guard("predict_step", batch_idx, || {
                model.predict_step(batch, &mut ctx)
            })?;
            let ranks = Ranks {
                collective: &*self.dist.collective,
            };
            let sink = (self.predictions.as_deref_mut()).ok_or_else(|| {
                Error::msg("a prediction run without a place for its predictions")
            })?;
            sink.batch(self.view, &ranks, prediction, indices, batch_idx)?;
            hook!(self, on_predict_batch_end(batch_idx));
            self.check_signals()?;
            self.progress.advance(&self.view.progress_bar_metrics);
        }
        drop(kept);
        hook!(self, on_predict_epoch_end());
        let ranks = Ranks {
            collective: &*self.dist.collective,
        };
        if let Some(sink) = self.predictions.as_deref_mut() {
            sink.end(self.view, &ranks)?;
        }
        hook!(self, on_predict_end());
        self.progress.finish(&self.view.progress_bar_metrics);
        Ok(())
    }
}

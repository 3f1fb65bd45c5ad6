//! The prediction loop (Lightning's `prediction_loop.py`): every batch through
//! `predict_step`, the predictions kept in order.

use super::{guard, Run};
use crate::checkpoint::Ckpt;
use crate::data::DataLoader;
use crate::datamodule::{DataModule, Stage};
use crate::module::LightningModule;
use crate::{Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// `predict_step` on every batch of `loader` (up to `limit_predict_batches`).
    pub(super) fn predict(
        &mut self,
        loader: &DataLoader<DM::PredictSample>,
    ) -> Result<Vec<M::Prediction>> {
        loader.validate("predict_dataloader")?;
        let mut predictions = Vec::with_capacity(loader.len());
        self.progress.start("Predicting".into(), loader.len());
        hook!(self, on_predict_start());
        hook!(self, on_predict_epoch_start());
        let total =
            (self.settings.limit_predict_batches).of(loader.len(), "limit_predict_batches")?;
        for (batch_idx, samples) in loader.epoch(0).take(total).enumerate() {
            hook!(self, on_predict_batch_start(batch_idx));
            let mut ctx = self.context(Stage::Predict, batch_idx, samples.len());
            let batch = self.predict_batch(samples)?;
            let model = &mut *self.model;
            predictions.push(guard("predict_step", batch_idx, || {
                model.predict_step(batch, &mut ctx)
            })?);
            hook!(self, on_predict_batch_end(batch_idx));
            self.check_signals()?;
            self.progress.advance(&self.view.progress_bar_metrics);
        }
        hook!(self, on_predict_epoch_end());
        hook!(self, on_predict_end());
        self.progress.finish(&self.view.progress_bar_metrics);
        Ok(predictions)
    }
}

//! The trainer lent to a tuner (`crate::tuner`): a fit of a few steps with the tuner's callback
//! alone, no logger, no validation, after which the trainer is as it was.

use dfdx::tensor::Cpu;

use super::settings::Limit;
use super::Trainer;
use crate::callback::Callback;
use crate::checkpoint::Checkpoint;
use crate::context::OptimizationMode;
use crate::data::Collate;
use crate::datamodule::{DataModule, Stage};
use crate::module::{LightningModule, Precisions};
use crate::{Error, Result};

impl Trainer {
    /// Fits `model` for `steps` optimizer steps (fewer if `callback` asks to stop) with
    /// `callback` in place of the trainer's callbacks and logger and without validation; then
    /// the module's weights and the trainer's settings, callbacks and logger are restored,
    /// whatever the fit returned.
    pub(crate) fn trial_fit<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        steps: usize,
        callback: Box<dyn Callback>,
    ) -> Result<()>
    where
        M: Precisions,
        DM: DataModule,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        if <<M as LightningModule<f32, Cpu>>::Optimization as OptimizationMode>::MANUAL {
            return Err(Error::config(
                "lr_find",
                "a module under manual optimization steps its own optimizers: the range test needs automatic optimization (as Lightning's)",
            ));
        }
        let before = Checkpoint::of_module(&*model, <M as LightningModule<f32, Cpu>>::NAME)?;
        self.ensure_logger()?;
        let logger = self.view.logger.take();
        let callbacks = std::mem::replace(&mut self.callbacks, vec![callback]);
        let settings = self.settings.clone();
        let view = &self.view;
        let position = (
            view.current_epoch,
            view.global_step,
            view.callback_metrics.clone(),
            view.progress_bar_metrics.clone(),
        );
        let s = &mut self.settings;
        (s.max_steps, s.max_epochs, s.max_time) = (Some(steps), Some(usize::MAX), None);
        (s.min_epochs, s.min_steps) = (0, 0);
        (s.limit_val_batches, s.num_sanity_val_steps) = (Limit::Count(0), 0);
        // A diverging loss is what the callback looks for: it stops the fit, not an error.
        s.check_finite_loss = false;
        // The module's own callbacks (`configure_callbacks`) sit the trial out too.
        self.trial = true;
        let fitted = self.run_in_precision(model, datamodule, Stage::Fit, None);
        self.trial = false;
        self.settings = settings;
        self.callbacks = callbacks;
        self.view.logger = logger;
        let v = &mut self.view;
        (
            v.current_epoch,
            v.global_step,
            v.callback_metrics,
            v.progress_bar_metrics,
        ) = position;
        let restored = before.load_weights(model);
        fitted.and(restored)
    }

    /// `values` as rank 0 has them (of any length), on every rank (a tuner's result, the same
    /// everywhere).
    pub(crate) fn rank_zero_values(&self, values: &[f64]) -> Result<Vec<f64>> {
        let mut bytes: Vec<u8> = values.iter().flat_map(|v| v.to_le_bytes()).collect();
        self.dist.collective.broadcast(0, &mut bytes)?;
        let floats = bytes.chunks_exact(8).map(|b| {
            let mut a = [0u8; 8];
            a.copy_from_slice(b);
            f64::from_le_bytes(a)
        });
        Ok(floats.collect())
    }

    /// Whether this process is rank 0 of its run.
    pub(crate) fn is_global_zero(&self) -> bool {
        self.dist.env.is_global_zero()
    }
}

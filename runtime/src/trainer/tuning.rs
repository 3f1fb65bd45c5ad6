//! The trainer lent to a tuner (`crate::tuner`): a fit of a few steps with the tuner's callback
//! alone, no logger, no validation, after which the trainer is as it was.

use dfdx::tensor::Cpu;

use super::settings::Limit;
use super::Trainer;
use crate::callback::Callback;
use crate::checkpoint::Checkpoint;
use crate::data::Collate;
use crate::datamodule::{DataModule, Stage};
use crate::module::{LightningModule, Precisions};
use crate::Result;

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
        let before = Checkpoint::of_module(&*model, <M as LightningModule<f32, Cpu>>::NAME)?;
        self.ensure_logger()?;
        let logger = self.view.logger.take();
        let callbacks = std::mem::replace(&mut self.callbacks, vec![callback]);
        let settings = self.settings.clone();
        let s = &mut self.settings;
        (s.max_steps, s.max_epochs, s.max_time) = (Some(steps), Some(usize::MAX), None);
        (s.min_epochs, s.min_steps) = (0, 0);
        (s.limit_val_batches, s.num_sanity_val_steps) = (Limit::Count(0), 0);
        // A diverging loss is what the callback looks for: it stops the fit, not an error.
        s.check_finite_loss = false;
        let fitted = self.run_in_precision(model, datamodule, Stage::Fit, None);
        self.settings = settings;
        self.callbacks = callbacks;
        self.view.logger = logger;
        let restored = before.load_weights(model);
        fitted.and(restored)
    }
}

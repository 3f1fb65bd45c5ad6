//! Trials before a fit (`Callback::trial`, what `crate::tuner` and `LearningRateFinder` run):
//! a fit of a few steps with the trial's callback alone, no logger, no validation, after which
//! the module's weights and the trainer are as they were.

use dfdx::tensor::Cpu;

use super::settings::Limit;
use super::Trainer;
use crate::callback::{Callback, Trial};
use crate::checkpoint::Checkpoint;
use crate::context::OptimizationMode;
use crate::data::Collate;
use crate::datamodule::{DataModule, Stage};
use crate::distributed::Ranks;
use crate::module::{LightningModule, Precisions};
use crate::stage_data::DataFor;
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
        DM: DataModule + DataFor<M>,
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

    /// Runs the trial `callback` asks for ([`Callback::trial`]), if any, then what it does
    /// with its result.
    pub(crate) fn run_trial<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        callback: &mut dyn Callback,
    ) -> Result<()>
    where
        M: Precisions,
        DM: DataModule + DataFor<M>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        if let Some(trial) = callback.trial()? {
            self.run_asked(model, datamodule, trial)?;
        }
        Ok(())
    }

    /// Before a fit that does not resume: the trials its callbacks ask for, in their order.
    pub(crate) fn run_trials<M, DM>(&mut self, model: &mut M, datamodule: &mut DM) -> Result<()>
    where
        M: Precisions,
        DM: DataModule + DataFor<M>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        let mut trials = Vec::new();
        for callback in self.callbacks.iter_mut() {
            trials.extend(callback.trial()?);
        }
        for trial in trials {
            self.run_asked(model, datamodule, trial)?;
        }
        Ok(())
    }

    fn run_asked<M, DM>(&mut self, model: &mut M, datamodule: &mut DM, trial: Trial) -> Result<()>
    where
        M: Precisions,
        DM: DataModule + DataFor<M>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        self.trial_fit(model, datamodule, trial.steps, trial.callback)?;
        (trial.then)(&Ranks {
            collective: &*self.dist.collective,
        })
    }
}

//! The fit loop (Lightning's `fit_loop.py`): restore, configure the optimization, the sanity
//! check, then training epochs until a limit or a stop request ends them.

use super::Run;
use crate::checkpoint::{Checkpoint, Ckpt};
use crate::data::DataLoader;
use crate::datamodule::{DataModule, Stage};
use crate::module::LightningModule;
use crate::trainer::Limit;
use crate::weights::At;
use crate::{Result, TrainDevice};

/// Fit's loaders: the training one and the validation ones, and the batch to start from.
type FitLoaders<S, V> = (DataLoader<S>, Vec<DataLoader<V>>, usize);

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// `fit`, hook by hook, in Lightning's order: the module, data module and callbacks
    /// restored before `configure_optimizers`, the optimizer and loops after it; the loaders
    /// made after `on_fit_start` (the validation ones inside the sanity check, the training
    /// one after it), so that they come from a restored data module.
    pub(super) fn fit(&mut self) -> Result<()> {
        let mut resume = self.resume.take();
        if let Some(ckpt) = &mut resume {
            self.restore_modules(ckpt)?;
        }
        // Every rank starts from rank 0's weights (DDP's broadcast at construction).
        crate::distributed::broadcast_module(&*self.dist.collective, &mut *self.model)?;
        self.configure_optimization()?;
        if let Some(ckpt) = &resume {
            self.restore_training_state(ckpt)?;
        }
        self.optimization.own_shards();
        self.publish_fit()?;

        hook!(self, on_fit_start());
        self.weights_hook(At::FitStart, false)?;
        let val = self.sanity_check()?;
        let (train, val, mut start_batch) = self.fit_loaders(val, resume.as_ref())?;
        hook!(self, on_train_start());
        while self.position.train_batches > 0 && !self.done_training() {
            self.train_epoch(&train, &val, start_batch)?;
            start_batch = 0;
        }
        hook!(self, on_train_end());
        self.weights_hook(At::TrainEnd, false)?;
        if std::mem::take(&mut self.view.update_bn) {
            self.update_bn(&train)?;
        }
        hook!(self, on_fit_end());
        Ok(())
    }

    /// The training loader (continued where `resume` left it) and the validation loaders
    /// (`val`, made by the sanity check, or made now), and the batch of the current epoch to
    /// start from; what the view says of the epoch's batches.
    fn fit_loaders(
        &mut self,
        val: Option<Vec<DataLoader<DM::EvalSample>>>,
        resume: Option<&Checkpoint>,
    ) -> Result<FitLoaders<DM::Sample, DM::EvalSample>> {
        let mut train = self.train_loader()?;
        let val = match val {
            Some(val) => val,
            None => self.val_loaders()?,
        };
        let start = match resume {
            Some(ckpt) => self.resume_loader(ckpt, &mut train)?,
            None => 0,
        };
        self.position.train_loader_seed = Some(train.shuffle_seed());
        self.view.num_training_batches = self.position.train_batches;
        if let Some(why) = self.nothing_to_train() {
            if self.dist.env.is_global_zero() {
                eprintln!("warning: {why}: nothing will be trained");
            }
        }
        Ok((train, val, start))
    }

    /// What callbacks see of the run from `on_fit_start` on, and the hyperparameters logged.
    fn publish_fit(&mut self) -> Result<()> {
        let view = &mut *self.view;
        // Known once the training loader is made.
        view.num_training_batches = 0;
        view.loss_scale = self.optimization.loss_scale();
        view.model_parameters = super::super::ParamInfo::of_module(&*self.model)?;
        view.model_layers = <M as crate::spec::Layers>::LAYERS;
        self.view.update_bn_refused = self.update_bn_refusal()?;
        self.log_hparams()
    }

    /// The validation batches run before training to catch bugs early
    /// (`num_sanity_val_steps`), their metrics discarded; the validation loaders, made after
    /// `on_sanity_check_start` as Lightning makes them, or `None` when there is no sanity
    /// check. It runs when the module validates, validation loaders are defined
    /// (`has_val_dataloader`) and the settings allow (Lightning's rule: the loaders are not
    /// asked first); loaders that yield no batch run no validation hooks.
    fn sanity_check(&mut self) -> Result<Option<Vec<DataLoader<DM::EvalSample>>>> {
        let n = self.settings.num_sanity_val_steps;
        let off = matches!(
            self.settings.limit_val_batches,
            Limit::Count(0) | Limit::Fraction(0.0)
        );
        // Lightning's: a validation step, loaders defined, and batches allowed.
        if !M::HAS_VALIDATION_STEP || !self.has_val_loaders() || n == 0 || off {
            return Ok(None);
        }
        self.view.sanity_checking = true;
        let checked = self.sanity_loop(n);
        // Whatever happened: a later stage of this trainer is no sanity check.
        self.view.sanity_checking = false;
        checked.map(Some)
    }

    /// The sanity check's hooks, loaders and batches (at most `n` per loader).
    fn sanity_loop(&mut self, n: usize) -> Result<Vec<DataLoader<DM::EvalSample>>> {
        for cb in self.callbacks.iter_mut() {
            cb.on_sanity_check_start(self.view);
        }
        self.after_hook()?;
        // `val_loaders` keeps none unless one yields a batch (and `n` > 0 here).
        let val = self.val_loaders()?;
        if !val.is_empty() {
            self.evaluate(&val, Stage::Validate, Some(n))?;
        }
        for cb in self.callbacks.iter_mut() {
            cb.on_sanity_check_end(self.view);
        }
        self.after_hook()?;
        Ok(val)
    }

    /// Why `fit` will train no batch at all, when it will not: a limit of zero, or a
    /// checkpoint already past the limits.
    fn nothing_to_train(&self) -> Option<String> {
        let (s, epoch, step) = (
            self.settings,
            self.view.current_epoch,
            self.view.global_step,
        );
        let resumed = |what: &str, at: usize| match at {
            0 => String::new(),
            _ => format!(" (the checkpoint resumed from is at {what} {at})"),
        };
        if let Some(max) = s.max_epochs.filter(|&m| epoch >= m) {
            return Some(format!("max_epochs={max}{}", resumed("epoch", epoch)));
        }
        if let Some(max) = s.max_steps.filter(|&m| step >= m) {
            return Some(format!("max_steps={max}{}", resumed("step", step)));
        }
        (self.position.train_batches == 0).then(|| match s.limit_train_batches {
            Limit::Count(0) | Limit::Fraction(0.0) => "limit_train_batches=0".to_string(),
            Limit::Fraction(1.0) => "the training data loader yields no batch".to_string(),
            _ => "the training data loader yields no batch at this limit_train_batches".to_string(),
        })
    }

    pub(super) fn max_steps_reached(&self) -> bool {
        (self.settings.max_steps).is_some_and(|m| self.view.global_step >= m)
    }

    /// A stop request that `min_epochs` / `min_steps` allow now.
    pub(super) fn stop_requested(&mut self, epochs_done: usize) -> bool {
        if !self.view.should_stop {
            return false;
        }
        if self.settings.can_stop(epochs_done, self.view.global_step) {
            return true;
        }
        // Lightning's rule: the request is dropped until the minimums are met.
        self.view.should_stop = false;
        false
    }

    fn done_training(&mut self) -> bool {
        let epoch = self.view.current_epoch;
        self.settings.max_epochs.is_some_and(|m| epoch >= m)
            || self.max_steps_reached()
            || self.stop_requested(epoch)
    }
}

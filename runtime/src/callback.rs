//! Callbacks: code run at fixed points of training (Lightning's `Callback`).
//!
//! Every hook has an empty default; implement the ones you need. At each point the trainer
//! calls the callbacks (in the order given) before the module's hook of the same name.
//!
//! ```
//! use fulmen::prelude::*;
//!
//! struct TrainingLogger;
//! impl Callback for TrainingLogger {
//!     fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
//!         if let Some(loss) = trainer.callback_metrics().get("train_loss") {
//!             println!("Epoch {} ended. Loss: {loss:.4}", trainer.current_epoch());
//!         }
//!     }
//! }
//! ```

/// Declares the lifecycle hooks shared by [`Callback`] and [`crate::LightningModule`], each
/// with an empty default body. The list is the one `#[lightning_module]` checks names against.
#[macro_export]
#[doc(hidden)]
macro_rules! __lifecycle_hooks {
    () => {
        /// Before the stage's data is used, after the data module's `setup`.
        fn setup(&mut self, _trainer: &mut $crate::TrainerView, _stage: $crate::Stage) {}
        /// After the stage ends.
        fn teardown(&mut self, _trainer: &mut $crate::TrainerView, _stage: $crate::Stage) {}
        /// Called when `fit` begins, after a checkpoint to resume from is restored and the
        /// optimizers are configured, before the sanity check.
        fn on_fit_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called when `fit` ends, after `on_train_end`.
        fn on_fit_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called when training begins, after the sanity check and before the first epoch.
        fn on_train_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called when training ends, after the last training epoch.
        fn on_train_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called when the training epoch begins, before its first batch.
        fn on_train_epoch_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called when the training epoch ends, after its validation and once its metrics are
        /// reduced; monitoring callbacks run after the module, the others before it.
        fn on_train_epoch_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called before each training batch's `training_step`.
        fn on_train_batch_start(&mut self, _trainer: &mut $crate::TrainerView, _batch_idx: usize) {}
        /// `loss` is the value the step returned.
        fn on_train_batch_end(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _loss: f64,
            _batch_idx: usize,
        ) {
        }
        /// Called on the first batch of each gradient-accumulation window, after `training_step`
        /// and before the backward pass, while the gradients are still the last step's (the
        /// module's `optimizer_zero_grad` zeroes them next).
        fn on_before_zero_grad(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called before each training batch's backward pass; `loss` is the value the step
        /// returned.
        fn on_before_backward(&mut self, _trainer: &mut $crate::TrainerView, _loss: f64) {}
        /// Called after each training batch's backward pass, before any optimizer step.
        fn on_after_backward(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called at the end of each accumulation window (or epoch), once the gradients are
        /// averaged over the ranks and checked, before clipping and the optimizer step.
        fn on_before_optimizer_step(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called when a validation loop begins (in `fit`, the sanity check or `validate`), before
        /// `on_validation_epoch_start`.
        fn on_validation_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called when a validation loop ends, after `on_validation_epoch_end`.
        fn on_validation_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called before the first batch of a validation loop.
        fn on_validation_epoch_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called after the last batch of a validation loop, once the logged values are reduced
        /// over the epoch and the ranks.
        fn on_validation_epoch_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called before each validation batch's `validation_step`.
        fn on_validation_batch_start(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _batch_idx: usize,
        ) {
        }
        /// Called after each validation batch's `validation_step`.
        fn on_validation_batch_end(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _batch_idx: usize,
        ) {
        }
        /// Called when the test loop begins, before `on_test_epoch_start`.
        fn on_test_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called when the test loop ends, after `on_test_epoch_end`.
        fn on_test_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called before the first batch of the test loop.
        fn on_test_epoch_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called after the last batch of the test loop, once the logged values are reduced over
        /// the epoch and the ranks.
        fn on_test_epoch_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called before each test batch's `test_step`.
        fn on_test_batch_start(&mut self, _trainer: &mut $crate::TrainerView, _batch_idx: usize) {}
        /// Called after each test batch's `test_step`.
        fn on_test_batch_end(&mut self, _trainer: &mut $crate::TrainerView, _batch_idx: usize) {}
        /// Called when the prediction loop begins, before `on_predict_epoch_start`.
        fn on_predict_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called when the prediction loop ends, after `on_predict_epoch_end`.
        fn on_predict_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called before the first batch of the prediction loop.
        fn on_predict_epoch_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called after the last batch of the prediction loop.
        fn on_predict_epoch_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        /// Called before each prediction batch's `predict_step`.
        fn on_predict_batch_start(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _batch_idx: usize,
        ) {
        }
        /// Called after each prediction batch's `predict_step`.
        fn on_predict_batch_end(&mut self, _trainer: &mut $crate::TrainerView, _batch_idx: usize) {}
        /// While a checkpoint is being saved: add to `checkpoint.extra_mut()` what should
        /// survive a restart.
        fn on_save_checkpoint(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _checkpoint: &mut $crate::checkpoint::Checkpoint,
        ) {
        }
    };
}

/// Code run at fixed points of training. See the [module docs](self).
pub trait Callback {
    /// A short name for logs and errors.
    fn name(&self) -> String {
        let full = std::any::type_name::<Self>();
        full.rsplit("::").next().unwrap_or(full).to_string()
    }

    /// Monitoring callbacks (checkpointing, early stopping) run their `on_train_epoch_end`
    /// after the module's, so that they see what the module logged there.
    fn is_monitoring(&self) -> bool {
        false
    }

    /// The key of this callback's state in checkpoints (default: its name). Two callbacks of
    /// one type that both keep state need different keys.
    fn state_key(&self) -> String {
        self.name()
    }

    /// What this callback keeps across a restart (Lightning's `state_dict`); `None` keeps
    /// nothing.
    fn state_dict(&self) -> Option<serde_json::Value> {
        None
    }

    /// Takes back what [`state_dict`](Self::state_dict) returned, when a run resumes.
    fn load_state_dict(&mut self, _state: &serde_json::Value) -> crate::Result<()> {
        Ok(())
    }

    /// For checkpointing callbacks: where they keep checkpoints, so that a trainer can resume
    /// from `"last"` or `"best"` and knows not to add a default checkpoint callback.
    fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
        None
    }

    /// With the module's weights (and, in training, their gradients) at `at`, after the hook
    /// of that point (Lightning's hooks' `pl_module`): what grad-norm monitors and weight
    /// averaging read and write. See [`crate::weights`].
    fn with_weights(
        &mut self,
        _trainer: &mut crate::TrainerView,
        _at: crate::weights::At,
        _weights: &mut dyn crate::weights::Weights,
    ) {
    }

    /// At the end of a loop's epoch (`loop_stage`: `Fit` for training, `Validate`, `Test`),
    /// the module's metrics by name (`#[metric]` fields; a collection's members as
    /// `field/member`), before the trainer computes and resets those logged: what
    /// [`MetricPlots`](crate::callbacks::MetricPlots) draws. Every rank calls it with the
    /// same metrics, so that their states can be synced over `ranks`
    /// ([`State::sync`](crate::metrics::State::sync)).
    fn with_metrics(
        &mut self,
        _trainer: &mut crate::TrainerView,
        _loop_stage: crate::Stage,
        _metrics: &mut [(String, &mut dyn crate::metrics::Metric)],
        _ranks: &dyn crate::distributed::Collective,
    ) {
    }

    /// A short fit to run before `fit` begins (not when it resumes from a checkpoint): its
    /// own callback in place of the trainer's, without logger or validation, after which the
    /// module's weights and the trainer are as they were. [`LearningRateFinder`] runs its
    /// range test so (Lightning's runs it in `on_fit_start`). `None`, the default, for the
    /// others.
    ///
    /// [`LearningRateFinder`]: crate::callbacks::LearningRateFinder
    fn trial(&mut self) -> crate::Result<Option<Trial>> {
        Ok(None)
    }

    /// Called before the sanity check's validation batches (`num_sanity_val_steps`) run, before
    /// the validation loaders are made. A callback's alone, as in Lightning.
    fn on_sanity_check_start(&mut self, _trainer: &mut crate::TrainerView) {}
    /// Called after the sanity check's validation batches, whose metrics are discarded, before
    /// the training loader is made. A callback's alone, as in Lightning.
    fn on_sanity_check_end(&mut self, _trainer: &mut crate::TrainerView) {}

    /// When the run ends on an error (a failed step, a signal: [`Error::Interrupted`]),
    /// before the data module's `on_exception` and before the loggers are flushed and
    /// closed (no `teardown` follows); the error is returned by the call that ran the stage.
    ///
    /// [`Error::Interrupted`]: crate::Error::Interrupted
    fn on_exception(&mut self, _trainer: &mut crate::TrainerView, _error: &crate::Error) {}

    /// When a run resumes from a checkpoint: after the module's weights and the data
    /// module's state are loaded, before any callback's
    /// [`load_state_dict`](Self::load_state_dict) (Lightning's order).
    fn on_load_checkpoint(
        &mut self,
        _trainer: &mut crate::TrainerView,
        _checkpoint: &crate::checkpoint::Checkpoint,
    ) {
    }

    crate::__lifecycle_hooks!();
}

/// What a callback asks to run before a fit ([`Callback::trial`]).
pub struct Trial {
    /// Optimizer steps at most (fewer if `callback` stops the fit).
    pub steps: usize,
    /// The trial's only callback.
    pub callback: Box<dyn Callback>,
    /// Then, on every rank, with the ranks to agree on what it found.
    pub then: AfterTrial,
}

/// What a [`Trial`] does with its result, on every rank.
pub type AfterTrial = Box<dyn FnOnce(&crate::distributed::Ranks<'_>) -> crate::Result<()>>;

/// Where a checkpointing callback keeps its checkpoints.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CheckpointPaths {
    /// The directory it writes to (once known: the default depends on the logger).
    pub dirpath: Option<std::path::PathBuf>,
    /// The best checkpoint by its monitored metric.
    pub best: Option<std::path::PathBuf>,
    /// The latest checkpoint saved.
    pub last: Option<std::path::PathBuf>,
}

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
        fn on_fit_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_fit_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_sanity_check_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_sanity_check_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_train_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_train_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_train_epoch_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_train_epoch_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_train_batch_start(&mut self, _trainer: &mut $crate::TrainerView, _batch_idx: usize) {}
        /// `loss` is the value the step returned.
        fn on_train_batch_end(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _loss: f64,
            _batch_idx: usize,
        ) {
        }
        fn on_before_zero_grad(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_before_backward(&mut self, _trainer: &mut $crate::TrainerView, _loss: f64) {}
        fn on_after_backward(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_before_optimizer_step(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_validation_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_validation_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_validation_epoch_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_validation_epoch_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_validation_batch_start(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _batch_idx: usize,
        ) {
        }
        fn on_validation_batch_end(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _batch_idx: usize,
        ) {
        }
        fn on_test_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_test_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_test_epoch_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_test_epoch_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_test_batch_start(&mut self, _trainer: &mut $crate::TrainerView, _batch_idx: usize) {}
        fn on_test_batch_end(&mut self, _trainer: &mut $crate::TrainerView, _batch_idx: usize) {}
        fn on_predict_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_predict_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_predict_epoch_start(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_predict_epoch_end(&mut self, _trainer: &mut $crate::TrainerView) {}
        fn on_predict_batch_start(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _batch_idx: usize,
        ) {
        }
        fn on_predict_batch_end(&mut self, _trainer: &mut $crate::TrainerView, _batch_idx: usize) {}
        /// While a checkpoint is being saved: add to `checkpoint.extra_mut()` what should
        /// survive a restart.
        fn on_save_checkpoint(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _checkpoint: &mut $crate::checkpoint::Checkpoint,
        ) {
        }
        /// When a run resumes from a checkpoint, after the weights are loaded.
        fn on_load_checkpoint(
            &mut self,
            _trainer: &mut $crate::TrainerView,
            _checkpoint: &$crate::checkpoint::Checkpoint,
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

    crate::__lifecycle_hooks!();
}

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

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

    crate::__lifecycle_hooks!();
}

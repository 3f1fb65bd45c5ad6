//! `LambdaCallback`: a callback made of closures, one per hook (Lightning's
//! `LambdaCallback`), for the one-off hook that does not deserve a type.
//!
//! ```
//! use fulmen::callbacks::LambdaCallback;
//! let report = LambdaCallback::new()
//!     .on_train_epoch_end(|t| println!("epoch {} done", t.current_epoch()))
//!     .on_train_batch_end(|t, loss, batch| if batch == 0 { println!("first loss {loss}") });
//! ```

use crate::callback::Callback;
use crate::TrainerView;

type Hook = Box<dyn FnMut(&mut TrainerView)>;
type BatchHook = Box<dyn FnMut(&mut TrainerView, usize)>;
type LossHook = Box<dyn FnMut(&mut TrainerView, f64, usize)>;

macro_rules! lambda_callback {
    (plain: $($p:ident),*; batch: $($b:ident),*) => {
        /// A callback made of closures; see the [module docs](self).
        #[derive(Default)]
        pub struct LambdaCallback {
            $($p: Option<Hook>,)*
            $($b: Option<BatchHook>,)*
            on_train_batch_end: Option<LossHook>,
        }

        impl LambdaCallback {
            /// A callback with no closures: every hook does nothing.
            pub fn new() -> Self {
                Self::default()
            }
            $(
                /// Sets the closure run at the hook this method is named after.
                pub fn $p(mut self, f: impl FnMut(&mut TrainerView) + 'static) -> Self {
                    self.$p = Some(Box::new(f));
                    self
                }
            )*
            $(
                /// The closure gets the batch index.
                pub fn $b(mut self, f: impl FnMut(&mut TrainerView, usize) + 'static) -> Self {
                    self.$b = Some(Box::new(f));
                    self
                }
            )*
            /// The closure gets the step's loss and the batch index.
            pub fn on_train_batch_end(
                mut self,
                f: impl FnMut(&mut TrainerView, f64, usize) + 'static,
            ) -> Self {
                self.on_train_batch_end = Some(Box::new(f));
                self
            }
        }

        impl Callback for LambdaCallback {
            $(
                fn $p(&mut self, trainer: &mut TrainerView) {
                    if let Some(f) = self.$p.as_mut() {
                        f(trainer)
                    }
                }
            )*
            $(
                fn $b(&mut self, trainer: &mut TrainerView, batch_idx: usize) {
                    if let Some(f) = self.$b.as_mut() {
                        f(trainer, batch_idx)
                    }
                }
            )*
            fn on_train_batch_end(&mut self, trainer: &mut TrainerView, loss: f64, batch_idx: usize) {
                if let Some(f) = self.on_train_batch_end.as_mut() {
                    f(trainer, loss, batch_idx)
                }
            }
        }
    };
}

lambda_callback!(
    plain: on_fit_start, on_fit_end, on_sanity_check_start, on_sanity_check_end,
        on_train_start, on_train_end, on_train_epoch_start, on_train_epoch_end,
        on_before_zero_grad, on_after_backward, on_before_optimizer_step,
        on_validation_start, on_validation_end, on_validation_epoch_start,
        on_validation_epoch_end, on_test_start, on_test_end, on_test_epoch_start,
        on_test_epoch_end, on_predict_start, on_predict_end, on_predict_epoch_start,
        on_predict_epoch_end;
    batch: on_train_batch_start, on_validation_batch_start, on_validation_batch_end,
        on_test_batch_start, on_test_batch_end, on_predict_batch_start, on_predict_batch_end
);

//! The model side of training (Lightning's `LightningModule`).
//!
//! Write it with `#[lightning_module]` on the struct and on its impl; the macro implements this
//! trait from the methods you write and checks their names and signatures at compile time.

use dfdx::nn::TensorCollection;

use crate::callback::Callback;
use crate::context::{Loss, StepContext};
use crate::device::{FloatDtype, TrainDevice};
use crate::hparams::{CarryHParams, Hyperparameters};
use crate::optim::Optim;

/// A model with its training logic. `E` is the dtype, `D` the device.
pub trait LightningModule<E: FloatDtype, D: TrainDevice<E>>:
    TensorCollection<E, D> + Hyperparameters + CarryHParams<E, D>
{
    /// What every step receives, as taken from `training_step`'s signature.
    type Batch;
    /// What `predict_step` returns (`()` without one).
    type Prediction;

    /// The struct's name, for messages.
    const NAME: &'static str;
    /// Whether the module wrote a `validation_step` (without one the validation loop is skipped).
    const HAS_VALIDATION_STEP: bool = false;
    const HAS_TEST_STEP: bool = false;
    const HAS_PREDICT_STEP: bool = false;

    /// Computes the loss of one batch; the trainer runs backward and the optimizer on it.
    fn training_step(&mut self, batch: Self::Batch, ctx: &mut StepContext<E, D>) -> Loss<E, D>;

    fn validation_step(&mut self, _batch: Self::Batch, _ctx: &mut StepContext<E, D>) {}

    fn test_step(&mut self, _batch: Self::Batch, _ctx: &mut StepContext<E, D>) {}

    fn predict_step(&mut self, batch: Self::Batch, ctx: &mut StepContext<E, D>)
        -> Self::Prediction;

    /// The optimizer (and, later, its learning-rate schedule).
    fn configure_optimizers(&self) -> Optim;

    /// Callbacks the module brings with it, added after the trainer's.
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        Vec::new()
    }

    crate::__lifecycle_hooks!();
}

//! Who steps the optimizers: the trainer ([`Automatic`], Lightning's default) or the module's
//! `training_step` ([`Manual`]: `#[lightning_module(manual_optimization)]`, Lightning's
//! `automatic_optimization = False`). The mode is a type parameter of the step's
//! [`StepContext`](super::StepContext), so that the calls of manual optimization
//! (`ctx.manual_backward`, `ctx.step`, ...) do not compile in an automatic step.

use dfdx::shapes::Rank0;
use dfdx::tensor::{Gradients, OwnedTape, Tensor};

use super::LogValue;
use crate::optim::ClipAlgorithm;
use crate::walk::{Params, ParamsMut};
use crate::TrainerView;
use crate::{FloatDtype, Result, TrainDevice};

/// The trainer does the backward and steps the optimizer (Lightning's default).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Automatic;

/// The module's `training_step` does the backward and steps its optimizers
/// (`#[lightning_module(manual_optimization)]`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Manual;

mod sealed {
    pub trait Sealed {}
    impl Sealed for super::Automatic {}
    impl Sealed for super::Manual {}
}

/// [`Automatic`] or [`Manual`] optimization.
pub trait OptimizationMode: sealed::Sealed + 'static {
    /// Whether `training_step` steps the optimizers itself.
    const MANUAL: bool;
}
impl OptimizationMode for Automatic {
    const MANUAL: bool = false;
}
impl OptimizationMode for Manual {
    const MANUAL: bool = true;
}

/// The mode whose steps may call `manual_backward`, `step`, `zero_grad`, ...: [`Manual`].
#[diagnostic::on_unimplemented(
    message = "this `training_step` runs under automatic optimization: the trainer does the backward and steps the optimizers",
    label = "a call of manual optimization",
    note = "to do them in `training_step` yourself, write `#[lightning_module(manual_optimization)]` on the module's impl (Lightning's `automatic_optimization = False`)"
)]
pub trait ManualOptimization: OptimizationMode {}
impl ManualOptimization for Manual {}

/// What a `training_step` gave the loop.
pub enum StepOutput<E: FloatDtype, D: TrainDevice<E>> {
    /// Automatic optimization: the loss the trainer differentiates.
    Loss(Tensor<Rank0, E, D, OwnedTape<E, D>>),
    /// Manual optimization: the value to log as the step's loss, if any.
    Logged(Option<f64>),
}

/// What an automatic-optimization `training_step` returns: the loss, or a `fulmen::Result`
/// of it.
#[diagnostic::on_unimplemented(
    message = "an automatic-optimization `training_step` returns the loss to differentiate (`Loss<E, D>`), not `{Self}`",
    label = "not a `Loss<E, D>`",
    note = "to do the backward and step the optimizers in `training_step` yourself, returning nothing or a value to log, write `#[lightning_module(manual_optimization)]` on the impl"
)]
pub trait AutomaticStep<E: FloatDtype, D: TrainDevice<E>> {
    /// The loss, or the step's error.
    fn into_output(self) -> Result<StepOutput<E, D>>;
}

impl<E: FloatDtype, D: TrainDevice<E>> AutomaticStep<E, D>
    for Tensor<Rank0, E, D, OwnedTape<E, D>>
{
    fn into_output(self) -> Result<StepOutput<E, D>> {
        Ok(StepOutput::Loss(self))
    }
}
impl<E: FloatDtype, D: TrainDevice<E>, T: AutomaticStep<E, D>> AutomaticStep<E, D> for Result<T> {
    fn into_output(self) -> Result<StepOutput<E, D>> {
        self?.into_output()
    }
}

/// What a `validation_step` or `test_step` returns: nothing, or a `fulmen::Result<()>` (so
/// that a metric's update can use `?`).
#[diagnostic::on_unimplemented(
    message = "a `validation_step` or `test_step` returns nothing or a `fulmen::Result<()>`, not `{Self}`",
    label = "not `()` or `fulmen::Result<()>`"
)]
pub trait EvalStep {
    /// Nothing, or the step's error.
    fn into_result(self) -> Result<()>;
}

impl EvalStep for () {
    fn into_result(self) -> Result<()> {
        Ok(())
    }
}
impl EvalStep for Result<()> {
    fn into_result(self) -> Result<()> {
        self
    }
}

/// What a manual-optimization `training_step` returns: nothing, a value to log as its loss
/// (a number or a scalar tensor), or a `fulmen::Result` of one.
#[diagnostic::on_unimplemented(
    message = "a manual-optimization `training_step` returns nothing, a loss to log or a `fulmen::Result` of one, not `{Self}`"
)]
pub trait ManualStep {
    /// The value to log, or the step's error.
    fn into_logged(self) -> Result<Option<f64>>;
}

impl ManualStep for () {
    fn into_logged(self) -> Result<Option<f64>> {
        Ok(None)
    }
}
impl ManualStep for f64 {
    fn into_logged(self) -> Result<Option<f64>> {
        Ok(Some(self))
    }
}
impl ManualStep for f32 {
    fn into_logged(self) -> Result<Option<f64>> {
        Ok(Some(f64::from(self)))
    }
}
impl<E: FloatDtype, D: TrainDevice<E>, T> ManualStep for Tensor<Rank0, E, D, T> {
    fn into_logged(self) -> Result<Option<f64>> {
        Ok(Some(self.log_value()))
    }
}
impl<T: ManualStep> ManualStep for Result<T> {
    fn into_logged(self) -> Result<Option<f64>> {
        self?.into_logged()
    }
}

/// One of the optimizers `configure_optimizers` returned, in its order (Lightning's
/// `LightningOptimizer`): what `ctx.step`, `ctx.zero_grad` and `ctx.toggle_optimizer` take.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OptimizerRef(pub(crate) usize);

impl OptimizerRef {
    /// Its place in `configure_optimizers`' order.
    pub fn index(self) -> usize {
        self.0
    }
}

/// The hooks a manual step's calls run (the callbacks' here, the module's by the caller).
#[derive(Debug, Clone, Copy)]
pub(crate) enum ManualHook {
    BeforeBackward(f64),
    AfterBackward,
    BeforeOptimizerStep,
}

/// The trainer's side of a manual step: its optimizers, callbacks and view, and the ranks.
pub(crate) trait ManualSteps<E: FloatDtype, D: TrainDevice<E>> {
    /// How many optimizers `configure_optimizers` returned.
    fn count(&self) -> usize;
    /// What hooks see.
    fn view(&mut self) -> &mut TrainerView;
    /// The callbacks' `hook`.
    fn callbacks(&mut self, hook: ManualHook);
    /// The callbacks' `with_weights` at `at`.
    fn with_weights(&mut self, at: crate::weights::At, weights: &mut dyn crate::weights::Weights);
    /// After a hook: the error a callback or the module reported, if one did.
    fn after_hook(&mut self) -> Result<()>;
    /// Refuses a loss that is not finite (`check_finite_loss`).
    fn check_loss(&self, value: f64) -> Result<()>;
    /// What `manual_backward` multiplies the loss by before its backward (16-mixed's loss
    /// scale), if anything.
    fn loss_scale(&self) -> Option<f64> {
        None
    }
    /// After a backward: `fresh`, the tape's gradients, averaged over the ranks; under an
    /// optimizer `opt` toggled, with `kept` the step's gradients aside, `opt`'s parameters' are
    /// added to `kept` (the others' dropped). Returns the step's gradients.
    fn absorb(
        &mut self,
        params: &dyn Params<E, D>,
        fresh: Gradients<E, D>,
        kept: Option<(Gradients<E, D>, usize)>,
    ) -> Result<Gradients<E, D>>;
    /// Whether `ok` holds on every rank.
    fn all_agree(&self, ok: bool) -> Result<bool>;
    /// Clips the gradients of `opt`'s parameters at its next step.
    fn clip(
        &mut self,
        opt: usize,
        params: &dyn Params<E, D>,
        grads: &mut Gradients<E, D>,
        max: f64,
        algorithm: ClipAlgorithm,
    ) -> Result<()>;
    /// Steps `opt` (checked for non-finite gradients under `detect_anomaly`, clipped as asked),
    /// and its scheduler on its interval.
    fn step(
        &mut self,
        opt: usize,
        params: &mut dyn ParamsMut<E, D>,
        grads: &mut Gradients<E, D>,
    ) -> Result<()>;
    /// Steps `opt`'s schedulers of [`Interval::Manual`](crate::optim::Interval::Manual) now.
    fn lr_scheduler_step(&mut self, opt: usize) -> Result<()>;
    /// Zeroes the gradients of `opt`'s parameters.
    fn zero_grad(
        &mut self,
        opt: usize,
        params: &dyn Params<E, D>,
        grads: &mut Gradients<E, D>,
    ) -> Result<()>;
}

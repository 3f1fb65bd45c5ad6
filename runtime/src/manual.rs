//! Manual optimization (Lightning's `automatic_optimization = False`): a module whose impl
//! carries `#[lightning_module(manual_optimization)]` does the backward and steps its
//! optimizers in `training_step`, through its [`StepContext`]. A GAN steps two:
//!
//! ```
//! use fulmen::prelude::*;
//! use fulmen::Manual;
//!
//! #[lightning_module]
//! struct Gan {
//!     generator: Linear<2, 4>,
//!     discriminator: Linear<4, 1>,
//! }
//!
//! #[lightning_module(manual_optimization)]
//! impl Gan {
//!     fn training_step(&mut self, (real, _): RegressionBatch<4, 1, E, D>, ctx: &mut StepContext<E, D, Manual>) -> fulmen::Result<()> {
//!         let [opt_g, opt_d] = ctx.optimizers()?;
//!         let n = real.shape().0;
//!         // The generator: make the discriminator call its samples real.
//!         ctx.toggle_optimizer(opt_g);
//!         let z = ctx.randn((n, Const::<2>));
//!         let fake = self.generator.forward(ctx.trace(z));
//!         let ones = ctx.device().ones_like(&(n, Const::<1>));
//!         let g_loss = binary_cross_entropy_with_logits_loss(self.discriminator.forward(fake), ones);
//!         ctx.log("g_loss", &g_loss);
//!         ctx.manual_backward(g_loss, self)?;
//!         ctx.step(opt_g, self)?;
//!         ctx.zero_grad(opt_g, self)?;
//!         ctx.untoggle_optimizer(opt_g);
//!         // The discriminator: real samples are real.
//!         ctx.toggle_optimizer(opt_d);
//!         let ones = ctx.device().ones_like(&(n, Const::<1>));
//!         let d_loss = binary_cross_entropy_with_logits_loss(self.discriminator.forward(ctx.trace(real)), ones);
//!         ctx.manual_backward(d_loss, self)?;
//!         ctx.step(opt_d, self)?;
//!         ctx.zero_grad(opt_d, self)?;
//!         ctx.untoggle_optimizer(opt_d);
//!         Ok(())
//!     }
//!
//!     fn configure_optimizers(&self) -> [Optim; 2] {
//!         [
//!             Optim::adam(2e-4).params(["generator"]),
//!             Optim::adam(2e-4).params(["discriminator"]),
//!         ]
//!     }
//! }
//! ```
//!
//! Each call runs the hooks Lightning runs there: `manual_backward` runs `on_before_backward`
//! and `on_after_backward`, `step` runs `on_before_optimizer_step`. Every optimizer step counts
//! one `global_step` (as Lightning counts them), and each optimizer's scheduler steps on its
//! interval: after its optimizer's steps, at the end of each epoch, or, with
//! [`Interval::Manual`](crate::optim::Interval::Manual), when the step calls
//! [`lr_scheduler_step`](StepContext::lr_scheduler_step) (Lightning's `sch.step()`). Under DDP,
//! `manual_backward` averages the gradients over the ranks. In 16-mixed the step runs on the
//! half copy (see [`crate::precision`]): `manual_backward` scales the loss and unscales the
//! gradients into the f32 module's, and `step` skips an optimizer whose gradients were not
//! finite since its last step (the skipped step counts, and the loss scale backs off), as
//! Lightning's `scaler.step` does.
//!
//! What the trainer does for automatic optimization is the step's to do here:
//! `accumulate_grad_batches` and `gradient_clip_val` are refused (accumulate by stepping every
//! few batches, clip with [`clip_gradients`](StepContext::clip_gradients)), as Lightning
//! refuses them.

use dfdx::tensor::Gradients;
use dfdx::tensor_ops::Backward;

use crate::context::mode::{ManualHook, ManualSteps};
use crate::context::{Loss, ManualOptimization, OptimizationMode, OptimizerRef, StepContext};
use crate::module::LightningModule;
use crate::optim::ClipAlgorithm;
use crate::walk::{Tensors, TensorsMut};
use crate::weights::{At, WeightsOf};
use crate::{Error, FloatDtype, Result, TrainDevice};

impl<'a, E: FloatDtype, D: TrainDevice<E>, O: OptimizationMode> StepContext<'a, E, D, O> {
    /// The trainer's side of the step.
    fn steps(&mut self) -> Result<&mut (dyn ManualSteps<E, D> + 'a)> {
        self.manual.as_deref_mut().ok_or_else(no_optimizers)
    }

    /// The optimizers `configure_optimizers` returned, in its order (Lightning's
    /// `self.optimizers()`): `let [opt_g, opt_d] = ctx.optimizers()?;`. An error if there are
    /// not `N`.
    pub fn optimizers<const N: usize>(&mut self) -> Result<[OptimizerRef; N]>
    where
        O: ManualOptimization,
    {
        let count = self.steps()?.count();
        if count != N {
            return Err(Error::config(
                "configure_optimizers",
                format!("training_step asks for {N} optimizers, but configure_optimizers returns {count}"),
            ));
        }
        Ok(std::array::from_fn(OptimizerRef))
    }

    /// Until [`untoggle_optimizer`](Self::untoggle_optimizer), the backward of what is traced
    /// adds gradients to `opt`'s parameters alone (Lightning's `toggle_optimizer`, which stops
    /// the other optimizers' parameters from requiring gradients): a generator's loss leaves
    /// the discriminator's gradients as they were. It covers what is traced after it: an input
    /// traced before carries the step's gradients, all of them, on its tape.
    pub fn toggle_optimizer(&mut self, opt: OptimizerRef)
    where
        O: ManualOptimization,
    {
        self.toggled = Some(opt.0);
    }

    /// Ends [`toggle_optimizer`](Self::toggle_optimizer)'s choice of `opt` (another's is
    /// left). What was traced while it was toggled still adds to its parameters alone.
    pub fn untoggle_optimizer(&mut self, opt: OptimizerRef)
    where
        O: ManualOptimization,
    {
        if self.toggled == Some(opt.0) {
            self.toggled = None;
        }
    }

    /// The backward of `loss` into the gradients of `module`'s parameters (summed with the
    /// ones there), averaged over the ranks of a DDP run (Lightning's `manual_backward`).
    /// Runs `on_before_backward` and `on_after_backward`. A loss that is not finite is refused
    /// under `check_finite_loss`, before its backward.
    pub fn manual_backward<M: LightningModule<E, D>>(
        &mut self,
        loss: Loss<E, D>,
        module: &mut M,
    ) -> Result<()>
    where
        O: ManualOptimization,
    {
        let value = crate::context::LogValue::log_value(&loss);
        self.steps()?.check_loss(value)?;
        self.hook(module, ManualHook::BeforeBackward(value))?;
        let loss = match self.steps()?.loss_scale() {
            Some(scale) => {
                loss * <E as num_traits::NumCast>::from(scale).ok_or_else(|| {
                    Error::msg(format!(
                        "16-mixed: the loss scale {scale} is not representable"
                    ))
                })?
            }
            None => loss,
        };
        let fresh = loss.try_backward()?;
        let kept = self.kept.take();
        let grads = self.steps()?.absorb(&Tensors(&*module), fresh, kept)?;
        self.grads = Some(grads);
        self.hook(module, ManualHook::AfterBackward)
    }

    /// Clips the gradients of `opt`'s parameters at its next [`step`](Self::step): by their
    /// total norm (at most `max`) or each value (to `[-max, max]`), as Lightning's
    /// `clip_gradients` (the norm is taken now).
    pub fn clip_gradients<M: LightningModule<E, D>>(
        &mut self,
        opt: OptimizerRef,
        module: &M,
        max: f64,
        algorithm: ClipAlgorithm,
    ) -> Result<()>
    where
        O: ManualOptimization,
    {
        let (m, grads) = self.parts()?;
        m.clip(opt.0, &Tensors(module), grads, max, algorithm)
    }

    /// Steps `opt` on the gradients of its parameters (Lightning's `optimizer.step()`), after
    /// `on_before_optimizer_step`; counts one `global_step`.
    pub fn step<M: LightningModule<E, D>>(
        &mut self,
        opt: OptimizerRef,
        module: &mut M,
    ) -> Result<()>
    where
        O: ManualOptimization,
    {
        self.hook(module, ManualHook::BeforeOptimizerStep)?;
        let (m, grads) = self.parts()?;
        m.step(opt.0, &mut TensorsMut(module), grads)?;
        self.global_step = self.steps()?.view().global_step;
        Ok(())
    }

    /// Steps `opt`'s scheduler now (Lightning's `sch.step()` in a manual step): one configured
    /// with `.interval(Interval::Manual)`, which the trainer leaves to the step (the others
    /// step on their interval, and are refused here). A `ReduceLROnPlateau` reads its metric
    /// as logged so far.
    pub fn lr_scheduler_step(&mut self, opt: OptimizerRef) -> Result<()>
    where
        O: ManualOptimization,
    {
        self.steps()?.lr_scheduler_step(opt.0)
    }

    /// Zeroes the gradients of `opt`'s parameters (Lightning's `optimizer.zero_grad()`).
    pub fn zero_grad<M: LightningModule<E, D>>(
        &mut self,
        opt: OptimizerRef,
        module: &M,
    ) -> Result<()>
    where
        O: ManualOptimization,
    {
        let (m, grads) = self.parts()?;
        m.zero_grad(opt.0, &Tensors(module), grads)
    }

    /// The trainer's side and the step's gradients (those kept aside while a toggled
    /// optimizer's tape holds fresh ones).
    fn parts(&mut self) -> Result<Parts<'_, 'a, E, D>> {
        let grads = match (&mut self.kept, &mut self.grads) {
            (Some((grads, _)), _) | (None, Some(grads)) => grads,
            (None, None) => return Err(Error::msg(
                "the gradients are on the tape of a traced tensor: call `manual_backward` on its loss first",
            )),
        };
        match self.manual.as_deref_mut() {
            Some(m) => Ok((m, grads)),
            None => Err(no_optimizers()),
        }
    }

    /// The callbacks' `hook`, then the module's, then (after the backward and before a step)
    /// the callbacks' `with_weights`.
    fn hook<M: LightningModule<E, D>>(&mut self, module: &mut M, hook: ManualHook) -> Result<()> {
        let m = self.steps()?;
        m.callbacks(hook);
        let view = m.view();
        let at = match hook {
            ManualHook::BeforeBackward(loss) => {
                module.on_before_backward(view, loss);
                None
            }
            ManualHook::AfterBackward => {
                module.on_after_backward(view);
                Some(At::AfterBackward)
            }
            ManualHook::BeforeOptimizerStep => {
                module.on_before_optimizer_step(view);
                Some(At::BeforeOptimizerStep)
            }
        };
        self.steps()?.after_hook()?;
        if let Some(at) = at {
            let (m, grads) = self.parts()?;
            let mut weights = WeightsOf {
                module,
                grads: Some(grads),
                sharded: false,
                partial_grads: false,
                frozen: m.view().freezing().clone(),
            };
            m.with_weights(at, &mut weights);
            m.after_hook()?;
        }
        Ok(())
    }
}

/// The trainer's side of a manual step, and the step's gradients.
type Parts<'s, 'a, E, D> = (
    &'s mut (dyn ManualSteps<E, D> + 'a),
    &'s mut Gradients<E, D>,
);

fn no_optimizers() -> Error {
    Error::msg("this step has no optimizers: manual optimization's calls work in `training_step`")
}

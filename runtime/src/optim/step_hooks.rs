//! What the module's optimization hooks receive under automatic optimization: Lightning's
//! `optimizer` in `optimizer_step` ([`OptimizerStep`]) and `optimizer_zero_grad`
//! ([`ZeroGrad`]), its clipping arguments in
//! `configure_gradient_clipping` ([`GradientClipping`]) and its `scheduler` in
//! `lr_scheduler_step` ([`SchedulerStep`]).
//!
//! Each records what the hook asks for, and the trainer does it when the hook returns, in the
//! order asked: the values a step changes (weights, `global_step`) are not yet changed inside
//! the hook. A warm-up by hand, as Lightning's docs write it:
//!
//! ```
//! use fulmen::prelude::*;
//! use fulmen::optim::OptimizerStep;
//!
//! #[lightning_module]
//! struct Net {
//!     layer: Linear<4, 3>,
//! }
//!
//! #[lightning_module]
//! impl Net {
//!     fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
//!         cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
//!     }
//!     fn configure_optimizers(&self) -> Optim {
//!         Optim::sgd(0.1)
//!     }
//!     fn optimizer_step(&mut self, trainer: &mut TrainerView, _epoch: usize, _batch_idx: usize, optimizer: &mut OptimizerStep) {
//!         // Over the first 500 steps the rate grows linearly to 0.1.
//!         let warm = (trainer.global_step() + 1).min(500) as f64 / 500.0;
//!         optimizer.set_lr(0.1 * warm);
//!         optimizer.step();
//!     }
//! }
//! ```

use super::ClipAlgorithm;

/// A learning rate the hook set: before the step (its rate) or after it (the next steps').
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct RateSet {
    pub group: usize,
    pub lr: f64,
}

/// The automatic optimizer's step, as `LightningModule::optimizer_step` receives it
/// (Lightning's `optimizer`): [`step`](Self::step) takes it (the default hook does only
/// that). Without it the step is skipped: its gradients are dropped (by the next window's
/// `optimizer_zero_grad`, for a module that wrote one), and neither `global_step` nor a
/// step-interval scheduler moves. [`set_lr`](Self::set_lr) sets every parameter group's
/// rate: before `step`, for this step; after it, for the steps that follow (until a
/// scheduler's step yields another). Rates that are not finite and >= 0 fail the step.
#[derive(Debug)]
pub struct OptimizerStep {
    lrs: Vec<f64>,
    before: Vec<RateSet>,
    after: Vec<RateSet>,
    stepped: bool,
}

impl OptimizerStep {
    /// The step of an optimizer whose groups' rates are `lrs` (the default group first).
    pub(crate) fn new(lrs: Vec<f64>) -> Self {
        OptimizerStep {
            lrs,
            before: Vec::new(),
            after: Vec::new(),
            stepped: false,
        }
    }

    /// Takes the step (Lightning's `optimizer.step(closure=optimizer_closure)`), once the
    /// hook returns, with the gradients clipped as `configure_gradient_clipping` says.
    pub fn step(&mut self) {
        self.stepped = true;
    }

    /// The default group's learning rate, with what the hook set so far.
    pub fn lr(&self) -> f64 {
        self.group_lr(0).unwrap_or(f64::NAN)
    }

    /// Group `group`'s learning rate (the default group is 0), with what the hook set so far.
    pub fn group_lr(&self, group: usize) -> Option<f64> {
        self.lrs.get(group).copied()
    }

    /// How many parameter groups the optimizer has (the default one included).
    pub fn num_groups(&self) -> usize {
        self.lrs.len()
    }

    /// Sets every group's learning rate (Lightning's `for pg in optimizer.param_groups:
    /// pg["lr"] = lr`).
    pub fn set_lr(&mut self, lr: f64) {
        for group in 0..self.lrs.len() {
            self.set_group_lr(group, lr);
        }
    }

    /// Sets group `group`'s learning rate; the step refuses a group the optimizer does not
    /// have, and a rate that is not finite and non-negative.
    pub fn set_group_lr(&mut self, group: usize, lr: f64) {
        if let Some(known) = self.lrs.get_mut(group) {
            *known = lr;
        }
        let set = RateSet { group, lr };
        match self.stepped {
            false => self.before.push(set),
            true => self.after.push(set),
        }
    }

    /// Whether the hook asked for the step, and the rates it set before and after asking.
    pub(crate) fn into_parts(self) -> (bool, Vec<RateSet>, Vec<RateSet>) {
        (self.stepped, self.before, self.after)
    }
}

/// The gradients of the window about to start, as `LightningModule::optimizer_zero_grad`
/// receives them (Lightning's `optimizer` there): [`zero_grad`](Self::zero_grad) zeroes them
/// (the default hook does only that); without it the next backward adds to the last
/// window's.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ZeroGrad {
    zeroed: bool,
}

impl ZeroGrad {
    /// Zeroes the gradients (Lightning's `optimizer.zero_grad()`), once the hook returns.
    pub fn zero_grad(&mut self) {
        self.zeroed = true;
    }

    /// Whether the hook asked for it.
    pub(crate) fn zeroed(&self) -> bool {
        self.zeroed
    }
}

/// How the automatic step's gradients are clipped, as `LightningModule::
/// configure_gradient_clipping` receives it: the trainer's `gradient_clip_val` and
/// `gradient_clip_algorithm`, and what the hook chose. The default hook clips by the
/// trainer's settings; one that calls [`clip_gradients`](Self::clip_gradients) with other
/// values (or not at all) clips so (or not at all).
#[derive(Debug, Clone, PartialEq)]
pub struct GradientClipping {
    val: Option<f64>,
    algorithm: ClipAlgorithm,
    chosen: Option<(f64, ClipAlgorithm)>,
}

impl GradientClipping {
    pub(crate) fn new(val: Option<f64>, algorithm: ClipAlgorithm) -> Self {
        GradientClipping {
            val,
            algorithm,
            chosen: None,
        }
    }

    /// The trainer's `gradient_clip_val` (`None`: no clipping).
    pub fn gradient_clip_val(&self) -> Option<f64> {
        self.val
    }

    /// The trainer's `gradient_clip_algorithm`.
    pub fn gradient_clip_algorithm(&self) -> ClipAlgorithm {
        self.algorithm
    }

    /// Clips the step's gradients at `val` by `algorithm` (Lightning's `self.clip_gradients`);
    /// the step refuses a value that is not finite and non-negative.
    pub fn clip_gradients(&mut self, val: f64, algorithm: ClipAlgorithm) {
        self.chosen = Some((val, algorithm));
    }

    /// The clipping the hook chose.
    pub(crate) fn chosen(&self) -> Option<(f64, ClipAlgorithm)> {
        self.chosen
    }
}

/// A scheduler due to step, as `LightningModule::lr_scheduler_step` receives it (Lightning's
/// `scheduler` and `metric`): [`step`](Self::step) steps it (the default hook does only that);
/// without it the rates stay as they are.
#[derive(Debug, Clone, PartialEq)]
pub struct SchedulerStep {
    optimizer: usize,
    metric: Option<f64>,
    stepped: bool,
}

impl SchedulerStep {
    pub(crate) fn new(optimizer: usize, metric: Option<f64>) -> Self {
        SchedulerStep {
            optimizer,
            metric,
            stepped: false,
        }
    }

    /// Which optimizer's scheduler it is (0 for automatic optimization's only one).
    pub fn optimizer(&self) -> usize {
        self.optimizer
    }

    /// The value a `ReduceLROnPlateau` monitors, read when it is due.
    pub fn metric(&self) -> Option<f64> {
        self.metric
    }

    /// Steps the scheduler (Lightning's `scheduler.step()` or `scheduler.step(metric)`).
    pub fn step(&mut self) {
        self.stepped = true;
    }

    /// Whether the hook stepped it.
    pub(crate) fn stepped(&self) -> bool {
        self.stepped
    }
}

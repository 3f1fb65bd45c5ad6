//! What a fit's optimization holds between steps ([`Optimization`]); the loop that steps it
//! is `loops/optimization.rs`.
//!
//! The learning rate has one owner, [`Optimization::rates`]: the scheduler yields it (or the
//! optimizer's own rate, without one), the step takes it, a callback's `set_lr` is a request
//! the loop applies before the next step, and the view and checkpoints publish it.

use dfdx::tensor::Gradients;

use crate::distributed::full_shard;
use crate::distributed::shard::Shards;
use crate::module::LightningModule;
use crate::optim::scheduler::Rates;
use crate::optim::{Optimizer, Scheduler};
use crate::precision::HalfSteps;
use crate::{FloatDtype, TrainDevice};

/// What a fit's optimization holds between steps.
pub(super) struct Optimization<'a, E: FloatDtype, D: TrainDevice<E>, M: LightningModule<E, D>, S> {
    /// From `configure_optimizers`, once `fit` has called it.
    pub optimizer: Option<Optimizer<E, D>>,
    pub scheduler: Option<Scheduler>,
    /// The learning rate and momentum of the next step.
    pub rates: Rates,
    /// Gradients summed since the last optimizer step (kept between batches for
    /// `accumulate_grad_batches`, and by checkpoints saved inside an accumulation window).
    pub grads: Option<Gradients<E, D>>,
    /// The half-precision side of "16-mixed" steps.
    pub half: HalfSteps<'a, E, D, M, S>,
    /// Under SHARD_GRAD_OP, which rank owns each parameter.
    pub shards: Option<Shards>,
    /// Under FULL_SHARD, this rank's shards of the parameters and their gradients (shared
    /// with the units' backward ops).
    pub full_shard: Option<full_shard::Shared<E, D>>,
}

impl<'a, E: FloatDtype, D: TrainDevice<E>, M: LightningModule<E, D>, S>
    Optimization<'a, E, D, M, S>
{
    pub fn new(half: HalfSteps<'a, E, D, M, S>) -> Self {
        Self {
            optimizer: None,
            scheduler: None,
            rates: Rates {
                lr: 0.0,
                momentum: None,
            },
            grads: None,
            half,
            shards: None,
            full_shard: None,
        }
    }

    /// Under SHARD_GRAD_OP the optimizer steps (and keeps state for) its rank's parameters
    /// only.
    pub fn own_shards(&mut self) {
        if let (Some(shards), Some(optimizer)) = (&self.shards, self.optimizer.as_mut()) {
            optimizer.set_owned(Some(shards.owned()));
        }
    }

    /// The loss scale of a "16-mixed" run.
    pub fn loss_scale(&self) -> Option<f64> {
        self.half.as_ref().map(|h| h.scaler().scale)
    }
}

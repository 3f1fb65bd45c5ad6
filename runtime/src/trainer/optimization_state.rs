//! What a fit's optimization holds between steps ([`Optimization`]); the loop that steps it
//! is `loops/optimization.rs`.
//!
//! Each optimizer's learning rates have one owner, its [`Configured::groups`]: a scheduler
//! yields it (or the optimizer's own rate, without one), its step takes it, a callback's
//! `set_lr` is a request the loop applies before the first optimizer's next step, and the view
//! and checkpoints publish it.

use std::collections::BTreeMap;

use dfdx::tensor::Gradients;

use crate::distributed::full_shard;
use crate::distributed::shard::Shards;
use crate::module::LightningModule;
use crate::optim::scheduler::Rates;
use crate::optim::{Interval, Optimizer, Scheduler};
use crate::precision::HalfSteps;
use crate::trainer::OptimizerInfo;
use crate::{Error, FloatDtype, Result, TrainDevice};

/// One optimizer of a fit: its state and, per parameter group (the default one first), the
/// group's scheduler and the learning rate (and momentum) of its next step, which it owns.
pub(crate) struct Configured<E: FloatDtype, D: TrainDevice<E>> {
    pub optimizer: Optimizer<E, D>,
    pub groups: Vec<Grouped>,
}

/// A parameter group's schedule: its scheduler (PyTorch's schedulers keep one schedule per
/// group, each from the group's own rate) and its next step's rates.
pub(crate) struct Grouped {
    pub scheduler: Option<Scheduler>,
    pub rates: Rates,
}

impl<E: FloatDtype, D: TrainDevice<E>> Configured<E, D> {
    /// Every group's rates, in order (what the step takes).
    pub fn rates(&self) -> Vec<Rates> {
        self.groups.iter().map(|g| g.rates).collect()
    }

    /// The schedulers, one per group (none without one).
    pub fn schedulers(&self) -> impl Iterator<Item = &Scheduler> {
        self.groups.iter().filter_map(|g| g.scheduler.as_ref())
    }

    /// What the view shows of it.
    pub fn info(&self) -> OptimizerInfo {
        let config = self.optimizer.config();
        let groups: Vec<(f64, Option<f64>)> = (self.groups.iter().enumerate())
            .map(|(g, grouped)| {
                let momentum = config.for_group(g, None).momentum_value();
                (grouped.rates.lr, grouped.rates.momentum.or(Some(momentum)))
            })
            .collect();
        OptimizerInfo {
            name: config.name(),
            groups,
            group_fields: config.groups().iter().map(|g| g.fields.clone()).collect(),
        }
    }

    /// Takes the rates callbacks asked for this optimizer (the `index`-th) out of `requests`
    /// (`TrainerView::set_group_lr`): they become its groups' next step's. Returns whether
    /// there was one.
    pub fn take_requests(
        &mut self,
        index: usize,
        requests: &mut Vec<(usize, usize, f64)>,
    ) -> Result<bool> {
        let mut taken = false;
        for (opt, g, lr) in std::mem::take(requests) {
            if opt != index {
                requests.push((opt, g, lr));
                continue;
            }
            let count = self.groups.len();
            let group = self.groups.get_mut(g).ok_or_else(|| {
                Error::config(
                    "set_group_lr",
                    format!("optimizer {opt} has no parameter group {g} (it has {count})"),
                )
            })?;
            group.rates.lr = lr;
            taken = true;
        }
        Ok(taken)
    }

    /// A group's scheduler due on `interval` at `count` (steps or epochs done), if one is.
    pub fn due(
        &self,
        interval: Interval,
        count: usize,
        metrics: &BTreeMap<String, f64>,
    ) -> Option<Due> {
        let scheduler = self
            .schedulers()
            .find(|s| s.interval() == interval && count.is_multiple_of(s.frequency()))?;
        Some(Due {
            metric: scheduler.monitor().and_then(|m| metrics.get(m).copied()),
        })
    }

    /// Steps each group's scheduler if it runs on `interval` and `count` (steps or epochs
    /// done) is a multiple of its frequency; its rates become the group's next step's.
    /// `metrics` are what `ReduceLROnPlateau` monitors. Returns whether one stepped.
    pub fn step_scheduler(
        &mut self,
        interval: Interval,
        count: usize,
        metrics: &BTreeMap<String, f64>,
    ) -> Result<bool> {
        let mut stepped = false;
        for group in self.groups.iter_mut() {
            let Some(scheduler) = group.scheduler.as_mut() else {
                continue;
            };
            if scheduler.interval() != interval || !count.is_multiple_of(scheduler.frequency()) {
                continue;
            }
            let metric = match scheduler.monitor() {
                Some(m) => Some(*metrics.get(m).ok_or_else(|| {
                    Error::config(
                        "ReduceLROnPlateau.monitor",
                        format!(
                            "`{m}` was never logged; the logged metrics are {:?}",
                            metrics.keys().collect::<Vec<_>>()
                        ),
                    )
                })?),
                None => None,
            };
            group.rates = scheduler.step(metric)?;
            stepped = true;
        }
        Ok(stepped)
    }
}

/// A scheduler due to step.
pub(crate) struct Due {
    /// The value it monitors (`ReduceLROnPlateau`), if logged.
    pub metric: Option<f64>,
}

/// What a fit's optimization holds between steps.
pub(super) struct Optimization<'a, E: FloatDtype, D: TrainDevice<E>, M: LightningModule<E, D>> {
    /// From `configure_optimizers`, once `fit` has called it (automatic optimization: one).
    pub optimizers: Vec<Configured<E, D>>,
    /// Gradients summed since the last optimizer step (kept between batches for
    /// `accumulate_grad_batches`, and by checkpoints saved inside an accumulation window).
    pub grads: Option<Gradients<E, D>>,
    /// The last window's gradients, set aside while a step whose module decides itself when
    /// they are zeroed (`optimizer_zero_grad`) runs on zeros: dropped if it zeroes them,
    /// added after the backward if not.
    pub kept: Option<Gradients<E, D>>,
    /// The half-precision side of "16-mixed" steps.
    pub half: HalfSteps<'a, E, D, M>,
    /// Under SHARD_GRAD_OP, which rank owns each parameter.
    pub shards: Option<Shards>,
    /// Under FULL_SHARD, this rank's shards of the parameters and their gradients (shared
    /// with the units' backward ops).
    pub full_shard: Option<full_shard::Shared<E, D>>,
    /// The freezing the optimizers and gradients follow (the view's, from the last step on).
    pub frozen: crate::freeze::Freezing,
    /// Its parameters' ids, which the layers of a step look up (found once per change: a
    /// parameter keeps its tensor, and so its id, through a fit).
    pub frozen_ids: std::rc::Rc<std::collections::BTreeSet<dfdx::tensor::UniqueId>>,
}

impl<'a, E: FloatDtype, D: TrainDevice<E>, M: LightningModule<E, D>> Optimization<'a, E, D, M> {
    pub fn new(half: HalfSteps<'a, E, D, M>) -> Self {
        Self {
            optimizers: Vec::new(),
            grads: None,
            kept: None,
            half,
            shards: None,
            full_shard: None,
            frozen: Default::default(),
            frozen_ids: Default::default(),
        }
    }

    /// Under SHARD_GRAD_OP the optimizer steps (and keeps state for) its rank's parameters
    /// only.
    pub fn own_shards(&mut self) {
        if let (Some(shards), Some(first)) = (&self.shards, self.optimizers.first_mut()) {
            first.optimizer.set_owned(Some(shards.owned()));
        }
    }

    /// The loss scale of a "16-mixed" run.
    pub fn loss_scale(&self) -> Option<f64> {
        self.half.as_ref().map(|h| h.scaler().scale)
    }
}

//! Automatic optimization (Lightning's `loops/optimization/automatic.py`): backward, and at
//! the end of each accumulation window the module's `optimizer_step`, whose step is the
//! gradients averaged over the ranks, checked, clipped (as `configure_gradient_clipping`
//! says) and stepped on, then zeroed (or, for a module that wrote `optimizer_zero_grad`,
//! zeroed there); the schedulers stepped on their interval through `lr_scheduler_step`. The
//! learning rate flows one way: scheduler (or a callback's request, or `optimizer_step`'s
//! rate) → [`Rates`] → the step.

use dfdx::nn::ZeroGrads;
use dfdx::tensor::Gradients;
use dfdx::tensor_ops::Backward;

use std::cell::RefCell;
use std::rc::Rc;

use super::{guard, sharded, Run};
use crate::checkpoint::Ckpt;
use crate::context::Loss;
use crate::context::OptimizationMode;
use crate::datamodule::DataModule;
use crate::distributed::full_shard::{FullShard, Shared};
use crate::distributed::shard::Shards;
use crate::distributed::Strategy;
use crate::module::LightningModule;
use crate::optim::grads::Selected;
use crate::optim::scheduler::Rates;
use crate::optim::{
    grads, Clip, ClipAlgorithm, GradientClipping, Interval, Optim, OptimKind, Optimizer,
    OptimizerStep, RateSet, Scheduler, SchedulerStep,
};
use crate::trainer::optimization_state::{Configured, Grouped};
use crate::walk::{Params, Tensors};
use crate::weights::At;
use crate::{Error, FloatDtype, Result, TrainDevice};

/// In half precision (16-true) Adam's default eps of 1e-8 is 0, and its first step divides by
/// zero: refused before training instead of stopping on a NaN loss.
fn check_eps<E: FloatDtype>(config: &Optim) -> Result<()> {
    let uses_eps = config.kind() != OptimKind::Sgd;
    if !uses_eps || E::from(config.eps_value()).is_some_and(|e| e.is_normal()) {
        return Ok(());
    }
    Err(Error::config(
        "eps",
        format!(
            "{} is not a normal number in the {}-byte dtype this run trains in, so {} would divide by zero; set `.eps(1e-4)` in configure_optimizers or train in precision \"16-mixed\"",
            config.eps_value(),
            std::mem::size_of::<E>(),
            config.name()
        ),
    ))
}

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// The shards of a sharded run, `configure_optimizers` and its scheduler (whose rate of
    /// step 0 is set now, as PyTorch's constructor does), and the gradients.
    pub(super) fn configure_optimization(&mut self) -> Result<()> {
        let env = &self.dist.env;
        if self.dist.strategy == Strategy::ShardGradOp && env.world_size > 1 {
            let shards = Shards::new(&*self.model, env.global_rank, env.world_size)?;
            self.optimization.shards = Some(shards);
        }
        if self.dist.strategy == Strategy::FullShard {
            if self.optimization.half.is_some() {
                return Err(Error::config(
                    "precision",
                    "16-mixed under FULL_SHARD is not built; train in \"32-true\" (or \"16-true\"), or use \"fsdp:SHARD_GRAD_OP\"",
                ));
            }
            let run = FullShard::new(&mut *self.model, self.dist.collective.clone())?;
            self.optimization.full_shard = Some(Rc::new(RefCell::new(run)));
        }
        let configs = self.model.configure_optimizers().0;
        self.check_optimizers(configs.len())?;
        let asked = self.rates_asked_before(&configs)?;
        for (index, mut config) in configs.into_iter().enumerate() {
            if config.fields().is_some() && self.optimization.full_shard.is_some() {
                return Err(Error::config("Optim::params", "choosing an optimizer's fields is not built for FULL_SHARD yet (its shards hold whole units); use \"ddp\" or \"fsdp:SHARD_GRAD_OP\""));
            }
            crate::optim::check_fields(&config, &Tensors(&*self.model), M::NAME)?;
            let schedule = config.scheduler.take();
            check_eps::<E>(&config)?;
            if !config.groups().is_empty() && self.optimization.full_shard.is_some() {
                return Err(Error::config("Optim::group", "parameter groups are not built for FULL_SHARD yet (its shards hold whole units); use \"ddp\" or \"fsdp:SHARD_GRAD_OP\""));
            }
            let mut optimizer = Optimizer::<E, D>::new(config)?;
            optimizer.set_offload(self.dist.cpu_offload);
            // One schedule per group, from the group's own rate (as PyTorch's schedulers).
            let mut groups = Vec::new();
            for g in 0..=optimizer.config().groups().len() {
                let lr = (asked.iter().rev().find(|r| (r.0, r.1) == (index, g)))
                    .map_or_else(|| optimizer.config().for_group(g, None).lr(), |r| r.2);
                groups.push(match &schedule {
                    Some(schedule) => {
                        let (scheduler, first) = Scheduler::new(schedule.clone(), lr)?;
                        Grouped {
                            scheduler: Some(scheduler),
                            rates: first,
                        }
                    }
                    None => Grouped {
                        scheduler: None,
                        rates: Rates { lr, momentum: None },
                    },
                });
            }
            self.optimization
                .optimizers
                .push(Configured { optimizer, groups });
        }
        self.check_schedulers()?;
        // What LearningRateMonitor follows: every step if any scheduler steps on steps.
        let intervals = (self.optimization.optimizers.iter())
            .flat_map(|c| c.schedulers().map(|s| s.interval()).collect::<Vec<_>>());
        self.view.scheduler_interval = intervals.max_by_key(|i| *i != Interval::Epoch);
        self.publish_rates();
        // Under FULL_SHARD the gradients are the shards' (the module's are dropped after each
        // backward).
        if self.optimization.full_shard.is_none() {
            self.optimization.grads = Some(self.model.alloc_grads());
        }
        Ok(())
    }

    /// The rates callbacks asked for before the optimizers existed (`set_group_lr` in
    /// `setup`): each group's configured rate, checked against `configs`.
    fn rates_asked_before(&mut self, configs: &[Optim]) -> Result<Vec<(usize, usize, f64)>> {
        let asked = std::mem::take(&mut self.view.lr_requests);
        for &(opt, group, lr) in &asked {
            let Some(config) = configs.get(opt) else {
                return Err(Error::config(
                    "set_group_lr",
                    format!(
                        "optimizer {opt} does not exist: configure_optimizers returns {}",
                        configs.len()
                    ),
                ));
            };
            let groups = config.groups().len() + 1;
            if group >= groups {
                return Err(Error::config(
                    "set_group_lr",
                    format!("optimizer {opt} has no parameter group {group} (it has {groups})"),
                ));
            }
            if !(lr >= 0.0 && lr.is_finite()) {
                return Err(Error::config(
                    "set_group_lr",
                    format!("{lr} is not a finite learning rate >= 0"),
                ));
            }
        }
        Ok(asked)
    }

    /// Refuses what this run cannot do with `count` optimizers: none; several under automatic
    /// optimization (as Lightning); under manual optimization, what the trainer would do for
    /// the step (accumulation, clipping) and what is not built for it (sharding).
    fn check_optimizers(&self, count: usize) -> Result<()> {
        let manual = <M::Optimization as OptimizationMode>::MANUAL;
        let refuse = |setting: &str, why: &str| Err(Error::config(setting, why.to_string()));
        if count == 0 {
            return refuse("configure_optimizers", "returns no optimizer");
        }
        if !manual && count > 1 {
            return Err(Error::config(
                "configure_optimizers",
                format!("returns {count} optimizers, but several optimizers need manual optimization: write `#[lightning_module(manual_optimization)]` on the impl and step them in training_step (as Lightning requires)"),
            ));
        }
        if !manual {
            return Ok(());
        }
        if self.view.accumulate_grad_batches > 1 {
            return refuse("accumulate_grad_batches", "is the trainer's under automatic optimization; under manual optimization, step the optimizers every few batches in training_step");
        }
        if self.settings.gradient_clip_val.is_some() {
            return refuse("gradient_clip_val", "is the trainer's under automatic optimization; under manual optimization, call `ctx.clip_gradients` in training_step");
        }
        if self.dist.strategy == Strategy::ShardGradOp || self.dist.strategy == Strategy::FullShard
        {
            return refuse(
                "strategy",
                "sharding (fsdp) is not built for manual optimization yet; use \"ddp\"",
            );
        }
        Ok(())
    }

    /// Under manual optimization, refuses a `ReduceLROnPlateau` on optimizer steps: it would
    /// step inside `training_step`, before the step's values are logged. Under automatic
    /// optimization, refuses a scheduler for a manual step to step.
    fn check_schedulers(&self) -> Result<()> {
        let manual = <M::Optimization as OptimizationMode>::MANUAL;
        let schedulers = self
            .optimization
            .optimizers
            .iter()
            .flat_map(|c| c.schedulers());
        for s in schedulers {
            if !manual && s.interval() == Interval::Manual {
                return Err(Error::config(
                    "lr_scheduler.interval",
                    "Interval::Manual is stepped by a manual step's `ctx.lr_scheduler_step`; under automatic optimization use Interval::Epoch or Interval::Step",
                ));
            }
            if manual && s.interval() == Interval::Step && s.monitor().is_some() {
                return Err(Error::config(
                    "ReduceLROnPlateau.interval",
                    "a ReduceLROnPlateau on optimizer steps under manual optimization would read the values of the batch before (it steps inside training_step); use the epoch interval",
                ));
            }
        }
        Ok(())
    }

    /// The parameters the first optimizer (automatic optimization's only one) steps: what
    /// clipping and the anomaly check cover, as Lightning's `main_params(optimizer)`.
    fn stepped(&self) -> Result<Selected<'_, Tensors<'_, M>>> {
        let first = (self.optimization.optimizers.first())
            .ok_or_else(|| Error::msg("an optimizer step without an optimizer"))?;
        Ok(Selected {
            params: Tensors(&*self.model),
            config: first.optimizer.config(),
            frozen: first.optimizer.frozen(),
        })
    }

    /// Shows every optimizer's rates in the view.
    pub(in crate::trainer) fn publish_rates(&mut self) {
        self.view.optimizers = self
            .optimization
            .optimizers
            .iter()
            .map(|c| c.info())
            .collect();
        self.view.lr_requests.clear();
    }

    /// The backward of the step's loss, divided by the window's size (Lightning's rule, so
    /// that the summed gradients are a mean), into the summed gradients; in 16-mixed from the
    /// half copy's loss, unscaled.
    pub(super) fn backward(&mut self, loss: Option<Loss<E, D>>, batch_idx: usize) -> Result<()> {
        let k = self.position.window;
        let o = &mut self.optimization;
        match (loss, o.half.as_mut(), o.grads.as_mut()) {
            (Some(loss), ..) => {
                let loss = match k {
                    1 => loss,
                    _ => loss / E::from_usize(k).unwrap_or_else(E::one),
                };
                let fsdp = o.full_shard.clone();
                let mut grads =
                    guard("backward", batch_idx, || sharded(&fsdp, || loss.backward()))?;
                // FULL_SHARD: the units reduce-scattered their gradients as the backward left
                // them; the top-level fields' follow, and the module's gradients are dropped.
                if let Some(run) = fsdp {
                    run.borrow_mut()
                        .scatter_root_grads(&*self.model, &mut grads)?;
                    return self.roots(false);
                }
                o.grads = Some(grads);
            }
            (None, Some(half), Some(grads)) => {
                let model = &mut *self.model;
                guard("backward", batch_idx, || half.backward(model, grads, k))??
            }
            (None, ..) => return Err(Error::msg("16-mixed: no gradients to add to")),
        }
        Ok(())
    }

    /// At the end of an accumulation window: the module's `optimizer_step`, which takes the
    /// step (or skips it) with the rates it sets; the step is the gradients averaged over the
    /// ranks and checked, `on_before_optimizer_step`, `configure_gradient_clipping`, the
    /// clipped step, zeroed gradients, the step-interval scheduler.
    pub(super) fn optimizer_step(&mut self, batch_idx: usize) -> Result<()> {
        // The rates callbacks asked for so far are the ones the hook starts from.
        self.take_lr_request()?;
        let lrs = match self.optimization.optimizers.first() {
            Some(first) => first.rates().iter().map(|r| r.lr).collect(),
            None => return Ok(()),
        };
        let mut asked = OptimizerStep::new(lrs);
        let epoch = self.view.current_epoch;
        (self.model).optimizer_step(self.view, epoch, batch_idx, &mut asked);
        self.after_hook()?;
        let (stepped, before, after) = asked.into_parts();
        self.set_rates(&before)?;
        if !stepped {
            return self.skip_step();
        }
        match self.optimization.full_shard.clone() {
            Some(run) => self.sharded_step(&run)?,
            None => self.step()?,
        }
        // The rates set after the step are the next steps', unless a scheduler's step now
        // yields others (as in Lightning, where the scheduler steps after `optimizer_step`).
        self.set_rates(&after)?;
        self.view.global_step += 1;
        self.step_scheduler(Interval::Step, self.view.global_step)
    }

    /// The rates `optimizer_step` set, as the first optimizer's groups' own (checked: a
    /// group it has, a finite rate >= 0).
    fn set_rates(&mut self, set: &[RateSet]) -> Result<()> {
        if let Some(bad) = set.iter().find(|r| !(r.lr >= 0.0 && r.lr.is_finite())) {
            return Err(Error::config(
                "optimizer_step",
                format!(
                    "sets the learning rate {}, which is not a finite rate >= 0",
                    bad.lr
                ),
            ));
        }
        let Some(first) = self.optimization.optimizers.first_mut() else {
            return Ok(());
        };
        let mut asked: Vec<_> = set.iter().map(|r| (0, r.group, r.lr)).collect();
        if first.take_requests(0, &mut asked)? {
            // Shown in the view; the callbacks' own requests stay pending.
            self.view.optimizers = (self.optimization.optimizers.iter())
                .map(|c| c.info())
                .collect();
        }
        Ok(())
    }

    /// A step the module's `optimizer_step` skipped: the window's gradients do not reach a
    /// step. The trainer zeroes them (unless the module wrote `optimizer_zero_grad`, whose
    /// call at the next window decides), and 16-mixed forgets the window's overflow.
    fn skip_step(&mut self) -> Result<()> {
        if let Some(half) = self.optimization.half.as_mut() {
            half.skip_window();
        }
        if M::HAS_OPTIMIZER_ZERO_GRAD {
            return Ok(());
        }
        if let Some(run) = &self.optimization.full_shard {
            run.borrow_mut().zero_grads();
        }
        if let Some(grads) = self.optimization.grads.take() {
            self.optimization.grads = Some(self.zeroed(grads)?);
        }
        Ok(())
    }

    /// The step of the gradients summed over the window (not FULL_SHARD's).
    fn step(&mut self) -> Result<()> {
        let Some(mut grads) = self.optimization.grads.take() else {
            return Ok(());
        };
        let finite = self.finish_window(&mut grads)?;
        hook!(self, on_before_optimizer_step());
        if finite {
            self.optimization.grads = Some(grads);
            self.weights_hook(At::BeforeOptimizerStep, true)?;
            let Some(taken) = self.optimization.grads.take() else {
                return Ok(());
            };
            grads = taken;
        }
        let clipping = self.configure_clipping()?;
        if finite {
            let clip = self.clipping(clipping, &self.stepped()?, &mut grads)?;
            self.take_lr_request()?;
            if let Some(first) = self.optimization.optimizers.first_mut() {
                let rates = first.rates();
                first
                    .optimizer
                    .step_at(self.model, &mut grads, clip, &rates)?;
            }
            if let Some(shards) = &self.optimization.shards {
                shards.gather_params(&*self.dist.collective, &mut *self.model)?;
            }
        }
        // A module that wrote `optimizer_zero_grad` zeroes them there.
        self.optimization.grads = Some(match M::HAS_OPTIMIZER_ZERO_GRAD {
            true => grads,
            false => self.zeroed(grads)?,
        });
        Ok(())
    }

    /// The module's `configure_gradient_clipping`: the clipping it chose for this step.
    fn configure_clipping(&mut self) -> Result<Option<(f64, ClipAlgorithm)>> {
        let s = self.settings;
        let mut clipping = GradientClipping::new(s.gradient_clip_val, s.gradient_clip_algorithm);
        self.model
            .configure_gradient_clipping(self.view, &mut clipping);
        self.after_hook()?;
        Ok(clipping.chosen())
    }

    /// FULL_SHARD's step: the gradients were reduce-scattered by the backward, so each rank
    /// checks, clips (by the norm over every rank's shards) and steps its own shards.
    fn sharded_step(&mut self, run: &Shared<E, D>) -> Result<()> {
        {
            let mut run = run.borrow_mut();
            let FullShard { params, grads, .. } = &mut *run;
            self.check_anomaly(&*params, grads)?;
        }
        // Not borrowed while hooks run: one may ask for a checkpoint.
        hook!(self, on_before_optimizer_step());
        self.weights_hook(At::BeforeOptimizerStep, false)?;
        let clipping = self.configure_clipping()?;
        let mut run = run.borrow_mut();
        let FullShard { params, grads, .. } = &mut *run;
        let clip = self.clipping(clipping, &*params, grads)?;
        self.take_lr_request()?;
        if let Some(first) = self.optimization.optimizers.first_mut() {
            let rates = first.rates();
            first
                .optimizer
                .step_params_at(params, grads, clip, &rates)?;
        }
        if !M::HAS_OPTIMIZER_ZERO_GRAD {
            run.zero_grads();
        }
        Ok(())
    }

    /// Whether the window is stepped on: in 16-mixed a window with a non-finite gradient is
    /// not (the step still counts, as with PyTorch's GradScaler, and the loss scale backs
    /// off); under DDP only if no rank saw one, and then with the gradients averaged over the
    /// ranks. `detect_anomaly` names a non-finite gradient.
    fn finish_window(&mut self, grads: &mut Gradients<E, D>) -> Result<bool> {
        let finite = match self.optimization.half.as_mut() {
            Some(half) => {
                let ok = half.finish_window();
                self.view.loss_scale = Some(half.scaler().scale);
                ok
            }
            None => true,
        };
        let c = &*self.dist.collective;
        let finite = crate::distributed::all_true(c, finite)?;
        if !finite {
            return Ok(false);
        }
        match &self.optimization.shards {
            // SHARD_GRAD_OP: each gradient onto its owner.
            Some(shards) => shards.reduce_grads(c, &*self.model, grads)?,
            None => crate::distributed::average_grads(c, &self.stepped()?, grads)?,
        }
        self.check_anomaly(&self.stepped()?, grads)?;
        Ok(true)
    }

    /// `detect_anomaly`: an error naming a parameter whose gradient is not finite. Under
    /// sharding each rank checks its own gradients, and all stop if one finds one.
    fn check_anomaly(&self, params: &dyn Params<E, D>, grads: &mut Gradients<E, D>) -> Result<()> {
        if !self.settings.detect_anomaly {
            return Ok(());
        }
        let bad = grads::first_non_finite(params, grads)?;
        if crate::distributed::all_true(&*self.dist.collective, bad.is_none())? {
            return Ok(());
        }
        let name = bad.map_or("a parameter of another rank".into(), |n| format!("`{n}`"));
        Err(Error::msg(format!(
            "detect_anomaly: the gradient of {name} holds NaN or infinity at epoch {}, step {}; no step was taken",
            self.view.current_epoch, self.view.global_step
        )))
    }

    /// What `clipping` (the hook's choice) does to every gradient of `params` this step
    /// (done by the optimizer's step, where the gradients live).
    fn clipping(
        &self,
        clipping: Option<(f64, ClipAlgorithm)>,
        params: &dyn Params<E, D>,
        grads: &mut Gradients<E, D>,
    ) -> Result<Clip> {
        if let Some((c, _)) = clipping.filter(|(c, _)| !(*c >= 0.0 && c.is_finite())) {
            return Err(Error::config(
                "configure_gradient_clipping",
                format!("clips at {c}, which is not a finite value >= 0"),
            ));
        }
        let max = match clipping {
            Some((c, ClipAlgorithm::Norm)) => c,
            Some((c, ClipAlgorithm::Value)) => return Ok(Clip::Clamp(c)),
            None => return Ok(Clip::None),
        };
        let o = &self.optimization;
        let comm = &*self.dist.collective;
        let sharded = o.shards.is_some() || o.full_shard.is_some();
        // Under sharding each rank holds its own tensors' gradients: Σ g² over the ranks.
        let total = |local: f64| {
            let mut sum = [local];
            if sharded {
                comm.all_reduce_sum_f64(&mut sum)?;
            }
            Ok(sum[0])
        };
        grads::clip_norm(params, grads, max, total).map_err(|e| {
            Error::msg(format!(
                "epoch {}, step {}: {e}",
                self.view.current_epoch, self.view.global_step
            ))
        })
    }

    /// The learning rates callbacks asked for (`TrainerView::set_lr`, `set_group_lr`)
    /// become the first optimizer's next step's (the step refuses one that is not finite and
    /// non-negative).
    fn take_lr_request(&mut self) -> Result<()> {
        let count = self.optimization.optimizers.len();
        if let Some(&(opt, ..)) = self.view.lr_requests.iter().find(|r| r.0 >= count) {
            return Err(Error::config(
                "set_group_lr",
                format!("optimizer {opt} does not exist: configure_optimizers returns {count}"),
            ));
        }
        let first = self.optimization.optimizers.first_mut();
        if let Some(first) = first {
            if first.take_requests(0, &mut self.view.lr_requests)? {
                self.publish_rates();
            }
        }
        Ok(())
    }

    /// Steps the schedulers that run on `interval` where `count` (steps or epochs done) is a
    /// multiple of their frequency; their rates are the next steps'.
    /// Under automatic optimization each due scheduler goes through the module's
    /// `lr_scheduler_step` first, which may hold it back.
    pub(in crate::trainer) fn step_scheduler(
        &mut self,
        interval: Interval,
        count: usize,
    ) -> Result<()> {
        let manual = <M::Optimization as OptimizationMode>::MANUAL;
        let mut stepped = false;
        for (index, c) in self.optimization.optimizers.iter_mut().enumerate() {
            let metrics = &self.view.callback_metrics;
            let Some(due) = c.due(interval, count, metrics) else {
                continue;
            };
            if !manual {
                let mut asked = SchedulerStep::new(index, due.metric);
                self.model.lr_scheduler_step(self.view, &mut asked);
                self.view.take_error()?;
                if !asked.stepped() {
                    continue;
                }
            }
            stepped |= c.step_scheduler(interval, count, &self.view.callback_metrics)?;
        }
        if stepped {
            self.publish_rates();
        }
        Ok(())
    }
}

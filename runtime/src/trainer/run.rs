//! The loops. One `Run` holds what a stage needs; each loop is a method, each hook point one
//! `hook!` line, so that the order of calls reads top to bottom as in Lightning's docs.

use std::collections::BTreeMap;

use dfdx::nn::ZeroGrads;
use dfdx::tensor::Gradients;
use dfdx::tensor_ops::Backward;

use super::aggregate::{EpochMetrics, Reduced};
use super::settings::{Limit, Settings};
use super::{Trainer, TrainerView};
use crate::callback::Callback;
use crate::checkpoint::Checkpoint;
use crate::checkpoint::CkptDtype;
use crate::context::StepInfo;
use crate::context::{LogEntry, LogValue, StepContext};
use crate::data::DataLoader;
use crate::datamodule::{DataModule, Stage};
use crate::hparams::HParams;
use crate::module::LightningModule;
use crate::optim::scheduler::Rates;
use crate::optim::{grads, Clip, ClipAlgorithm, Interval, Optimizer, Scheduler};
use crate::precision::HalfStep;
use crate::progress::Progress;
use crate::{Error, Result};
use crate::{FloatDtype, TrainDevice};

pub(super) struct RunResult<P> {
    pub metrics: BTreeMap<String, f64>,
    pub predictions: Vec<P>,
}

/// Calls hook `$name` on every callback, then on the module; a failure reported through the
/// view ends the run.
macro_rules! hook {
    ($run:expr, $name:ident($($arg:expr),*)) => {{
        for cb in $run.callbacks.iter_mut() {
            cb.$name(&mut $run.view, $($arg),*);
        }
        $run.model.$name(&mut $run.view, $($arg),*);
        $run.after_hook()?;
    }};
}

mod checkpoints;

/// How far the current epoch has come, for checkpoints saved inside it.
#[derive(Default)]
struct Position {
    batches_done: usize,
    epoch_done: bool,
}

struct Run<'a, E, D, M, DM>
where
    E: FloatDtype,
    D: TrainDevice<E>,
    M: LightningModule<E, D>,
    DM: DataModule,
{
    model: &'a mut M,
    /// This rank and its collectives (a one-process run: rank 0 of 1).
    dist: &'a super::Dist,
    /// The signals `fit` catches under SLURM.
    signals: Option<crate::distributed::requeue::Signals>,
    /// Under SHARD_GRAD_OP, which rank owns each parameter.
    shards: Option<crate::distributed::shard::Shards>,
    /// Samples into the module's batch (collated in f32, cast to `E`).
    collate: fn(Vec<DM::Sample>, &D) -> M::Batch,
    dm: &'a mut DM,
    callbacks: &'a mut Vec<Box<dyn Callback>>,
    view: &'a mut TrainerView,
    /// The device batches are collated on; during training it is re-seeded every step from
    /// `run_seed` and the step, so that a resumed run draws the same random numbers.
    device: D,
    run_seed: u64,
    progress: Progress,
    s: &'a Settings,
    optimizer: Option<Optimizer<E, D>>,
    /// The half-precision side of "16-mixed" steps.
    half: Option<Box<dyn HalfStep<E, D, M, DM::Sample> + 'a>>,
    /// Gradients summed since the last optimizer step (kept between batches for
    /// `accumulate_grad_batches`, and by checkpoints saved inside an accumulation window).
    grads: Option<Gradients<E, D>>,
    /// Training batches per epoch (after `limit_train_batches`).
    train_batches: usize,
    scheduler: Option<Scheduler>,
    resume: Option<Checkpoint>,
    train_loader_seed: u64,
    position: Position,
    epoch_metrics: EpochMetrics,
}

impl Trainer {
    #[allow(clippy::too_many_arguments)]
    pub(super) fn run<E, D, M, DM>(
        &mut self,
        model: &mut M,
        dm: &mut DM,
        stage: Stage,
        resume: Option<Checkpoint>,
        device: D,
        collate: fn(Vec<DM::Sample>, &D) -> M::Batch,
        half: crate::precision::HalfSteps<'_, E, D, M, DM::Sample>,
    ) -> Result<RunResult<M::Prediction>>
    where
        E: FloatDtype + CkptDtype,
        D: TrainDevice<E>,
        M: LightningModule<E, D>,
        DM: DataModule,
    {
        self.ensure_logger()?;
        let view = &mut self.view;
        view.stage = stage;
        view.should_stop = false;
        view.max_epochs = self.settings.max_epochs;
        view.max_steps = self.settings.max_steps;
        view.accumulate_grad_batches = self.settings.accumulate_grad_batches;
        if stage == Stage::Fit {
            view.current_epoch = 0;
            view.global_step = 0;
            view.callback_metrics.clear();
        }
        let module_callbacks = model.configure_callbacks();
        let own = self.callbacks.len();
        self.callbacks.extend(module_callbacks);
        let run_seed = crate::seed::next_seed();
        let mut run = Run {
            model,
            dist: &self.dist,
            signals: None,
            shards: None,
            collate,
            dm,
            callbacks: &mut self.callbacks,
            view,
            device: device.reseeded(run_seed),
            run_seed,
            progress: Progress::new(self.enable_progress_bar),
            s: &self.settings,
            optimizer: None,
            half,
            grads: None,
            train_batches: 0,
            scheduler: None,
            resume,
            train_loader_seed: 0,
            position: Position::default(),
            epoch_metrics: EpochMetrics::default(),
        };
        let result = run.stage(stage);
        // Whatever happened, what was logged reaches the disk.
        let flushed = match run.view.logger.as_deref_mut() {
            Some(logger) => logger.finalize(),
            None => Ok(()),
        };
        drop(run);
        self.callbacks.truncate(own);
        let result = result?;
        flushed?;
        Ok(result)
    }
}

impl<E, D, M, DM> Run<'_, E, D, M, DM>
where
    E: FloatDtype + CkptDtype,
    D: TrainDevice<E>,
    M: LightningModule<E, D>,
    DM: DataModule,
{
    fn stage(&mut self, stage: Stage) -> Result<RunResult<M::Prediction>> {
        // Once per node (downloads, unpacking); the other ranks wait for it.
        if self.dist.env.local_rank == 0 {
            self.dm.prepare_data()?;
        }
        self.dist.collective.barrier()?;
        self.dm.setup(stage)?;
        hook!(self, setup(stage));
        let mut result = RunResult {
            metrics: BTreeMap::new(),
            predictions: Vec::new(),
        };
        match stage {
            Stage::Fit => self.fit()?,
            Stage::Validate | Stage::Test => {
                let (loader, what) = if stage == Stage::Validate {
                    (self.dm.val_dataloader()?, "val_dataloader")
                } else {
                    (self.dm.test_dataloader()?, "test_dataloader")
                };
                let loader = self.shard(loader.ok_or_else(|| missing(what, stage))?, false)?;
                loader.validate(what)?;
                self.require_step(stage)?;
                result.metrics = self.evaluate(&loader, stage, None)?;
            }
            Stage::Predict => {
                let loader = self
                    .dm
                    .predict_dataloader()?
                    .ok_or_else(|| missing("predict_dataloader", stage))?;
                self.require_step(stage)?;
                result.predictions = self.predict(&loader)?;
            }
        }
        self.dm.teardown(stage)?;
        hook!(self, teardown(stage));
        Ok(result)
    }

    /// What every rank must agree on after a step, in one collective: a stop asked for on any
    /// rank (a callback's `should_stop`) stops every rank, as Lightning's
    /// `reduce_boolean_decision` (a rank going on alone would wait forever); and SLURM's
    /// requeue signal or SIGTERM: the first saves an HPC checkpoint and requeues the job, the
    /// second stops (see [`crate::distributed::requeue`]).
    fn agree_after_step(&mut self) -> Result<()> {
        let (mut requeue, mut term) = self
            .signals
            .as_ref()
            .map_or((false, false), |s| s.pending());
        if self.dist.env.world_size > 1 {
            let mut flags = [requeue, term, self.view.should_stop].map(|f| f64::from(u8::from(f)));
            self.dist.collective.all_reduce_max_f64(&mut flags)?;
            (requeue, term) = (flags[0] > 0.0, flags[1] > 0.0);
            self.view.should_stop = flags[2] > 0.0;
        }
        let (epoch, step) = (self.view.current_epoch, self.view.global_step);
        if requeue {
            let path =
                crate::distributed::requeue::next_hpc_checkpoint(&self.view.default_root_dir);
            let job = self.dist.env.job_id.clone().unwrap_or_default();
            // Under sharding every rank takes part in gathering the optimizer state.
            if self.shards.is_some() || self.dist.env.is_global_zero() {
                let ckpt = self.checkpoint(false)?;
                if self.dist.env.is_global_zero() {
                    ckpt.write(&path)?;
                    crate::distributed::requeue::requeue(&job)?;
                }
            }
            self.dist.collective.barrier()?;
            return Err(Error::Requeued {
                checkpoint: path,
                job,
                epoch,
                step,
            });
        }
        if term {
            return Err(Error::Terminated { epoch, step });
        }
        Ok(())
    }

    /// Under DDP with the distributed sampler, this rank's share of `loader`; a training
    /// loader also takes rank 0's shuffle seed, so that the ranks split one order.
    fn shard(&self, loader: DataLoader<DM::Sample>, train: bool) -> Result<DataLoader<DM::Sample>> {
        let (env, c) = (&self.dist.env, &*self.dist.collective);
        if env.world_size == 1 || !self.dist.sampler {
            return Ok(loader);
        }
        let loader = if train {
            let mut seed = loader.shuffle_seed().to_le_bytes().to_vec();
            c.broadcast(0, &mut seed)?;
            let seed = seed
                .try_into()
                .map(u64::from_le_bytes)
                .map_err(|_| Error::msg("rank 0 sent a malformed shuffle seed"))?;
            loader.seed(seed)
        } else {
            loader
        };
        Ok(loader.distributed(env.global_rank, env.world_size))
    }

    fn require_step(&self, stage: Stage) -> Result<()> {
        let (has, step) = match stage {
            Stage::Validate => (M::HAS_VALIDATION_STEP, "validation_step"),
            Stage::Test => (M::HAS_TEST_STEP, "test_step"),
            Stage::Predict => (M::HAS_PREDICT_STEP, "predict_step"),
            Stage::Fit => (true, "training_step"),
        };
        if has {
            Ok(())
        } else {
            Err(Error::config(
                stage.as_str(),
                format!(
                    "`{}` has no `{step}`; write one in its #[lightning_module] impl",
                    M::NAME
                ),
            ))
        }
    }

    fn log_hparams(&mut self, dm_hparams: HParams) -> Result<()> {
        let mut hparams = self.model.hparams();
        hparams.extend(&dm_hparams);
        match self.view.logger.as_deref_mut() {
            Some(logger) => logger.log_hyperparams(&hparams),
            None => Ok(()),
        }
    }

    fn fit(&mut self) -> Result<()> {
        let train = self
            .dm
            .train_dataloader()?
            .ok_or_else(|| missing("train_dataloader", Stage::Fit))?;
        let mut train = self.shard(train, true)?;
        train.validate("train_dataloader")?;
        if self.s.overfit_batches != Limit::Count(0) {
            train = train.shuffle(false);
        }
        let val = match self.dm.val_dataloader()? {
            Some(val) if M::HAS_VALIDATION_STEP => {
                let val = self.shard(val, false)?;
                val.validate("val_dataloader")?;
                // limit_val_batches=0 turns validation off.
                let n = self
                    .s
                    .limit_val_batches
                    .of(val.len(), "limit_val_batches")?;
                (n > 0).then_some(val)
            }
            _ => None,
        };
        self.train_batches = self
            .s
            .limit_train_batches
            .of(train.len(), "limit_train_batches")?;
        // As in Lightning: the module, callbacks and data module are restored before
        // `configure_optimizers`, the optimizer and loops after it.
        let resume = self.resume.take();
        if let Some(ckpt) = &resume {
            self.restore_modules(ckpt)?;
        }
        // Every rank starts from rank 0's weights (DDP's broadcast at construction).
        crate::distributed::broadcast_module(&*self.dist.collective, &mut *self.model)?;
        let env = &self.dist.env;
        if self.dist.strategy == crate::distributed::Strategy::ShardGradOp && env.world_size > 1 {
            let shards = crate::distributed::shard::Shards::new(
                &*self.model,
                env.global_rank,
                env.world_size,
            )?;
            self.shards = Some(shards);
        }
        let mut config = self.model.configure_optimizers();
        let schedule = config.scheduler.take();
        // In half precision (16-true) Adam's default eps of 1e-8 is 0, and its first step
        // divides by zero: refuse it before training instead of stopping on a NaN loss.
        let uses_eps = config.kind() != crate::optim::OptimKind::Sgd;
        if uses_eps && !E::from(config.eps_value()).is_some_and(|e| e.is_normal()) {
            return Err(Error::config(
                "eps",
                format!(
                    "{} is not a normal number in the {}-byte dtype this run trains in, so {} would divide by zero; set `.eps(1e-4)` in configure_optimizers or train in precision \"16-mixed\"",
                    config.eps_value(),
                    std::mem::size_of::<E>(),
                    config.name()
                ),
            ));
        }
        let mut optimizer = Optimizer::<E, D>::new(config)?;
        self.view.lr = optimizer.lr();
        if let Some(schedule) = schedule {
            // As PyTorch's constructor: the rate of step 0 is set now.
            let (scheduler, rates) = Scheduler::new(schedule, optimizer.lr())?;
            apply(&mut optimizer, self.view, rates)?;
            self.scheduler = Some(scheduler);
        }
        self.view.optimizer_name = optimizer.config().name();
        self.view.momentum = Some(optimizer.config().momentum_value());
        self.view.scheduler_interval = self.scheduler.as_ref().map(|s| s.interval());
        self.optimizer = Some(optimizer);
        self.grads = Some(self.model.alloc_grads());
        let mut start_batch = 0;
        if let Some(ckpt) = &resume {
            start_batch = self.restore_training_state(ckpt, &mut train)?;
        }
        if let (Some(shards), Some(optimizer)) = (&self.shards, self.optimizer.as_mut()) {
            optimizer.set_owned(Some(shards.owned()));
        }
        self.train_loader_seed = train.shuffle_seed();
        self.view.loss_scale = self.half.as_ref().map(|h| h.scaler().scale);
        self.view.num_training_batches = self.train_batches;
        self.view.model_parameters = super::ParamInfo::of_module(&*self.model)?;
        self.view.model_layers = <M as crate::spec::Layers>::LAYERS;
        self.log_hparams(self.dm.hparams())?;

        hook!(self, on_fit_start());
        let sanity = match &val {
            Some(val) => self.s.num_sanity_val_steps.min(
                self.s
                    .limit_val_batches
                    .of(val.len(), "limit_val_batches")?,
            ),
            None => 0,
        };
        if let (Some(val), n @ 1..) = (&val, sanity) {
            self.view.sanity_checking = true;
            hook!(self, on_sanity_check_start());
            self.evaluate(val, Stage::Validate, Some(n))?;
            hook!(self, on_sanity_check_end());
            self.view.sanity_checking = false;
        }
        if let Some(sig) = self.dist.requeue_signal {
            self.signals = Some(crate::distributed::requeue::Signals::catch(Some(sig))?);
        }
        hook!(self, on_train_start());
        while self.train_batches > 0 && !self.done_training() {
            self.train_epoch(&train, val.as_ref(), start_batch)?;
            start_batch = 0;
        }
        hook!(self, on_train_end());
        hook!(self, on_fit_end());
        Ok(())
    }

    fn max_steps_reached(&self) -> bool {
        self.s.max_steps.is_some_and(|m| self.view.global_step >= m)
    }

    /// A stop request that `min_epochs` / `min_steps` allow now.
    fn stop_requested(&mut self, epochs_done: usize) -> bool {
        if !self.view.should_stop {
            return false;
        }
        if self.s.can_stop(epochs_done, self.view.global_step) {
            return true;
        }
        // Lightning's rule: the request is dropped until the minimums are met.
        self.view.should_stop = false;
        false
    }

    fn done_training(&mut self) -> bool {
        let epoch = self.view.current_epoch;
        self.s.max_epochs.is_some_and(|m| epoch >= m)
            || self.max_steps_reached()
            || self.stop_requested(epoch)
    }

    /// One training epoch from batch `start` on (0 unless resuming inside the epoch).
    fn train_epoch(
        &mut self,
        train: &DataLoader<DM::Sample>,
        val: Option<&DataLoader<DM::Sample>>,
        start: usize,
    ) -> Result<()> {
        let epoch = self.view.current_epoch;
        let total = self.train_batches;
        let label = match self.s.max_epochs {
            Some(max) => format!("Epoch {epoch}/{}", max.saturating_sub(1)),
            None => format!("Epoch {epoch}"),
        };
        self.progress.start(label, total);
        if start == 0 {
            self.epoch_metrics = EpochMetrics::default();
        }
        self.position = Position {
            batches_done: start,
            epoch_done: false,
        };
        // Validation runs after every `val_every`-th batch of the epochs it is due in.
        let val = val.filter(|_| (epoch + 1).is_multiple_of(self.s.check_val_every_n_epoch));
        let val_every = match self.s.val_check_interval {
            Limit::Count(n) if n > total => {
                return Err(Error::config(
                    "val_check_interval",
                    format!("{n} batches is more than the {total} training batches of an epoch"),
                ))
            }
            interval => interval.of(total, "val_check_interval")?.max(1),
        };
        hook!(self, on_train_epoch_start());
        let k = self.view.accumulate_grad_batches;
        let mut batches = start;
        let mut stopped = false;
        let mut validated_after = None;
        for (i, samples) in train
            .epoch_from(epoch, start)
            .take(total.saturating_sub(start))
            .enumerate()
        {
            let batch_idx = start + i;
            batches += 1;
            self.device = self.device.reseeded(crate::seed::mix(
                self.run_seed,
                (self.view.global_step * k + batch_idx % k) as u64,
            ));
            hook!(self, on_train_batch_start(batch_idx));
            let batch_size = samples.len();
            let info = self.step_info(Stage::Fit, true, batch_idx, batch_size);
            let (value, logs, loss) = match self.half.as_mut() {
                Some(half) => {
                    let (model, device) = (&*self.model, &self.device);
                    let (value, logs) = guard("training_step", batch_idx, || {
                        half.forward(model, samples, device, info)
                    })??;
                    (value, logs, None)
                }
                None => {
                    let mut ctx = StepContext::new(self.device.clone(), info);
                    ctx.grads = self.grads.take();
                    let batch = (self.collate)(samples, &self.device);
                    let model = &mut *self.model;
                    let loss = guard("training_step", batch_idx, || {
                        model.training_step(batch, &mut ctx)
                    })?;
                    (loss.log_value(), std::mem::take(&mut ctx.logs), Some(loss))
                }
            };
            if self.s.check_finite_loss && !value.is_finite() {
                return Err(Error::NonFiniteLoss {
                    value,
                    epoch,
                    step: self.view.global_step,
                    batch: batch_idx,
                });
            }
            self.record_step_logs(&logs)?;
            if batch_idx.is_multiple_of(k) {
                hook!(self, on_before_zero_grad());
            }
            hook!(self, on_before_backward(value));
            match (loss, self.half.as_mut(), self.grads.as_mut()) {
                // Lightning divides the loss by the accumulation count, so that the summed
                // gradients are a mean.
                (Some(loss), ..) => {
                    let loss = if k > 1 {
                        loss / E::from_usize(k).unwrap_or_else(E::one)
                    } else {
                        loss
                    };
                    self.grads = Some(guard("backward", batch_idx, || loss.backward())?);
                }
                (None, Some(half), Some(grads)) => {
                    let model = &mut *self.model;
                    guard("backward", batch_idx, || half.backward(model, grads, k))??
                }
                (None, ..) => return Err(Error::msg("16-mixed: no gradients to add to")),
            }
            hook!(self, on_after_backward());
            let step_now = (batch_idx + 1).is_multiple_of(k) || batch_idx + 1 == total;
            if step_now {
                self.optimizer_step()?;
            }
            self.position.batches_done = batch_idx + 1;
            hook!(self, on_train_batch_end(value, batch_idx));
            self.agree_after_step()?;
            self.progress.advance(&self.view.progress_bar_metrics);
            // As Lightning: validation on its interval (and when asked to stop) comes before
            // the check of max_steps.
            let stop = self.stop_requested(epoch);
            if let Some(val) = val {
                if stop || (batch_idx + 1).is_multiple_of(val_every) {
                    self.evaluate(val, Stage::Validate, None)?;
                    validated_after = Some(batch_idx + 1);
                }
            }
            if stop || (step_now && self.max_steps_reached()) {
                stopped = true;
                break;
            }
        }
        if batches < total && !stopped {
            return Err(Error::msg(format!(
                "the training loader yielded {batches} of its {total} batches in epoch {epoch}: a loader worker stopped (see the panic message above)"
            )));
        }
        // A run resumed after the epoch's last batch still owes its end-of-epoch validation.
        if let Some(val) = val {
            if !stopped && total.is_multiple_of(val_every) && validated_after != Some(total) {
                self.evaluate(val, Stage::Validate, None)?;
            }
        }
        // Training values logged with `sync_dist` are reduced over the ranks.
        self.epoch_metrics.sync(&*self.dist.collective, false)?;
        let reduced = self.epoch_metrics.take();
        self.publish_epoch(&reduced);
        self.progress.finish(&self.view.progress_bar_metrics);
        self.position.epoch_done = true;
        for cb in self.callbacks.iter_mut().filter(|c| !c.is_monitoring()) {
            cb.on_train_epoch_end(self.view);
        }
        self.model.on_train_epoch_end(self.view);
        for cb in self.callbacks.iter_mut().filter(|c| c.is_monitoring()) {
            cb.on_train_epoch_end(self.view);
        }
        self.after_hook()?;
        self.step_scheduler(Interval::Epoch, epoch + 1)?;
        self.log_epoch(&reduced)?;
        self.view.current_epoch += 1;
        self.sync_stop()
    }

    /// A stop asked for on any rank at the epoch's end (early stopping) stops every rank.
    fn sync_stop(&mut self) -> Result<()> {
        if self.dist.env.world_size > 1 {
            let mut any = [f64::from(u8::from(self.view.should_stop))];
            self.dist.collective.all_reduce_max_f64(&mut any)?;
            self.view.should_stop = any[0] > 0.0;
        }
        Ok(())
    }

    /// At the end of an accumulation window: anomaly check, clipping, the step, zeroed
    /// gradients, the step-interval scheduler.
    fn optimizer_step(&mut self) -> Result<()> {
        let Some(mut grads) = self.grads.take() else {
            return Ok(());
        };
        // 16-mixed: a window with a non-finite gradient skips its update (the step still
        // counts, as with PyTorch's GradScaler) and the loss scale backs off.
        let finite = match self.half.as_mut() {
            Some(half) => {
                let ok = half.finish_window();
                self.view.loss_scale = Some(half.scaler().scale);
                ok
            }
            None => true,
        };
        let c = &*self.dist.collective;
        // Under DDP a window is stepped only if no rank saw an infinite gradient, and then
        // with the gradients averaged over the ranks.
        let finite = crate::distributed::all_true(c, finite)?;
        if finite {
            match &self.shards {
                // SHARD_GRAD_OP: each gradient onto its owner.
                Some(shards) => shards.reduce_grads(c, &*self.model, &mut grads)?,
                None => crate::distributed::average_grads(c, &*self.model, &mut grads)?,
            }
        }
        if finite && self.s.detect_anomaly {
            let bad = grads::first_non_finite(&*self.model, &mut grads)?;
            // Under sharding each rank checks its own gradients; all stop if one finds one.
            let clean = crate::distributed::all_true(c, bad.is_none())?;
            if !clean {
                let name = bad.map_or("a parameter of another rank".into(), |n| format!("`{n}`"));
                return Err(Error::msg(format!(
                    "detect_anomaly: the gradient of {name} holds NaN or infinity at epoch {}, step {}; no step was taken",
                    self.view.current_epoch, self.view.global_step
                )));
            }
        }
        hook!(self, on_before_optimizer_step());
        if !finite {
            self.model.zero_grads(&mut grads);
            self.grads = Some(grads);
            self.view.global_step += 1;
            return self.step_scheduler(Interval::Step, self.view.global_step);
        }
        // The clipping is done by the optimizer's step, where the gradients live.
        let clip = match (self.s.gradient_clip_val, self.s.gradient_clip_algorithm) {
            (Some(c), ClipAlgorithm::Norm) => {
                let (comm, sharded) = (&*self.dist.collective, self.shards.is_some());
                let total = |local: f64| {
                    let mut sum = [local];
                    if sharded {
                        comm.all_reduce_sum_f64(&mut sum)?;
                    }
                    Ok(sum[0])
                };
                grads::clip_norm(&*self.model, &mut grads, c, total).map_err(|e| {
                    Error::msg(format!(
                        "epoch {}, step {}: {e}",
                        self.view.current_epoch, self.view.global_step
                    ))
                })?
            }
            (Some(c), ClipAlgorithm::Value) => Clip::Clamp(c),
            (None, _) => Clip::None,
        };
        if let Some(optimizer) = self.optimizer.as_mut() {
            if self.view.lr != optimizer.lr() {
                optimizer.set_lr(self.view.lr)?;
            }
            optimizer.step_clipped(self.model, &mut grads, clip)?;
        }
        if let Some(shards) = &self.shards {
            shards.gather_params(&*self.dist.collective, &mut *self.model)?;
        }
        self.model.zero_grads(&mut grads);
        self.grads = Some(grads);
        self.view.global_step += 1;
        self.step_scheduler(Interval::Step, self.view.global_step)
    }

    /// The validation or test loop; `limit` caps the batches (the sanity check), whose
    /// metrics are discarded.
    fn evaluate(
        &mut self,
        loader: &DataLoader<DM::Sample>,
        stage: Stage,
        limit: Option<usize>,
    ) -> Result<BTreeMap<String, f64>> {
        let test = stage == Stage::Test;
        let mut epoch_metrics = EpochMetrics::default();
        let allowed = if test {
            self.s
                .limit_test_batches
                .of(loader.len(), "limit_test_batches")?
        } else {
            self.s
                .limit_val_batches
                .of(loader.len(), "limit_val_batches")?
        };
        let total = limit.map_or(allowed, |l| l.min(allowed));
        if !self.view.sanity_checking && self.view.stage != Stage::Fit {
            self.progress.start(
                if test {
                    "Testing".into()
                } else {
                    "Validation".into()
                },
                total,
            );
        }
        if test {
            hook!(self, on_test_start());
            hook!(self, on_test_epoch_start());
        } else {
            hook!(self, on_validation_start());
            hook!(self, on_validation_epoch_start());
        }

        for (batch_idx, samples) in loader.epoch(0).take(total).enumerate() {
            if test {
                hook!(self, on_test_batch_start(batch_idx));
            } else {
                hook!(self, on_validation_batch_start(batch_idx));
            }
            let mut ctx = self.context(stage, false, batch_idx, samples.len());
            let batch = (self.collate)(samples, &self.device);
            let model = &mut *self.model;
            if test {
                guard("test_step", batch_idx, || model.test_step(batch, &mut ctx))?;
            } else {
                guard("validation_step", batch_idx, || {
                    model.validation_step(batch, &mut ctx)
                })?;
            }
            for entry in &ctx.logs {
                epoch_metrics.add(entry);
            }
            if test {
                hook!(self, on_test_batch_end(batch_idx));
            } else {
                hook!(self, on_validation_batch_end(batch_idx));
            }
            if self.view.stage != Stage::Fit {
                self.progress.advance(&self.view.progress_bar_metrics);
            }
        }
        // Validation and test metrics are global: reduced over every rank's batches.
        epoch_metrics.sync(&*self.dist.collective, true)?;
        let reduced = epoch_metrics.take();
        if !self.view.sanity_checking {
            self.publish_epoch(&reduced);
        }
        if test {
            hook!(self, on_test_epoch_end());
            hook!(self, on_test_end());
        } else {
            hook!(self, on_validation_epoch_end());
            hook!(self, on_validation_end());
        }
        if !self.view.sanity_checking {
            self.log_epoch(&reduced)?;
            if self.view.stage != Stage::Fit {
                self.progress.finish(&self.view.progress_bar_metrics);
            }
        }
        Ok(reduced.into_iter().map(|(k, r)| (k, r.value)).collect())
    }

    fn predict(&mut self, loader: &DataLoader<DM::Sample>) -> Result<Vec<M::Prediction>> {
        loader.validate("predict_dataloader")?;
        let mut predictions = Vec::with_capacity(loader.len());
        self.progress.start("Predicting".into(), loader.len());
        hook!(self, on_predict_start());
        hook!(self, on_predict_epoch_start());
        let total = self
            .s
            .limit_predict_batches
            .of(loader.len(), "limit_predict_batches")?;
        for (batch_idx, samples) in loader.epoch(0).take(total).enumerate() {
            hook!(self, on_predict_batch_start(batch_idx));
            let mut ctx = self.context(Stage::Predict, false, batch_idx, samples.len());
            let batch = (self.collate)(samples, &self.device);
            let model = &mut *self.model;
            predictions.push(guard("predict_step", batch_idx, || {
                model.predict_step(batch, &mut ctx)
            })?);
            hook!(self, on_predict_batch_end(batch_idx));
            self.progress.advance(&self.view.progress_bar_metrics);
        }
        hook!(self, on_predict_epoch_end());
        hook!(self, on_predict_end());
        self.progress.finish(&self.view.progress_bar_metrics);
        Ok(predictions)
    }

    fn step_info(
        &self,
        stage: Stage,
        training: bool,
        batch_idx: usize,
        batch_size: usize,
    ) -> StepInfo {
        StepInfo {
            stage,
            training,
            batch_idx,
            batch_size,
            epoch: self.view.current_epoch,
            global_step: self.view.global_step,
        }
    }

    fn context(
        &self,
        stage: Stage,
        training: bool,
        batch_idx: usize,
        batch_size: usize,
    ) -> StepContext<E, D> {
        StepContext::new(
            self.device.clone(),
            self.step_info(stage, training, batch_idx, batch_size),
        )
    }

    /// Step-level values: into `callback_metrics` and the progress bar now, into the logger
    /// every `log_every_n_steps` steps; epoch-level values into the running reduction.
    fn record_step_logs(&mut self, logs: &[LogEntry]) -> Result<()> {
        let step = self.view.global_step;
        let write =
            self.view.logger.is_some() && (step + 1).is_multiple_of(self.s.log_every_n_steps);
        let mut to_logger = BTreeMap::new();
        for entry in logs {
            self.epoch_metrics.add(entry);
            if !entry.on_step {
                continue;
            }
            let metrics = &mut self.view.callback_metrics;
            let key = if entry.on_epoch {
                let key = format!("{}_step", entry.name);
                metrics.insert(key.clone(), entry.value);
                key
            } else {
                entry.name.clone()
            };
            match metrics.get_mut(&entry.name) {
                Some(slot) => *slot = entry.value,
                None => {
                    metrics.insert(entry.name.clone(), entry.value);
                }
            }
            if entry.prog_bar {
                self.view
                    .progress_bar_metrics
                    .insert(key.clone(), entry.value);
            }
            if write && entry.logger {
                to_logger.insert(key, entry.value);
            }
        }
        if !to_logger.is_empty() {
            to_logger.insert("epoch".to_string(), self.view.current_epoch as f64);
            if let Some(logger) = self.view.logger.as_deref_mut() {
                logger.log_metrics(&to_logger, step)?;
            }
        }
        Ok(())
    }

    /// Epoch values into `callback_metrics` and the progress bar.
    fn publish_epoch(&mut self, reduced: &BTreeMap<String, Reduced>) {
        for (name, r) in reduced {
            let key = r.key(name);
            self.view.callback_metrics.insert(name.clone(), r.value);
            self.view.callback_metrics.insert(key.clone(), r.value);
            if r.prog_bar {
                self.view.progress_bar_metrics.insert(key, r.value);
            }
        }
    }

    /// Epoch values into the logger, at the index of the last optimizer step.
    fn log_epoch(&mut self, reduced: &BTreeMap<String, Reduced>) -> Result<()> {
        let mut row: BTreeMap<String, f64> = reduced
            .iter()
            .filter(|(_, r)| r.logger)
            .map(|(name, r)| (r.key(name), r.value))
            .collect();
        if row.is_empty() {
            return Ok(());
        }
        row.insert("epoch".to_string(), self.view.current_epoch as f64);
        let step = self.view.global_step.saturating_sub(1);
        match self.view.logger.as_deref_mut() {
            Some(logger) => logger.log_metrics(&row, step),
            None => Ok(()),
        }
    }
}

impl<E, D, M, DM> Run<'_, E, D, M, DM>
where
    E: FloatDtype + CkptDtype,
    D: TrainDevice<E>,
    M: LightningModule<E, D>,
    DM: DataModule,
{
    /// Steps the scheduler if it runs on `interval` and `count` (steps or epochs done) is a
    /// multiple of its frequency.
    fn step_scheduler(&mut self, interval: Interval, count: usize) -> Result<()> {
        let Some(scheduler) = self.scheduler.as_mut() else {
            return Ok(());
        };
        if scheduler.interval() != interval || !count.is_multiple_of(scheduler.frequency()) {
            return Ok(());
        }
        let metric = match scheduler.monitor() {
            Some(m) => Some(*self.view.callback_metrics.get(m).ok_or_else(|| {
                Error::config(
                    "ReduceLROnPlateau.monitor",
                    format!(
                        "`{m}` was never logged; the logged metrics are {:?}",
                        self.view.callback_metrics.keys().collect::<Vec<_>>()
                    ),
                )
            })?),
            None => None,
        };
        let rates = scheduler.step(metric)?;
        if let Some(optimizer) = self.optimizer.as_mut() {
            apply(optimizer, self.view, rates)?;
        }
        Ok(())
    }
}

/// Sets a scheduler's rates on the optimizer and in the view.
fn apply<E: FloatDtype, D: TrainDevice<E>>(
    optimizer: &mut Optimizer<E, D>,
    view: &mut TrainerView,
    rates: Rates,
) -> Result<()> {
    optimizer.set_lr(rates.lr)?;
    if let Some(momentum) = rates.momentum {
        optimizer.set_momentum(momentum);
    }
    view.lr = rates.lr;
    view.momentum = Some(optimizer.config().momentum_value());
    Ok(())
}

fn missing(what: &str, stage: Stage) -> Error {
    Error::config(
        what,
        format!(
            "`{}` needs data: the data module's `{what}` returned none",
            stage.as_str()
        ),
    )
}

/// Runs one step of user code, turning a panic inside it — a layer refusing its input's
/// run-time shape (dfdx's way, which fulmen's layers follow) — into
/// [`Error::StepPanicked`], so that `fit` returns an error the caller can handle. The panic's
/// own report still goes to stderr first, through the process's panic hook.
fn guard<R>(hook: &'static str, batch: usize, f: impl FnOnce() -> R) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        Error::StepPanicked {
            hook,
            batch,
            message: Error::panic_message(&*payload),
        }
    })
}

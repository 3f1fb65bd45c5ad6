//! One training epoch (Lightning's `training_epoch_loop.py`): batch by batch the step, its
//! backward and, at the end of each accumulation window, the optimizer step; validation on
//! its interval; then the epoch's end.

use dfdx::tensor::Gradients;

use super::manual::ManualRun;
use super::{guard, sharded, Position, Run};
use crate::checkpoint::Ckpt;
use crate::context::{LogEntry, LogValue, Loss, OptimizationMode, StepContext, StepOutput};
use crate::data::DataLoader;
use crate::datamodule::{DataModule, Stage};
use crate::freeze;
use crate::inputs::Recording;
use crate::module::LightningModule;
use crate::optim::{Clip, Interval};
use crate::precision::On;
use crate::trainer::aggregate::EpochMetrics;
use crate::trainer::settings::Limit;
use crate::walk::Tensors;
use crate::weights::At;
use crate::{Error, Result, TrainDevice};

/// What a training step gives: the loss's value (if a manual step gave one), what it logged,
/// and the loss to differentiate (`None` when 16-mixed's half copy holds it, and under manual
/// optimization).
type Stepped<E, D> = (Option<f64>, Vec<LogEntry>, Option<Loss<E, D>>);

/// How far an epoch's batches went.
struct Progressed {
    /// Batches done, counting those done before a resume.
    batches: usize,
    /// Whether a stop request or `max_steps` ended the epoch early.
    stopped: bool,
    /// The batch after which validation last ran.
    validated_after: Option<usize>,
}

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// One training epoch from batch `start` on (0 unless resuming inside the epoch).
    pub(super) fn train_epoch(
        &mut self,
        train: &DataLoader<DM::Sample>,
        val: &[DataLoader<DM::EvalSample>],
        start: usize,
    ) -> Result<()> {
        let epoch = self.view.current_epoch;
        let total = self.position.train_batches;
        // Validation runs after every `val_every`-th batch of the epochs it is due in.
        let due = (epoch + 1).is_multiple_of(self.settings.check_val_every_n_epoch);
        let val = if due { val } else { &[] };
        let val_every = self.start_epoch(start)?;
        let mut done = Progressed {
            batches: start,
            stopped: false,
            validated_after: None,
        };
        let batches = train
            .epoch_from(epoch, start)
            .take(total.saturating_sub(start));
        for (batch_idx, samples) in (start..).zip(batches) {
            done.batches += 1;
            let step_now = self.train_batch(batch_idx, samples)?;
            // As Lightning: validation on its interval (and when asked to stop) comes before
            // the check of max_steps.
            let stop = self.stop_requested(epoch);
            if !val.is_empty() && (stop || (batch_idx + 1).is_multiple_of(val_every)) {
                self.validate_in_fit(val)?;
                done.validated_after = Some(batch_idx + 1);
            }
            if stop || (step_now && self.max_steps_reached()) {
                done.stopped = true;
                break;
            }
        }
        self.end_epoch(val, val_every, done)
    }

    /// The progress bar, the epoch's state and `on_train_epoch_start`; returns after how many
    /// batches validation runs.
    fn start_epoch(&mut self, start: usize) -> Result<usize> {
        let (epoch, total) = (self.view.current_epoch, self.position.train_batches);
        let label = match self.settings.max_epochs {
            Some(max) if max != usize::MAX => format!("Epoch {epoch}/{}", max.saturating_sub(1)),
            _ => format!("Epoch {epoch}"),
        };
        self.progress.start(label, total);
        if start == 0 {
            self.position.epoch_metrics = EpochMetrics::default();
        }
        self.position.batches_done = start;
        self.position.epoch_done = false;
        let val_every = match self.settings.val_check_interval {
            Limit::Count(n) if n > total => {
                return Err(Error::config(
                    "val_check_interval",
                    format!("{n} batches is more than the {total} training batches of an epoch"),
                ))
            }
            interval => interval.of(total, "val_check_interval")?.max(1),
        };
        hook!(self, on_train_epoch_start());
        // A change of `accumulate_grad_batches` in `on_train_epoch_start` applies from here.
        self.position.window = self.view.accumulate_grad_batches;
        if <M::Optimization as OptimizationMode>::MANUAL && self.position.window > 1 {
            return Err(Error::config(
                "accumulate_grad_batches",
                "is the trainer's under automatic optimization; under manual optimization, step the optimizers every few batches in training_step",
            ));
        }
        Ok(val_every)
    }

    /// One training batch: the step, its backward, the optimizer step at the end of an
    /// accumulation window, and what every rank agrees on after it. Returns whether the
    /// optimizer stepped.
    fn train_batch(&mut self, batch_idx: usize, samples: Vec<DM::Sample>) -> Result<bool> {
        // The batch's place in the run: its random stream's seed, and under manual
        // optimization (where a batch may take any number of optimizer steps) its logging step.
        let k = self.position.window;
        let batches_done = self.view.current_epoch * self.position.train_batches + batch_idx;
        let step = match <M::Optimization as OptimizationMode>::MANUAL {
            true => batches_done as u64,
            false => (self.view.global_step * k + batch_idx % k) as u64,
        };
        self.device = self
            .device
            .reseeded(crate::seed::mix(self.position.run_seed, step));
        // Lightning's order: the batch moves (through its transfer hooks) before its hooks.
        let rows = samples.len();
        let batch = self.collated(samples, batch_idx)?;
        hook!(self, on_train_batch_start(batch_idx));
        self.apply_freezing()?;
        if !<M::Optimization as OptimizationMode>::MANUAL && batch_idx.is_multiple_of(k) {
            self.set_aside_grads()?;
        }
        let (value, logs, loss) = self.training_step(batch_idx, batch, rows)?;
        let step_now = match <M::Optimization as OptimizationMode>::MANUAL {
            // The step did its backward and steps.
            true => {
                self.record_step_logs(&logs, batches_done)?;
                true
            }
            false => self.automatic(batch_idx, value.unwrap_or(f64::NAN), &logs, loss)?,
        };
        self.position.batches_done = batch_idx + 1;
        hook!(
            self,
            on_train_batch_end(value.unwrap_or(f64::NAN), batch_idx)
        );
        self.weights_hook(At::TrainBatchEnd, false)?;
        self.agree_after_step()?;
        self.progress.advance(&self.view.progress_bar_metrics);
        Ok(step_now)
    }

    /// Automatic optimization after the step: the loss checked, the backward and, at the end
    /// of an accumulation window, the optimizer step. Returns whether it stepped.
    fn automatic(
        &mut self,
        batch_idx: usize,
        value: f64,
        logs: &[LogEntry],
        loss: Option<Loss<E, D>>,
    ) -> Result<bool> {
        let k = self.position.window;
        if self.settings.check_finite_loss && !value.is_finite() {
            return Err(Error::NonFiniteLoss {
                value,
                epoch: self.view.current_epoch,
                step: self.view.global_step,
                batch: batch_idx,
            });
        }
        self.record_step_logs(logs, self.view.global_step)?;
        if batch_idx.is_multiple_of(k) {
            hook!(self, on_before_zero_grad());
            self.zero_grad(batch_idx)?;
        }
        hook!(self, on_before_backward(value));
        self.backward(loss, batch_idx)?;
        self.add_kept_grads()?;
        hook!(self, on_after_backward());
        self.weights_hook(At::AfterBackward, true)?;
        let step_now =
            (batch_idx + 1).is_multiple_of(k) || batch_idx + 1 == self.position.train_batches;
        if step_now {
            self.optimizer_step(batch_idx)?;
        }
        Ok(step_now)
    }

    /// `training_step` (on the half-precision copy in 16-mixed): the loss's value, what the
    /// step logged, and the loss to differentiate (`None` when the half copy holds it, or
    /// under manual optimization, where the step did its backward and steps itself).
    fn training_step(
        &mut self,
        batch_idx: usize,
        batch: M::Batch,
        rows: usize,
    ) -> Result<Stepped<E, D>> {
        let info = self.step_info(Stage::Fit, true, batch_idx, rows);
        let manual = <M::Optimization as OptimizationMode>::MANUAL;
        match self.optimization.half.as_mut() {
            Some(half) if !manual => {
                let on = On {
                    device: &self.device,
                    info,
                    frozen: &self.optimization.frozen,
                };
                let model = &mut *self.model;
                let (value, logs) = guard("training_step", batch_idx, || {
                    half.forward(model, batch, on)
                })??;
                return Ok((Some(value), logs, None));
            }
            Some(_) => return self.mixed_manual_step(batch_idx, batch, info),
            None => {}
        }
        let frozen = self.optimization.frozen_ids.clone();
        // Under FULL_SHARD until this step's backward is done.
        self.roots(true)?;
        let o = &mut self.optimization;
        let mut manual = ManualRun {
            clips: vec![Clip::None; o.optimizers.len()],
            optimizers: &mut o.optimizers,
            callbacks: self.callbacks,
            view: self.view,
            collective: &*self.dist.collective,
            settings: self.settings,
            batch_idx,
        };
        let mut ctx = StepContext::<E, D, M::Optimization>::new(self.device.clone(), info);
        ctx.grads = o.grads.take();
        if <M::Optimization as OptimizationMode>::MANUAL {
            ctx.manual = Some(&mut manual);
        }
        let (model, fsdp) = (&mut *self.model, &o.full_shard);
        let recording = Recording::of(&Tensors(&*model), &self.device)?;
        let out = guard("training_step", batch_idx, || {
            freeze::within(frozen, || {
                sharded(fsdp, || model.training_step(batch, &mut ctx))
            })
        })?;
        drop(recording);
        let logs = std::mem::take(&mut ctx.logs);
        if <M::Optimization as OptimizationMode>::MANUAL {
            // The step's gradients, for the next (and for a checkpoint, if the step failed):
            // kept aside under a toggled optimizer, or (dropped with a tape the step never
            // differentiated) zeros, below.
            o.grads = match (ctx.kept.take(), ctx.grads.take()) {
                (Some((grads, _)), _) | (None, Some(grads)) => Some(grads),
                (None, None) => None,
            };
        }
        drop(ctx);
        if <M::Optimization as OptimizationMode>::MANUAL && self.optimization.grads.is_none() {
            self.optimization.grads = Some(self.zeroed(Gradients::leaky())?);
        }
        match out? {
            StepOutput::Loss(loss) => Ok((Some(loss.log_value()), logs, Some(loss))),
            StepOutput::Logged(value) => {
                self.after_hook()?;
                Ok((value, logs, None))
            }
        }
    }

    /// A manual `training_step` on 16-mixed's half copy (`crate::precision`'s `manual.rs`):
    /// its calls step the f32 module, whose gradients stay with the run between batches.
    fn mixed_manual_step(
        &mut self,
        batch_idx: usize,
        batch: M::Batch,
        info: crate::context::StepInfo,
    ) -> Result<Stepped<E, D>> {
        let o = &mut self.optimization;
        let mut grads = o.grads.take().unwrap_or_else(Gradients::leaky);
        let mut manual = ManualRun {
            clips: vec![Clip::None; o.optimizers.len()],
            optimizers: &mut o.optimizers,
            callbacks: self.callbacks,
            view: self.view,
            collective: &*self.dist.collective,
            settings: self.settings,
            batch_idx,
        };
        let on = On {
            device: &self.device,
            info,
            frozen: &o.frozen,
        };
        let model = &mut *self.model;
        let out = match o.half.as_mut() {
            Some(half) => guard("training_step", batch_idx, || {
                half.manual(model, &mut grads, &mut manual, batch, on)
            }),
            None => return Err(Error::msg("16-mixed: a manual step without its half copy")),
        };
        o.grads = Some(grads);
        let (value, logs) = out??;
        self.after_hook()?;
        Ok((value, logs, None))
    }

    /// A validation loop inside `fit`: the module's `on_validation_model_zero_grad` first,
    /// unless gradients of a window wait for their step (Lightning's rule).
    fn validate_in_fit(&mut self, val: &[DataLoader<DM::EvalSample>]) -> Result<()> {
        if !self.position.accumulating(self.position.window) {
            self.model.on_validation_model_zero_grad(self.view);
            self.after_hook()?;
        }
        self.evaluate(val, Stage::Validate, None)?;
        Ok(())
    }

    /// The end of an epoch: its remaining validation, its metrics, `on_train_epoch_end` (the
    /// monitoring callbacks after the module), the epoch-interval scheduler.
    fn end_epoch(
        &mut self,
        val: &[DataLoader<DM::EvalSample>],
        val_every: usize,
        done: Progressed,
    ) -> Result<()> {
        let (epoch, total) = (self.view.current_epoch, self.position.train_batches);
        if done.batches < total && !done.stopped {
            return Err(Error::msg(format!(
                "the training loader yielded {} of its {total} batches in epoch {epoch}: a loader worker stopped (see the panic message above)",
                done.batches
            )));
        }
        // A run resumed after the epoch's last batch still owes its end-of-epoch validation.
        let owed = total.is_multiple_of(val_every) && done.validated_after != Some(total);
        if !val.is_empty() && !done.stopped && owed {
            self.validate_in_fit(val)?;
        }
        // Training values logged with `sync_dist` are reduced over the ranks.
        let mut metrics = std::mem::take(&mut self.position.epoch_metrics);
        self.compute_metric_logs(&mut metrics, Stage::Fit)?;
        metrics.sync(&*self.dist.collective, false)?;
        let reduced = metrics.take();
        self.publish_epoch(&reduced);
        self.progress.finish(&self.view.progress_bar_metrics);
        self.position.epoch_done = true;
        // Before the hooks, whose checkpoints then hold what the callbacks took in.
        self.weights_hook(At::TrainEpochEnd, false)?;
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
}

impl Position {
    /// Whether gradients of batches not yet stepped on are waiting (inside an accumulation
    /// window of `k` batches).
    pub(in crate::trainer) fn accumulating(&self, k: usize) -> bool {
        let done = self.batches_done;
        !self.epoch_done && !done.is_multiple_of(k) && done != self.train_batches
    }
}

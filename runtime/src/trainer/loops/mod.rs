//! The loops (Lightning's `loops/`): [`Run`] holds what a stage needs; each loop is a file
//! (`fit.rs`, `training_epoch.rs`, `optimization.rs`: the backward and the optimizer step,
//! `zero_grad.rs`: the module's `optimizer_zero_grad`,
//! `evaluation.rs`, `prediction.rs`) and each hook point one `hook!` line, so that the order
//! of calls reads top to bottom as in Lightning's docs. What the loops hand off lives beside
//! them: checkpoints, logging, signals and data (`trainer/connectors/`).

mod evaluation;
mod fit;
mod freezing;
mod manual;
mod optimization;
mod prediction;
mod training_epoch;
mod update_bn;
mod zero_grad;

use std::collections::BTreeMap;

use super::aggregate::EpochMetrics;
use super::connectors::Serving;
use super::optimization_state::Optimization;
use super::settings::Settings;
use super::{Dist, Trainer, TrainerView};
use crate::callback::Callback;
use crate::checkpoint::{Checkpoint, Ckpt};
use crate::context::{StepContext, StepInfo};
use crate::datamodule::{DataModule, Stage};
use crate::distributed::full_shard::{self, Shared};
use crate::module::LightningModule;
use crate::precision::HalfSteps;
use crate::prediction_writer::PredictionSink;
use crate::progress::Progress;
use crate::signals::Signals;
use crate::weights::{At, WeightsOf};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// What a stage returns: the epoch's metrics (the predictions go to the job's sink).
pub(super) struct RunResult {
    pub metrics: BTreeMap<String, f64>,
}

/// Where the training loop is, as checkpoints save it.
#[derive(Default)]
pub(super) struct Position {
    /// Training batches of the current epoch done.
    pub batches_done: usize,
    /// Whether the current epoch is over (validation and epoch-end hooks done).
    pub epoch_done: bool,
    /// Training batches per epoch (after `limit_train_batches`).
    pub train_batches: usize,
    /// Batches per optimizer step in this epoch (`accumulate_grad_batches` once
    /// `on_train_epoch_start` has run).
    pub window: usize,
    /// The seed of the training device's random stream, drawn per step from it.
    pub run_seed: u64,
    /// The shuffle seed of the training loader (`None` until the fit makes it, or a resume
    /// restores it).
    pub train_loader_seed: Option<u64>,
    /// The epoch-level values logged so far in the current epoch.
    pub epoch_metrics: EpochMetrics,
}

/// One stage of a module `M` of dtype `E` on device `D`, with the data module `DM`.
pub(super) struct Run<
    'a,
    E: FloatDtype,
    D: TrainDevice<E>,
    M: LightningModule<E, D>,
    DM: DataModule,
> {
    pub model: &'a mut M,
    pub dm: &'a mut DM,
    pub callbacks: &'a mut Vec<Box<dyn Callback>>,
    pub view: &'a mut TrainerView,
    pub settings: &'a Settings,
    /// This rank and its collectives (a one-process run: rank 0 of 1).
    pub dist: &'a Dist,
    /// The device the stage runs on (on the CPU also the one batches are collated on); during
    /// training it is re-seeded every step from the run's seed and the step, so that a
    /// resumed run draws the same random numbers.
    pub device: D,
    /// Samples into the module's batches (collated in f32 on the CPU, then through the
    /// batch-transfer hooks).
    pub collate: Collation<E, D, M, DM>,
    /// Where the stage's loaders come from.
    pub serving: Serving<M, DM>,
    /// Where a prediction run's predictions go.
    pub predictions: Option<&'a mut dyn PredictionSink<M::Prediction>>,
    pub progress: Progress,
    pub position: Position,
    pub optimization: Optimization<'a, E, D, M>,
    /// SIGINT, SIGTERM and (fitting under SLURM) the requeue signal, caught while the stage runs.
    pub signals: Signals,
    /// The checkpoint `fit` resumes from.
    pub resume: Option<Checkpoint>,
}

/// A loader's samples (`S`) as the module's batch (`B`) on the run's device: collated on the
/// CPU, then through the batch-transfer hooks of the data module or the module
/// (`crate::batch_transfer`; the last argument is the loader's index).
pub(super) type Batcher<M, DM, S, D, B> = fn(&mut M, &mut DM, Vec<S>, &D, usize) -> B;

/// How a stage's samples become the module's batches: the training and evaluation loaders'
/// (`fit`, `validate`, `test`), or the prediction loader's (`predict`).
pub(super) enum Collation<
    E: FloatDtype,
    D: TrainDevice<E>,
    M: LightningModule<E, D>,
    DM: DataModule,
> {
    Steps {
        train: Batcher<M, DM, DM::Sample, D, M::Batch>,
        eval: Batcher<M, DM, DM::EvalSample, D, M::EvalBatch>,
    },
    Predict(Batcher<M, DM, DM::PredictSample, D, M::PredictBatch>),
}

/// How a stage runs: the module, its data and where; what the trainer adds is its own.
pub(super) struct Job<
    'a,
    E: FloatDtype,
    D: TrainDevice<E>,
    M: LightningModule<E, D>,
    DM: DataModule,
> {
    pub model: &'a mut M,
    pub dm: &'a mut DM,
    pub stage: Stage,
    pub resume: Option<Checkpoint>,
    pub device: D,
    pub collate: Collation<E, D, M, DM>,
    pub serving: Serving<M, DM>,
    pub predictions: Option<&'a mut dyn PredictionSink<M::Prediction>>,
    pub half: HalfSteps<'a, E, D, M>,
}

impl Trainer {
    /// Runs `job` with the trainer's callbacks (and the module's own, for this run), view,
    /// settings and logger; whatever happens, what was logged reaches the disk.
    pub(super) fn run<E, D, M, DM>(&mut self, job: Job<'_, E, D, M, DM>) -> Result<RunResult>
    where
        E: Ckpt,
        D: TrainDevice<E>,
        M: LightningModule<E, D>,
        DM: DataModule,
    {
        self.ensure_logger()?;
        let stage = job.stage;
        self.view.start(stage, &self.settings);
        let own = self.callbacks.len();
        if !self.trial {
            self.callbacks.extend(job.model.configure_callbacks());
        }
        // Each metric field learns its name, which logging it records.
        for (field, metric) in job.model.metric_fields_mut() {
            metric.tracked_mut().set_field(&field);
        }
        let run_seed = crate::seed::next_seed();
        let requeue = self.dist.requeue_signal.filter(|_| stage == Stage::Fit);
        let signals = Signals::catch(requeue)?;
        let mut run = Run {
            model: job.model,
            dm: job.dm,
            callbacks: &mut self.callbacks,
            view: &mut self.view,
            settings: &self.settings,
            dist: &self.dist,
            device: job.device.reseeded(run_seed),
            collate: job.collate,
            serving: job.serving,
            // The sink's object lifetime shortened to the run's (a coercion `&mut` allows).
            predictions: job
                .predictions
                .map(|p| p as &mut dyn PredictionSink<M::Prediction>),
            progress: Progress::new(self.enable_progress_bar),
            position: Position {
                run_seed,
                ..Position::default()
            },
            optimization: Optimization::new(job.half),
            signals,
            resume: job.resume,
        };
        let mut result = run.stage(stage);
        if let Err(e) = &result {
            run.on_exception(e);
        }
        if let Err(e) = run.end_full_shard(result.is_ok()) {
            result = result.and(Err(e));
        }
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

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// `samples` of the training loader (batch `batch_idx`) as the module's batch, on the
    /// run's device.
    fn collated(&mut self, samples: Vec<DM::Sample>, batch_idx: usize) -> Result<M::Batch> {
        let Collation::Steps { train, .. } = &self.collate else {
            return Err(Error::msg("a prediction run has no training batches"));
        };
        let (train, model, dm) = (*train, &mut *self.model, &mut *self.dm);
        let device = &self.device;
        guard(TRANSFER, batch_idx, || train(model, dm, samples, device, 0))
    }

    /// `samples` of the evaluation loader `dataloader_idx` as the module's evaluation batch,
    /// on the run's device.
    fn collated_eval(
        &mut self,
        samples: Vec<DM::EvalSample>,
        batch_idx: usize,
        dataloader_idx: usize,
    ) -> Result<M::EvalBatch> {
        let Collation::Steps { eval, .. } = &self.collate else {
            return Err(Error::msg("a prediction run has no evaluation batches"));
        };
        let (eval, model, dm) = (*eval, &mut *self.model, &mut *self.dm);
        let device = &self.device;
        guard(TRANSFER, batch_idx, || {
            eval(model, dm, samples, device, dataloader_idx)
        })
    }

    /// `samples` of the prediction loader as `predict_step`'s batch, on the run's device.
    fn collated_predict(
        &mut self,
        samples: Vec<DM::PredictSample>,
        batch_idx: usize,
    ) -> Result<M::PredictBatch> {
        let Collation::Predict(predict) = &self.collate else {
            return Err(Error::msg("only a prediction run has prediction batches"));
        };
        let (predict, model, dm) = (*predict, &mut *self.model, &mut *self.dm);
        let device = &self.device;
        guard(TRANSFER, batch_idx, || {
            predict(model, dm, samples, device, 0)
        })
    }

    /// `prepare_data`, `setup`, the stage's loop, `teardown`.
    fn stage(&mut self, stage: Stage) -> Result<RunResult> {
        // Once per node (downloads, unpacking); the other ranks wait for it, and learn from
        // it whether it failed (else they would wait at their next collective until
        // `collective_timeout`).
        let prepared = match self.dist.env.local_rank {
            0 => self.prepare_data(),
            _ => Ok(()),
        };
        let mut failed = [prepared
            .as_ref()
            .map_or(1.0 + self.dist.env.global_rank as f64, |_| 0.0)];
        let agreed = self.dist.collective.all_reduce_max_f64(&mut failed);
        // This rank's own failure first: it says more than the collective's.
        prepared?;
        agreed?;
        if failed[0] > 0.0 {
            let rank = failed[0] as usize - 1;
            return Err(Error::User(format!(
                "`prepare_data` failed on rank {rank} (see its error); this rank stops too"
            )));
        }
        self.dm.setup(stage)?;
        hook!(self, setup(stage));
        self.model.configure_model(self.view);
        self.after_hook()?;
        let mut result = RunResult {
            metrics: BTreeMap::new(),
        };
        match stage {
            Stage::Fit => self.fit()?,
            Stage::Validate | Stage::Test => {
                let loaders = self.eval_loaders(stage)?;
                result.metrics = self.evaluate(&loaders, stage, None)?;
            }
            Stage::Predict => {
                let loader = self.predict_loader()?;
                self.predict(&loader)?;
            }
        }
        self.dm.teardown(stage)?;
        hook!(self, teardown(stage));
        Ok(result)
    }

    /// The data module's `prepare_data`, then the module's. No checkpoint is written here
    /// (one rank alone): only a failure is taken.
    fn prepare_data(&mut self) -> Result<()> {
        self.dm.prepare_data()?;
        self.model.prepare_data(self.view);
        self.view.take_error()
    }

    /// Lightning's `on_exception`: the callbacks', then the data module's, with the error that
    /// ends the run (before the loggers are flushed and closed; no `teardown`); then the
    /// checkpoints they asked for (`OnExceptionCheckpoint`), where every rank can take part: in a run of one, or when
    /// the ranks stop together (a signal). A failed save is said, not returned: the error that
    /// ended the run is the one the caller gets.
    fn on_exception(&mut self, error: &Error) {
        for cb in self.callbacks.iter_mut() {
            cb.on_exception(self.view, error);
        }
        self.dm.on_exception(error);
        let together = self.dist.env.world_size == 1 || matches!(error, Error::Interrupted { .. });
        if !together {
            self.view.checkpoint_saves.clear();
            self.view.checkpoint_removals.clear();
            return;
        }
        if let Err(e) = self.after_hook() {
            eprintln!("warning: a checkpoint asked for in on_exception was not written: {e}");
        }
    }

    /// Where a step of `stage` is.
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

    /// `with_weights` on every callback at `at`, with the module and (`grads`) the run's
    /// gradients.
    pub(in crate::trainer) fn weights_hook(&mut self, at: At, grads: bool) -> Result<()> {
        let mut weights = WeightsOf {
            module: &mut *self.model,
            grads: self.optimization.grads.as_mut().filter(|_| grads),
            sharded: self.optimization.full_shard.is_some(),
            partial_grads: self.optimization.shards.is_some(),
            frozen: self.optimization.frozen.clone(),
        };
        for cb in self.callbacks.iter_mut() {
            cb.with_weights(self.view, at, &mut weights);
        }
        self.after_hook()
    }

    /// The context of an evaluation or prediction step.
    fn context(
        &self,
        stage: Stage,
        batch_idx: usize,
        batch_size: usize,
    ) -> StepContext<'static, E, D> {
        let info = self.step_info(stage, false, batch_idx, batch_size);
        StepContext::new(self.device.clone(), info)
    }
}

impl<E: FloatDtype, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule>
    Run<'_, E, D, M, DM>
{
    /// After a FULL_SHARD fit (`ok` on this rank): the optimizer's state and the gradients
    /// are dropped, and the module gets its whole parameters back from every rank's shards.
    /// The ranks agree first: if one failed, every one stops with an error (a fit that fails
    /// leaves the module sharded, its parameters placeholders; its checkpoints hold them).
    fn end_full_shard(&mut self, ok: bool) -> Result<()> {
        let Some(run) = self.optimization.full_shard.take() else {
            return Ok(());
        };
        self.optimization.optimizers.clear();
        if !crate::distributed::all_true(&*self.dist.collective, ok)? {
            return Err(Error::msg(
                "another rank's fit failed (its error says why); this rank stops too, and its module keeps the placeholders of FULL_SHARD (resume from a checkpoint)",
            ));
        }
        let mut run = run.borrow_mut();
        run.zero_grads();
        run.unshard(&mut *self.model, full_shard::Unshard::End)
    }

    /// Under FULL_SHARD, gathers the parameters outside the units (the top-level fields') for
    /// the steps to come (`true`), or frees them after those steps (`false`).
    fn roots(&mut self, gathered: bool) -> Result<()> {
        let Some(run) = &self.optimization.full_shard else {
            return Ok(());
        };
        let run = run.borrow();
        match gathered {
            true => run.gather_roots(&mut *self.model),
            false => run.release_roots(&mut *self.model),
        }
    }
}

/// `f` (a step's user code, or its backward) as part of the FULL_SHARD run `fsdp`, if this is
/// one: its units gather their parameters from it.
pub(in crate::trainer) fn sharded<E: FloatDtype, D: TrainDevice<E>, R>(
    fsdp: &Option<Shared<E, D>>,
    f: impl FnOnce() -> R,
) -> R {
    match fsdp {
        Some(run) => full_shard::within(run, f),
        None => f(),
    }
}

/// What a panic in the batch-transfer hooks is reported as.
const TRANSFER: &str = "a batch-transfer hook (on_before_batch_transfer, transfer_batch_to_device or on_after_batch_transfer)";

/// Runs one step of user code, turning a panic inside it — a layer refusing its input's
/// run-time shape (dfdx's way, which fulmen's layers follow) — into
/// [`Error::StepPanicked`], so that `fit` returns an error the caller can handle. The panic's
/// own report still goes to stderr first, through the process's panic hook.
pub(in crate::trainer) fn guard<R>(
    hook: &'static str,
    batch: usize,
    f: impl FnOnce() -> R,
) -> Result<R> {
    std::panic::catch_unwind(std::panic::AssertUnwindSafe(f)).map_err(|payload| {
        Error::StepPanicked {
            hook,
            batch,
            message: Error::panic_message(&*payload),
        }
    })
}

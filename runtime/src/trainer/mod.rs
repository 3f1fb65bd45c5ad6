//! The [`Trainer`]: runs `fit`, `validate`, `test` and `predict` on a module and its data,
//! calling hooks and callbacks in Lightning's order.
//!
//! Built by [`TrainerBuilder`] (`builder.rs`, flags in `args.rs` and `settings.rs`); a stage is
//! placed on its device in its precision (`placement.rs`) and run by the loops (`loops/`: fit,
//! training epoch, the optimizer step, evaluation, prediction, over the state in
//! `optimization_state.rs`), which hand checkpoints, logging, signals and data to
//! `connectors/`. Callbacks and hooks see the run through [`TrainerView`] (`view.rs`).

/// Calls hook `$name` on every callback, then on the module; a failure reported through the
/// view ends the run, and checkpoints asked for are written.
macro_rules! hook {
    ($run:expr, $name:ident($($arg:expr),*)) => {{
        for cb in $run.callbacks.iter_mut() {
            cb.$name(&mut $run.view, $($arg),*);
        }
        $run.model.$name(&mut $run.view, $($arg),*);
        $run.after_hook()?;
    }};
}

mod aggregate;
mod args;
mod builder;
mod connectors;
mod loops;
mod optimization_state;
mod placement;
mod settings;
mod tuning;
mod view;

pub use args::TrainerArgs;
pub use builder::{TrainerBuilder, DEFAULT_MAX_EPOCHS};
pub use settings::{Limit, Precision};
pub use view::{OptimizerInfo, ParamInfo, TrainerView};

use settings::Settings;

use std::collections::BTreeMap;
use std::path::PathBuf;

use dfdx::tensor::Cpu;

use crate::callback::{Callback, CheckpointPaths};
use crate::checkpoint::{Checkpoint, CkptPath};
use crate::data::{Collate, DataLoader};
use crate::datamodule::{DataModule, Loaders, Stage};
use crate::device::RunDevice;
use crate::distributed::{ClusterEnv, Collective, Strategy};
use crate::loggers::Logger;
use crate::module::{LightningModule, Precisions, Predicts};
use crate::prediction_writer::PredictionWriter;
use crate::stage_data::DataFor;
use crate::{Error, Result};

/// Which logger a trainer creates on its first run.
enum LoggerChoice {
    /// Built-in loggers by name (`csv`, `tensorboard`), in one version folder.
    Named(Vec<String>),
    Off,
    Custom(Box<dyn Logger>),
}

/// A multi-process run as the trainer holds it.
pub(crate) struct Dist {
    pub env: ClusterEnv,
    pub strategy: Strategy,
    /// FULL_SHARD's checkpoints are one file per rank (`state_dict_type("sharded")`).
    pub sharded_checkpoints: bool,
    /// FULL_SHARD on GPUs keeps the shards' optimizer state in host memory.
    pub cpu_offload: bool,
    pub collective: std::sync::Arc<dyn Collective>,
    /// Whether loaders are sharded across ranks.
    pub sampler: bool,
    /// Under SLURM with auto-requeue: the signal that saves and requeues the job.
    pub requeue_signal: Option<i32>,
}

/// Runs training, validation, testing and prediction (Lightning's `Trainer`).
///
/// ```no_run
/// # use fulmen::prelude::*;
/// let mut trainer = Trainer::builder().max_epochs(10).accelerator("cpu").build()?;
/// # Ok::<(), fulmen::Error>(())
/// ```
pub struct Trainer {
    settings: Settings,
    callbacks: Vec<Box<dyn Callback>>,
    logger_choice: Option<LoggerChoice>,
    default_root_dir: PathBuf,
    enable_progress_bar: bool,
    view: TrainerView,
    /// Where the runs go (resolved from `accelerator` and `devices` when the trainer is built).
    device: RunDevice,
    /// This process's rank and the collectives that join it to the others.
    dist: Dist,
    /// The CUDA device, opened on the first run that needs it and kept for the next ones.
    #[cfg(feature = "cuda")]
    cuda: Option<dfdx::tensor::Cuda>,
    /// A tuner's trial fit is running: the module's own callbacks stay out.
    trial: bool,
}

impl Trainer {
    /// A [`TrainerBuilder`] with Lightning's defaults, to set the trainer's flags on.
    pub fn builder() -> TrainerBuilder {
        TrainerBuilder::default()
    }

    /// Trains `model` on `datamodule`'s training data, validating every epoch when it has
    /// validation data and the model a `validation_step`. First come the trials its
    /// callbacks ask for ([`Callback::trial`](crate::Callback::trial): `LearningRateFinder`'s
    /// range test).
    pub fn fit<M, DM>(&mut self, model: &mut M, datamodule: &mut DM) -> Result<()>
    where
        M: Precisions,
        DM: DataModule + DataFor<M>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        let resume = self.hpc_checkpoint()?;
        if resume.is_none() {
            self.run_trials(model, datamodule)?;
        }
        self.run_in_precision(model, datamodule, Stage::Fit, resume)
            .map(|_| ())
    }

    /// [`fit`](Self::fit), continuing the run saved in a checkpoint: a path, `"last"` or
    /// `"best"` (Lightning's `ckpt_path`; `None::<&str>` fits from scratch, so an optional
    /// flag passes as it is). Weights, optimizer, loop position (inside an
    /// epoch too), random streams and callback state are restored, so that the run ends with
    /// the weights an uninterrupted run would have. With `"last"` and no checkpoint yet, it
    /// starts from scratch with a warning (what a requeued job wants).
    pub fn fit_from<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        ckpt_path: impl Into<CkptPath>,
    ) -> Result<()>
    where
        M: Precisions,
        DM: DataModule + DataFor<M>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        let which = ckpt_path.into();
        if let Some(hpc) = self.hpc_checkpoint()? {
            return self
                .run_in_precision(model, datamodule, Stage::Fit, Some(hpc))
                .map(|_| ());
        }
        let checkpoint = match self.resolve_checkpoint(which.clone())? {
            Some(path) => Some(Checkpoint::read(path)?),
            None if which == CkptPath::Fresh => None,
            None => {
                let dirs = self.last_dirs();
                eprintln!("warning: {which}: no checkpoint found in {dirs:?}; training starts from scratch");
                None
            }
        };
        if checkpoint.is_none() {
            self.run_trials(model, datamodule)?;
        }
        self.run_in_precision(model, datamodule, Stage::Fit, checkpoint)
            .map(|_| ())
    }

    /// Loads the weights of a checkpoint — a path, `"best"` or `"last"` — into `model`, for
    /// testing or predicting with them (Lightning's `trainer.test(ckpt_path="best")` is
    /// `trainer.load_weights(&mut model, "best")?` then `trainer.test(..)`). Returns the file.
    pub fn load_weights<M>(&self, model: &mut M, ckpt_path: impl Into<CkptPath>) -> Result<PathBuf>
    where
        M: LightningModule<f32, Cpu>,
    {
        let which = ckpt_path.into();
        let path = self.resolve_checkpoint(which.clone())?.ok_or_else(|| {
            Error::config(
                "ckpt_path",
                format!("{which}: no checkpoint was found (an earlier fit writes them under {}/lightning_logs/)", self.default_root_dir.display()),
            )
        })?;
        Checkpoint::read(&path)?.load_weights(model)?;
        Ok(path)
    }

    /// Where the checkpoint callback keeps its checkpoints (best and last included).
    pub fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
        self.callbacks.iter().find_map(|c| c.checkpoint_paths())
    }

    /// [`fit`](Self::fit) with bare loaders instead of a data module (the tutorial's first
    /// program passes a loader).
    pub fn fit_loaders<M, S>(
        &mut self,
        model: &mut M,
        train: DataLoader<S>,
        val: Option<DataLoader<S>>,
    ) -> Result<()>
    where
        M: Precisions,
        S: Send + 'static + Collate<M::Batch, Cpu> + Collate<M::EvalBatch, Cpu>,
    {
        let mut loaders = Loaders {
            train: Some(train),
            val,
            ..Loaders::default()
        };
        self.fit(model, &mut loaders)
    }

    /// Runs the validation loop once; returns the epoch metrics.
    pub fn validate<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
    ) -> Result<BTreeMap<String, f64>>
    where
        M: Precisions,
        DM: DataModule + DataFor<M>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        self.run_in_precision(model, datamodule, Stage::Validate, None)
    }

    /// Runs the test loop once; returns the epoch metrics.
    pub fn test<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
    ) -> Result<BTreeMap<String, f64>>
    where
        M: Precisions,
        DM: DataModule + DataFor<M>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        self.run_in_precision(model, datamodule, Stage::Test, None)
    }

    /// Runs `predict_step` on every batch of the prediction loader, on the trainer's device in
    /// its precision; returns the predictions in order. `predict_step` takes a batch of its
    /// own (the data module's `PredictSample`s collated), and returns host values. Under DDP
    /// each rank predicts, and returns, its share of the loader (the distributed sampler's,
    /// as Lightning's); [`predict_with`](Self::predict_with) a `PredictionFiles` gathers them.
    pub fn predict<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
    ) -> Result<Vec<M::Prediction>>
    where
        M: Predicts,
        DM: DataModule + DataFor<M>,
        DM::PredictSample: Collate<M::PredictBatch, Cpu>,
    {
        self.predict_in_precision(model, datamodule, None, true)
    }

    /// [`predict`](Self::predict), each prediction handed to `writer` (Lightning's
    /// `BasePredictionWriter` callback with `return_predictions=False`): nothing is returned,
    /// and a writer that writes per batch keeps nothing. Under DDP each rank predicts its share
    /// of the loader (the distributed sampler's), and [`PredictionFiles`] gathers them.
    ///
    /// [`PredictionFiles`]: crate::prediction_writer::PredictionFiles
    pub fn predict_with<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        writer: &mut dyn PredictionWriter<M::Prediction>,
    ) -> Result<()>
    where
        M: Predicts,
        DM: DataModule + DataFor<M>,
        DM::PredictSample: Collate<M::PredictBatch, Cpu>,
    {
        self.predict_in_precision(model, datamodule, Some(writer), false)
            .map(|_| ())
    }

    /// [`test`](Self::test) on a bare loader.
    pub fn test_loader<M, S>(
        &mut self,
        model: &mut M,
        loader: DataLoader<S>,
    ) -> Result<BTreeMap<String, f64>>
    where
        M: Precisions,
        S: Send + 'static + Collate<M::Batch, Cpu> + Collate<M::EvalBatch, Cpu>,
    {
        self.test(
            model,
            &mut Loaders {
                test: Some(loader),
                ..Loaders::default()
            },
        )
    }

    /// [`validate`](Self::validate) on a bare loader.
    pub fn validate_loader<M, S>(
        &mut self,
        model: &mut M,
        loader: DataLoader<S>,
    ) -> Result<BTreeMap<String, f64>>
    where
        M: Precisions,
        S: Send + 'static + Collate<M::Batch, Cpu> + Collate<M::EvalBatch, Cpu>,
    {
        self.validate(
            model,
            &mut Loaders {
                val: Some(loader),
                ..Loaders::default()
            },
        )
    }

    /// [`predict`](Self::predict) on a bare loader.
    pub fn predict_loader<M, S>(
        &mut self,
        model: &mut M,
        loader: DataLoader<S>,
    ) -> Result<Vec<M::Prediction>>
    where
        M: Predicts,
        S: Send + 'static + Collate<M::PredictBatch, Cpu>,
    {
        self.predict(
            model,
            &mut Loaders {
                predict: Some(loader),
                ..Loaders::default()
            },
        )
    }

    /// [`predict_with`](Self::predict_with) on a bare loader.
    pub fn predict_loader_with<M, S>(
        &mut self,
        model: &mut M,
        loader: DataLoader<S>,
        writer: &mut dyn PredictionWriter<M::Prediction>,
    ) -> Result<()>
    where
        M: Predicts,
        S: Send + 'static + Collate<M::PredictBatch, Cpu>,
    {
        let mut loaders = Loaders {
            predict: Some(loader),
            ..Loaders::default()
        };
        self.predict_with(model, &mut loaders, writer)
    }

    /// Where this trainer runs: the CPU or a CUDA device (what `accelerator` and `devices`
    /// resolved to when it was built).
    pub fn device(&self) -> RunDevice {
        self.device
    }
    /// This process's rank among all processes of the run (0 alone).
    pub fn global_rank(&self) -> usize {
        self.dist.env.global_rank
    }
    /// Processes in the run.
    pub fn world_size(&self) -> usize {
        self.dist.env.world_size
    }
    /// Time this rank has spent in collectives (gradient reductions, metric syncs, waiting for
    /// the other ranks): zero in a one-process run.
    pub fn collective_time(&self) -> std::time::Duration {
        self.dist.collective.busy()
    }
    /// The latest value of every logged metric.
    pub fn callback_metrics(&self) -> &BTreeMap<String, f64> {
        &self.view.callback_metrics
    }
    /// Epochs completed by the last `fit`.
    pub fn current_epoch(&self) -> usize {
        self.view.current_epoch
    }
    /// Optimizer steps taken by the last `fit`.
    pub fn global_step(&self) -> usize {
        self.view.global_step
    }
    /// The learning rate of the next optimizer step, as the last `fit` left it.
    pub fn lr(&self) -> f64 {
        self.view.lr()
    }
    /// The logger (created on the first run).
    pub fn logger(&mut self) -> Option<&mut (dyn Logger + 'static)> {
        self.view.logger.as_deref_mut()
    }
    /// The directory the logger writes to.
    pub fn log_dir(&self) -> Option<PathBuf> {
        self.view
            .logger
            .as_ref()
            .and_then(|l| l.log_dir().map(|p| p.to_path_buf()))
    }
}

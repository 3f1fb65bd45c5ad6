//! The [`Trainer`]: runs `fit`, `validate`, `test` and `predict` on a module and its data,
//! calling hooks and callbacks in Lightning's order.

mod aggregate;
mod args;
mod run;
mod settings;
mod view;

pub use args::TrainerArgs;
pub use settings::{Limit, Precision};
pub use view::{ParamInfo, TrainerView};

use settings::Settings;

use std::collections::BTreeMap;
use std::path::PathBuf;

use dfdx::tensor::Cpu;

use crate::callback::{Callback, CheckpointPaths};
use crate::callbacks::{ModelCheckpoint, ModelSummary, Timer};
use crate::checkpoint::{Checkpoint, CkptDtype, CkptPath};
use crate::data::{Collate, DataLoader};
use crate::datamodule::{DataModule, Loaders, Stage};
use crate::device::{Accelerator, Devices, RunDevice};
use crate::distributed::{ClusterEnv, Collective, Strategy};
use crate::loggers::{CsvLogger, Logger};
use crate::module::{LightningModule, Precisions};
use crate::optim::ClipAlgorithm;
use crate::precision::{HalfStep, HalfSteps, Mixed};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// Lightning's default number of epochs when neither `max_epochs` nor `max_steps` is set.
pub const DEFAULT_MAX_EPOCHS: usize = 1000;

enum LoggerChoice {
    Csv,
    Off,
    Custom(Box<dyn Logger>),
}

/// Settings of a [`Trainer`], with Lightning's defaults. Every method is a Lightning
/// `Trainer` argument of the same name.
pub struct TrainerBuilder {
    settings: Settings,
    accelerator: String,
    devices: Devices,
    strategy: String,
    num_nodes: usize,
    collective_timeout: std::time::Duration,
    use_distributed_sampler: bool,
    requeue_signal: Option<String>,
    callbacks: Vec<Box<dyn Callback>>,
    logger: LoggerChoice,
    default_root_dir: PathBuf,
    enable_progress_bar: bool,
    enable_checkpointing: bool,
    enable_model_summary: bool,
}

impl Default for TrainerBuilder {
    fn default() -> Self {
        Self {
            settings: Settings::default(),
            accelerator: "auto".to_string(),
            devices: Devices::Count(1),
            strategy: "auto".to_string(),
            num_nodes: 1,
            collective_timeout: std::time::Duration::from_secs(60),
            use_distributed_sampler: true,
            requeue_signal: Some("SIGUSR1".to_string()),
            callbacks: Vec::new(),
            logger: LoggerChoice::Csv,
            default_root_dir: PathBuf::from("."),
            enable_progress_bar: true,
            enable_checkpointing: true,
            enable_model_summary: true,
        }
    }
}

macro_rules! setting {
    ($($(#[$doc:meta])* $name:ident: $ty:ty => $wrap:ident;)*) => {$(
        $(#[$doc])*
        pub fn $name(mut self, value: $ty) -> Self {
            self.settings.$name = setting!(@wrap value $wrap);
            self
        }
    )*};
    (@wrap $v:ident some) => { Some($v) };
    (@wrap $v:ident into) => { $v.into() };
    (@wrap $v:ident plain) => { $v };
}

impl TrainerBuilder {
    setting! {
        /// Stop after this many epochs (default 1000 when `max_steps` is not set either).
        max_epochs: usize => some;
        /// Stop after this many optimizer steps.
        max_steps: usize => some;
        /// Train at least this many epochs, whatever asks to stop earlier (early stopping).
        min_epochs: usize => plain;
        /// Train at least this many optimizer steps.
        min_steps: usize => plain;
        /// Stop once training has run this long (at the end of the current batch).
        max_time: std::time::Duration => some;
        /// Training batches per epoch: a count, or a fraction of the loader (`0.25`).
        limit_train_batches: impl Into<Limit> => into;
        /// Validation batches per validation run.
        limit_val_batches: impl Into<Limit> => into;
        limit_test_batches: impl Into<Limit> => into;
        limit_predict_batches: impl Into<Limit> => into;
        /// Validate every n training batches, or this fraction of an epoch (default 1.0).
        val_check_interval: impl Into<Limit> => into;
        /// Validate in every n-th epoch only (default 1).
        check_val_every_n_epoch: usize => plain;
        /// Validation batches run before training to catch bugs early (default 2; 0 disables).
        num_sanity_val_steps: usize => plain;
        /// Run n batches of every loop, one epoch, no logger or checkpoints: a smoke test.
        fast_dev_run: usize => plain;
        /// Train and validate on this many (or this fraction of) training batches, unshuffled:
        /// a model that cannot overfit them has a bug.
        overfit_batches: impl Into<Limit> => into;
        /// How often step-level metrics are written to the logger (default every 50 steps).
        log_every_n_steps: usize => plain;
        /// Sum the gradients of n batches before each optimizer step; `global_step` counts
        /// optimizer steps (default 1).
        accumulate_grad_batches: usize => plain;
        /// Clip gradients before each step, by norm (default) or value.
        gradient_clip_val: f64 => some;
        gradient_clip_algorithm: ClipAlgorithm => plain;
        /// Stop with an error when the loss is NaN or infinite (default on).
        check_finite_loss: bool => plain;
        /// Stop with an error naming the parameter whose gradient is NaN or infinite.
        detect_anomaly: bool => plain;
        /// "32-true" (the default), "64-true" (an f64 copy of the module trains; the weights
        /// come back), "16-mixed" (half-precision steps with f32 master weights and a dynamic
        /// loss scale, see [`crate::precision`]), "16-true" (everything in half precision,
        /// optimizer included: Adam needs an `eps` f16 can hold, such as 1e-4); "bf16-*" is
        /// refused because dfdx has no bfloat16.
        precision: Precision => plain;
        /// Require bitwise-reproducible runs. On CPU fulmen's kernels always are (with a seed);
        /// the flag is kept for Lightning's scripts and for CUDA.
        deterministic: bool => plain;
    }

    /// "cpu", "gpu" / "cuda" or "auto" (the default).
    pub fn accelerator(mut self, accelerator: &str) -> Self {
        self.accelerator = accelerator.to_string();
        self
    }
    /// The devices: a count (`1`), ordinals (`[1]` runs on GPU 1) or [`Devices::Auto`]. One
    /// device until distributed training lands.
    pub fn devices(mut self, devices: impl Into<Devices>) -> Self {
        self.devices = devices.into();
        self
    }
    /// "auto" (the default: DDP when a launcher started several processes), "single_device",
    /// "ddp", "fsdp:NO_SHARD" / "fsdp:SHARD_GRAD_OP", "deepspeed_stage_1|2" (see
    /// [`Strategy`]).
    pub fn strategy(mut self, strategy: &str) -> Self {
        self.strategy = strategy.to_string();
        self
    }
    /// Nodes in the run; must agree with the launcher's (SLURM's `--nodes`).
    pub fn num_nodes(mut self, n: usize) -> Self {
        self.num_nodes = n;
        self
    }
    /// How long a rank waits in a collective for the others before it stops with an error
    /// (a rank that died; default 60 s).
    pub fn collective_timeout(mut self, timeout: std::time::Duration) -> Self {
        self.collective_timeout = timeout;
        self
    }
    /// Under DDP each rank reads its own share of every epoch (default on); off, every rank
    /// reads all of it.
    pub fn use_distributed_sampler(mut self, on: bool) -> Self {
        self.use_distributed_sampler = on;
        self
    }
    /// Under SLURM, the signal on which the run saves an HPC checkpoint and requeues its job
    /// (default SIGUSR1, as `#SBATCH --signal=SIGUSR1@90` sends; Lightning's auto-requeue),
    /// or `None` to leave signals alone. See [`crate::distributed::requeue`].
    pub fn requeue_signal(mut self, signal: Option<&str>) -> Self {
        self.requeue_signal = signal.map(str::to_string);
        self
    }
    /// Adds a callback; callbacks run in the order added, before the module's hooks.
    pub fn callback(mut self, callback: impl Callback + 'static) -> Self {
        self.callbacks.push(Box::new(callback));
        self
    }
    /// Replaces the default CSV logger.
    pub fn logger(mut self, logger: impl Logger + 'static) -> Self {
        self.logger = LoggerChoice::Custom(Box::new(logger));
        self
    }
    /// No logger at all (Lightning's `logger=False`).
    pub fn no_logger(mut self) -> Self {
        self.logger = LoggerChoice::Off;
        self
    }
    /// Where `lightning_logs/` and checkpoints go (default: the working directory).
    pub fn default_root_dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.default_root_dir = dir.into();
        self
    }
    pub fn enable_progress_bar(mut self, on: bool) -> Self {
        self.enable_progress_bar = on;
        self
    }
    /// Checkpoint at the end of every epoch (default on, as in Lightning): a
    /// [`ModelCheckpoint`] with its defaults is added unless a checkpoint callback is given.
    pub fn enable_checkpointing(mut self, on: bool) -> Self {
        self.enable_checkpointing = on;
        self
    }
    /// Print the module's layers and parameter counts when fit starts (default on).
    pub fn enable_model_summary(mut self, on: bool) -> Self {
        self.enable_model_summary = on;
        self
    }
    /// Applies command-line flags: every flag given replaces the value set in code.
    pub fn args(self, args: &TrainerArgs) -> Self {
        args.apply(self)
    }

    /// Checks the settings and builds the trainer.
    pub fn build(self) -> Result<Trainer> {
        crate::alloc::keep_freed_memory();
        let accelerator: Accelerator = self.accelerator.parse()?;
        let mut plan = crate::distributed::plan(
            self.strategy.parse()?,
            ClusterEnv::detect()?,
            accelerator.is_gpu(),
            &self.devices,
            self.num_nodes,
            self.collective_timeout,
        )?;
        let distributed = plan.env.world_size > 1;
        let requeue_signal = match (&plan.env.job_id, &self.requeue_signal) {
            (Some(_), Some(sig)) if plan.env.launcher == crate::distributed::Launcher::Slurm => {
                Some(crate::distributed::requeue::signal_number(sig)?)
            }
            _ => None,
        };
        let device =
            accelerator.place(&self.devices, distributed.then_some(plan.env.local_rank))?;
        let collective = crate::distributed::join(&mut plan, device, self.collective_timeout)?;
        // Rank 0 alone logs, prints and writes checkpoints.
        let global_zero = plan.env.is_global_zero();
        let settings = self.settings.resolve()?;
        let fast_dev_run = settings.fast_dev_run > 0;
        let mut callbacks = self.callbacks;
        let has_checkpointing = callbacks.iter().any(|c| c.checkpoint_paths().is_some());
        match (self.enable_checkpointing, has_checkpointing) {
            (true, false) if !fast_dev_run => callbacks.push(Box::new(ModelCheckpoint::new())),
            (false, true) => {
                return Err(Error::config(
                    "enable_checkpointing",
                    "is off, but a checkpoint callback was given: remove one of the two",
                ))
            }
            _ => {}
        }
        if self.enable_model_summary && !fast_dev_run && global_zero {
            callbacks.insert(0, Box::new(ModelSummary::new()));
        }
        if let Some(limit) = settings.max_time {
            callbacks.push(Box::new(Timer::new(limit)));
        }
        if fast_dev_run {
            println!(
                "Running in fast_dev_run mode: will run the requested loop using {} batch(es). Logging and checkpointing is suppressed.",
                settings.fast_dev_run
            );
        }
        let mut view = TrainerView::new(None);
        view.default_root_dir = self.default_root_dir.clone();
        view.fast_dev_run = fast_dev_run;
        view.global_rank = plan.env.global_rank;
        view.world_size = plan.env.world_size;
        Ok(Trainer {
            settings,
            callbacks,
            logger_choice: Some(if fast_dev_run || !global_zero {
                LoggerChoice::Off
            } else {
                self.logger
            }),
            default_root_dir: self.default_root_dir,
            enable_progress_bar: self.enable_progress_bar && global_zero,
            view,
            device,
            dist: Dist {
                env: plan.env,
                strategy: plan.strategy,
                collective,
                sampler: self.use_distributed_sampler,
                requeue_signal,
            },
            #[cfg(feature = "cuda")]
            cuda: None,
        })
    }
}

/// Samples collated on the CPU, then moved to dtype `E` on `device`.
#[cfg(feature = "cuda")]
fn collate_to<E, D, M, S>(
    samples: Vec<S>,
    device: &D,
) -> <<M as crate::module::PlaceAs<E, D>>::On as LightningModule<E, D>>::Batch
where
    E: FloatDtype,
    D: TrainDevice<E>,
    M: crate::module::PlaceAs<E, D>,
    S: Collate<M::Batch, Cpu>,
{
    M::place_batch(S::collate(samples, &Cpu::default()), device)
}

/// A multi-process run as the trainer holds it.
pub(crate) struct Dist {
    pub env: ClusterEnv,
    pub strategy: Strategy,
    pub collective: Box<dyn Collective>,
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
}

impl Trainer {
    pub fn builder() -> TrainerBuilder {
        TrainerBuilder::default()
    }

    /// Trains `model` on `datamodule`'s training data, validating every epoch when it has
    /// validation data and the model a `validation_step`.
    pub fn fit<M, DM>(&mut self, model: &mut M, datamodule: &mut DM) -> Result<()>
    where
        M: Precisions,
        DM: DataModule,
        DM::Sample: Collate<M::Batch, Cpu>,
    {
        let resume = self.hpc_checkpoint()?;
        self.run_in_precision(model, datamodule, Stage::Fit, resume)
            .map(|_| ())
    }

    /// Under SLURM with auto-requeue, the newest HPC checkpoint in the default root directory
    /// (what a requeued job resumes from, before any `ckpt_path`, as in Lightning).
    fn hpc_checkpoint(&self) -> Result<Option<Checkpoint>> {
        if self.dist.requeue_signal.is_none() {
            return Ok(None);
        }
        let found = crate::distributed::requeue::hpc_checkpoints(&self.default_root_dir);
        match found.last() {
            Some((_, path)) => {
                if self.dist.env.is_global_zero() {
                    println!(
                        "Restoring states from the HPC checkpoint at {}",
                        path.display()
                    );
                }
                Checkpoint::read(path).map(Some)
            }
            None => Ok(None),
        }
    }

    /// [`fit`](Self::fit), continuing the run saved in a checkpoint: a path, `"last"` or
    /// `"best"` (Lightning's `ckpt_path`). Weights, optimizer, loop position (inside an
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
        DM: DataModule,
        DM::Sample: Collate<M::Batch, Cpu>,
    {
        let which = ckpt_path.into();
        if let Some(hpc) = self.hpc_checkpoint()? {
            return self
                .run_in_precision(model, datamodule, Stage::Fit, Some(hpc))
                .map(|_| ());
        }
        let checkpoint = match self.resolve_checkpoint(which.clone())? {
            Some(path) => Some(Checkpoint::read(path)?),
            None => {
                let dirs: Vec<PathBuf> = self
                    .callbacks
                    .iter()
                    .filter_map(|c| c.checkpoint_paths()?.dirpath)
                    .collect();
                eprintln!("warning: ckpt_path {which:?}: no checkpoint found in {dirs:?}; training starts from scratch");
                None
            }
        };
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
            Error::config("ckpt_path", format!("no {which:?} checkpoint was found"))
        })?;
        Checkpoint::read(&path)?.load_weights(model)?;
        Ok(path)
    }

    /// Runs `stage` on the trainer's device in its precision. On the CPU: f32 directly; f64
    /// or half precision on a copy of the module whose weights and hyperparameters come back
    /// into `model` when `fit` ends, whether it succeeded or not (what was trained is never
    /// lost); "16-mixed" on the f32 module with half-precision steps. On a GPU every precision
    /// runs on a copy there, which comes back the same way.
    fn run_in_precision<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        stage: Stage,
        resume: Option<Checkpoint>,
    ) -> Result<BTreeMap<String, f64>>
    where
        M: Precisions,
        DM: DataModule,
        DM::Sample: Collate<M::Batch, Cpu>,
    {
        match self.device {
            RunDevice::Cpu => {}
            #[cfg(feature = "cuda")]
            RunDevice::Cuda(ordinal) => {
                return self.run_on_cuda(model, datamodule, stage, resume, ordinal)
            }
            #[cfg(not(feature = "cuda"))]
            RunDevice::Cuda(_) => {
                return Err(crate::device::gpu_count()
                    .err()
                    .unwrap_or_else(|| Error::msg("this fulmen was built without CUDA support")))
            }
        }
        let cpu = Cpu::default();
        match self.settings.precision {
            Precision::F64 => self.run_on_copy(
                model,
                datamodule,
                stage,
                resume,
                cpu,
                |m, _| Ok(M::to_f64(m)),
                M::from_f64,
                |s, d| M::batch_f64(<DM::Sample as Collate<M::Batch, Cpu>>::collate(s, d)),
                None,
            ),
            Precision::True16 => self.run_on_copy(
                model,
                datamodule,
                stage,
                resume,
                cpu,
                |m, _| Ok(M::to_half(m)),
                M::from_half,
                |s, d| M::batch_half(<DM::Sample as Collate<M::Batch, Cpu>>::collate(s, d)),
                None,
            ),
            precision => {
                let collate = <DM::Sample as Collate<M::Batch, Cpu>>::collate;
                let half: Option<Box<dyn HalfStep<f32, Cpu, M, DM::Sample>>> =
                    (precision == Precision::Mixed16 && stage == Stage::Fit).then(|| {
                        Box::new(Mixed::<Cpu, M, M::Half, DM::Sample>::new(
                            M::to_half,
                            |samples, device| {
                                M::batch_half(<DM::Sample as Collate<M::Batch, Cpu>>::collate(
                                    samples, device,
                                ))
                            },
                        )) as Box<dyn HalfStep<f32, Cpu, M, DM::Sample>>
                    });
                self.run::<f32, Cpu, M, DM>(model, datamodule, stage, resume, cpu, collate, half)
                    .map(|r| r.metrics)
            }
        }
    }

    /// [`run_in_precision`](Self::run_in_precision) on CUDA device `ordinal`: the batches are
    /// collated on the CPU and moved there.
    #[cfg(feature = "cuda")]
    fn run_on_cuda<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        stage: Stage,
        resume: Option<Checkpoint>,
        ordinal: usize,
    ) -> Result<BTreeMap<String, f64>>
    where
        M: Precisions,
        DM: DataModule,
        DM::Sample: Collate<M::Batch, Cpu>,
    {
        use crate::device::Half;
        use crate::module::{PlaceAs, Placement};
        use dfdx::tensor::Cuda;
        type On<M, E> = <M as PlaceAs<E, Cuda>>::On;
        let device = match &self.cuda {
            Some(d) => d.clone(),
            None => {
                let d = crate::device::open_cuda(ordinal, crate::seed::next_seed())?;
                self.cuda = Some(d.clone());
                d
            }
        };
        match self.settings.precision {
            Precision::F64 => {
                self.run_placed::<f64, M, DM>(model, datamodule, stage, resume, device, None)
            }
            Precision::True16 => {
                self.run_placed::<Half, M, DM>(model, datamodule, stage, resume, device, None)
            }
            precision => {
                let half: HalfSteps<f32, Cuda, On<M, f32>, DM::Sample> =
                    (precision == Precision::Mixed16 && stage == Stage::Fit).then(|| {
                        Box::new(Mixed::<Cuda, On<M, f32>, On<M, Half>, DM::Sample>::new(
                            <M as Placement<Cuda>>::half_of,
                            collate_to::<Half, Cuda, M, DM::Sample>,
                        ))
                            as Box<dyn HalfStep<f32, Cuda, On<M, f32>, DM::Sample>>
                    });
                self.run_placed::<f32, M, DM>(model, datamodule, stage, resume, device, half)
            }
        }
    }

    /// `stage` on CUDA in dtype `E`: a copy of `model` placed there, batches collated on the
    /// CPU and moved.
    #[cfg(feature = "cuda")]
    fn run_placed<E, M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        stage: Stage,
        resume: Option<Checkpoint>,
        device: dfdx::tensor::Cuda,
        half: HalfSteps<'_, E, dfdx::tensor::Cuda, M::On, DM::Sample>,
    ) -> Result<BTreeMap<String, f64>>
    where
        E: FloatDtype + CkptDtype,
        dfdx::tensor::Cuda: TrainDevice<E>,
        M: crate::module::PlaceAs<E, dfdx::tensor::Cuda>,
        DM: DataModule,
        DM::Sample: Collate<M::Batch, Cpu>,
    {
        use crate::module::PlaceAs;
        self.run_on_copy(
            model,
            datamodule,
            stage,
            resume,
            device,
            <M as PlaceAs<E, dfdx::tensor::Cuda>>::place,
            <M as PlaceAs<E, dfdx::tensor::Cuda>>::unplace,
            collate_to::<E, dfdx::tensor::Cuda, M, DM::Sample>,
            half,
        )
    }

    /// `stage` on a copy of `model` in another dtype or on another device. Training hands the
    /// copy's weights and hyperparameters back, whether it succeeded or not; evaluation leaves
    /// `model` alone (a round trip through f16 would round its weights).
    #[allow(clippy::too_many_arguments)]
    fn run_on_copy<E, D, M, C, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        stage: Stage,
        resume: Option<Checkpoint>,
        device: D,
        to: fn(&M, &D) -> Result<C>,
        from: fn(&C) -> M,
        collate: fn(Vec<DM::Sample>, &D) -> C::Batch,
        half: HalfSteps<'_, E, D, C, DM::Sample>,
    ) -> Result<BTreeMap<String, f64>>
    where
        E: FloatDtype + CkptDtype,
        D: TrainDevice<E>,
        C: LightningModule<E, D>,
        DM: DataModule,
    {
        let mut copy = to(model, &device)?;
        let result =
            self.run::<E, D, C, DM>(&mut copy, datamodule, stage, resume, device, collate, half);
        if stage == Stage::Fit {
            *model = from(&copy);
        }
        result.map(|r| r.metrics)
    }

    /// Where the checkpoint callback keeps its checkpoints (best and last included).
    pub fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
        self.callbacks.iter().find_map(|c| c.checkpoint_paths())
    }

    fn resolve_checkpoint(&self, which: CkptPath) -> Result<Option<PathBuf>> {
        let all: Vec<CheckpointPaths> = self
            .callbacks
            .iter()
            .filter_map(|c| c.checkpoint_paths())
            .collect();
        match which {
            CkptPath::Path(path) => Ok(Some(path)),
            CkptPath::Best => all.iter().find_map(|p| p.best.clone()).map(Some).ok_or_else(|| {
                Error::config(
                    "ckpt_path",
                    "\"best\" needs a checkpoint callback that saved a best checkpoint in an earlier fit of this trainer; pass the checkpoint's path instead",
                )
            }),
            CkptPath::Last => {
                let mut candidates: Vec<PathBuf> =
                    all.iter().filter_map(|p| p.last.clone()).collect();
                for dir in all.iter().filter_map(|p| p.dirpath.as_ref()) {
                    if let Ok(entries) = std::fs::read_dir(dir) {
                        candidates.extend(entries.flatten().map(|e| e.path()).filter(|p| {
                            p.file_name()
                                .and_then(|n| n.to_str())
                                .is_some_and(|n| n.starts_with("last") && n.ends_with(".ckpt"))
                        }));
                    }
                }
                let newest = candidates
                    .into_iter()
                    .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
                    .max()
                    .map(|(_, p)| p);
                Ok(newest)
            }
        }
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
        S: Send + 'static + Collate<M::Batch, Cpu>,
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
        DM: DataModule,
        DM::Sample: Collate<M::Batch, Cpu>,
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
        DM: DataModule,
        DM::Sample: Collate<M::Batch, Cpu>,
    {
        self.run_in_precision(model, datamodule, Stage::Test, None)
    }

    /// Runs `predict_step` on every predict batch; returns the predictions in order.
    pub fn predict<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
    ) -> Result<Vec<M::Prediction>>
    where
        M: LightningModule<f32, Cpu>,
        DM: DataModule,
        DM::Sample: Collate<M::Batch, Cpu>,
    {
        let collate = <DM::Sample as Collate<M::Batch, Cpu>>::collate;
        let cpu = Cpu::default();
        self.run::<f32, Cpu, M, DM>(model, datamodule, Stage::Predict, None, cpu, collate, None)
            .map(|r| r.predictions)
    }

    /// [`test`](Self::test) on a bare loader.
    pub fn test_loader<M, S>(
        &mut self,
        model: &mut M,
        loader: DataLoader<S>,
    ) -> Result<BTreeMap<String, f64>>
    where
        M: Precisions,
        S: Send + 'static + Collate<M::Batch, Cpu>,
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
        S: Send + 'static + Collate<M::Batch, Cpu>,
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
        M: LightningModule<f32, Cpu>,
        S: Send + 'static + Collate<M::Batch, Cpu>,
    {
        self.predict(
            model,
            &mut Loaders {
                predict: Some(loader),
                ..Loaders::default()
            },
        )
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
    /// The optimizer's learning rate at the end of the last `fit`.
    pub fn lr(&self) -> f64 {
        self.view.lr
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

    /// Creates the logger on first use, so that building a trainer touches no file.
    fn ensure_logger(&mut self) -> Result<()> {
        match self.logger_choice.take() {
            Some(LoggerChoice::Csv) => {
                self.view.logger = Some(Box::new(CsvLogger::new(
                    &self.default_root_dir,
                    "lightning_logs",
                )?));
            }
            Some(LoggerChoice::Custom(logger)) => self.view.logger = Some(logger),
            Some(LoggerChoice::Off) | None => {}
        }
        Ok(())
    }
}

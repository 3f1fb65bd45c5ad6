//! [`TrainerBuilder`]: a trainer's settings, with Lightning's defaults, checked when it is
//! built.

use std::path::PathBuf;

use super::settings::{Limit, Precision, Settings};
use super::{Dist, LoggerChoice, Trainer, TrainerArgs, TrainerView};
use crate::callback::Callback;
use crate::callbacks::{ModelCheckpoint, ModelSummary, Timer};
use crate::device::{Accelerator, Devices, RunDevice};
use crate::distributed::ClusterEnv;
use crate::loggers::Logger;
use crate::optim::ClipAlgorithm;
use crate::{Error, Result};

/// Lightning's default number of epochs when neither `max_epochs` nor `max_steps` is set.
pub const DEFAULT_MAX_EPOCHS: usize = 1000;

/// Settings of a [`Trainer`], with Lightning's defaults. Every method is a Lightning
/// `Trainer` argument of the same name.
pub struct TrainerBuilder {
    settings: Settings,
    accelerator: String,
    devices: Devices,
    strategy: String,
    num_nodes: usize,
    collective_timeout: std::time::Duration,
    state_dict_type: String,
    cpu_offload: bool,
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
            state_dict_type: "full".to_string(),
            cpu_offload: false,
            use_distributed_sampler: true,
            requeue_signal: Some("SIGUSR1".to_string()),
            callbacks: Vec::new(),
            logger: LoggerChoice::Named(vec!["csv".into()]),
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
        /// Stop after this many epochs (default 1000 when `max_steps` is not set either;
        /// `usize::MAX`, or `--max-epochs -1`, trains until another limit or a stop ends it).
        /// With 0, or a checkpoint resumed already past it, `fit` warns that nothing will be
        /// trained.
        max_epochs: usize => some;
        /// Stop after this many optimizer steps (`usize::MAX` or `--max-steps -1`: no limit).
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
        /// Test batches per test run.
        limit_test_batches: impl Into<Limit> => into;
        /// Prediction batches per prediction run.
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
        /// How `gradient_clip_val` clips: by the gradients' total norm (the default) or by value.
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
    /// [`Strategy`](crate::distributed::Strategy)).
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
    /// FULL_SHARD's checkpoints (Lightning's `FSDPStrategy(state_dict_type=...)`): `"full"`
    /// (default; one file, the weights and optimizer state gathered whole: the file DDP
    /// writes) or `"sharded"` (a directory of one file per rank, each written by its rank,
    /// with nothing gathered). Either resumes on any number of ranks.
    pub fn state_dict_type(mut self, kind: &str) -> Self {
        self.state_dict_type = kind.to_string();
        self
    }
    /// FULL_SHARD on GPUs (Lightning's `FSDPStrategy(cpu_offload=...)`): the shards'
    /// optimizer state lives in host memory and each step copies it in and out (default
    /// off). Nothing changes on CPUs.
    pub fn cpu_offload(mut self, on: bool) -> Self {
        self.cpu_offload = on;
        self
    }
    /// Under DDP each rank reads its own share of every epoch (default on); off, every rank
    /// reads all of it. Training and prediction shares are padded to as many batches on
    /// every rank (PyTorch's `DistributedSampler`); validation and test shares hold each
    /// sample once (Lightning's `UnrepeatedDistributedSampler`), so that an epoch's metrics
    /// over the ranks count none twice, but under FULL_SHARD, whose forward needs every rank.
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
    /// The built-in loggers by name, writing into one `lightning_logs/version_N` folder: `csv`
    /// (the default), `tensorboard`, both, or `false` for none (`--logger csv,tensorboard`).
    /// An unknown name is an error of [`build`](Self::build).
    pub fn loggers<S: Into<String>>(mut self, names: impl IntoIterator<Item = S>) -> Self {
        self.logger = LoggerChoice::Named(names.into_iter().map(Into::into).collect());
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
    /// Show the progress bar (default on; only rank 0 shows one).
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

    /// This process's place in the run: the launcher's environment checked against the
    /// flags, the device this process trains on, and the collectives that join it to the
    /// other ranks (launching them first when it starts a GPU run of several devices alone).
    fn join(&self) -> Result<(RunDevice, Dist)> {
        let accelerator: Accelerator = self.accelerator.parse()?;
        let mut plan = crate::distributed::plan(
            self.strategy.parse()?,
            ClusterEnv::detect()?,
            accelerator.is_gpu(),
            &self.devices,
            self.num_nodes,
            self.collective_timeout,
        )?;
        let local_rank = (plan.env.world_size > 1).then_some(plan.env.local_rank);
        let requeue_signal = match (&plan.env.job_id, &self.requeue_signal) {
            (Some(_), Some(sig)) if plan.env.launcher == crate::distributed::Launcher::Slurm => {
                Some(crate::distributed::requeue::signal_number(sig)?)
            }
            _ => None,
        };
        let device = accelerator.place(&self.devices, local_rank)?;
        let collective = crate::distributed::join(&mut plan, device, self.collective_timeout)?;
        let sharded_checkpoints = match self.state_dict_type.to_ascii_lowercase().as_str() {
            "full" => false,
            "sharded" => true,
            other => {
                return Err(Error::config(
                    "state_dict_type",
                    format!("`{other}` is not \"full\" or \"sharded\""),
                ))
            }
        };
        let full_shard = plan.strategy == crate::distributed::Strategy::FullShard;
        if !full_shard && (sharded_checkpoints || self.cpu_offload) {
            let what = if self.cpu_offload {
                "cpu_offload"
            } else {
                "state_dict_type"
            };
            return Err(Error::config(
                what,
                format!(
                    "is FULL_SHARD's (strategy \"fsdp\"), and this run's strategy is {:?}",
                    plan.strategy
                ),
            ));
        }
        let dist = Dist {
            env: plan.env,
            strategy: plan.strategy,
            sharded_checkpoints,
            cpu_offload: self.cpu_offload,
            collective,
            sampler: self.use_distributed_sampler,
            requeue_signal,
        };
        Ok((device, dist))
    }

    /// Checks the settings and builds the trainer.
    pub fn build(self) -> Result<Trainer> {
        crate::alloc::keep_freed_memory();
        crate::threads::compute_here();
        let (device, dist) = self.join()?;
        // Rank 0 alone logs, prints and writes checkpoints.
        let global_zero = dist.env.is_global_zero();
        let settings = self.settings.resolve()?;
        if let LoggerChoice::Named(names) = &self.logger {
            crate::loggers::check_names(names)?;
        }
        if global_zero {
            warn_if_unoptimized();
        }
        let fast_dev_run = settings.fast_dev_run > 0;
        if fast_dev_run {
            println!(
                "Running in fast_dev_run mode: will run the requested loop using {} batch(es). Logging and checkpointing is suppressed.",
                settings.fast_dev_run
            );
        }
        let callbacks = callbacks_for(
            self.callbacks,
            (self.enable_checkpointing, self.enable_model_summary),
            &settings,
            global_zero,
        )?;
        let mut view = TrainerView::new(None);
        view.default_root_dir = self.default_root_dir.clone();
        view.fast_dev_run = fast_dev_run;
        view.global_rank = dist.env.global_rank;
        view.world_size = dist.env.world_size;
        let logger = match fast_dev_run || !global_zero {
            true => LoggerChoice::Off,
            false => self.logger,
        };
        Ok(Trainer {
            settings,
            callbacks,
            logger_choice: Some(logger),
            default_root_dir: self.default_root_dir,
            enable_progress_bar: self.enable_progress_bar && global_zero,
            view,
            device,
            dist,
            #[cfg(feature = "cuda")]
            cuda: None,
            trial: false,
        })
    }
}

/// The callbacks given, with the ones the settings add: a default `ModelCheckpoint` unless one
/// was given (or checkpointing is off), the model summary on rank 0, the timer of `max_time`.
fn callbacks_for(
    mut callbacks: Vec<Box<dyn Callback>>,
    (enable_checkpointing, enable_model_summary): (bool, bool),
    settings: &Settings,
    global_zero: bool,
) -> Result<Vec<Box<dyn Callback>>> {
    let fast_dev_run = settings.fast_dev_run > 0;
    let has_checkpointing = callbacks.iter().any(|c| c.checkpoint_paths().is_some());
    match (enable_checkpointing, has_checkpointing) {
        (true, false) if !fast_dev_run => callbacks.push(Box::new(ModelCheckpoint::new())),
        (false, true) => {
            return Err(Error::config(
                "enable_checkpointing",
                "is off, but a checkpoint callback was given: remove one of the two",
            ))
        }
        _ => {}
    }
    if enable_model_summary && !fast_dev_run && global_zero {
        callbacks.insert(0, Box::new(ModelSummary::new()));
    }
    if let Some(limit) = settings.max_time {
        callbacks.push(Box::new(Timer::new(limit)));
    }
    Ok(callbacks)
}

/// A debug build of a crate that depends on fulmen compiles fulmen and dfdx without
/// optimizations, which trains many times slower; said once per process (`runtime/build.rs`).
fn warn_if_unoptimized() {
    if cfg!(fulmen_unoptimized) {
        static ONCE: std::sync::Once = std::sync::Once::new();
        ONCE.call_once(|| {
            eprintln!(
                "warning: fulmen and dfdx were compiled without optimizations (a debug build), which trains many times slower; build with --release, or add to your Cargo.toml:\n[profile.dev.package.\"*\"]\nopt-level = 3"
            )
        });
    }
}

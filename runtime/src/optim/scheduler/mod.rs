//! Learning-rate schedulers, by PyTorch's formulas (`torch.optim.lr_scheduler`), returned from
//! `configure_optimizers` with the optimizer (Lightning's `lr_scheduler` dict):
//!
//! ```
//! use fulmen::optim::{CosineAnnealingLR, Interval, LinearLR, LrScheduler, OneCycleLR, StepLR};
//! use fulmen::Optim;
//! let every_10_epochs = Optim::sgd(0.1).scheduler(StepLR::new(10, 0.1));
//! let per_step = Optim::adam(1e-3).scheduler(
//!     LrScheduler::from(OneCycleLR { pct_start: 0.25, ..OneCycleLR::new(0.01, 1000) })
//!         .interval(Interval::Step),
//! );
//! let warmup = Optim::adamw(1e-3).scheduler(LrScheduler::sequential(
//!     vec![LinearLR::new(0.01, 1.0, 5).into(), CosineAnnealingLR::new(95, 0.0).into()],
//!     vec![5],
//! ));
//! ```
//!
//! As in PyTorch, building a scheduler sets the learning rate of step 0 (`OneCycleLR` starts
//! at `max_lr / div_factor`), and every later `step` sets the rate of the next index.

use serde::{Deserialize, Serialize};

use crate::callbacks::Mode;
use crate::{Error, Result};

/// When the scheduler steps: after every optimizer step, at the end of every epoch, or when a
/// manual step says.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Interval {
    /// At the end of every training epoch (Lightning's `"epoch"`, the default).
    #[default]
    Epoch,
    /// After every optimizer step (Lightning's `"step"`).
    Step,
    /// When a manual-optimization `training_step` calls `ctx.lr_scheduler_step(opt)` (as
    /// Lightning leaves `sch.step()` to a manual step); refused under automatic optimization.
    /// `frequency` does not apply.
    Manual,
}

/// `StepLR`: multiply by `gamma` every `step_size` epochs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StepLR {
    /// Scheduler steps (epochs by default) between two decays (PyTorch's `step_size`).
    pub step_size: usize,
    /// The factor of each decay (PyTorch's `gamma`).
    pub gamma: f64,
}
impl StepLR {
    /// A `StepLR` decaying by `gamma` every `step_size` scheduler steps.
    pub fn new(step_size: usize, gamma: f64) -> Self {
        Self { step_size, gamma }
    }
}

/// `MultiStepLR`: multiply by `gamma` at each milestone.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MultiStepLR {
    /// The scheduler steps at which the rate decays (PyTorch's `milestones`).
    pub milestones: Vec<usize>,
    /// The factor of each decay (PyTorch's `gamma`).
    pub gamma: f64,
}
impl MultiStepLR {
    /// A `MultiStepLR` decaying by `gamma` at each of `milestones`.
    pub fn new(milestones: Vec<usize>, gamma: f64) -> Self {
        Self { milestones, gamma }
    }
}

/// `ExponentialLR`: multiply by `gamma` every epoch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExponentialLR {
    /// The factor applied at every scheduler step (PyTorch's `gamma`).
    pub gamma: f64,
}
impl ExponentialLR {
    /// An `ExponentialLR` decaying by `gamma` every scheduler step.
    pub fn new(gamma: f64) -> Self {
        Self { gamma }
    }
}

/// `CosineAnnealingLR`: from the base rate down to `eta_min` over `t_max` steps.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct CosineAnnealingLR {
    /// Scheduler steps from the base rate down to `eta_min` (PyTorch's `T_max`).
    pub t_max: usize,
    /// The lowest rate (PyTorch's `eta_min`).
    pub eta_min: f64,
}
impl CosineAnnealingLR {
    /// A `CosineAnnealingLR` reaching `eta_min` after `t_max` scheduler steps.
    pub fn new(t_max: usize, eta_min: f64) -> Self {
        Self { t_max, eta_min }
    }
}

/// `LinearLR`: the base rate times a factor going linearly from `start_factor` to
/// `end_factor` over `total_iters` steps (a linear warmup).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LinearLR {
    /// The factor at step 0, in (0, 1] (PyTorch's `start_factor`).
    pub start_factor: f64,
    /// The factor from `total_iters` on, in [0, 1] (PyTorch's `end_factor`).
    pub end_factor: f64,
    /// Scheduler steps from `start_factor` to `end_factor` (PyTorch's `total_iters`).
    pub total_iters: usize,
}
impl LinearLR {
    /// A `LinearLR` going from `start_factor` to `end_factor` over `total_iters` scheduler steps.
    pub fn new(start_factor: f64, end_factor: f64, total_iters: usize) -> Self {
        Self {
            start_factor,
            end_factor,
            total_iters,
        }
    }
}

/// How `OneCycleLR` moves between its phases' rates.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum Anneal {
    /// Cosine annealing (PyTorch's `"cos"`, the default).
    Cos,
    /// Linear annealing (PyTorch's `"linear"`).
    Linear,
}

/// `OneCycleLR`: up from `max_lr / div_factor` to `max_lr`, then down to
/// `initial / final_div_factor`, over `total_steps`; momentum (SGD) or beta1 (Adam) cycles
/// the other way. PyTorch's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct OneCycleLR {
    /// The peak learning rate (PyTorch's `max_lr`).
    pub max_lr: f64,
    /// Scheduler steps in the cycle (PyTorch's `total_steps`); stepping past it is an error.
    pub total_steps: usize,
    /// The fraction of the cycle spent raising the rate (PyTorch's `pct_start`, default 0.3).
    pub pct_start: f64,
    /// How the rate moves within a phase (PyTorch's `anneal_strategy`, default cosine).
    pub anneal_strategy: Anneal,
    /// Whether momentum (SGD) or beta1 (Adam) cycles inversely to the rate (PyTorch's
    /// `cycle_momentum`, default true).
    pub cycle_momentum: bool,
    /// The lowest momentum, reached at the peak rate (PyTorch's `base_momentum`, default 0.85).
    pub base_momentum: f64,
    /// The highest momentum, at the start and end of the cycle (PyTorch's `max_momentum`, default
    /// 0.95).
    pub max_momentum: f64,
    /// The initial rate is `max_lr / div_factor` (PyTorch's `div_factor`, default 25).
    pub div_factor: f64,
    /// The final rate is the initial one divided by this (PyTorch's `final_div_factor`, default
    /// 1e4).
    pub final_div_factor: f64,
    /// Whether the rate comes back down to the initial one before annealing to the final one, in a
    /// third phase (PyTorch's `three_phase`, default false).
    pub three_phase: bool,
}
impl OneCycleLR {
    /// A `OneCycleLR` peaking at `max_lr` over `total_steps` scheduler steps, with PyTorch's
    /// defaults for the rest.
    pub fn new(max_lr: f64, total_steps: usize) -> Self {
        Self {
            max_lr,
            total_steps,
            pct_start: 0.3,
            anneal_strategy: Anneal::Cos,
            cycle_momentum: true,
            base_momentum: 0.85,
            max_momentum: 0.95,
            div_factor: 25.0,
            final_div_factor: 1e4,
            three_phase: false,
        }
    }
}

/// Whether an improvement is measured relative to the best value or in absolute terms.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum ThresholdMode {
    /// Better means beyond `best * (1 ± threshold)` (PyTorch's `"rel"`, the default).
    Rel,
    /// Better means beyond `best ± threshold` (PyTorch's `"abs"`).
    Abs,
}

/// `ReduceLROnPlateau`: multiply by `factor` when `monitor` has not improved for `patience`
/// epochs. PyTorch's defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReduceLROnPlateau {
    /// The logged metric it reads (Lightning's `monitor`).
    pub monitor: String,
    /// Whether lower (`Min`, the default) or higher (`Max`) values of the metric are better
    /// (PyTorch's `mode`).
    pub mode: Mode,
    /// The rate is multiplied by this on a plateau, in [0, 1) (PyTorch's `factor`, default 0.1).
    pub factor: f64,
    /// Scheduler steps without improvement tolerated before the rate is reduced (PyTorch's
    /// `patience`, default 10).
    pub patience: usize,
    /// The least change that counts as an improvement (PyTorch's `threshold`, default 1e-4).
    pub threshold: f64,
    /// Whether `threshold` is relative to the best value or absolute (PyTorch's `threshold_mode`).
    pub threshold_mode: ThresholdMode,
    /// Scheduler steps after a reduction during which steps without improvement are not counted
    /// (PyTorch's `cooldown`, default 0).
    pub cooldown: usize,
    /// The rate is never reduced below this (PyTorch's `min_lr`, default 0).
    pub min_lr: f64,
    /// A reduction smaller than this is skipped (PyTorch's `eps`, default 1e-8).
    pub eps: f64,
}
impl ReduceLROnPlateau {
    /// A `ReduceLROnPlateau` on the logged metric `monitor`, with PyTorch's defaults for the rest.
    pub fn new(monitor: &str) -> Self {
        Self {
            monitor: monitor.to_string(),
            mode: Mode::Min,
            factor: 0.1,
            patience: 10,
            threshold: 1e-4,
            threshold_mode: ThresholdMode::Rel,
            cooldown: 0,
            min_lr: 0.0,
            eps: 1e-8,
        }
    }
}

/// One of the schedules above.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub enum Schedule {
    /// [`StepLR`].
    Step(StepLR),
    /// [`MultiStepLR`].
    MultiStep(MultiStepLR),
    /// [`ExponentialLR`].
    Exponential(ExponentialLR),
    /// [`CosineAnnealingLR`].
    CosineAnnealing(CosineAnnealingLR),
    /// [`LinearLR`].
    Linear(LinearLR),
    /// [`OneCycleLR`].
    OneCycle(OneCycleLR),
    /// [`ReduceLROnPlateau`].
    Plateau(ReduceLROnPlateau),
    /// `SequentialLR`: `schedules[i]` from `milestones[i - 1]` on, counting from 0 there.
    Sequential {
        /// The schedules, in order; none of them a plateau or another sequence.
        schedules: Vec<Schedule>,
        /// The scheduler steps at which each next schedule takes over (one fewer than `schedules`).
        milestones: Vec<usize>,
    },
}

macro_rules! into_schedule {
    ($($ty:ident => $variant:ident),*) => {$(
        impl From<$ty> for Schedule {
            fn from(s: $ty) -> Self {
                Schedule::$variant(s)
            }
        }
        impl From<$ty> for LrScheduler {
            fn from(s: $ty) -> Self {
                LrScheduler::new(Schedule::$variant(s))
            }
        }
    )*};
}
into_schedule!(StepLR => Step, MultiStepLR => MultiStep, ExponentialLR => Exponential,
    CosineAnnealingLR => CosineAnnealing, LinearLR => Linear, OneCycleLR => OneCycle,
    ReduceLROnPlateau => Plateau);

/// A schedule with Lightning's `interval` and `frequency` (step it every `frequency` epochs or
/// optimizer steps).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LrScheduler {
    /// The schedule.
    pub schedule: Schedule,
    /// Whether it steps at the end of each epoch or after each optimizer step (Lightning's
    /// `interval`).
    pub interval: Interval,
    /// It steps every `frequency` intervals (Lightning's `frequency`, default 1).
    pub frequency: usize,
}

impl From<Schedule> for LrScheduler {
    fn from(schedule: Schedule) -> Self {
        LrScheduler::new(schedule)
    }
}

impl LrScheduler {
    /// Every epoch (Lightning's default interval and frequency).
    pub fn new(schedule: Schedule) -> Self {
        Self {
            schedule,
            interval: Interval::Epoch,
            frequency: 1,
        }
    }
    /// `SequentialLR`.
    pub fn sequential(schedules: Vec<Schedule>, milestones: Vec<usize>) -> Self {
        Self::new(Schedule::Sequential {
            schedules,
            milestones,
        })
    }
    /// Sets Lightning's `interval`: step at the end of each epoch (the default), after each
    /// optimizer step, or when a manual step says ([`Interval::Manual`]).
    pub fn interval(mut self, interval: Interval) -> Self {
        self.interval = interval;
        self
    }
    /// Sets Lightning's `frequency`: step every `frequency` intervals (default 1; 0 is refused).
    pub fn frequency(mut self, frequency: usize) -> Self {
        self.frequency = frequency;
        self
    }

    /// Refuses what PyTorch refuses, naming the setting.
    pub fn validate(&self) -> Result<()> {
        if self.frequency == 0 {
            return Err(Error::config(
                "lr_scheduler.frequency",
                "must be at least 1",
            ));
        }
        self.schedule.validate()
    }

    /// The metric it reads, for `ReduceLROnPlateau`.
    pub fn monitor(&self) -> Option<&str> {
        match &self.schedule {
            Schedule::Plateau(p) => Some(&p.monitor),
            _ => None,
        }
    }
}

mod formulas;
mod running;

pub(crate) use running::SchedulerState;
pub use running::{Rates, Scheduler};

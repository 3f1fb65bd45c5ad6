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
use crate::checkpoint::float::F64;
use crate::{Error, Result};

/// When the scheduler steps: after every optimizer step or at the end of every epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum Interval {
    /// At the end of every training epoch (Lightning's `"epoch"`, the default).
    #[default]
    Epoch,
    /// After every optimizer step (Lightning's `"step"`).
    Step,
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
    /// Sets Lightning's `interval`: step at the end of each epoch (the default) or after each
    /// optimizer step.
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

impl Schedule {
    fn name(&self) -> &'static str {
        match self {
            Schedule::Step(_) => "StepLR",
            Schedule::MultiStep(_) => "MultiStepLR",
            Schedule::Exponential(_) => "ExponentialLR",
            Schedule::CosineAnnealing(_) => "CosineAnnealingLR",
            Schedule::Linear(_) => "LinearLR",
            Schedule::OneCycle(_) => "OneCycleLR",
            Schedule::Plateau(_) => "ReduceLROnPlateau",
            Schedule::Sequential { .. } => "SequentialLR",
        }
    }

    fn validate(&self) -> Result<()> {
        let bad =
            |field: &str, why: String| Err(Error::config(format!("{}.{field}", self.name()), why));
        match self {
            Schedule::Step(s) if s.step_size == 0 => bad("step_size", "must be at least 1".into()),
            Schedule::CosineAnnealing(s) if s.t_max == 0 => {
                bad("t_max", "must be at least 1".into())
            }
            Schedule::Linear(s) if !(s.start_factor > 0.0 && s.start_factor <= 1.0) => bad(
                "start_factor",
                format!("{} is not in (0, 1]", s.start_factor),
            ),
            Schedule::Linear(s) if !(0.0..=1.0).contains(&s.end_factor) => {
                bad("end_factor", format!("{} is not in [0, 1]", s.end_factor))
            }
            Schedule::OneCycle(s) if s.total_steps == 0 => {
                bad("total_steps", "must be at least 1".into())
            }
            Schedule::OneCycle(s) if !(0.0..=1.0).contains(&s.pct_start) => {
                bad("pct_start", format!("{} is not in [0, 1]", s.pct_start))
            }
            Schedule::Plateau(p) if p.factor >= 1.0 || p.factor < 0.0 => {
                bad("factor", format!("{} is not in [0, 1)", p.factor))
            }
            Schedule::Sequential {
                schedules,
                milestones,
            } => {
                if schedules.len() != milestones.len() + 1 {
                    return bad(
                        "milestones",
                        format!(
                            "{} schedules need {} milestones, not {}",
                            schedules.len(),
                            schedules.len().saturating_sub(1),
                            milestones.len()
                        ),
                    );
                }
                if schedules
                    .iter()
                    .any(|s| matches!(s, Schedule::Plateau(_) | Schedule::Sequential { .. }))
                {
                    return bad(
                        "schedules",
                        "cannot hold ReduceLROnPlateau or another SequentialLR".into(),
                    );
                }
                schedules.iter().try_for_each(Schedule::validate)
            }
            _ => Ok(()),
        }
    }

    /// The rate at index `t` for a base rate `base` (closed forms; not for the plateau).
    fn lr(&self, base: f64, t: usize) -> Result<f64> {
        let tf = t as f64;
        Ok(match self {
            Schedule::Step(s) => base * s.gamma.powi((t / s.step_size) as i32),
            Schedule::MultiStep(s) => {
                base * s
                    .gamma
                    .powi(s.milestones.iter().filter(|&&m| m <= t).count() as i32)
            }
            Schedule::Exponential(s) => base * s.gamma.powi(t as i32),
            Schedule::CosineAnnealing(s) => {
                let cos = (std::f64::consts::PI * tf / s.t_max as f64).cos();
                s.eta_min + (base - s.eta_min) * (1.0 + cos) / 2.0
            }
            Schedule::Linear(s) => {
                let done = t.min(s.total_iters) as f64 / s.total_iters.max(1) as f64;
                base * (s.start_factor + (s.end_factor - s.start_factor) * done)
            }
            Schedule::OneCycle(s) => one_cycle(s, t)?.0,
            Schedule::Plateau(_) => base,
            Schedule::Sequential {
                schedules,
                milestones,
            } => {
                let i = milestones.iter().filter(|&&m| m <= t).count();
                let start = if i == 0 { 0 } else { milestones[i - 1] };
                schedules[i].lr(base, t - start)?
            }
        })
    }
}

/// `OneCycleLR`'s rate and momentum at step `t`.
fn one_cycle(s: &OneCycleLR, t: usize) -> Result<(f64, f64)> {
    if t >= s.total_steps {
        return Err(Error::config(
            "OneCycleLR.total_steps",
            format!(
                "the scheduler was stepped {} times but total_steps is {}: raise total_steps to the number of optimizer steps of the run",
                t + 1,
                s.total_steps
            ),
        ));
    }
    let initial = s.max_lr / s.div_factor;
    let min = initial / s.final_div_factor;
    let total = s.total_steps as f64;
    let up_end = s.pct_start * total - 1.0;
    // (end step, start lr, end lr, start momentum, end momentum)
    let phases: Vec<(f64, f64, f64, f64, f64)> = if s.three_phase {
        vec![
            (up_end, initial, s.max_lr, s.max_momentum, s.base_momentum),
            (
                2.0 * s.pct_start * total - 2.0,
                s.max_lr,
                initial,
                s.base_momentum,
                s.max_momentum,
            ),
            (total - 1.0, initial, min, s.max_momentum, s.max_momentum),
        ]
    } else {
        vec![
            (up_end, initial, s.max_lr, s.max_momentum, s.base_momentum),
            (total - 1.0, s.max_lr, min, s.base_momentum, s.max_momentum),
        ]
    };
    let anneal = |start: f64, end: f64, pct: f64| match s.anneal_strategy {
        Anneal::Cos => end + (start - end) / 2.0 * ((std::f64::consts::PI * pct).cos() + 1.0),
        Anneal::Linear => (end - start) * pct + start,
    };
    let step = t as f64;
    let mut start_step = 0.0;
    for (i, &(end_step, lr0, lr1, m0, m1)) in phases.iter().enumerate() {
        if step <= end_step || i == phases.len() - 1 {
            let pct = (step - start_step) / (end_step - start_step);
            return Ok((anneal(lr0, lr1, pct), anneal(m0, m1, pct)));
        }
        start_step = end_step;
    }
    Ok((initial, s.max_momentum))
}

/// What a scheduler carries between steps, as checkpoints store it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct SchedulerState {
    pub name: String,
    /// Steps taken (PyTorch's `last_epoch`).
    pub steps: usize,
    pub base_lr: f64,
    pub lr: f64,
    pub best: F64,
    pub num_bad: usize,
    pub cooldown_counter: usize,
}

/// A scheduler at work.
#[derive(Debug, Clone)]
pub struct Scheduler {
    pub(crate) config: LrScheduler,
    pub(crate) state: SchedulerState,
}

/// What one scheduler step sets on the optimizer.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rates {
    /// The learning rate.
    pub lr: f64,
    /// SGD's momentum or Adam's beta1 (`OneCycleLR` with `cycle_momentum`).
    pub momentum: Option<f64>,
}

impl Scheduler {
    /// Builds it on an optimizer whose rate is `base_lr`; returns it and the rates of step 0.
    pub fn new(config: LrScheduler, base_lr: f64) -> Result<(Self, Rates)> {
        config.validate()?;
        let best = match &config.schedule {
            Schedule::Plateau(p) if p.mode == Mode::Max => f64::NEG_INFINITY,
            _ => f64::INFINITY,
        };
        let mut scheduler = Scheduler {
            state: SchedulerState {
                name: config.schedule.name().to_string(),
                steps: 0,
                base_lr,
                lr: base_lr,
                best: F64(best),
                num_bad: 0,
                cooldown_counter: 0,
            },
            config,
        };
        let rates = scheduler.rates()?;
        scheduler.state.lr = rates.lr;
        Ok((scheduler, rates))
    }

    /// Whether it steps at the end of each epoch or after each optimizer step.
    pub fn interval(&self) -> Interval {
        self.config.interval
    }
    /// Every how many intervals it steps.
    pub fn frequency(&self) -> usize {
        self.config.frequency
    }
    /// The metric `ReduceLROnPlateau` reads.
    pub fn monitor(&self) -> Option<&str> {
        self.config.monitor()
    }

    fn rates(&self) -> Result<Rates> {
        let t = self.state.steps;
        Ok(match &self.config.schedule {
            Schedule::OneCycle(s) => {
                let (lr, momentum) = one_cycle(s, t)?;
                Rates {
                    lr,
                    momentum: s.cycle_momentum.then_some(momentum),
                }
            }
            Schedule::Plateau(_) => Rates {
                lr: self.state.lr,
                momentum: None,
            },
            schedule => Rates {
                lr: schedule.lr(self.state.base_lr, t)?,
                momentum: None,
            },
        })
    }

    /// One step; `metric` is the monitored value (`ReduceLROnPlateau` only).
    pub fn step(&mut self, metric: Option<f64>) -> Result<Rates> {
        self.state.steps += 1;
        if let Schedule::Plateau(p) = &self.config.schedule {
            let p = p.clone();
            let value = metric.ok_or_else(|| {
                Error::config(
                    "ReduceLROnPlateau.monitor",
                    format!("no value for `{}`", p.monitor),
                )
            })?;
            self.plateau(&p, value);
        }
        let rates = self.rates()?;
        self.state.lr = rates.lr;
        Ok(rates)
    }

    /// PyTorch's `ReduceLROnPlateau.step`.
    fn plateau(&mut self, p: &ReduceLROnPlateau, value: f64) {
        let s = &mut self.state;
        let best = s.best.0;
        let better = match (p.mode, p.threshold_mode) {
            (Mode::Min, ThresholdMode::Rel) => value < best * (1.0 - p.threshold),
            (Mode::Min, ThresholdMode::Abs) => value < best - p.threshold,
            (Mode::Max, ThresholdMode::Rel) => value > best * (1.0 + p.threshold),
            (Mode::Max, ThresholdMode::Abs) => value > best + p.threshold,
        };
        if better {
            s.best = F64(value);
            s.num_bad = 0;
        } else {
            s.num_bad += 1;
        }
        if s.cooldown_counter > 0 {
            s.cooldown_counter -= 1;
            s.num_bad = 0;
        }
        if s.num_bad > p.patience {
            let new = (s.lr * p.factor).max(p.min_lr);
            if s.lr - new > p.eps {
                s.lr = new;
            }
            s.cooldown_counter = p.cooldown;
            s.num_bad = 0;
        }
    }

    /// Takes the step count and plateau state of a checkpoint; returns the rates to set.
    pub(crate) fn load_state(&mut self, state: &SchedulerState) -> Result<Rates> {
        if state.name != self.state.name {
            return Err(Error::msg(format!(
                "its scheduler is {} but configure_optimizers returns {}",
                state.name, self.state.name
            )));
        }
        self.state = state.clone();
        let rates = self.rates()?;
        self.state.lr = rates.lr;
        Ok(rates)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lrs(config: impl Into<LrScheduler>, base: f64, n: usize) -> Vec<f64> {
        let (mut s, first) = Scheduler::new(config.into(), base).unwrap();
        let mut out = vec![first.lr];
        for _ in 1..n {
            out.push(s.step(None).unwrap().lr);
        }
        out
    }

    #[test]
    fn sequential_restarts_the_next_schedule_at_its_milestone() {
        let warm = LrScheduler::sequential(
            vec![
                LinearLR::new(0.5, 1.0, 2).into(),
                ExponentialLR::new(0.5).into(),
            ],
            vec![2],
        );
        assert_eq!(lrs(warm, 1.0, 5), [0.5, 0.75, 1.0, 0.5, 0.25]);
    }
}

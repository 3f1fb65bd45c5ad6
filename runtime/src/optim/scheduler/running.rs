//! A scheduler at work: its state between steps (as checkpoints store it) and each step's
//! rates.

use serde::{Deserialize, Serialize};

use super::formulas::one_cycle;
use super::*;
use crate::callbacks::Mode;
use crate::checkpoint::float::F64;

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

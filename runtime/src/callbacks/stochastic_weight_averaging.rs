//! `StochasticWeightAveraging` (Lightning's callback, Izmailov et al. 2018): from a start
//! epoch on, the learning rate anneals to `swa_lr` and the weights at the end of each epoch
//! are averaged (equally); when training ends the module takes the average, and its batch
//! norms' statistics are recomputed with one pass over the training data
//! (`TrainerView::update_bn`), since no step ever ran with the averaged weights.
//!
//! As Lightning's, validation during training runs with the weights being trained; the average
//! is what `fit` leaves in the module. Checkpoints keep the average under `swa/average/`, so a
//! resumed run continues it exactly (in `f32`: an f64 run's average resumes rounded to f32).
//!
//! The start counts epochs from 1, as Lightning's `swa_epoch_start`: `start_epoch(30)` averages
//! from the 30th epoch on (`current_epoch` 29), `start_fraction(0.8)` of 10 epochs from the 8th.
//!
//! ```
//! use fulmen::callbacks::StochasticWeightAveraging;
//! // Average from 80% of max_epochs on, annealing to 0.01 over 10 epochs (the defaults).
//! let swa = StochasticWeightAveraging::new(0.01);
//! // Average from the 30th epoch on, annealing linearly over 5 epochs.
//! let swa = StochasticWeightAveraging::new(0.01).start_epoch(30).annealing_epochs(5).linear();
//! ```

use serde::{Deserialize, Serialize};

use crate::callback::Callback;
use crate::checkpoint::Checkpoint;
use crate::weights::{At, Snapshot, Weights};
use crate::{Error, Stage, TrainerView};

/// Averages the weights of the last epochs; see the [module docs](self).
#[derive(Debug)]
pub struct StochasticWeightAveraging {
    swa_lr: f64,
    start: Start,
    annealing_epochs: usize,
    cosine: bool,
    average: Option<Snapshot>,
    state: State,
    /// A resumed run's average, until `fit` starts.
    resumed: Option<Vec<(String, Vec<f32>)>>,
}

#[derive(Debug, Clone, Copy)]
enum Start {
    Fraction(f64),
    Epoch(usize),
}

/// What checkpoints keep besides the average.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
struct State {
    /// Epochs averaged.
    averaged: u64,
    /// The rate of each of the first optimizer's groups when averaging began.
    start_lrs: Vec<f64>,
}

/// Where a checkpoint keeps the average.
const AVERAGE: &str = "swa/average/";

impl StochasticWeightAveraging {
    /// Anneals every parameter group's rate to `swa_lr` (Lightning's `swa_lrs`).
    pub fn new(swa_lr: f64) -> Self {
        Self {
            swa_lr,
            start: Start::Fraction(0.8),
            annealing_epochs: 10,
            cosine: true,
            average: None,
            state: State::default(),
            resumed: None,
        }
    }
    /// Starts at this epoch, counted from 1 (Lightning's `swa_epoch_start` as an int).
    pub fn start_epoch(mut self, epoch: usize) -> Self {
        self.start = Start::Epoch(epoch);
        self
    }
    /// Starts at this fraction of `max_epochs` (default 0.8).
    pub fn start_fraction(mut self, fraction: f64) -> Self {
        self.start = Start::Fraction(fraction);
        self
    }
    /// Epochs over which the rate anneals to `swa_lr` (default 10).
    pub fn annealing_epochs(mut self, epochs: usize) -> Self {
        self.annealing_epochs = epochs;
        self
    }
    /// Anneals linearly (default: cosine).
    pub fn linear(mut self) -> Self {
        self.cosine = false;
        self
    }

    /// The `current_epoch` averaging starts at (Lightning's `swa_start`: the 1-based start
    /// less one).
    fn start(&self, trainer: &TrainerView) -> Option<usize> {
        let first = match self.start {
            Start::Epoch(e) => e,
            Start::Fraction(f) => {
                let max = trainer.max_epochs().filter(|&m| m != usize::MAX)?;
                (max as f64 * f) as usize
            }
        };
        Some(first.saturating_sub(1))
    }

    /// PyTorch's `SWALR`: from the rate at the start, `t` epochs into averaging.
    fn annealed(&self, start_lr: f64, t: usize) -> f64 {
        // No annealing epochs: swa_lr at once (PyTorch's `step = max(1, step)`).
        let t = match self.annealing_epochs {
            0 => 1.0,
            n => (t as f64 / n as f64).min(1.0),
        };
        let alpha = match self.cosine {
            true => (1.0 - (std::f64::consts::PI * t).cos()) / 2.0,
            false => t,
        };
        self.swa_lr * alpha + start_lr * (1.0 - alpha)
    }

    fn update(&mut self, weights: &mut dyn Weights) -> crate::Result<()> {
        let n = self.state.averaged as f64;
        match self.average.as_mut() {
            Some(average) => weights.blend_into(average, n / (n + 1.0))?,
            None => self.average = Some(weights.snapshot()?),
        }
        self.state.averaged += 1;
        Ok(())
    }
}

impl Callback for StochasticWeightAveraging {
    fn setup(&mut self, trainer: &mut TrainerView, stage: Stage) {
        if !(self.swa_lr.is_finite() && self.swa_lr > 0.0) {
            let why = format!("{} is not a finite rate > 0", self.swa_lr);
            trainer.fail(Error::config("StochasticWeightAveraging.swa_lr", why));
        }
        if let Start::Fraction(f) = self.start {
            if !(f > 0.0 && f <= 1.0) {
                let why = format!("{f} is not in (0, 1]");
                trainer.fail(Error::config(
                    "StochasticWeightAveraging.swa_epoch_start",
                    why,
                ));
            } else if trainer.max_epochs().is_none_or(|m| m == usize::MAX) {
                trainer.fail(Error::config(
                    "StochasticWeightAveraging.swa_epoch_start",
                    "a fraction of max_epochs needs max_epochs; give the start epoch instead",
                ));
            }
        }
        if stage == Stage::Fit {
            self.average = None;
            self.state = State::default();
            self.resumed = None;
        }
    }

    fn on_fit_start(&mut self, trainer: &mut TrainerView) {
        if let (Some(start), Some(max)) = (self.start(trainer), trainer.max_epochs()) {
            if start >= max {
                let why = format!(
                    "averaging would start at epoch {} of {max}: nothing would be averaged",
                    start + 1
                );
                return trainer.fail(Error::config(
                    "StochasticWeightAveraging.swa_epoch_start",
                    why,
                ));
            }
        }
        // Fail now, not after the last epoch, where the batch norms could not be recomputed.
        if let Some(why) = trainer.update_bn_refused() {
            trainer.fail(Error::msg(format!("StochasticWeightAveraging: {why}")));
        }
    }

    fn on_train_batch_start(&mut self, trainer: &mut TrainerView, _batch_idx: usize) {
        let epoch = trainer.current_epoch();
        let Some(start) = self.start(trainer).filter(|&s| epoch >= s) else {
            return;
        };
        let Some(first) = trainer.optimizers().first() else {
            return;
        };
        if self.state.start_lrs.is_empty() {
            self.state.start_lrs = first.groups.iter().map(|g| g.0).collect();
        }
        // Every step's, so that no scheduler's rate comes between (Lightning replaces the
        // scheduler).
        for (g, &lr) in self.state.start_lrs.clone().iter().enumerate() {
            trainer.set_group_lr(0, g, self.annealed(lr, epoch - start));
        }
    }

    fn with_weights(&mut self, trainer: &mut TrainerView, at: At, weights: &mut dyn Weights) {
        let done = match at {
            At::FitStart => match self.resumed.take() {
                // The module's weights aside, the average put in and swapped out.
                Some(average) => weights.snapshot().and_then(|mut held| {
                    for (name, values) in &average {
                        weights.set_values(name, values)?;
                    }
                    weights.swap(&mut held)?;
                    self.average = Some(held);
                    Ok(())
                }),
                None => Ok(()),
            },
            At::TrainEpochEnd => match self.start(trainer) {
                Some(start) if trainer.current_epoch() >= start => self.update(weights),
                _ => Ok(()),
            },
            At::TrainEnd => match self.average.take() {
                Some(mut average) => weights.swap(&mut average).map(|()| trainer.update_bn()),
                None => Ok(()),
            },
            _ => Ok(()),
        };
        if let Err(e) = done {
            trainer.fail(Error::msg(format!("StochasticWeightAveraging: {e}")));
        }
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.state).ok()
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> crate::Result<()> {
        self.state = serde_json::from_value(state.clone())
            .map_err(|e| Error::msg(format!("StochasticWeightAveraging's state: {e}")))?;
        if self.state.averaged > 0 && self.resumed.is_none() {
            return Err(Error::msg(format!(
                "StochasticWeightAveraging: the checkpoint says {} epochs were averaged but holds no average (`{AVERAGE}…`)",
                self.state.averaged
            )));
        }
        Ok(())
    }

    fn on_save_checkpoint(&mut self, trainer: &mut TrainerView, checkpoint: &mut Checkpoint) {
        let Some(average) = &self.average else {
            return;
        };
        for (name, values) in average.values() {
            let shape = checkpoint.tensor_shape(&name).map(<[usize]>::to_vec);
            let saved = shape
                .ok_or_else(|| Error::msg(format!("the checkpoint has no tensor `{name}`")))
                .and_then(|shape| {
                    checkpoint.set_tensor(&format!("{AVERAGE}{name}"), shape, &values)
                });
            if let Err(e) = saved {
                return trainer.fail(Error::msg(format!("StochasticWeightAveraging: {e}")));
            }
        }
    }

    /// The average the checkpoint holds, taken before `load_state_dict` (Lightning's order),
    /// which checks that the state it restores has one.
    fn on_load_checkpoint(&mut self, trainer: &mut TrainerView, checkpoint: &Checkpoint) {
        match checkpoint.tensors_under(AVERAGE) {
            Ok(average) => self.resumed = (!average.is_empty()).then_some(average),
            Err(e) => trainer.fail(checkpoint.error(e)),
        }
    }
}

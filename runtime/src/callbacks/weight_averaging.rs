//! `WeightAveraging`: an exponential moving average of the weights (Lightning's
//! `WeightAveraging` with PyTorch's `get_ema_multi_avg_fn`), updated after every optimizer
//! step: validation runs with the averaged weights, and `fit` leaves them in the module.
//!
//! After the first step the average is the weights; after each next one,
//! `average ← decay · average + (1 − decay) · weights`, for every tensor, the running
//! statistics of batch norm included (PyTorch's `use_buffers=True`), where the module lives.
//!
//! Checkpoints hold the average as the module's weights (what `load_from_checkpoint` gives, as
//! Lightning's), and the weights training goes on with under `weight_averaging/current/`: a
//! resumed run continues both exactly (in `f32`).
//!
//! ```
//! use fulmen::callbacks::WeightAveraging;
//! let ema = WeightAveraging::ema(0.999);
//! ```

use crate::callback::Callback;
use crate::checkpoint::Checkpoint;
use crate::weights::{At, Snapshot, Weights};
use crate::{Error, Stage, TrainerView};

/// An average of the weights; see the [module docs](self).
#[derive(Debug)]
pub struct WeightAveraging {
    decay: f64,
    average: Option<Snapshot>,
    /// Whether the module holds the average now (in validation) and `average` the weights.
    swapped: bool,
    updates: u64,
    /// A resumed run's weights (the checkpoint's module weights are the average), until
    /// `fit` starts.
    resumed: Option<Vec<(String, Vec<f32>)>>,
}

/// Where a checkpoint keeps the weights training goes on with.
const CURRENT: &str = "weight_averaging/current/";

impl WeightAveraging {
    /// The exponential moving average with `decay` in [0, 1] (PyTorch's EMA default: 0.999).
    pub fn ema(decay: f64) -> Self {
        Self {
            decay,
            average: None,
            swapped: false,
            updates: 0,
            resumed: None,
        }
    }

    /// How many optimizer steps the average has taken in.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    fn swap(&mut self, trainer: &mut TrainerView, weights: &mut dyn Weights) {
        if let Some(average) = self.average.as_mut() {
            match weights.swap(average) {
                Ok(()) => self.swapped = !self.swapped,
                Err(e) => trainer.fail(e),
            }
        }
    }
}

impl Callback for WeightAveraging {
    fn setup(&mut self, trainer: &mut TrainerView, stage: Stage) {
        if !(0.0..=1.0).contains(&self.decay) {
            let why = format!("{} is not in [0, 1]", self.decay);
            trainer.fail(Error::config("WeightAveraging.decay", why));
        }
        if stage == Stage::Fit {
            self.average = None;
            self.swapped = false;
            self.updates = 0;
            self.resumed = None;
        }
    }

    fn with_weights(&mut self, trainer: &mut TrainerView, at: At, weights: &mut dyn Weights) {
        match at {
            At::TrainBatchEnd if trainer.global_step() as u64 > self.updates => {
                let updated = match self.average.as_mut() {
                    Some(average) => weights.blend_into(average, self.decay),
                    None => weights.snapshot().map(|s| self.average = Some(s)),
                };
                match updated {
                    Ok(()) => self.updates = trainer.global_step() as u64,
                    Err(e) => trainer.fail(e),
                }
            }
            // Resumed: the module holds the checkpoint's average; the weights come back.
            At::FitStart => {
                if let Some(current) = self.resumed.take() {
                    let resumed = weights.snapshot().and_then(|average| {
                        self.average = Some(average);
                        current
                            .iter()
                            .try_for_each(|(n, v)| weights.set_values(n, v))
                    });
                    if let Err(e) = resumed {
                        trainer.fail(e);
                    }
                }
            }
            // Validation with the average; training goes on with the weights.
            At::ValidationStart | At::ValidationEnd | At::TrainEnd => self.swap(trainer, weights),
            _ => {}
        }
        if at == At::TrainEnd {
            // The module keeps the average; the weights are dropped.
            self.average = None;
            self.swapped = false;
        }
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "updates": self.updates }))
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> crate::Result<()> {
        self.updates = state.get("updates").and_then(|u| u.as_u64()).unwrap_or(0);
        if self.updates > 0 && self.resumed.is_none() {
            return Err(Error::msg(format!("WeightAveraging: the checkpoint holds an average of {} steps but not the weights training goes on with (`{CURRENT}…`)", self.updates)));
        }
        Ok(())
    }

    /// The average as the module's weights; the weights under `weight_averaging/current/`.
    fn on_save_checkpoint(&mut self, trainer: &mut TrainerView, checkpoint: &mut Checkpoint) {
        let Some(snapshot) = &self.average else {
            return;
        };
        let swapped = self.swapped;
        let mut saved = || -> crate::Result<()> {
            for (name, values) in snapshot.values() {
                let shape = (checkpoint.tensor_shape(&name))
                    .ok_or_else(|| Error::msg(format!("the checkpoint has no tensor `{name}`")))?
                    .to_vec();
                let current = format!("{CURRENT}{name}");
                match swapped {
                    // In validation: the module holds the average, the snapshot the weights.
                    true if !checkpoint.weights_only() => {
                        checkpoint.set_tensor(&current, shape, &values)?
                    }
                    true => {}
                    false => {
                        if !checkpoint.weights_only() {
                            checkpoint.rename_tensor(&name, &current)?;
                        }
                        checkpoint.set_tensor(&name, shape, &values)?;
                    }
                }
            }
            Ok(())
        };
        if let Err(e) = saved() {
            trainer.fail(Error::msg(format!("WeightAveraging: {e}")));
        }
    }

    /// The weights training goes on with, taken before `load_state_dict` (Lightning's
    /// order), which checks that the state it restores has them.
    fn on_load_checkpoint(&mut self, trainer: &mut TrainerView, checkpoint: &Checkpoint) {
        match checkpoint.tensors_under(CURRENT) {
            Ok(current) => self.resumed = (!current.is_empty()).then_some(current),
            Err(e) => trainer.fail(checkpoint.error(e)),
        }
    }
}

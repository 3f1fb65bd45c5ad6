//! `WeightAveraging`: an exponential moving average of the weights (Lightning's
//! `WeightAveraging` with PyTorch's `get_ema_multi_avg_fn`), updated after every optimizer
//! step: validation runs with the averaged weights, and `fit` leaves them in the module.
//!
//! After the first step the average is the weights; after each next one,
//! `average ← decay · average + (1 − decay) · weights`, for every tensor, the running
//! statistics of batch norm included (PyTorch's `use_buffers=True`), where the module lives.
//!
//! ```
//! use fulmen::callbacks::WeightAveraging;
//! let ema = WeightAveraging::ema(0.999);
//! ```

use crate::callback::Callback;
use crate::weights::{At, Snapshot, Weights};
use crate::{Error, Stage, TrainerView};

/// An average of the weights; see the [module docs](self).
#[derive(Debug)]
pub struct WeightAveraging {
    decay: f64,
    average: Option<Snapshot>,
    updates: u64,
}

impl WeightAveraging {
    /// The exponential moving average with `decay` in [0, 1] (PyTorch's EMA default: 0.999).
    pub fn ema(decay: f64) -> Self {
        Self {
            decay,
            average: None,
            updates: 0,
        }
    }

    /// How many optimizer steps the average has taken in.
    pub fn updates(&self) -> u64 {
        self.updates
    }

    fn swap(&mut self, trainer: &mut TrainerView, weights: &mut dyn Weights) {
        if let Some(average) = self.average.as_mut() {
            if let Err(e) = weights.swap(average) {
                trainer.fail(e);
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
            self.updates = 0;
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
            // Validation with the average; training goes on with the weights.
            At::ValidationStart | At::ValidationEnd | At::TrainEnd => self.swap(trainer, weights),
            _ => {}
        }
        if at == At::TrainEnd {
            // The module keeps the average; the weights are dropped.
            self.average = None;
        }
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "updates": self.updates }))
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> crate::Result<()> {
        match state.get("updates").and_then(|u| u.as_u64()) {
            Some(0) | None => Ok(()),
            Some(n) => Err(Error::msg(format!(
                "WeightAveraging: the checkpoint's average of {n} steps is not saved in it, so resuming would restart the average; resuming with weight averaging is not built yet"
            ))),
        }
    }
}

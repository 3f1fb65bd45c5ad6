//! `EarlyStopping`: stops training when a monitored metric stops improving (Lightning's
//! `EarlyStopping`, with its defaults and its stopping rules in its order).
//!
//! ```
//! use fulmen::callbacks::{EarlyStopping, Mode};
//! let stop = EarlyStopping::new("val_loss").patience(5).min_delta(1e-3);
//! let reach = EarlyStopping::new("val_acc").mode(Mode::Max).stopping_threshold(0.99);
//! ```

use serde::{Deserialize, Serialize};

use super::Mode;
use crate::callback::Callback;
use crate::checkpoint::float::F64;
use crate::{Error, TrainerView};

/// Stops training; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct EarlyStopping {
    monitor: String,
    min_delta: f64,
    patience: usize,
    mode: Mode,
    check_finite: bool,
    stopping_threshold: Option<f64>,
    divergence_threshold: Option<f64>,
    strict: bool,
    verbose: bool,
    state: State,
}

#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct State {
    wait_count: usize,
    stopped_epoch: usize,
    best_score: Option<F64>,
    stopping_reason: Option<String>,
}

impl EarlyStopping {
    /// Lightning's defaults: `min_delta` 0, `patience` 3, mode min, `check_finite`, strict.
    pub fn new(monitor: &str) -> Self {
        Self {
            monitor: monitor.to_string(),
            min_delta: 0.0,
            patience: 3,
            mode: Mode::Min,
            check_finite: true,
            stopping_threshold: None,
            divergence_threshold: None,
            strict: true,
            verbose: false,
            state: State::default(),
        }
    }
    /// The smallest change that counts as an improvement.
    pub fn min_delta(mut self, d: f64) -> Self {
        self.min_delta = d.abs();
        self
    }
    /// Checks without improvement before stopping.
    pub fn patience(mut self, n: usize) -> Self {
        self.patience = n;
        self
    }
    /// Whether the metric improves downwards (`Min`, the default) or upwards (`Max`).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// Stop when the metric becomes NaN or infinite (default on).
    pub fn check_finite(mut self, on: bool) -> Self {
        self.check_finite = on;
        self
    }
    /// Stop as soon as the metric is better than this.
    pub fn stopping_threshold(mut self, t: f64) -> Self {
        self.stopping_threshold = Some(t);
        self
    }
    /// Stop as soon as the metric is worse than this.
    pub fn divergence_threshold(mut self, t: f64) -> Self {
        self.divergence_threshold = Some(t);
        self
    }
    /// Whether a metric that was never logged is an error (default) or ignored.
    pub fn strict(mut self, on: bool) -> Self {
        self.strict = on;
        self
    }
    /// Print why training stopped.
    pub fn verbose(mut self, on: bool) -> Self {
        self.verbose = on;
        self
    }

    /// The epoch training was stopped in (0 if it was not).
    pub fn stopped_epoch(&self) -> usize {
        self.state.stopped_epoch
    }
    /// The best value of the metric so far (`None` before the first check).
    pub fn best_score(&self) -> Option<f64> {
        self.state.best_score.map(|s| s.0)
    }
    /// Checks in a row without improvement so far.
    pub fn wait_count(&self) -> usize {
        self.state.wait_count
    }
    /// Why training was stopped, in Lightning's words.
    pub fn stopping_reason(&self) -> Option<&str> {
        self.state.stopping_reason.as_deref()
    }

    /// `a` better than `b` by the mode (`a < b` for min).
    fn better(&self, a: f64, b: f64) -> bool {
        match self.mode {
            Mode::Min => a < b,
            Mode::Max => a > b,
        }
    }

    /// Lightning's `_evaluate_stopping_criteria`: whether to stop, and why.
    fn evaluate(&mut self, current: f64) -> Option<String> {
        let m = &self.monitor;
        let best = self
            .state
            .best_score
            .map(|b| b.0)
            .unwrap_or(match self.mode {
                Mode::Min => f64::INFINITY,
                Mode::Max => f64::NEG_INFINITY,
            });
        let delta = match self.mode {
            Mode::Min => -self.min_delta,
            Mode::Max => self.min_delta,
        };
        if self.check_finite && !current.is_finite() {
            return Some(format!("Monitored metric {m} = {current} is not finite. Previous best value was {best:.3}. Signaling Trainer to stop."));
        }
        if let Some(t) = self.stopping_threshold.filter(|&t| self.better(current, t)) {
            return Some(format!(
                "Stopping threshold reached: {m} = {current} {} {t}. Signaling Trainer to stop.",
                if self.mode == Mode::Min { "<" } else { ">" }
            ));
        }
        if let Some(t) = self
            .divergence_threshold
            .filter(|&t| self.better(-current, -t))
        {
            return Some(format!(
                "Divergence threshold reached: {m} = {current} {} {t}. Signaling Trainer to stop.",
                if self.mode == Mode::Min { ">" } else { "<" }
            ));
        }
        if self.better(current - delta, best) {
            self.state.best_score = Some(F64(current));
            self.state.wait_count = 0;
            return None;
        }
        self.state.wait_count += 1;
        (self.state.wait_count >= self.patience).then(|| {
            format!("Monitored metric {m} did not improve in the last {} records. Best score: {best:.3}. Signaling Trainer to stop.", self.state.wait_count)
        })
    }
}

impl Callback for EarlyStopping {
    fn is_monitoring(&self) -> bool {
        true
    }

    fn state_key(&self) -> String {
        format!(
            "EarlyStopping{{monitor={:?}, mode={}}}",
            self.monitor,
            self.mode.as_str()
        )
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.state).ok()
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> crate::Result<()> {
        self.state = serde_json::from_value(state.clone())
            .map_err(|e| Error::msg(format!("EarlyStopping state: {e}")))?;
        Ok(())
    }

    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        if trainer.fast_dev_run() {
            return;
        }
        let Some(&current) = trainer.callback_metrics().get(&self.monitor) else {
            if self.strict {
                let keys: Vec<&String> = trainer.callback_metrics().keys().collect();
                trainer.fail(Error::config(
                    "EarlyStopping.monitor",
                    format!("early stopping is conditioned on `{}`, which was never logged; log it with ctx.log(\"{}\", ..) or monitor one of {keys:?}", self.monitor, self.monitor),
                ));
            }
            return;
        };
        if let Some(reason) = self.evaluate(current) {
            self.state.stopped_epoch = trainer.current_epoch();
            if self.verbose {
                println!("{reason}");
            }
            self.state.stopping_reason = Some(reason);
            trainer.request_stop();
        }
    }
}

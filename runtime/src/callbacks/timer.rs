//! `Timer`: stops training once it has run for a given time (Lightning's `Timer`, which the
//! trainer's `max_time` adds). The time survives a restart through the checkpoint.
//!
//! ```
//! use fulmen::callbacks::Timer;
//! let two_hours = Timer::new(std::time::Duration::from_secs(2 * 3600));
//! ```

use std::time::{Duration, Instant};

use crate::callback::Callback;
use crate::TrainerView;

/// Stops training after `duration`; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct Timer {
    duration: Duration,
    /// Time spent in earlier runs of a resumed fit.
    before: Duration,
    started: Option<Instant>,
}

impl Timer {
    /// A timer that stops training once it has trained for `duration`, earlier runs of a resumed
    /// fit included.
    pub fn new(duration: Duration) -> Self {
        Self {
            duration,
            before: Duration::ZERO,
            started: None,
        }
    }

    /// Training time so far.
    pub fn time_elapsed(&self) -> Duration {
        self.before + self.started.map_or(Duration::ZERO, |s| s.elapsed())
    }

    /// Training time left before the limit.
    pub fn time_remaining(&self) -> Duration {
        self.duration.saturating_sub(self.time_elapsed())
    }

    fn check(&self, trainer: &mut TrainerView) {
        if self.time_elapsed() >= self.duration && !trainer.should_stop() {
            println!("Time limit reached. Signaling Trainer to stop.");
            trainer.request_stop();
        }
    }
}

impl Callback for Timer {
    fn on_train_start(&mut self, _trainer: &mut TrainerView) {
        self.started = Some(Instant::now());
    }
    fn on_train_end(&mut self, _trainer: &mut TrainerView) {
        self.before = self.time_elapsed();
        self.started = None;
    }
    fn on_train_batch_end(&mut self, trainer: &mut TrainerView, _loss: f64, _batch_idx: usize) {
        self.check(trainer);
    }
    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        self.check(trainer);
    }
    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "time_elapsed": self.time_elapsed().as_secs_f64() }))
    }
    fn load_state_dict(&mut self, state: &serde_json::Value) -> crate::Result<()> {
        let secs = state["time_elapsed"]
            .as_f64()
            .ok_or_else(|| crate::Error::msg("Timer state has no `time_elapsed`"))?;
        self.before = Duration::from_secs_f64(secs.max(0.0));
        Ok(())
    }
}

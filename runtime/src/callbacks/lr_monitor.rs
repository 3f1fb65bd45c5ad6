//! `LearningRateMonitor`: logs the learning rate (and optionally the momentum) as
//! `lr-<Optimizer>` (Lightning's `LearningRateMonitor`), at the scheduler's interval.
//!
//! ```
//! use fulmen::callbacks::LearningRateMonitor;
//! use fulmen::optim::Interval;
//! let every_step = LearningRateMonitor::new().logging_interval(Interval::Step);
//! ```

use std::collections::BTreeMap;

use crate::callback::Callback;
use crate::optim::Interval;
use crate::{Error, Stage, TrainerView};

/// Logs the learning rate; see the [module docs](self).
#[derive(Debug, Clone, Default)]
pub struct LearningRateMonitor {
    logging_interval: Option<Interval>,
    log_momentum: bool,
}

impl LearningRateMonitor {
    /// Logs at the scheduler's interval (every epoch without a scheduler).
    pub fn new() -> Self {
        Self::default()
    }
    /// Logs every epoch or every optimizer step instead of at the scheduler's interval (Lightning's
    /// `logging_interval`).
    pub fn logging_interval(mut self, interval: Interval) -> Self {
        self.logging_interval = Some(interval);
        self
    }
    /// Also log `momentum-<Optimizer>` (SGD's momentum or Adam's beta1).
    pub fn log_momentum(mut self, on: bool) -> Self {
        self.log_momentum = on;
        self
    }

    fn interval(&self, trainer: &TrainerView) -> Interval {
        self.logging_interval
            .or(trainer.scheduler_interval())
            .unwrap_or(Interval::Epoch)
    }

    fn log(&self, trainer: &mut TrainerView) {
        let name = trainer.optimizer_name().to_string();
        let mut metrics = BTreeMap::from([(format!("lr-{name}"), trainer.lr())]);
        if let (true, Some(m)) = (self.log_momentum, trainer.momentum()) {
            metrics.insert(format!("momentum-{name}"), m);
        }
        let step = trainer.global_step();
        trainer.log_metrics(&metrics, step);
    }
}

impl Callback for LearningRateMonitor {
    fn setup(&mut self, trainer: &mut TrainerView, stage: Stage) {
        if stage == Stage::Fit && trainer.logger().is_none() && !trainer.fast_dev_run() {
            trainer.fail(Error::config(
                "LearningRateMonitor",
                "needs a logger to log to; remove no_logger() or the callback",
            ));
        }
    }
    fn on_train_batch_start(&mut self, trainer: &mut TrainerView, _batch_idx: usize) {
        if self.interval(trainer) == Interval::Step {
            self.log(trainer);
        }
    }
    fn on_train_epoch_start(&mut self, trainer: &mut TrainerView) {
        if self.interval(trainer) == Interval::Epoch {
            self.log(trainer);
        }
    }
}

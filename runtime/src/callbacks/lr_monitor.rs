//! `LearningRateMonitor`: logs the learning rate (and optionally the momentum) of every
//! optimizer as `lr-<Optimizer>` (`lr-Adam`, then `lr-Adam-1` for a second Adam; with
//! parameter groups `lr-Adam/pg1`, `lr-Adam/pg2`: Lightning's `LearningRateMonitor`), at the
//! schedulers' interval (every step if any steps on steps).
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
        let mut metrics = BTreeMap::new();
        let lr = trainer.lr();
        for (i, opt) in trainer.optimizers().iter().enumerate() {
            let name = Self::name(trainer, i);
            for (g, &(group_lr, momentum)) in opt.groups.iter().enumerate() {
                // Several groups: `lr-Adam/pg1`, `lr-Adam/pg2`, ... (Lightning's names).
                let name = match opt.groups.len() {
                    1 => name.clone(),
                    _ => format!("{name}/pg{}", g + 1),
                };
                // The first optimizer's rate is the one a callback may have asked for.
                let group_lr = if i == 0 && g == 0 { lr } else { group_lr };
                metrics.insert(format!("lr-{name}"), group_lr);
                if let (true, Some(m)) = (self.log_momentum, momentum) {
                    metrics.insert(format!("momentum-{name}"), m);
                }
            }
        }
        let step = trainer.global_step();
        trainer.log_metrics(&metrics, step);
    }

    /// Optimizer `i`'s name as Lightning's monitor writes it: its class (`Adam`), and after
    /// the first of a class the count of those before it (`Adam-1`).
    fn name(trainer: &TrainerView, i: usize) -> String {
        let optimizers = trainer.optimizers();
        let class = optimizers[i].name;
        match optimizers[..i].iter().filter(|o| o.name == class).count() {
            0 => class.to_string(),
            n => format!("{class}-{n}"),
        }
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
        // A manual step may step its scheduler at any batch: logged every step.
        if self.interval(trainer) != Interval::Epoch {
            self.log(trainer);
        }
    }
    fn on_train_epoch_start(&mut self, trainer: &mut TrainerView) {
        if self.interval(trainer) == Interval::Epoch {
            self.log(trainer);
        }
    }
}

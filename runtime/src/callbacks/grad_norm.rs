//! `GradientNormMonitor`: logs the norm of every parameter's gradient, and of all together,
//! before each optimizer step, as Lightning's `grad_norm` utility names them:
//! `grad_2.0_norm/layer_1.weight`, ..., `grad_2.0_norm_total`.
//!
//! ```
//! use fulmen::callbacks::GradientNormMonitor;
//! let l2_every_10_steps = GradientNormMonitor::new(2.0).every_n_steps(10);
//! ```

use std::collections::BTreeMap;

use crate::callback::Callback;
use crate::weights::{At, Weights};
use crate::{Error, Stage, TrainerView};

/// Logs gradient norms; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct GradientNormMonitor {
    norm_type: f64,
    every_n_steps: usize,
}

impl GradientNormMonitor {
    /// The `norm_type`-norm (2.0: the L2 norm; `f64::INFINITY`: the largest magnitude), before
    /// every optimizer step.
    pub fn new(norm_type: f64) -> Self {
        Self {
            norm_type,
            every_n_steps: 1,
        }
    }
    /// Logs before every `n`-th optimizer step only (0 is refused when the fit starts).
    pub fn every_n_steps(mut self, n: usize) -> Self {
        self.every_n_steps = n;
        self
    }
}

impl Callback for GradientNormMonitor {
    fn setup(&mut self, trainer: &mut TrainerView, stage: Stage) {
        if stage != Stage::Fit {
            return;
        }
        if self.norm_type.is_nan() || self.norm_type <= 0.0 {
            let why = format!("{} is not > 0", self.norm_type);
            trainer.fail(Error::config("GradientNormMonitor.norm_type", why));
        } else if self.every_n_steps == 0 {
            trainer.fail(Error::config(
                "GradientNormMonitor.every_n_steps",
                "must be at least 1",
            ));
        } else if trainer.logger().is_none() && !trainer.fast_dev_run() {
            trainer.fail(Error::config(
                "GradientNormMonitor",
                "needs a logger to log to; remove no_logger() or the callback",
            ));
        }
    }

    fn with_weights(&mut self, trainer: &mut TrainerView, at: At, weights: &mut dyn Weights) {
        let step = trainer.global_step();
        if at != At::BeforeOptimizerStep || !step.is_multiple_of(self.every_n_steps) {
            return;
        }
        let norms = match weights.grad_norms(self.norm_type) {
            Ok(norms) => norms,
            Err(e) => return trainer.fail(e),
        };
        let p = self.norm_type;
        let key = format!("grad_{p:?}_norm");
        let total = match p.is_infinite() {
            true => norms.iter().map(|(_, n)| *n).fold(0.0, f64::max),
            false => norms
                .iter()
                .map(|(_, n)| n.powf(p))
                .sum::<f64>()
                .powf(1.0 / p),
        };
        let mut metrics: BTreeMap<String, f64> = (norms.into_iter())
            .map(|(name, n)| (format!("{key}/{name}"), n))
            .collect();
        metrics.insert(format!("{key}_total"), total);
        trainer.log_metrics(&metrics, step);
    }
}

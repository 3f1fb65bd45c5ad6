//! The built-in callbacks, one per file (Lightning's `lightning.pytorch.callbacks`):
//! [`ModelCheckpoint`], [`EarlyStopping`], [`LearningRateMonitor`], [`ModelSummary`],
//! [`Timer`], [`LambdaCallback`], [`GradientAccumulationScheduler`], [`OnExceptionCheckpoint`],
//! and those that see the module's weights: [`GradientNormMonitor`], [`WeightAveraging`],
//! [`StochasticWeightAveraging`];
//! [`BackboneFinetuning`] freezes and unfreezes a part of it; [`LearningRateFinder`] runs the
//! learning-rate range test before the fit; [`MetricPlots`] draws the metrics that are
//! pictures.

pub mod backbone_finetuning;
pub mod early_stopping;
mod filename;
pub mod grad_accumulation;
pub mod grad_norm;
pub mod lambda;
pub mod learning_rate_finder;
pub mod lr_monitor;
pub mod metric_plots;
pub mod model_checkpoint;
pub mod model_summary;
pub mod on_exception_checkpoint;
pub mod stochastic_weight_averaging;
pub mod timer;
pub mod weight_averaging;

pub use backbone_finetuning::BackboneFinetuning;
pub use early_stopping::EarlyStopping;
pub use grad_accumulation::GradientAccumulationScheduler;
pub use grad_norm::GradientNormMonitor;
pub use lambda::LambdaCallback;
pub use learning_rate_finder::LearningRateFinder;
pub use lr_monitor::LearningRateMonitor;
pub use metric_plots::MetricPlots;
pub use model_checkpoint::ModelCheckpoint;
pub use model_summary::ModelSummary;
pub use on_exception_checkpoint::OnExceptionCheckpoint;
pub use stochastic_weight_averaging::StochasticWeightAveraging;
pub use timer::Timer;
pub use weight_averaging::WeightAveraging;

/// Whether a monitored metric improves downwards (`Min`, a loss) or upwards (`Max`, an
/// accuracy).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Mode {
    /// Lower is better, as for a loss (Lightning's `"min"`).
    #[default]
    Min,
    /// Higher is better, as for an accuracy (Lightning's `"max"`).
    Max,
}

impl Mode {
    /// Whether `a` is better than `b`; NaN is worse than anything.
    pub fn better(self, a: f64, b: f64) -> bool {
        match (a.is_nan(), b.is_nan()) {
            (true, _) => false,
            (false, true) => true,
            _ => match self {
                Mode::Min => a < b,
                Mode::Max => a > b,
            },
        }
    }

    /// Lightning's name for the mode: `"min"` or `"max"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Mode::Min => "min",
            Mode::Max => "max",
        }
    }
}

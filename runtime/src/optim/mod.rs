//! Optimizers that follow PyTorch's documented update rules, with state fulmen owns (so that
//! checkpoints can save it) and a learning rate that can change during training.
//!
//! `configure_optimizers` returns an [`Optim`], the optimizer's settings:
//!
//! ```
//! use fulmen::Optim;
//! let sgd = Optim::sgd(0.1).momentum(0.9).nesterov(true).weight_decay(5e-4);
//! let adam = Optim::adam(0.01);
//! let adamw = Optim::adamw(1e-3).betas(0.9, 0.95);
//! let rmsprop = Optim::rmsprop(0.01).centered(true);
//! assert_eq!(adam.lr(), 0.01);
//! ```

mod clip;
mod config;
pub(crate) mod grads;
pub mod scheduler;
mod state;
mod step_hooks;

pub use clip::{Clip, ClipAlgorithm};
pub(crate) use config::{check_field, field_matches};
pub use config::{Group, Optim, OptimKind, Optimizers};
pub use scheduler::{
    Anneal, CosineAnnealingLR, ExponentialLR, Interval, LinearLR, LrScheduler, MultiStepLR,
    OneCycleLR, ReduceLROnPlateau, Schedule, Scheduler, StepLR, ThresholdMode,
};
pub(crate) use state::check_fields;
pub use state::Optimizer;
pub(crate) use step_hooks::RateSet;
pub use step_hooks::{GradientClipping, OptimizerStep, SchedulerStep, ZeroGrad};

//! # fulmen — PyTorch Lightning for Rust
//!
//! Annotate a model struct and its impl with [`lightning_module`], a data struct and its impl
//! with [`data_module`], and hand both to a [`Trainer`]: the loops, logging, progress bar,
//! callbacks and device placement are done for you, on [dfdx](https://docs.rs/dfdx/0.13.0)
//! tensors whose feature shapes the compiler checks.
//!
//! ```no_run
//! use fulmen::prelude::*;
//!
//! #[lightning_module]
//! pub struct IrisClassifier {
//!     layer_1: Linear<4, 16>,
//!     layer_2: Linear<16, 3>,
//!     #[hparam]
//!     lr: f64,
//! }
//!
//! #[lightning_module]
//! impl IrisClassifier {
//!     fn forward<T: Tape<E, D>>(&self, x: Tensor<(usize, Const<4>), E, D, T>) -> Tensor<(usize, Const<3>), E, D, T> {
//!         self.layer_2.forward(self.layer_1.forward(x).relu())
//!     }
//!
//!     fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
//!         let loss = cross_entropy_with_logits_loss(self.forward(ctx.trace(x)), y.one_hot());
//!         ctx.log("train_loss", &loss);
//!         loss
//!     }
//!
//!     fn configure_optimizers(&self) -> Optim {
//!         Optim::adam(self.lr)
//!     }
//! }
//!
//! fn main() -> fulmen::Result<()> {
//!     let data = fulmen::data::iris::load("data/iris.npz")?;
//!     let loader = DataLoader::new(InMemoryDataset::new(data), 16).shuffle(true);
//!     let mut model = IrisClassifier::new(0.01);
//!     Trainer::builder().max_epochs(10).build()?.fit_loaders(&mut model, loader, None)
//! }
//! ```
//!
//! One concept per module: [`module`](mod@module) (the model trait and its hooks), [`datamodule`],
//! [`callback`] (the trait), [`callbacks`] (the built-in ones), [`checkpoint`], [`data`]
//! (datasets, loaders, collation, file formats), [`trainer`] (loops and flags), [`loggers`],
//! [`optim`] (optimizers, schedulers, clipping), [`precision`] (mixed precision), [`layers`]
//! (convolution and pooling for stable Rust), [`kernels`] (how each op family is computed, per
//! device), [`shapes`], [`device`], [`walk`] (a module's tensors by name), [`models`]
//! (ResNets), [`spec`] (layer specifications → dfdx modules), [`seed`]. `ARCHITECTURE.md` in
//! the repository maps them.

#![warn(missing_docs)]

// The macros name `::fulmen`; inside this crate that is the crate itself.
extern crate self as fulmen;

pub mod alloc;
pub mod batch_transfer;
pub mod callback;
pub mod callbacks;
pub mod checkpoint;
pub mod cli;
pub mod context;
pub mod data;
pub mod datamodule;
pub mod device;
pub mod distributed;
pub(crate) mod drawing;
mod error;
pub(crate) mod files;
pub mod freeze;
pub mod hparams;
pub mod inputs;
pub mod kernels;
pub mod layers;
pub mod loggers;
pub mod manual;
pub mod metrics;
pub mod models;
pub mod module;
pub mod module_data;
pub mod optim;
pub mod precision;
pub mod prediction_writer;
mod progress;
pub mod seed;
pub mod shapes;
mod signals;
pub mod spec;
pub mod stage_data;
pub mod threads;
pub mod trainer;
pub mod tuner;
pub mod walk;
pub mod weights;

pub use callback::{Callback, Trial};
pub use context::{
    Automatic, AutomaticStep, EvalStep, Loss, Manual, ManualStep, OptimizationMode, OptimizerRef,
    StepContext, StepOutput,
};
pub use datamodule::{DataModule, Stage};
pub use device::{Devices, FloatDtype, TrainDevice};
pub use error::{DeviceFailure, Error, Result};
pub use fulmen_macros::{data_module, lightning_module, module};
pub use hparams::{FromHParams, HParams, Hyperparameters};
pub use module::LightningModule;
pub use optim::Optim;
pub use seed::seed_everything;
pub use spec::Spec;
pub use trainer::{OptimizerInfo, Trainer, TrainerBuilder, TrainerView};

/// Re-exported so that macro-generated code and users name one dfdx.
pub use dfdx;
#[doc(hidden)]
pub use serde;
/// Re-exported: callbacks and data modules keep checkpoint state as `serde_json::Value`.
pub use serde_json;

/// Everything a training script needs: fulmen's traits and types, its macros, and dfdx's prelude.
pub mod prelude {
    pub use crate::callback::Callback;
    pub use crate::context::{LogValue, Loss, Manual, StepContext};
    pub use crate::data::{
        Class, ClassBatch, Collate, DataLoader, Dataset, InMemoryDataset, Labels, RegressionBatch,
    };
    pub use crate::datamodule::{DataModule, Stage};
    pub use crate::device::{FloatDtype, TrainDevice};
    pub use crate::hparams::{FromHParams, HParams, Hyperparameters};
    pub use crate::loggers::Logger;
    pub use crate::metrics::{accuracy, Metric};
    pub use crate::module::LightningModule;
    pub use crate::optim::Optim;
    pub use crate::seed::seed_everything;
    pub use crate::seq;
    pub use crate::trainer::{Trainer, TrainerView};
    pub use crate::{data_module, lightning_module, module};
    pub use dfdx::prelude::*;
    // fulmen's fused batch norm, in place of dfdx's composed one, its ReLU, whose large
    // tensors use every thread, and its Linear, whose products use AVX-512 or AVX2 where the CPU has it.
    pub use crate::layers::{BatchNorm2D, Linear, ReLU};
    /// `E::from_f32(0.5)`: constants in code generic over the dtype.
    pub use num_traits::FromPrimitive;
}

//! The seam between fulmen's layers and optimizers and the code that computes them: one trait
//! per op family, each implemented once per way of computing it.
//!
//! | family | what | called by |
//! | --- | --- | --- |
//! | [`Dense`] | a dense layer's product | `layers::linear` |
//! | [`Conv`] | 2-D convolution | `layers::conv2d` |
//! | [`Norm`] | batch normalization | `layers::batchnorm2d` |
//! | [`Pool`] | max, average and adaptive pooling | `layers::pool2d` |
//! | [`Elementwise`] | ReLU, the residual add + ReLU | `layers::{relu, residual}` |
//! | [`Fuse`] | a tuple of layers trained as one op | `layers::fused` |
//! | [`Step`] | one optimizer step of one parameter | `optim::Optimizer` |
//! | [`Reduce`] | sums over gradients | clipping, anomaly checks |
//! | [`Unscale`] | 16-mixed's half gradients into the f32 ones | `precision` |
//!
//! The implementations, each in the folder of its name:
//! - [`Host`] (`kernels/host/`): fulmen's own kernels on host memory, multithreaded (tiled
//!   AVX-512 or AVX2 convolutions and dense products where the CPU has them): the fastest on the CPU.
//! - [`Composed`] (`kernels/composed/`): dfdx's differentiable tensor ops, which run wherever
//!   dfdx runs, so the values never leave the device.
//! - [`Cudnn`](cudnn::Cudnn) (`kernels/cudnn/`, CUDA builds): what CUDA runs. Convolutions by
//!   NVIDIA's cuDNN, loaded at run time; the other families by the composed kernels.
//!
//! Each device names its implementation ([`TrainDevice::Kernels`]); a layer calls the family
//! once (`D::Kernels::conv2d(..)`) and never asks which device it is on. On the CPU the
//! implementation is [`OnCpu`]: the host kernels, or, while a [`cpu_runs`] guard lives on the
//! thread, the composed ones, so that every CI run checks what CUDA runs but for cuDNN (a
//! second CPU device type cannot carry that choice: dfdx's `Device` trait needs some eighty
//! kernels that only dfdx can implement).
//!
//! [`TrainDevice::Kernels`]: crate::TrainDevice::Kernels

#[macro_use]
mod delegate;
pub mod composed;
#[cfg(any(test, feature = "cuda"))]
pub mod cudnn;
pub mod host;
mod on_cpu;
pub(crate) mod ops;
pub(crate) mod seam;
#[cfg(test)]
mod tests;

pub use composed::Composed;
pub use host::{instruction_set, keep_packed_weights, Host, PackedWeights};
pub use on_cpu::{cpu_runs, CpuKernels, OnCpu, RunsOnCpu};
pub(crate) use ops::any_frozen_norm;
pub use ops::{Describe, GradSum, NormState, Op, Scratch, StepRule, Total};
pub use seam::{
    Conv, Dense, Elementwise, Flat, Fuse, Kernels, Norm, Normalized, Pool, Reduce, Step, Unscale,
};

//! Layers dfdx 0.13 has only behind its (broken) nightly feature, or only slowly, for stable
//! Rust: [`Conv2D`] and [`Conv2DNoBias`] (with [`conv2d()`], the differentiable op), the
//! pooling windows [`MaxPool2D`], [`AvgPool2D`] and [`AdaptiveAvgPool2D`] (dfdx's global pools
//! work on stable as they are), [`Flatten`], [`Linear`], [`BatchNorm2D`], [`ReLU`], the residual block
//! ends [`ResidualReLU`] and [`GeneralizedResidualReLU`], and [`Fused`], which trains a tuple
//! of them as one op.
//!
//! A layer holds its tensors and checks its input; the computing is done by the device's
//! kernels ([`crate::kernels`]), which each layer calls once, whatever the device.

pub mod batchnorm2d;
pub mod conv2d;
pub mod flatten;
pub mod fused;
pub mod linear;
pub mod pool2d;
pub mod relu;
pub mod residual;
pub mod unit;

pub use self::batchnorm2d::{BatchNorm2D, Untraced};
pub use self::conv2d::{conv2d, Conv2D, Conv2DNoBias, DepthwiseConv2D};
pub use self::flatten::{flatten, Flatten};
pub use self::fused::Fused;
pub use self::linear::Linear;
pub use self::pool2d::{adaptive_avg_pool2d, pool2d, AdaptiveAvgPool2D, AvgPool2D, MaxPool2D};
pub use self::relu::{relu, ReLU};
pub use self::residual::{add_relu, GeneralizedResidualReLU, ResidualReLU};
pub use self::unit::Unit;
pub use crate::shapes::{ConvGeom, ConvOptions, Dyn4, Images, PoolKind};

use crate::Error;

/// dfdx composes layers (tuples, residuals) only when they share the device's error type, and
/// its own ops panic on run-time shapes that cannot work; the layers do the same, with
/// fulmen's message (the trainer turns a panic in a step into an error naming the step). The
/// functions ([`conv2d()`], [`pool2d`], ...) return a `Result` instead.
/// The panic's location is the layer's own `forward` (`#[track_caller]`), not this helper.
#[track_caller]
pub(crate) fn or_panic<T>(r: Result<T, Error>) -> T {
    match r {
        Ok(v) => v,
        Err(e) => panic!("{e}"),
    }
}

//! Layers dfdx 0.13 has only behind its (broken) nightly feature, or only slowly, for stable
//! Rust.
//!
//! [`conv2d()`] is the differentiable 2-D convolution: its CPU kernel ([`conv_kernel`]) and its
//! backward on dfdx's tape, so that gradients reach dfdx's `Gradients` like any other op's.
//! [`Conv2D`] and [`Conv2DNoBias`] are the layers that use it in `#[module]` structs;
//! [`MaxPool2D`], [`AvgPool2D`] and [`AdaptiveAvgPool2D`] are the pooling windows (dfdx's
//! global pools work on stable as they are); [`Flatten`] turns images into rows for a
//! `Linear`; [`BatchNorm2D`] is batch normalization in one fused kernel
//! ([`batchnorm_kernel`]). The kernels run on the host ([`host`]: f64 in f64, every other dtype
//! in f32), their work spread over rayon's threads. Each CPU layer is a host layer
//! ([`chain`]); [`Fused`] trains a tuple of them as one op, and a kernel reads the previous
//! kernel's output in place ([`recent`]).

pub mod batchnorm2d;
pub mod batchnorm_kernel;
pub mod chain;
pub mod composed;
pub mod conv2d;
#[cfg(target_arch = "x86_64")]
mod conv_avx512;
pub mod conv_kernel;
pub mod flatten;
pub mod fused;
pub mod host;
pub mod pool2d;
pub mod recent;
pub mod relu;
pub mod residual;
mod segment;

pub use self::batchnorm2d::BatchNorm2D;
pub use self::conv2d::{Conv2D, Conv2DNoBias, DepthwiseConv2D};
pub use self::flatten::{flatten, Flatten};
pub use self::fused::Fused;
pub use self::pool2d::{
    adaptive_avg_pool2d, pool2d, AdaptiveAvgPool2D, AvgPool2D, MaxPool2D, PoolKind,
};
pub use self::relu::{relu, ReLU};
pub use self::residual::{add_relu, GeneralizedResidualReLU, ResidualReLU};

use dfdx::shapes::HasShape;
use dfdx::shapes::Shape;
use dfdx::tensor::{Cpu, NoneTape, Tape, Tensor};

use crate::{Error, FloatDtype, Result, TrainDevice};
pub use conv_kernel::ConvGeom;
use host::{add_grad, Host};

/// A batch of images with `C` channels: `[N, C, H, W]`, only the channels fixed at compile time.
pub type Images<const C: usize, E, D = Cpu, T = NoneTape> =
    Tensor<(usize, dfdx::shapes::Const<C>, usize, usize), E, D, T>;

/// A 4-D tensor with run-time dimensions, `[N, C, H, W]` (or `[C_out, C_in/groups, K, K]`).
pub type Dyn4<E, D = Cpu, T = NoneTape> = Tensor<(usize, usize, usize, usize), E, D, T>;

/// Stride, padding, dilation and groups of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvOptions {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for ConvOptions {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// `x` convolved with `weight` (PyTorch's `conv2d`, cross-correlation), plus `bias`.
/// Differentiable: with a tape on `x`, backward fills the gradients of `x`, `weight` and
/// `bias`. The kernel runs on the host (f64 in f64, f32 for every other dtype).
pub fn conv2d<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    x: Dyn4<E, D, T>,
    weight: &Dyn4<E, D>,
    bias: Option<&Tensor<(usize,), E, D>>,
    opts: ConvOptions,
) -> Result<Dyn4<E, D, T>> {
    ConvLayer {
        weight: weight.clone(),
        bias: bias.cloned(),
        opts,
    }
    .apply(x)
}

/// A convolution as a [`HostLayer`](chain::HostLayer): its parameters and options.
pub(crate) struct ConvLayer<E: FloatDtype, D: TrainDevice<E>> {
    pub weight: Dyn4<E, D>,
    pub bias: Option<Tensor<(usize,), E, D>>,
    pub opts: ConvOptions,
}

impl<E: FloatDtype, D: TrainDevice<E>> ConvLayer<E, D> {
    /// The convolution of `x`: on the host as a chain of one, or composed of dfdx's ops on
    /// devices without host kernels.
    fn apply<T: Tape<E, D>>(self, x: Dyn4<E, D, T>) -> Result<Dyn4<E, D, T>> {
        let geom = self.geom(x.shape().concrete())?;
        if !D::host_kernels() && self.opts.groups == 1 {
            return composed::conv2d(x, &self.weight, self.bias.as_ref(), &geom);
        }
        chain::run("Conv2D", x, &mut [&mut { self }])
    }

    /// The convolution's geometry on images of shape `[n, c_in, h, w]`; impossible geometry is
    /// an error naming it.
    fn geom(&self, [n, c_in, h, w]: [usize; 4]) -> Result<ConvGeom> {
        let opts = self.opts;
        let (c_out, cin_g, k, k2) = *self.weight.shape();
        let geom = ConvGeom {
            batch: n,
            c_in,
            h,
            w,
            c_out,
            k,
            stride: opts.stride,
            padding: opts.padding,
            dilation: opts.dilation,
            groups: opts.groups,
        };
        geom.check()?;
        if k != k2 || cin_g * opts.groups != c_in {
            return Err(Error::config(
                "Conv2D.weight",
                format!(
                    "a weight of shape [{c_out}, {cin_g}, {k}, {k2}] does not fit {c_in} input channels in {} groups with a square kernel",
                    opts.groups
                ),
            ));
        }
        if let Some(b) = &self.bias {
            if b.shape().0 != c_out {
                return Err(Error::config(
                    "Conv2D.bias",
                    format!("{} biases for {c_out} output channels", b.shape().0),
                ));
            }
        }
        Ok(geom)
    }
}

impl<E: FloatDtype, D: TrainDevice<E>> chain::HostLayer<E, D> for ConvLayer<E, D> {
    fn forward(
        &mut self,
        x: &std::sync::Arc<Host>,
        dims: chain::Dims,
    ) -> Result<(Host, chain::Dims, chain::LayerBackward<E, D>)> {
        let g = self.geom(dims)?;
        let ws = Host::of(&self.weight)?;
        let bs = self.bias.as_ref().map(Host::of).transpose()?;
        let out = conv_kernel::forward_host(&g, x, &ws, bs.as_ref());
        let (xs, weight, bias) = (x.clone(), self.weight.clone(), self.bias.clone());
        let backward: chain::LayerBackward<E, D> = Box::new(move |dy, dx| {
            let (dw, db) = conv_kernel::backward_host(&g, (&xs, &ws, dy), dx, bias.is_some());
            Box::new(move |grads| {
                add_grad(&weight, grads, dw)?;
                match &bias {
                    Some(b) => add_grad(b, grads, db),
                    None => Ok(()),
                }
            })
        });
        Ok((out, [g.batch, g.c_out, g.h_out(), g.w_out()], backward))
    }
}

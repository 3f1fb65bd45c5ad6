//! [`Composed`]: every op family written with dfdx's differentiable tensor ops, so that the
//! values never leave the device: what CUDA runs. Windows are gathered by index (a
//! convolution's im2col is one `gather` of rows), products go to the device's matrix multiply
//! (cuBLAS on CUDA), and dfdx's backward of each op makes the gradients; no kernel of fulmen's
//! own runs on the device.
//!
//! Why this and not cuDNN (yet): cudarc 0.9's cuDNN bindings are for cuDNN 8, the GPU machines
//! carry cuDNN 9, and what is written this way is checked on the CPU against the host kernels
//! in every CI run (`tests/composed.rs`, `tests/device_ops.rs`), where a cuDNN path could only
//! be checked on a GPU.
//!
//! Each layer of more than one op (convolution, batch norm, pooling, the residual add + ReLU)
//! is recorded as a `segment`, on a tape of its own spliced into the caller's: dfdx keeps
//! every gradient of a backward until it ends, and a segment frees those of its intermediate
//! tensors as soon as its own backward is done. Grouped convolutions (depthwise) take the host
//! kernel's path, through copies.

mod conv;
mod elementwise;
mod norm;
mod planes;
mod pool;
mod reduce;
pub(crate) mod segment;
mod step;

pub use conv::window_pixels;

use dfdx::nn::{ModuleMut, TensorCollection};
use dfdx::shapes::{Rank1, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tape, Tensor};

use crate::device::{FloatDtype, Half, HostAccess};
use crate::kernels::host::Host;
use crate::kernels::seam::{
    Conv, Elementwise, Flat, Fuse, Norm, Normalized, Pool, Reduce, Step, Unscale,
};
use crate::kernels::{Describe, GradSum, Scratch, StepRule, Total};
use crate::shapes::{ConvGeom, Dyn4, Images, PoolKind};
use crate::walk::{AnyTensor, AnyTensorMut};
use crate::Result;

/// The composed kernels (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Composed;

impl<E: FloatDtype, D: HostAccess<E>> Conv<E, D> for Composed {
    fn conv2d<T: Tape<E, D>>(
        x: Dyn4<E, D, T>,
        weight: &Dyn4<E, D>,
        bias: Option<&Tensor<(usize,), E, D>>,
        g: &ConvGeom,
    ) -> Result<Dyn4<E, D, T>> {
        match g.groups {
            1 => conv::conv2d(x, weight, bias, g),
            _ => Host::conv2d(x, weight, bias, g),
        }
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Norm<E, D> for Composed {
    fn batch_norm_train<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Normalized<C, E, D, T>> {
        norm::batch_norm_train(x, weight, bias, epsilon)
    }

    fn batch_norm_eval<const C: usize>(
        x: Images<C, E, D>,
        mean: &Tensor<Rank1<C>, E, D>,
        var: &Tensor<Rank1<C>, E, D>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Images<C, E, D>> {
        norm::batch_norm_eval(x, mean, var, weight, bias, epsilon)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Pool<E, D> for Composed {
    fn pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        kind: PoolKind,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Images<C, E, D, T>> {
        pool::pool2d(x, kind == PoolKind::Max, k, stride, padding)
    }

    fn adaptive_avg_pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        out_h: usize,
        out_w: usize,
    ) -> Result<Images<C, E, D, T>> {
        pool::adaptive_avg_pool2d(x, out_h, out_w)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Elementwise<E, D> for Composed {
    /// dfdx's op: as a segment it would cost more ops than the one gradient it frees early.
    fn relu<S: Shape, T: Tape<E, D>>(x: Tensor<S, E, D, T>) -> Result<Tensor<S, E, D, T>> {
        Ok(x.try_relu()?)
    }

    fn add_relu<S: Shape, T: Tape<E, D>>(
        a: Tensor<S, E, D, T>,
        b: Tensor<S, E, D, T>,
    ) -> Result<Tensor<S, E, D, T>> {
        elementwise::add_relu(a, b)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Fuse<E, D> for Composed {
    /// Each layer as it is, each its own segment.
    fn fused<Si: Shape, So: Shape, L>(
        x: Tensor<Si, E, D, OwnedTape<E, D>>,
        layers: &mut L,
    ) -> Result<Tensor<So, E, D, OwnedTape<E, D>>>
    where
        L: Describe<E, D>
            + ModuleMut<
                Tensor<Si, E, D, OwnedTape<E, D>>,
                Output = Tensor<So, E, D, OwnedTape<E, D>>,
                Error = D::Err,
            >,
    {
        Ok(layers.try_forward_mut(x)?)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Step<E, D> for Composed {
    fn step(
        rule: StepRule<'_>,
        param: &mut dyn AnyTensorMut<E, D>,
        grads: &mut Gradients<E, D>,
        buffers: &mut [Flat<E, D>],
        _scratch: &mut Scratch<E>,
    ) -> Result<()> {
        step::step(rule, param, grads, buffers)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Reduce<E, D> for Composed {
    fn grad_sum(
        what: GradSum,
        param: &dyn AnyTensor<E, D>,
        grads: &mut Gradients<E, D>,
        total: &mut Total<E, D>,
    ) -> Result<()> {
        reduce::grad_sum(what, param, grads, total)
    }
}

impl<D: HostAccess<f32> + HostAccess<Half>> Unscale<D> for Composed {
    fn unscale<H: TensorCollection<Half, D>, M: TensorCollection<f32, D>>(
        from: &H,
        from_grads: &mut Gradients<Half, D>,
        into: &M,
        grads: &mut Gradients<f32, D>,
        inv: f64,
        _scratch: &mut Scratch<f32>,
    ) -> Result<bool> {
        reduce::unscale(from, from_grads, into, grads, inv)
    }
}

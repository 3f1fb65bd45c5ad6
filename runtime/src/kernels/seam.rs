//! The op families' traits, one per family, and [`Kernels`], all of them: what an
//! implementation implements and a device names (see [`crate::kernels`]).

use dfdx::nn::ModuleMut;
use dfdx::shapes::{Const, Dim, Rank1, Rank2, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tape, Tensor};

use super::ops::{Describe, GradSum, Scratch, StepRule, Total};
use crate::device::{FloatDtype, Half, HostAccess};
use crate::shapes::{ConvGeom, Dyn4, Images, PoolKind};
use crate::walk::{AnyTensor, AnyTensorMut, Params};
use crate::Result;

/// A flat tensor: an optimizer's buffers, a gradient's copy.
pub type Flat<E, D> = Tensor<(usize,), E, D>;

/// Every op family: what a device's [`TrainDevice::Kernels`](crate::TrainDevice::Kernels) is.
pub trait Kernels<E: FloatDtype, D: HostAccess<E>>:
    Dense<E, D>
    + Conv<E, D>
    + Norm<E, D>
    + Pool<E, D>
    + Elementwise<E, D>
    + Fuse<E, D>
    + Step<E, D>
    + Reduce<E, D>
{
}

impl<E: FloatDtype, D: HostAccess<E>, K> Kernels<E, D> for K where
    K: Dense<E, D>
        + Conv<E, D>
        + Norm<E, D>
        + Pool<E, D>
        + Elementwise<E, D>
        + Fuse<E, D>
        + Step<E, D>
        + Reduce<E, D>
{
}

/// A dense layer's product (PyTorch's `linear`).
pub trait Dense<E: FloatDtype, D: HostAccess<E>> {
    /// `x · weightᵀ + bias` for a batch of rows `x`; differentiable through the tape on `x`.
    fn linear<B: Dim, const I: usize, const O: usize, T: Tape<E, D>>(
        x: Tensor<(B, Const<I>), E, D, T>,
        weight: &Tensor<Rank2<O, I>, E, D>,
        bias: Option<&Tensor<Rank1<O>, E, D>>,
    ) -> Result<Tensor<(B, Const<O>), E, D, T>>;
}

/// 2-D convolution (PyTorch's `conv2d`, cross-correlation).
pub trait Conv<E: FloatDtype, D: HostAccess<E>> {
    /// `x` convolved with `weight`, plus `bias`, with the geometry `g` (checked by the
    /// caller); differentiable through the tape on `x`.
    fn conv2d<T: Tape<E, D>>(
        x: Dyn4<E, D, T>,
        weight: &Dyn4<E, D>,
        bias: Option<&Tensor<(usize,), E, D>>,
        g: &ConvGeom,
    ) -> Result<Dyn4<E, D, T>>;
}

/// A batch normalized by its own statistics: `(y, mean, biased variance)`, the statistics
/// per channel and off the tape.
pub type Normalized<const C: usize, E, D, T> = (
    Images<C, E, D, T>,
    Tensor<Rank1<C>, E, D>,
    Tensor<Rank1<C>, E, D>,
);

/// Batch normalization over `[N, C, H, W]` images.
pub trait Norm<E: FloatDtype, D: HostAccess<E>> {
    /// `(x − mean) / √(var + ε) · weight + bias` by the batch's statistics (training).
    fn batch_norm_train<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Normalized<C, E, D, T>>;

    /// The same by given statistics (evaluation).
    fn batch_norm_eval<const C: usize>(
        x: Images<C, E, D>,
        mean: &Tensor<Rank1<C>, E, D>,
        var: &Tensor<Rank1<C>, E, D>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Images<C, E, D>>;
}

/// Pooling windows over `[N, C, H, W]` images.
pub trait Pool<E: FloatDtype, D: HostAccess<E>> {
    /// `k`×`k` windows every `stride` pixels of `x` padded by `padding` (checked by the
    /// caller), as PyTorch's `max_pool2d` / `avg_pool2d` (`count_include_pad=True`).
    fn pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        kind: PoolKind,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Images<C, E, D, T>>;

    /// The average over `out_h`×`out_w` windows that tile `x`, as PyTorch's
    /// `adaptive_avg_pool2d`.
    fn adaptive_avg_pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        out_h: usize,
        out_w: usize,
    ) -> Result<Images<C, E, D, T>>;
}

/// Elementwise ops of the layers.
pub trait Elementwise<E: FloatDtype, D: HostAccess<E>> {
    /// `max(x, 0)`; the gradient at zero is zero, as dfdx's.
    fn relu<S: Shape, T: Tape<E, D>>(x: Tensor<S, E, D, T>) -> Result<Tensor<S, E, D, T>>;

    /// `max(a + b, 0)`, the end of a residual block (`a` and `b` of one shape, checked by the
    /// caller).
    fn add_relu<S: Shape, T: Tape<E, D>>(
        a: Tensor<S, E, D, T>,
        b: Tensor<S, E, D, T>,
    ) -> Result<Tensor<S, E, D, T>>;
}

/// A sequence of layers trained as one op.
pub trait Fuse<E: FloatDtype, D: HostAccess<E>> {
    /// `layers` on `x` in training: as one op where the implementation can fuse them (the
    /// host kernels: the values between them get no gradient buffer), else each as usual.
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
            >;
}

/// One optimizer step of one parameter.
pub trait Step<E: FloatDtype, D: HostAccess<E>> {
    /// Updates `param` from its gradient in `grads` (zeros if it has none), clipped first, by
    /// `rule`, with its buffers (in [`StepRule::buffers`]' order; `scratch` is the host
    /// kernels' workspace, kept between steps).
    fn step(
        rule: StepRule<'_>,
        param: &mut dyn AnyTensorMut<E, D>,
        grads: &mut Gradients<E, D>,
        buffers: &mut [Flat<E, D>],
        scratch: &mut Scratch<E>,
    ) -> Result<()>;
}

/// Sums over gradients, where they live.
pub trait Reduce<E: FloatDtype, D: HostAccess<E>> {
    /// Adds `what` of `param`'s gradient (zeros if it has none) to `total`.
    fn grad_sum(
        what: GradSum,
        param: &dyn AnyTensor<E, D>,
        grads: &mut Gradients<E, D>,
        total: &mut Total<E, D>,
    ) -> Result<()>;
}

/// 16-mixed's unscaling: the half-precision copy's gradients into the f32 module's.
pub trait Unscale<D: HostAccess<f32> + HostAccess<Half>> {
    /// Adds `inv` times the gradients of `from`'s tensors (the half copy's parameters) into
    /// those of `into`'s (the same tensors in f32, in the same order); adds nothing and returns
    /// `false` when any of them is not finite.
    fn unscale(
        from: &dyn Params<Half, D>,
        from_grads: &mut Gradients<Half, D>,
        into: &dyn Params<f32, D>,
        grads: &mut Gradients<f32, D>,
        inv: f64,
        scratch: &mut Scratch<f32>,
    ) -> Result<bool>;
}

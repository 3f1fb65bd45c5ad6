//! The families cuDNN does not compute (yet): the composed kernels', as the CUDA device ran
//! them before [`Cudnn`] was its implementation.

use dfdx::nn::ModuleMut;
use dfdx::shapes::{Const, Dim, Rank1, Rank2, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tape, Tensor};

use super::Cudnn;
use crate::device::{FloatDtype, Half, HostAccess};
use crate::kernels::{
    Composed, Dense, Describe, Elementwise, Flat, Fuse, GradSum, Pool, Reduce, Scratch, Step,
    StepRule, Total, Unscale,
};
use crate::shapes::{Images, PoolKind};
use crate::walk::{AnyTensor, AnyTensorMut, Params};
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Dense<E, D> for Cudnn {
    fn linear<B: Dim, const I: usize, const O: usize, T: Tape<E, D>>(
        x: Tensor<(B, Const<I>), E, D, T>,
        weight: &Tensor<Rank2<O, I>, E, D>,
        bias: Option<&Tensor<Rank1<O>, E, D>>,
    ) -> Result<Tensor<(B, Const<O>), E, D, T>> {
        <Composed as Dense<E, D>>::linear(x, weight, bias)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Pool<E, D> for Cudnn {
    fn pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        kind: PoolKind,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Images<C, E, D, T>> {
        <Composed as Pool<E, D>>::pool2d(x, kind, k, stride, padding)
    }

    fn adaptive_avg_pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        out_h: usize,
        out_w: usize,
    ) -> Result<Images<C, E, D, T>> {
        <Composed as Pool<E, D>>::adaptive_avg_pool2d(x, out_h, out_w)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Elementwise<E, D> for Cudnn {
    fn relu<S: Shape, T: Tape<E, D>>(x: Tensor<S, E, D, T>) -> Result<Tensor<S, E, D, T>> {
        <Composed as Elementwise<E, D>>::relu(x)
    }

    fn add_relu<S: Shape, T: Tape<E, D>>(
        a: Tensor<S, E, D, T>,
        b: Tensor<S, E, D, T>,
    ) -> Result<Tensor<S, E, D, T>> {
        <Composed as Elementwise<E, D>>::add_relu(a, b)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Fuse<E, D> for Cudnn {
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
        <Composed as Fuse<E, D>>::fused(x, layers)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Step<E, D> for Cudnn {
    fn step(
        rule: StepRule<'_>,
        param: &mut dyn AnyTensorMut<E, D>,
        grads: &mut Gradients<E, D>,
        buffers: &mut [Flat<E, D>],
        scratch: &mut Scratch<E>,
    ) -> Result<()> {
        <Composed as Step<E, D>>::step(rule, param, grads, buffers, scratch)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Reduce<E, D> for Cudnn {
    fn grad_sum(
        what: GradSum,
        param: &dyn AnyTensor<E, D>,
        grads: &mut Gradients<E, D>,
        total: &mut Total<E, D>,
    ) -> Result<()> {
        <Composed as Reduce<E, D>>::grad_sum(what, param, grads, total)
    }
}

impl<D: HostAccess<f32> + HostAccess<Half>> Unscale<D> for Cudnn {
    fn unscale(
        from: &dyn Params<Half, D>,
        from_grads: &mut Gradients<Half, D>,
        into: &dyn Params<f32, D>,
        grads: &mut Gradients<f32, D>,
        inv: f64,
        scratch: &mut Scratch<f32>,
    ) -> Result<bool> {
        Composed::unscale(from, from_grads, into, grads, inv, scratch)
    }
}

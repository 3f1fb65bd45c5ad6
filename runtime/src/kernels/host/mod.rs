//! [`Host`]: fulmen's own kernels on host memory, spread over rayon's threads. f64 tensors
//! compute in f64 and every other dtype (f32, and half precision as dfdx's AMP does) in f32.
//! On the CPU a tensor's values are read in place (`buf`); on other devices they are copied
//! to the host and back, which only the composed kernels' fallbacks do (grouped
//! convolutions on CUDA).
//!
//! Layers compute as chains of `HostLayer`s (`chain`): a lone layer is a chain of one, a fused
//! sequence the chain of its ops, so that the values between them never become dfdx tensors.

pub(crate) mod buf;
pub(crate) mod chain;
mod conv;
#[cfg(target_arch = "x86_64")]
mod conv_avx512;
mod conv_gemm;
mod elementwise;
mod norm;
mod pool;
pub(crate) mod reduce;
mod step;
pub(crate) mod values;

use dfdx::nn::{ModuleMut, TensorCollection};
use dfdx::shapes::{Rank1, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tape, Tensor};

use self::chain::HostLayer;
use self::conv::ConvLayer;
use self::elementwise::{ReluLayer, ResidualLayer};
use self::norm::BnLayer;
use crate::device::{FloatDtype, Half, HostAccess};
use crate::kernels::seam::{
    Conv, Elementwise, Flat, Fuse, Norm, Normalized, Pool, Reduce, Step, Unscale,
};
use crate::kernels::{Describe, GradSum, Op, Scratch, StepRule, Total};
use crate::shapes::{ConvGeom, Dyn4, Images, PoolKind};
use crate::walk::{AnyTensor, AnyTensorMut};
use crate::Result;

/// The host kernels (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

impl<E: FloatDtype, D: HostAccess<E>> Conv<E, D> for Host {
    fn conv2d<T: Tape<E, D>>(
        x: Dyn4<E, D, T>,
        weight: &Dyn4<E, D>,
        bias: Option<&Tensor<(usize,), E, D>>,
        g: &ConvGeom,
    ) -> Result<Dyn4<E, D, T>> {
        let mut layer = ConvLayer {
            weight: weight.clone(),
            bias: bias.cloned(),
            opts: g.options(),
        };
        chain::run("Conv2D", x, &mut [&mut layer])
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Norm<E, D> for Host {
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

impl<E: FloatDtype, D: HostAccess<E>> Pool<E, D> for Host {
    fn pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        kind: PoolKind,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Images<C, E, D, T>> {
        pool::pool2d(x, kind, k, stride, padding)
    }

    fn adaptive_avg_pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        out_h: usize,
        out_w: usize,
    ) -> Result<Images<C, E, D, T>> {
        pool::adaptive_avg_pool2d(x, out_h, out_w)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Elementwise<E, D> for Host {
    fn relu<S: Shape, T: Tape<E, D>>(x: Tensor<S, E, D, T>) -> Result<Tensor<S, E, D, T>> {
        elementwise::relu(x)
    }

    fn add_relu<S: Shape, T: Tape<E, D>>(
        a: Tensor<S, E, D, T>,
        b: Tensor<S, E, D, T>,
    ) -> Result<Tensor<S, E, D, T>> {
        elementwise::add_relu(a, b)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Fuse<E, D> for Host {
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
        let mut ops = Vec::new();
        layers.describe(&mut ops)?;
        let mut chain = host_layers(ops)?;
        let mut refs: Vec<&mut dyn HostLayer<E, D>> =
            chain.iter_mut().map(|l| &mut **l as _).collect();
        chain::run("Fused", x, &mut refs)
    }
}

/// The chain's layers of a fused sequence's ops.
fn host_layers<'a, E: FloatDtype, D: HostAccess<E>>(
    ops: Vec<Op<'a, E, D>>,
) -> Result<Vec<Box<dyn HostLayer<E, D> + 'a>>> {
    ops.into_iter()
        .map(|op| -> Result<Box<dyn HostLayer<E, D> + 'a>> {
            Ok(match op {
                Op::Conv { weight, bias, opts } => Box::new(ConvLayer { weight, bias, opts }),
                Op::BatchNorm(norm) => Box::new(BnLayer::of(norm)?),
                Op::ReLU => Box::new(ReluLayer),
                Op::Residual { f, r } => Box::new(ResidualLayer {
                    f: host_layers(f)?,
                    r: host_layers(r)?,
                }),
            })
        })
        .collect()
}

impl<E: FloatDtype, D: HostAccess<E>> Step<E, D> for Host {
    fn step(
        rule: StepRule<'_>,
        param: &mut dyn AnyTensorMut<E, D>,
        grads: &mut Gradients<E, D>,
        buffers: &mut [Flat<E, D>],
        scratch: &mut Scratch<E>,
    ) -> Result<()> {
        step::step(rule, param, grads, buffers, scratch)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Reduce<E, D> for Host {
    fn grad_sum(
        what: GradSum,
        param: &dyn AnyTensor<E, D>,
        grads: &mut Gradients<E, D>,
        total: &mut Total<E, D>,
    ) -> Result<()> {
        reduce::grad_sum(what, param, grads, total)
    }
}

impl<D: HostAccess<f32> + HostAccess<Half>> Unscale<D> for Host {
    fn unscale<H: TensorCollection<Half, D>, M: TensorCollection<f32, D>>(
        from: &H,
        from_grads: &mut Gradients<Half, D>,
        into: &M,
        grads: &mut Gradients<f32, D>,
        inv: f64,
        scratch: &mut Scratch<f32>,
    ) -> Result<bool> {
        reduce::unscale(from, from_grads, into, grads, inv, scratch)
    }
}

//! [`OnCpu`]: the CPU's kernels. The host kernels, or the composed ones (what CUDA runs, but
//! for cuDNN's convolutions) while a [`cpu_runs`] guard lives on the thread: how every CI run,
//! on machines without a GPU, trains the GPU's path beside the CPU's (`tests/device_ops.rs`).
//!
//! The choice is made here and nowhere else: every family's call on the CPU reads it once.

use std::cell::Cell;
use std::marker::PhantomData;

use dfdx::nn::ModuleMut;
use dfdx::shapes::{Const, Dim, Rank1, Rank2, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tape, Tensor};

use super::composed::Composed;
use super::host::Host;
use super::ops::{Describe, GradSum, Scratch, StepRule, Total};
use super::seam::{
    Conv, Dense, Elementwise, Flat, Fuse, Norm, Normalized, Pool, Reduce, Step, Unscale,
};
use crate::device::{FloatDtype, Half, HostAccess};
use crate::shapes::{ConvGeom, Dyn4, Images, PoolKind};
use crate::walk::{AnyTensor, AnyTensorMut, Params};
use crate::Result;

thread_local! {
    static COMPOSED: Cell<bool> = const { Cell::new(false) };
}

/// An implementation the CPU can run: [`Host`] (the default) or [`Composed`].
pub trait RunsOnCpu {
    /// Whether it is [`Composed`].
    #[doc(hidden)]
    const COMPOSED: bool;
}

impl RunsOnCpu for Host {
    const COMPOSED: bool = false;
}

impl RunsOnCpu for Composed {
    const COMPOSED: bool = true;
}

/// While the returned guard lives, the CPU runs the kernels `K` on this thread: with
/// [`Composed`], what CUDA runs (dfdx's ops in the layers but cuDNN's convolutions, the
/// optimizer steps, the gradient sums and 16-mixed's unscaling), to check the GPU's path on a
/// machine without a GPU: slower, and the same results within rounding.
///
/// ```
/// use fulmen::kernels::{cpu_runs, Composed};
/// use fulmen::layers::{conv2d, ConvOptions};
/// use fulmen::prelude::*;
///
/// let dev = Cpu::default();
/// let x: Tensor<(usize, usize, usize, usize), f32, Cpu> = dev.sample_normal_like(&(2, 3, 8, 8));
/// let w: Tensor<(usize, usize, usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, 3, 3, 3));
/// let opts = ConvOptions { padding: 1, ..Default::default() };
/// let on_host = conv2d(x.clone(), &w, None, opts).unwrap();
/// let as_on_cuda = {
///     let _composed = cpu_runs::<Composed>();
///     conv2d(x, &w, None, opts).unwrap() // an im2col gather and a matrix product
/// };
/// let (a, b) = (on_host.as_vec(), as_on_cuda.as_vec());
/// assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-4));
/// ```
pub fn cpu_runs<K: RunsOnCpu>() -> CpuKernels {
    CpuKernels {
        previous: COMPOSED.replace(K::COMPOSED),
        _thread: PhantomData,
    }
}

/// The guard of [`cpu_runs`]: the CPU runs the chosen kernels until it is dropped.
#[must_use = "the CPU runs the chosen kernels only while the guard lives"]
pub struct CpuKernels {
    previous: bool,
    /// The choice is the thread's: the guard stays on it.
    _thread: PhantomData<*const ()>,
}

impl Drop for CpuKernels {
    fn drop(&mut self) {
        COMPOSED.set(self.previous);
    }
}

/// The CPU's kernels: [`Host`], or [`Composed`] under a [`cpu_runs`] guard.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnCpu;

/// `$call` on [`Composed`] or [`Host`], whichever the thread's guard chose.
macro_rules! chosen {
    ($family:ident :: $call:ident ($($arg:expr),*)) => {
        if COMPOSED.get() {
            <Composed as $family<E, D>>::$call($($arg),*)
        } else {
            <Host as $family<E, D>>::$call($($arg),*)
        }
    };
}

impl<E: FloatDtype, D: HostAccess<E>> Dense<E, D> for OnCpu {
    fn linear<B: Dim, const I: usize, const O: usize, T: Tape<E, D>>(
        x: Tensor<(B, Const<I>), E, D, T>,
        weight: &Tensor<Rank2<O, I>, E, D>,
        bias: Option<&Tensor<Rank1<O>, E, D>>,
    ) -> Result<Tensor<(B, Const<O>), E, D, T>> {
        chosen!(Dense::linear(x, weight, bias))
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Conv<E, D> for OnCpu {
    fn conv2d<T: Tape<E, D>>(
        x: Dyn4<E, D, T>,
        weight: &Dyn4<E, D>,
        bias: Option<&Tensor<(usize,), E, D>>,
        g: &ConvGeom,
    ) -> Result<Dyn4<E, D, T>> {
        chosen!(Conv::conv2d(x, weight, bias, g))
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Norm<E, D> for OnCpu {
    fn batch_norm_train<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Normalized<C, E, D, T>> {
        chosen!(Norm::batch_norm_train(x, weight, bias, epsilon))
    }

    fn batch_norm_eval<const C: usize>(
        x: Images<C, E, D>,
        mean: &Tensor<Rank1<C>, E, D>,
        var: &Tensor<Rank1<C>, E, D>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Images<C, E, D>> {
        chosen!(Norm::batch_norm_eval(x, mean, var, weight, bias, epsilon))
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Pool<E, D> for OnCpu {
    fn pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        kind: PoolKind,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Images<C, E, D, T>> {
        chosen!(Pool::pool2d(x, kind, k, stride, padding))
    }

    fn adaptive_avg_pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        out_h: usize,
        out_w: usize,
    ) -> Result<Images<C, E, D, T>> {
        chosen!(Pool::adaptive_avg_pool2d(x, out_h, out_w))
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Elementwise<E, D> for OnCpu {
    fn relu<S: Shape, T: Tape<E, D>>(x: Tensor<S, E, D, T>) -> Result<Tensor<S, E, D, T>> {
        chosen!(Elementwise::relu(x))
    }

    fn add_relu<S: Shape, T: Tape<E, D>>(
        a: Tensor<S, E, D, T>,
        b: Tensor<S, E, D, T>,
    ) -> Result<Tensor<S, E, D, T>> {
        chosen!(Elementwise::add_relu(a, b))
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Fuse<E, D> for OnCpu {
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
        chosen!(Fuse::fused(x, layers))
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Step<E, D> for OnCpu {
    fn step(
        rule: StepRule<'_>,
        param: &mut dyn AnyTensorMut<E, D>,
        grads: &mut Gradients<E, D>,
        buffers: &mut [Flat<E, D>],
        scratch: &mut Scratch<E>,
    ) -> Result<()> {
        chosen!(Step::step(rule, param, grads, buffers, scratch))
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Reduce<E, D> for OnCpu {
    fn grad_sum(
        what: GradSum,
        param: &dyn AnyTensor<E, D>,
        grads: &mut Gradients<E, D>,
        total: &mut Total<E, D>,
    ) -> Result<()> {
        chosen!(Reduce::grad_sum(what, param, grads, total))
    }
}

impl<D: HostAccess<f32> + HostAccess<Half>> Unscale<D> for OnCpu {
    fn unscale(
        from: &dyn Params<Half, D>,
        from_grads: &mut Gradients<Half, D>,
        into: &dyn Params<f32, D>,
        grads: &mut Gradients<f32, D>,
        inv: f64,
        scratch: &mut Scratch<f32>,
    ) -> Result<bool> {
        if COMPOSED.get() {
            Composed::unscale(from, from_grads, into, grads, inv, scratch)
        } else {
            Host::unscale(from, from_grads, into, grads, inv, scratch)
        }
    }
}

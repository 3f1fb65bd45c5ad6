//! `ReLU`: dfdx's activation, with large tensors on the CPU computed across rayon's threads
//! (forward and backward). dfdx's own runs on the calling thread, and in a small ResNet that
//! thread's ReLU work was a tenth of each training step's wall time while the others waited.
//!
//! The prelude exports this `ReLU` in place of dfdx's, so model code does not change:
//!
//! ```
//! use fulmen::prelude::*;
//!
//! #[module]
//! struct Mlp {
//!     net: (Linear<4, 16>, ReLU, Linear<16, 3>),
//! }
//!
//! let dev = Cpu::default();
//! let mlp = Mlp::build(&dev);
//! let x: Tensor<Rank2<2, 4>, f32, Cpu> = dev.sample_normal();
//! let y = mlp.net.forward(x);
//! assert_eq!(y.shape().1, Const::<3>);
//! ```

use dfdx::nn::{Module, NonMutableModule, ZeroSizedModule};
use dfdx::shapes::{Dtype, HasShape, Shape};
use dfdx::tensor::{PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::Device;
use rayon::prelude::*;
use std::mem::MaybeUninit;

use super::host::{accumulate_grad, on_backward, on_host, Host, HostFloat, HostMut, IntoHost};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// `max(x, 0)`, elementwise; the gradient at zero is zero, as dfdx's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReLU;

impl ZeroSizedModule for ReLU {}
impl NonMutableModule for ReLU {}

impl crate::Spec for ReLU {
    type Module<E: Dtype, D: Device<E>> = Self;
}

/// Tensors smaller than this go through dfdx's op: spreading them over threads costs more
/// than it saves.
const PARALLEL_FROM: usize = 1 << 15;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

/// `max(x, 0)`, differentiable through the tape on `x`.
pub fn relu<S: Shape, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Result<Tensor<S, E, D, T>> {
    // On the device (where a segment would cost more ops than the one gradient it frees
    // early) and for small tensors, dfdx's op.
    if !D::host_kernels() || x.shape().num_elements() < PARALLEL_FROM {
        return x
            .try_relu()
            .map_err(|e| Error::Device(format!("ReLU: {e:?}")));
    }
    let (x, mut tape) = x.split_tape();
    let (y, mask) = relu_host(&Host::of(&x)?, None);
    let out = y.into_tensor(x.device(), *x.shape())?;
    on_backward(&mut tape, "ReLU", &out, move |dy, grads| {
        accumulate_grad(&x, grads, |dx| add_masked_host(dy, &mask, dx))
    });
    Ok(out.put_tape(tape))
}

/// `max(a + b, 0)` (`max(a, 0)` without `b`) and where it is positive: the kernel of ReLU and
/// of the residual add + ReLU ([`add_relu`](super::add_relu)).
fn relu_kernel<T: HostFloat>(a: &[T], b: Option<&[T]>) -> (Vec<T>, Vec<bool>) {
    let n = a.len();
    let (mut y, mut mask) = (Vec::with_capacity(n), Vec::with_capacity(n));
    y.spare_capacity_mut()[..n]
        .par_chunks_mut(CHUNK)
        .zip(mask.spare_capacity_mut()[..n].par_chunks_mut(CHUNK))
        .zip(a.par_chunks(CHUNK).enumerate())
        .for_each(|((y, m), (i, a))| {
            let out = y.iter_mut().zip(m);
            match b.map(|b| &b[i * CHUNK..i * CHUNK + a.len()]) {
                Some(b) => write_relu(out, a.iter().zip(b).map(|(&a, &b)| a + b)),
                None => write_relu(out, a.iter().copied()),
            }
        });
    // SAFETY: the chunks cover all `n` values of both, and each was written above.
    unsafe {
        y.set_len(n);
        mask.set_len(n);
    }
    (y, mask)
}

/// Writes `max(v, 0)` and `v > 0` for each value.
fn write_relu<'a, T: HostFloat>(
    out: impl Iterator<Item = (&'a mut MaybeUninit<T>, &'a mut MaybeUninit<bool>)>,
    values: impl Iterator<Item = T>,
) {
    for ((y, m), v) in out.zip(values) {
        let positive = v > T::zero();
        m.write(positive);
        y.write(if positive { v } else { T::zero() });
    }
}

/// [`relu_kernel`] on host values of either dtype (compiled once, here).
pub(super) fn relu_host(a: &Host, b: Option<&Host>) -> (Host, Vec<bool>) {
    match b {
        Some(b) => on_host!(T; Host(a), Host(b) => {
            let (y, mask) = relu_kernel(a, Some(b));
            (y.into_host(), mask)
        }),
        None => on_host!(T; Host(a) => {
            let (y, mask) = relu_kernel(a, None);
            (y.into_host(), mask)
        }),
    }
}

/// ReLU's backward: adds `dy` where `mask` is set into `into`.
pub(super) fn add_masked_host(dy: &Host, mask: &[bool], into: HostMut<'_>) {
    on_host!(T; Host(dy), HostMut(into) => {
        into.par_chunks_mut(CHUNK)
            .zip(dy.par_chunks(CHUNK).zip(mask.par_chunks(CHUNK)))
            .for_each(|(into, (dy, m))| {
                // Branch-free, so that it vectorizes.
                for ((d, &g), &m) in into.iter_mut().zip(dy).zip(m) {
                    *d += if m { g } else { 0.0 };
                }
            })
    })
}

/// `dy` where `mask` is set, zero elsewhere, as a new buffer.
pub(super) fn masked_host(dy: &Host, mask: &[bool]) -> Host {
    on_host!(T; Host(dy) => {
        let v: Vec<T> = dy
            .par_iter()
            .zip(mask.par_iter())
            .map(|(&g, &m)| if m { g } else { 0.0 })
            .collect();
        v.into_host()
    })
}

impl<S: Shape, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>> Module<Tensor<S, E, D, T>>
    for ReLU
{
    type Output = Tensor<S, E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<S, E, D, T>) -> std::result::Result<Self::Output, D::Err> {
        Ok(super::conv2d::or_panic(relu(x)))
    }
}

/// ReLU as a [`HostLayer`](super::chain::HostLayer), inside a [`Fused`](super::Fused) chain.
struct ReluLayer;

impl<E: FloatDtype, D: TrainDevice<E>> super::chain::HostLayer<E, D> for ReluLayer {
    fn forward(
        &mut self,
        x: &std::sync::Arc<Host>,
        dims: super::chain::Dims,
    ) -> Result<(Host, super::chain::Dims, super::chain::LayerBackward<E, D>)> {
        let (y, mask) = relu_host(x, None);
        let backward: super::chain::LayerBackward<E, D> = Box::new(move |dy, dx| {
            add_masked_host(dy, &mask, dx);
            Box::new(|_| Ok(()))
        });
        Ok((y, dims, backward))
    }
}

impl<E: FloatDtype, D: TrainDevice<E>> super::fused::HostModule<E, D> for ReLU {
    fn host_layers<'a>(
        &'a mut self,
        layers: &mut Vec<Box<dyn super::chain::HostLayer<E, D> + 'a>>,
    ) -> Result<()> {
        layers.push(Box::new(ReluLayer));
        Ok(())
    }
}

//! The host kernels of ReLU and of a residual block's end, `relu(a + b)`: one multithreaded
//! pass each way (dfdx's run on the calling thread; in a small ResNet that thread's ReLU work
//! was a tenth of each training step's wall time while the others waited), and their layers
//! in a chain.

use std::mem::MaybeUninit;
use std::sync::Arc;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{PutTape, SplitTape, Tape, Tensor};
use rayon::prelude::*;

use super::chain::{self, Dims, HostLayer, LayerBackward};
use super::values::{
    accumulate_grad, on_backward, on_host, HostFloat, IntoValues, Values, ValuesMut,
};
use super::Host;
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::Elementwise;
use crate::shapes::branches_disagree;
use crate::Result;

/// Tensors smaller than this go through dfdx's op: spreading them over threads costs more
/// than it saves.
const PARALLEL_FROM: usize = 1 << 15;

/// Values per parallel task.
const CHUNK: usize = 1 << 14;

impl<E: FloatDtype, D: HostAccess<E>> Elementwise<E, D> for Host {
    /// Small tensors through dfdx's op, large ones across rayon's threads.
    fn relu<S: Shape, T: Tape<E, D>>(x: Tensor<S, E, D, T>) -> Result<Tensor<S, E, D, T>> {
        if x.shape().num_elements() < PARALLEL_FROM {
            return Ok(x.try_relu()?);
        }
        let (x, mut tape) = x.split_tape();
        let (y, mask) = relu_values(&Values::of(&x)?, None);
        let out = y.into_tensor(x.device(), *x.shape())?;
        on_backward(&mut tape, "ReLU", &out, move |dy, grads| {
            accumulate_grad(&x, grads, |dx| add_masked(dy, &mask, dx))
        });
        Ok(out.put_tape(tape))
    }

    /// Differentiable through the tapes of both (merged, as dfdx's binary ops do).
    fn add_relu<S: Shape, T: Tape<E, D>>(
        a: Tensor<S, E, D, T>,
        b: Tensor<S, E, D, T>,
    ) -> Result<Tensor<S, E, D, T>> {
        let (a, ta) = a.split_tape();
        let (b, tb) = b.split_tape();
        let (y, mask) = relu_values(&Values::of(&a)?, Some(&Values::of(&b)?));
        let out = y.into_tensor(a.device(), *a.shape())?;
        let mut tape = ta.merge(tb);
        on_backward(&mut tape, "residual", &out, move |dy, grads| {
            accumulate_grad(&a, grads, |da| add_masked(dy, &mask, da))?;
            accumulate_grad(&b, grads, |db| add_masked(dy, &mask, db))
        });
        Ok(out.put_tape(tape))
    }
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
fn relu_values(a: &Values, b: Option<&Values>) -> (Values, Vec<bool>) {
    match b {
        Some(b) => on_host!(T; Values(a), Values(b) => {
            let (y, mask) = relu_kernel(a, Some(b));
            (y.into_values(), mask)
        }),
        None => on_host!(T; Values(a) => {
            let (y, mask) = relu_kernel(a, None);
            (y.into_values(), mask)
        }),
    }
}

/// ReLU's backward: adds `dy` where `mask` is set into `into`.
fn add_masked(dy: &Values, mask: &[bool], into: ValuesMut<'_>) {
    on_host!(T; Values(dy), ValuesMut(into) => {
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
fn masked(dy: &Values, mask: &[bool]) -> Values {
    on_host!(T; Values(dy) => {
        let v: Vec<T> = dy
            .par_iter()
            .zip(mask.par_iter())
            .map(|(&g, &m)| if m { g } else { 0.0 })
            .collect();
        v.into_values()
    })
}

/// ReLU as a chain's layer.
pub(crate) struct ReluLayer;

impl<E: FloatDtype, D: HostAccess<E>> HostLayer<E, D> for ReluLayer {
    fn forward(
        &mut self,
        x: &Arc<Values>,
        dims: Dims,
    ) -> Result<(Values, Dims, LayerBackward<E, D>)> {
        let (y, mask) = relu_values(x, None);
        let backward: LayerBackward<E, D> = Box::new(move |dy, dx| {
            add_masked(dy, &mask, dx);
            Box::new(|_| Ok(()))
        });
        Ok((y, dims, backward))
    }
}

/// `relu(f(x) + r(x))` on host values, `r` the identity when it has no layers: a block of a
/// fused sequence, whose branches are chains themselves.
pub(crate) struct ResidualLayer<'a, E: FloatDtype, D: HostAccess<E>> {
    pub f: Vec<Box<dyn HostLayer<E, D> + 'a>>,
    pub r: Vec<Box<dyn HostLayer<E, D> + 'a>>,
}

impl<E: FloatDtype, D: HostAccess<E>> HostLayer<E, D> for ResidualLayer<'_, E, D> {
    fn forward(
        &mut self,
        x: &Arc<Values>,
        dims: Dims,
    ) -> Result<(Values, Dims, LayerBackward<E, D>)> {
        let (fx, f_dims, f_back) =
            chain::forward_all(self.f.iter_mut().map(|l| &mut **l), x.clone(), dims)?;
        let (rx, r_dims, r_back) =
            chain::forward_all(self.r.iter_mut().map(|l| &mut **l), x.clone(), dims)?;
        if f_dims != r_dims {
            return Err(branches_disagree(f_dims, r_dims));
        }
        let (y, mask) = relu_values(&fx, Some(&rx));
        let backward: LayerBackward<E, D> = Box::new(move |dy, mut dx| {
            let d = masked(dy, &mask);
            let mut params = chain::backward_all(f_back, &d, dx.reborrow());
            params.extend(chain::backward_all(r_back, &d, dx));
            Box::new(move |grads| params.into_iter().try_for_each(|add| add(grads)))
        });
        Ok((y, f_dims, backward))
    }
}

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

use super::host::{accumulate_grad, on_backward, on_host, Host, HostFloat, IntoHost};
use super::residual::add_masked_host;
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
    if !D::HOST_KERNELS || x.shape().num_elements() < PARALLEL_FROM {
        return x
            .try_relu()
            .map_err(|e| Error::Device(format!("ReLU: {e:?}")));
    }
    let (x, mut tape) = x.split_tape();
    let (y, mask) = relu_host(&Host::of(&x)?);
    let out = y.into_tensor(x.device(), *x.shape())?;
    on_backward(&mut tape, "ReLU", &out, move |dy, grads| {
        accumulate_grad(&x, grads, |dx| add_masked_host(dy, &mask, dx))
    });
    Ok(out.put_tape(tape))
}

fn relu_kernel<T: HostFloat>(x: &[T]) -> (Vec<T>, Vec<bool>) {
    let (mut y, mut mask) = (Vec::with_capacity(x.len()), Vec::with_capacity(x.len()));
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(CHUNK)
        .zip(mask.spare_capacity_mut()[..x.len()].par_chunks_mut(CHUNK))
        .zip(x.par_chunks(CHUNK))
        .for_each(|((y, m), x)| {
            for ((y, m), &x) in y.iter_mut().zip(m).zip(x) {
                let positive = x > T::zero();
                m.write(positive);
                y.write(if positive { x } else { T::zero() });
            }
        });
    // SAFETY: the chunks cover all `x.len()` values of both, and each was written above.
    unsafe {
        y.set_len(x.len());
        mask.set_len(x.len());
    }
    (y, mask)
}

/// `max(x, 0)` and where it is positive, on host values of either dtype (compiled once, here).
fn relu_host(x: &Host) -> (Host, Vec<bool>) {
    on_host!(T; Host(x) => {
        let (y, mask) = relu_kernel(x);
        (y.into_host(), mask)
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

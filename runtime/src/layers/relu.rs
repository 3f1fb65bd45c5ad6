//! `ReLU`: dfdx's activation, computed by the device's kernels: on the CPU, large tensors across
//! rayon's threads (forward and backward), where dfdx's own op runs on the calling thread (in a
//! small ResNet that thread's ReLU work was a tenth of each training step's wall time while the
//! others waited).
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
use dfdx::shapes::{Dtype, Shape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::Device;

use super::or_panic;
use crate::kernels::{Describe, Elementwise, Op};
use crate::{FloatDtype, Result, TrainDevice};

/// `max(x, 0)`, elementwise; the gradient at zero is zero, as dfdx's.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ReLU;

impl ZeroSizedModule for ReLU {}
impl NonMutableModule for ReLU {}

impl crate::Spec for ReLU {
    type Module<E: Dtype, D: Device<E>> = Self;
}

/// `max(x, 0)`, differentiable through the tape on `x`.
pub fn relu<S: Shape, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Result<Tensor<S, E, D, T>> {
    D::Kernels::relu(x)
}

impl<S: Shape, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>> Module<Tensor<S, E, D, T>>
    for ReLU
{
    type Output = Tensor<S, E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<S, E, D, T>) -> std::result::Result<Self::Output, D::Err> {
        Ok(or_panic(relu(x)))
    }
}

impl<E: FloatDtype, D: TrainDevice<E>> Describe<E, D> for ReLU {
    fn describe<'a>(&'a mut self, ops: &mut Vec<Op<'a, E, D>>) -> Result<()> {
        ops.push(Op::ReLU);
        Ok(())
    }
}

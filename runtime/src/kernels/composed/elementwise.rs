//! ReLU and the residual add + ReLU from dfdx's ops.

use dfdx::shapes::Shape;
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::TryAdd;

use super::segment::segment;
use super::Composed;
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::Elementwise;
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Elementwise<E, D> for Composed {
    /// dfdx's op: as a segment it would cost more ops than the one gradient it frees early.
    fn relu<S: Shape, T: Tape<E, D>>(x: Tensor<S, E, D, T>) -> Result<Tensor<S, E, D, T>> {
        Ok(x.try_relu()?)
    }

    /// A segment.
    fn add_relu<S: Shape, T: Tape<E, D>>(
        a: Tensor<S, E, D, T>,
        b: Tensor<S, E, D, T>,
    ) -> Result<Tensor<S, E, D, T>> {
        segment([a, b], Vec::new(), |[a, b]| Ok(a.try_add(b)?.try_relu()?))
    }
}

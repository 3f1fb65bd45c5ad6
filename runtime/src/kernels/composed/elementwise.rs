//! The residual add + ReLU from dfdx's ops, as a segment. (ReLU alone is dfdx's op: as a
//! segment it would cost more ops than the one gradient it frees early.)

use dfdx::shapes::Shape;
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::TryAdd;

use super::segment::segment;
use crate::device::{FloatDtype, HostAccess};
use crate::Result;

/// `relu(a + b)`, the end of a residual block; a segment.
pub fn add_relu<S: Shape, E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>>(
    a: Tensor<S, E, D, T>,
    b: Tensor<S, E, D, T>,
) -> Result<Tensor<S, E, D, T>> {
    segment([a, b], Vec::new(), |[a, b]| {
        a.try_add(b)
            .and_then(|s| s.try_relu())
            .map_err(crate::Error::from)
    })
}

//! A fused sequence by the composed kernels: each layer as it is, each its own segment.

use dfdx::nn::ModuleMut;
use dfdx::shapes::Shape;
use dfdx::tensor::{OwnedTape, Tensor};

use super::Composed;
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::{Describe, Fuse};
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Fuse<E, D> for Composed {
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
        Ok(layers.try_forward_mut(x)?)
    }
}

//! A dense layer from dfdx's ops: its matrix multiply (cuBLAS on CUDA, the `gemm` crate on the
//! CPU) and a broadcast add of the bias, as dfdx's own `Linear`.

use dfdx::shapes::{Const, Dim, HasShape, Rank1, Rank2};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{BroadcastTo, PermuteTo, TryAdd, TryMatMul};

use super::Composed;
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::Dense;
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Dense<E, D> for Composed {
    fn linear<B: Dim, const I: usize, const O: usize, T: Tape<E, D>>(
        x: Tensor<(B, Const<I>), E, D, T>,
        weight: &Tensor<Rank2<O, I>, E, D>,
        bias: Option<&Tensor<Rank1<O>, E, D>>,
    ) -> Result<Tensor<(B, Const<O>), E, D, T>> {
        let y = x.try_matmul(weight.retaped::<T>().try_permute()?)?;
        Ok(match bias {
            Some(b) => {
                let shape = *y.shape();
                y.try_add(b.retaped::<T>().try_broadcast_like(&shape)?)?
            }
            None => y,
        })
    }
}

//! Convolution by cuDNN: forward, and a backward op that adds the input's and the weight's
//! gradients (backward-data and backward-filter, β = 1) into dfdx's gradient buffers.
//!
//! The operands reach cuDNN through buffers of fulmen's own ([`values`](super::values)): the
//! input and the weight are copied out of their tensors (a few passes each), and the output
//! comes back as a tensor (one copy). The input's copy is what the backward reads, in place of
//! the nine-fold columns the composed convolution keeps.

use std::sync::Arc;

use cudarc::driver::CudaDevice;
use dfdx::shapes::Shape;
use dfdx::tensor::{Cuda, PutTape, SplitTape, Storage, Tape, Tensor};
use dfdx::tensor_ops::ReshapeTo;

use super::handle::{with_handle, CudaDtype};
use super::values::{release, tensor_of, values_of};
use super::{failed, in_backward, Cudnn};
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::composed::with_bias;
use crate::kernels::{Composed, Conv};
use crate::shapes::{ConvGeom, Dyn4};
use crate::Result;

impl<E: FloatDtype + CudaDtype> Conv<E, Cuda> for Cudnn
where
    Cuda: HostAccess<E>,
{
    fn conv2d<T: Tape<E, Cuda>>(
        x: Dyn4<E, Cuda, T>,
        weight: &Dyn4<E, Cuda>,
        bias: Option<&Tensor<(usize,), E, Cuda>>,
        g: &ConvGeom,
    ) -> Result<Dyn4<E, Cuda, T>> {
        if !super::enabled() {
            return Composed::conv2d(x, weight, bias, g);
        }
        // cuDNN adds the gradients in NCHW (KCRS) order into the gradient buffers, which dfdx
        // lays out as the tensors' values: a view (a permuted product, say) is copied first,
        // on the tape, whose backward of the copy takes the gradient on to the view. A
        // contiguous tensor is its own copy (the same tensor, no op).
        let (x, tape) = x.try_contiguous()?.split_tape();
        let (weight, weight_tape) = weight.clone().retaped::<T>().try_contiguous()?.split_tape();
        let mut tape = tape.merge(weight_tape);
        let dev = x.device().clone();
        let xs = values_of(&x)?;
        let ws = values_of(&weight)?;
        let cuda: Arc<CudaDevice> = E::device_of(&xs);
        let shape = (g.batch, g.c_out, g.h_out(), g.w_out());
        let ys = <Cuda as Storage<E>>::try_alloc_len(&dev, shape.num_elements())?;
        with_handle(&cuda, |h| {
            h.forward::<E>(g, E::address(&xs), E::address(&ws), E::address(&ys))
        })
        .map_err(failed)?;
        let y = tensor_of(&dev, shape, ys)?;
        if T::OWNS_TAPE {
            let (x_id, w_id, y_id, g) = (x.ghost(), weight.ghost(), y.ghost(), *g);
            tape.add_backward_op(move |grads| {
                // Device addresses: they stay where they are as the map of gradients grows.
                let dy = E::address(grads.get_or_alloc_mut(&y_id)?);
                let dx = E::address(grads.get_or_alloc_mut(&x_id)?);
                let dw = E::address(grads.get_or_alloc_mut(&w_id)?);
                in_backward(with_handle(&cuda, |h| {
                    h.backward::<E>(&g, E::address(&xs), E::address(&ws), dy, dx, dw)
                }));
                release::<E, _>(grads.get_or_alloc_mut(&y_id)?, &dev)
            });
        }
        with_bias(y.put_tape(tape), bias)
    }
}

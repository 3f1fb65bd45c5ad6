//! Batch normalization by cuDNN (`CUDNN_BATCHNORM_SPATIAL`), in f32 and f64: one pass for the
//! statistics and the output, one for the three gradients, where the composed kernels take a
//! dozen. In half precision cuDNN wants the per-channel operands in f32, so half batch norms
//! stay composed.

use std::sync::Arc;

use cudarc::driver::CudaDevice;
use dfdx::shapes::{Const, HasShape, Rank1};
use dfdx::tensor::{Cuda, PutTape, SplitTape, Storage, Tape, Tensor};
use dfdx::tensor_ops::{ReshapeTo, TryMul};

use super::handle::{with_handle, CudaDtype, NormCall};
use super::values::{release, tensor_of, values_of};
use super::{failed, in_backward, Cudnn};
use crate::device::{of_f64, FloatDtype, HostAccess};
use crate::kernels::{Composed, Norm, Normalized};
use crate::shapes::Images;
use crate::Result;

impl<E: FloatDtype + CudaDtype> Norm<E, Cuda> for Cudnn
where
    Cuda: HostAccess<E>,
{
    fn batch_norm_train<T: Tape<E, Cuda>, const C: usize>(
        x: Images<C, E, Cuda, T>,
        weight: &Tensor<Rank1<C>, E, Cuda>,
        bias: &Tensor<Rank1<C>, E, Cuda>,
        epsilon: f64,
    ) -> Result<Normalized<C, E, Cuda, T>> {
        let (n, _, h, w) = *x.shape();
        let values = n * h * w;
        // One value per channel has no unbiased variance to take the biased one from.
        if !super::enabled() || !E::BATCH_NORM || values < 2 {
            return Composed::batch_norm_train(x, weight, bias, epsilon);
        }
        // cuDNN reads and writes NCHW and packed per-channel values: a view is copied first,
        // on the tape (see conv.rs).
        let (x, tape) = x.try_contiguous()?.split_tape();
        let (weight, weight_tape) = weight.clone().retaped::<T>().try_contiguous()?.split_tape();
        let (bias, bias_tape) = bias.clone().retaped::<T>().try_contiguous()?.split_tape();
        let mut tape = tape.merge(weight_tape).merge(bias_tape);
        let dev = x.device().clone();
        let (xs, scale, shift) = (values_of(&x)?, values_of(&weight)?, values_of(&bias)?);
        let alloc = |len| <Cuda as Storage<E>>::try_alloc_len(&dev, len);
        let (ys, mean, var) = (alloc(values * C)?, alloc(C)?, alloc(C)?);
        let (saved_mean, saved_inv_std) = (alloc(C)?, alloc(C)?);
        let cuda: Arc<CudaDevice> = E::device_of(&xs);
        let shape = [n, C, h, w];
        type Buf<E> = <Cuda as Storage<E>>::Vec;
        let call = move |xs: &Buf<E>, scale: &Buf<E>| NormCall {
            shape,
            epsilon,
            x: E::address(xs),
            scale: E::address(scale),
        };
        with_handle(&cuda, |hd| {
            let a = E::address;
            let (b, y, m, v) = (a(&shift), a(&ys), a(&mean), a(&var));
            hd.norm_train::<E>(
                &call(&xs, &scale),
                b,
                y,
                m,
                v,
                a(&saved_mean),
                a(&saved_inv_std),
            )
        })
        .map_err(failed)?;
        let y = tensor_of(&dev, (n, Const::<C>, h, w), ys)?;
        let mean = tensor_of(&dev, (Const::<C>,), mean)?;
        // cuDNN's running variance is the unbiased one; the layer takes the batch's own.
        let unbiased: Tensor<Rank1<C>, E, Cuda> = tensor_of(&dev, (Const::<C>,), var)?;
        let var = unbiased.try_mul(of_f64::<E>((values - 1) as f64 / values as f64))?;
        if T::OWNS_TAPE {
            let (x_id, w_id, b_id, y_id) = (x.ghost(), weight.ghost(), bias.ghost(), y.ghost());
            tape.add_backward_op(move |grads| {
                // Device addresses, as in conv.rs.
                let dy = E::address(grads.get_or_alloc_mut(&y_id)?);
                let dx = E::address(grads.get_or_alloc_mut(&x_id)?);
                let dw = E::address(grads.get_or_alloc_mut(&w_id)?);
                let db = E::address(grads.get_or_alloc_mut(&b_id)?);
                let (m, s) = (E::address(&saved_mean), E::address(&saved_inv_std));
                in_backward(with_handle(&cuda, |hd| {
                    hd.norm_backward::<E>(&call(&xs, &scale), dy, dx, dw, db, m, s)
                }));
                release::<E, _>(grads.get_or_alloc_mut(&y_id)?, &dev)
            });
        }
        Ok((y.put_tape(tape), mean, var))
    }

    fn batch_norm_eval<const C: usize>(
        x: Images<C, E, Cuda>,
        mean: &Tensor<Rank1<C>, E, Cuda>,
        var: &Tensor<Rank1<C>, E, Cuda>,
        weight: &Tensor<Rank1<C>, E, Cuda>,
        bias: &Tensor<Rank1<C>, E, Cuda>,
        epsilon: f64,
    ) -> Result<Images<C, E, Cuda>> {
        if !super::enabled() || !E::BATCH_NORM {
            return Composed::batch_norm_eval(x, mean, var, weight, bias, epsilon);
        }
        let (n, _, h, w) = *x.shape();
        let dev = x.device().clone();
        let xs = values_of(&x)?;
        let [m, v, s, b] = [mean, var, weight, bias].map(values_of);
        let (m, v, s, b) = (m?, v?, s?, b?);
        let ys = <Cuda as Storage<E>>::try_alloc_len(&dev, n * C * h * w)?;
        let call = NormCall {
            shape: [n, C, h, w],
            epsilon,
            x: E::address(&xs),
            scale: E::address(&s),
        };
        let a = E::address;
        with_handle(&E::device_of(&xs), |hd| {
            hd.norm_eval::<E>(&call, a(&b), a(&m), a(&v), a(&ys))
        })
        .map_err(failed)?;
        tensor_of(&dev, (n, Const::<C>, h, w), ys)
    }
}

//! Sums over gradients from dfdx's ops, where the gradients live: Σ g² and the finiteness
//! probe (each tensor's result stays on the device until [`Total`] adds them up), and
//! 16-mixed's unscaling without leaving the device.

use dfdx::shapes::{HasShape, Rank0};
use dfdx::tensor::{Gradients, OwnedTape, Tape, Tensor, Trace};
use dfdx::tensor_ops::{Backward, ReshapeTo, SumTo, TryAdd, TryMatMul, TryMul};

use super::Composed;
use crate::device::{is_half, of_f64, FloatDtype, Half, HostAccess};
use crate::kernels::{Flat, GradSum, Reduce, Scratch, Total, Unscale};
use crate::walk::{AnyTensor, Params};
use crate::{Error, Result};

/// What a half-precision gradient is scaled by before its squares are summed: the sum then
/// fits f16 (largest value 65,504) up to a norm of 65,536, where unscaled it would overflow at
/// 256. It underflows below a norm of about 0.06, where a norm is too small to clip anyway.
const HALF_SQUARES_SCALE: f64 = 1.0 / 256.0;

/// `⟨a, b⟩` as a product `[1, n] · [n, 1]` (on `a`'s tape): cuBLAS accumulates it in f32
/// whatever the dtype, and its backward adds `b` times the result's gradient into `a`'s.
fn inner<E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>>(
    a: Tensor<(usize,), E, D, T>,
    b: Flat<E, D>,
) -> Result<Tensor<Rank0, E, D, T>> {
    let n = a.shape().0;
    Ok(a.try_reshape_like(&(1, n))?
        .try_matmul(b.try_reshape_like(&(n, 1))?)?
        .try_reshape_like(&())?)
}

impl<E: FloatDtype, D: HostAccess<E>> Reduce<E, D> for Composed {
    /// Reduced where it lives (in half precision scaled by `HALF_SQUARES_SCALE` and counted
    /// in its units).
    fn grad_sum(
        what: GradSum,
        param: &dyn AnyTensor<E, D>,
        grads: &mut Gradients<E, D>,
        total: &mut Total<E, D>,
    ) -> Result<()> {
        let g = param.grad_flat(grads)?;
        if what == GradSum::FiniteProbe {
            return total.add_device(finite_probe(g)?, 1.0);
        }
        // Half precision: a product (see `is_half`).
        if is_half::<E>() {
            let g = g.try_mul(of_f64::<E>(HALF_SQUARES_SCALE))?;
            return total.add_device(inner(g.clone(), g)?, HALF_SQUARES_SCALE.powi(-2));
        }
        total.add_device(g.try_square()?.try_sum()?, 1.0)
    }
}

/// The sum of `g·0`, on `g`'s device: 0 exactly when every value of `g` is finite, NaN
/// otherwise (unlike a sum of squares, which overflows on large finite values). Probes add
/// up, so many tensors are checked with one number. In half precision, `⟨g, g·0⟩`.
fn finite_probe<E: FloatDtype, D: HostAccess<E>>(g: Flat<E, D>) -> Result<Tensor<Rank0, E, D>> {
    let zeros = g.clone().try_mul(E::zero())?;
    if is_half::<E>() {
        return inner(g, zeros);
    }
    Ok(zeros.try_sum()?)
}

impl<D: HostAccess<f32> + HostAccess<Half>> Unscale<D> for Composed {
    /// Without leaving the device: each gradient of `from` becomes f32 there, and is added into
    /// its twin's gradient by differentiating `inv · Σ ⟨p, g⟩` over the tensors `p` of `into`
    /// (one matrix product each way per tensor). One number comes to the host: the sum of
    /// every gradient's `finite_probe`. (`scratch` is not used.)
    fn unscale(
        from: &dyn Params<Half, D>,
        from_grads: &mut Gradients<Half, D>,
        into: &dyn Params<f32, D>,
        grads: &mut Gradients<f32, D>,
        inv: f64,
        _scratch: &mut Scratch<f32>,
    ) -> Result<bool> {
        let mut converted: Vec<Flat<f32, D>> = Vec::new();
        let mut check = Total::<f32, D>::default();
        from.each(&mut |_, tensor| {
            let g = tensor.grad_flat(from_grads)?.try_to_dtype::<f32>()?;
            check.add_device(finite_probe(g.clone())?, 1.0)?;
            converted.push(g);
            Ok(())
        })?;
        if !check.value().is_finite() {
            return Ok(false);
        }
        let mut converted = converted.into_iter();
        let mut total: Option<Tensor<Rank0, f32, D, OwnedTape<f32, D>>> = None;
        into.each(&mut |name, tensor| {
            let g = converted.next().ok_or_else(|| {
                Error::msg(format!("16-mixed: `{name}` has no half-precision twin"))
            })?;
            let d = inner(tensor.traced_flat()?, g)?;
            total = Some(match total.take() {
                Some(t) => t.try_add(d)?,
                None => d,
            });
            Ok(())
        })?;
        if let Some(total) = total {
            // The gradients so far join the tape (on a zero that adds nothing), so that the
            // backward adds into them; the tape gives them back with the additions.
            let so_far = total
                .device()
                .try_zeros::<Rank0>()?
                .traced(std::mem::replace(grads, Gradients::leaky()));
            *grads = total.try_mul(inv as f32)?.try_add(so_far)?.try_backward()?;
        }
        Ok(true)
    }
}

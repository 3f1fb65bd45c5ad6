//! What the trainer does to gradients between backward and the optimizer step, over a whole
//! module: the clipping norm (PyTorch's `clip_grad_norm_`) and the anomaly check.
//!
//! Clipping is decided here ([`Clip`]) and done by the optimizer's step as it reads each
//! gradient: on the CPU to the gradient in place, on CUDA to its copy on the device. The norm
//! and the anomaly check reduce each gradient where it lives too, and add the results up
//! there ([`Total`]): one number per step comes to the host, not one per tensor.

use dfdx::shapes::Rank0;
use dfdx::tensor::{Gradients, OwnedTape, Tensor, Trace};
use dfdx::tensor_ops::{Backward, SumTo, TryAdd, TryMul};

use super::{Clip, Optim};
use crate::freeze::Freezing;
use crate::kernels::{GradSum, Reduce, Total};
use crate::walk::{AnyTensor, EachParam, Params};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// The parameters of `P` that the optimizer `config` steps ([`Optim::params`]) and
/// `frozen` does not freeze.
pub(crate) struct Selected<'p, P> {
    pub params: P,
    pub config: &'p Optim,
    pub frozen: &'p Freezing,
}

impl<E: FloatDtype, D: TrainDevice<E>, P: Params<E, D>> Params<E, D> for Selected<'_, P> {
    fn each(&self, f: &mut EachParam<'_, E, D>) -> Result<()> {
        let (config, frozen) = (self.config, self.frozen);
        self.params.each(
            &mut |name, tensor: &dyn AnyTensor<E, D>| match config.selects(name)
                && !frozen.is_frozen(name)
            {
                true => f(name, tensor),
                false => Ok(()),
            },
        )
    }
}

/// Adds the gradients of `params` in `from` to theirs in `into`, where they live: the
/// backward of Σ ⟨p, g⟩ on a tape that holds `into` adds each g.
pub(crate) fn add_grads<E: FloatDtype, D: TrainDevice<E>, P: Params<E, D> + ?Sized>(
    params: &P,
    from: &mut Gradients<E, D>,
    into: Gradients<E, D>,
) -> Result<Gradients<E, D>> {
    let mut total: Option<Tensor<Rank0, E, D, OwnedTape<E, D>>> = None;
    params.each(&mut |_, tensor| {
        let g = tensor.grad_flat(from)?;
        let d = tensor.traced_flat()?.try_mul(g)?.try_sum()?;
        total = Some(match total.take() {
            Some(t) => t.try_add(d)?,
            None => d,
        });
        Ok(())
    })?;
    let Some(total) = total else {
        return Ok(into);
    };
    let so_far = total.device().try_zeros::<Rank0>()?.traced(into);
    Ok(total.try_add(so_far)?.try_backward()?)
}

/// Zeroes the gradients of `params` in `grads`.
pub(crate) fn zero_grads<E: FloatDtype, D: TrainDevice<E>, P: Params<E, D> + ?Sized>(
    params: &P,
    grads: &mut Gradients<E, D>,
) -> Result<()> {
    params.each(&mut |_, tensor| tensor.with_grad(grads, &mut |g| g.fill(E::zero())))
}

/// `clip_grad_norm_`: the clipping that bounds the gradients' joint L2 norm by `max_norm`. A
/// non-finite norm is returned as an error.
pub(crate) fn clip_norm<E: FloatDtype, D: TrainDevice<E>, P: Params<E, D> + ?Sized>(
    module: &P,
    grads: &mut Gradients<E, D>,
    max_norm: f64,
    total: impl FnOnce(f64) -> Result<f64>,
) -> Result<Clip> {
    let sum = sum_over(GradSum::Squares, module, grads)?;
    // `total` turns this rank's Σ g² into the run's (the identity but under SHARD_GRAD_OP,
    // where each rank holds its own tensors' gradients).
    let norm = total(sum)?.sqrt();
    if !norm.is_finite() {
        return Err(Error::msg(format!(
            "the gradient norm is {norm}: gradients were not clipped and no step was taken \
             (detect_anomaly names the parameter)"
        )));
    }
    let coef = max_norm / (norm + 1e-6);
    Ok(if coef < 1.0 {
        Clip::Scale(coef)
    } else {
        Clip::None
    })
}

/// `what` summed over the gradients of every trainable tensor of `module`, each reduced
/// where it lives.
fn sum_over<E: FloatDtype, D: TrainDevice<E>, P: Params<E, D> + ?Sized>(
    what: GradSum,
    module: &P,
    grads: &mut Gradients<E, D>,
) -> Result<f64> {
    let mut total = Total::default();
    module.each(&mut |_, tensor| D::Kernels::grad_sum(what, tensor, grads, &mut total))?;
    Ok(total.value())
}

/// The first parameter whose gradient holds NaN or infinity (`detect_anomaly`).
pub(crate) fn first_non_finite<E: FloatDtype, D: TrainDevice<E>, P: Params<E, D> + ?Sized>(
    module: &P,
    grads: &mut Gradients<E, D>,
) -> Result<Option<String>> {
    if sum_over(GradSum::FiniteProbe, module, grads)?.is_finite() {
        return Ok(None);
    }
    // Something is not finite: which tensor, one number at a time.
    let mut found = None;
    module.each(&mut |name, tensor| {
        if found.is_none() {
            let mut one = Total::default();
            D::Kernels::grad_sum(GradSum::FiniteProbe, tensor, grads, &mut one)?;
            if !one.value().is_finite() {
                found = Some(name.to_string());
            }
        }
        Ok(())
    })?;
    Ok(found)
}

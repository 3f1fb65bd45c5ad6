//! What the trainer does to gradients between backward and the optimizer step, over a whole
//! module: the clipping norm (PyTorch's `clip_grad_norm_`) and the anomaly check.
//!
//! Clipping is decided here ([`Clip`]) and done by the optimizer's step as it reads each
//! gradient: on the CPU to the gradient in place, on CUDA to its copy on the device. The norm
//! and the anomaly check reduce each gradient where it lives too, and add the results up
//! there ([`Total`]): one number per step comes to the host, not one per tensor.

use dfdx::tensor::Gradients;

use super::Clip;
use crate::kernels::{GradSum, Reduce, Total};
use crate::walk::Params;
use crate::{Error, FloatDtype, Result, TrainDevice};

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

//! What the trainer does to gradients between backward and the optimizer step: clipping by
//! norm or value (PyTorch's `clip_grad_norm_` / `clip_grad_value_`) and the anomaly check.

use dfdx::nn::TensorCollection;
use dfdx::tensor::Gradients;

use crate::walk::{self, Item};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// How gradients are clipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClipAlgorithm {
    /// Scale all gradients so that their joint L2 norm is at most the clip value.
    #[default]
    Norm,
    /// Clamp every gradient value to `[-clip, clip]`.
    Value,
}

impl std::str::FromStr for ClipAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "norm" => Ok(ClipAlgorithm::Norm),
            "value" => Ok(ClipAlgorithm::Value),
            other => Err(Error::config(
                "gradient_clip_algorithm",
                format!("`{other}` is not \"norm\" or \"value\""),
            )),
        }
    }
}

/// Calls `f(name, gradient)` for every trainable parameter of `M`, in walk order.
pub(crate) fn for_each<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &M,
    grads: &mut Gradients<E, D>,
    mut f: impl FnMut(&str, &mut [E]),
) -> Result<()> {
    walk::read(module, |name, item| match item {
        Item::Tensor {
            tensor,
            trainable: true,
        } => tensor.with_grad(grads, &mut |g| f(&name, g)),
        _ => Ok(()),
    })
}

/// `clip_grad_norm_`: the gradients' joint L2 norm before clipping. A non-finite norm is
/// returned as an error and nothing is clipped.
pub(crate) fn clip_norm<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &M,
    grads: &mut Gradients<E, D>,
    max_norm: f64,
    total: impl FnOnce(f64) -> Result<f64>,
) -> Result<f64> {
    let mut sum = 0.0f64;
    for_each(module, grads, |_, g| sum += sum_of_squares(g))?;
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
    if coef < 1.0 {
        let c = E::from(coef).unwrap_or_else(E::one);
        for_each(module, grads, |_, g| g.iter_mut().for_each(|v| *v *= c))?;
    }
    Ok(norm)
}

/// Σ v² of one tensor, in eight lanes of `E` (as PyTorch, in the tensor's dtype; the lanes let
/// the compiler vectorize), then in f64 across tensors.
fn sum_of_squares<E: FloatDtype>(g: &[E]) -> f64 {
    let mut lanes = [E::zero(); 8];
    let chunks = g.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            *lane += v * v;
        }
    }
    let tail = rest.iter().fold(E::zero(), |a, &v| a + v * v);
    lanes
        .iter()
        .chain([&tail])
        .map(|v| v.to_f64().unwrap_or(f64::NAN))
        .sum()
}

/// `clip_grad_value_`.
pub(crate) fn clip_value<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &M,
    grads: &mut Gradients<E, D>,
    clip: f64,
) -> Result<()> {
    let c = E::from(clip).unwrap_or_else(E::infinity);
    for_each(module, grads, |_, g| {
        g.iter_mut().for_each(|v| *v = v.max(-c).min(c))
    })
}

/// The first parameter whose gradient holds NaN or infinity (`detect_anomaly`).
pub(crate) fn first_non_finite<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &M,
    grads: &mut Gradients<E, D>,
) -> Result<Option<String>> {
    let mut found = None;
    for_each(module, grads, |name, g| {
        if found.is_none() && g.iter().any(|v| !v.is_finite()) {
            found = Some(name.to_string());
        }
    })?;
    Ok(found)
}

//! What the trainer does to gradients between backward and the optimizer step: clipping by
//! norm or value (PyTorch's `clip_grad_norm_` / `clip_grad_value_`) and the anomaly check.
//!
//! Clipping is decided here ([`Clip`]) and done by the optimizer's step as it reads each
//! gradient: on the CPU to the gradient in place, on CUDA to its copy on the device. The norm
//! and the anomaly check reduce each gradient where it lives too, and add the results up
//! there ([`Total`]): one number per step comes to the host, not one per tensor.

use dfdx::nn::TensorCollection;
use dfdx::shapes::Rank0;
use dfdx::tensor::{Gradients, Tensor};
use dfdx::tensor_ops::TryAdd;

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

/// What clipping does to every gradient before the optimizer's step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Clip {
    /// Nothing.
    #[default]
    None,
    /// Multiply by this factor (clipping by norm).
    Scale(f64),
    /// Clamp to `[-c, c]` (clipping by value).
    Clamp(f64),
}

impl Clip {
    /// Clips `g` in place, in its dtype (as PyTorch).
    pub(crate) fn apply<E: FloatDtype>(self, g: &mut [E]) {
        match self {
            Clip::None => {}
            Clip::Scale(coef) => {
                let c = E::from(coef).unwrap_or_else(E::one);
                g.iter_mut().for_each(|v| *v *= c);
            }
            Clip::Clamp(clip) => {
                let c = E::from(clip).unwrap_or_else(E::infinity);
                g.iter_mut().for_each(|v| *v = v.max(-c).min(c));
            }
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

/// `clip_grad_norm_`: the clipping that bounds the gradients' joint L2 norm by `max_norm`. A
/// non-finite norm is returned as an error.
pub(crate) fn clip_norm<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &M,
    grads: &mut Gradients<E, D>,
    max_norm: f64,
    total: impl FnOnce(f64) -> Result<f64>,
) -> Result<Clip> {
    let sum = GradSum::Squares.over(module, grads)?;
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

/// A number summed over gradients, each reduced where it lives ([`Total`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum GradSum {
    /// Σ g², for the clipping norm.
    Squares,
    /// 0 when every value is finite, NaN otherwise: the anomaly check (a sum of squares would
    /// overflow on large finite values).
    FiniteProbe,
}

impl GradSum {
    /// Of one gradient the host holds.
    pub(crate) fn on_host<E: FloatDtype>(self, g: &[E]) -> f64 {
        match self {
            GradSum::Squares => sum_of_squares(g),
            GradSum::FiniteProbe if g.iter().all(|v| v.is_finite()) => 0.0,
            GradSum::FiniteProbe => f64::NAN,
        }
    }

    /// Over the gradients of every trainable tensor of `module`.
    fn over<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
        self,
        module: &M,
        grads: &mut Gradients<E, D>,
    ) -> Result<f64> {
        let mut total = Total::default();
        walk::read(module, |_, item| match item {
            Item::Tensor {
                tensor,
                trainable: true,
            } => tensor.add_grad_sum(self, grads, &mut total),
            _ => Ok(()),
        })?;
        Ok(total.value())
    }
}

/// Σ v² of one tensor, in eight lanes (the lanes let the compiler vectorize) of the tensor's
/// dtype, or of f32 for half precision (whose squares overflow at 256), as PyTorch
/// accumulates; then in f64 across tensors.
pub(crate) fn sum_of_squares<E: FloatDtype>(g: &[E]) -> f64 {
    if crate::device::is_half::<E>() {
        return in_lanes(g, |v| v.to_f32().unwrap_or(f32::NAN));
    }
    in_lanes(g, |v| v)
}

/// Σ widen(v)² in eight lanes of the widened type.
fn in_lanes<E: Copy, A: num_traits::Float + std::ops::AddAssign>(
    g: &[E],
    widen: impl Fn(E) -> A,
) -> f64 {
    let mut lanes = [A::zero(); 8];
    let chunks = g.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            let v = widen(v);
            *lane += v * v;
        }
    }
    let tail = rest.iter().fold(A::zero(), |a, &v| a + widen(v) * widen(v));
    lanes
        .iter()
        .chain([&tail])
        .map(|v| v.to_f64().unwrap_or(f64::NAN))
        .sum()
}

/// The first parameter whose gradient holds NaN or infinity (`detect_anomaly`).
pub(crate) fn first_non_finite<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &M,
    grads: &mut Gradients<E, D>,
) -> Result<Option<String>> {
    if GradSum::FiniteProbe.over(module, grads)?.is_finite() {
        return Ok(None);
    }
    // Something is not finite: which tensor, one number at a time.
    let mut found = None;
    walk::read(module, |name, item| match item {
        Item::Tensor {
            tensor,
            trainable: true,
        } if found.is_none() => {
            let mut one = Total::default();
            tensor.add_grad_sum(GradSum::FiniteProbe, grads, &mut one)?;
            if !one.value().is_finite() {
                found = Some(name);
            }
            Ok(())
        }
        _ => Ok(()),
    })?;
    Ok(found)
}

/// A sum of one number per gradient (Σ g², a finiteness probe): in f64 for gradients the host
/// holds, as a scalar on the device for gradients that live there. The device's numbers are
/// added where they are, so a whole model's sum comes to the host once: on CUDA, one copy and
/// one wait per step instead of one per tensor.
pub(crate) struct Total<E: FloatDtype, D: TrainDevice<E>> {
    host: f64,
    device: Option<Tensor<Rank0, E, D>>,
    /// What one of the device's numbers is worth.
    unit: f64,
}

impl<E: FloatDtype, D: TrainDevice<E>> Default for Total<E, D> {
    fn default() -> Self {
        Self {
            host: 0.0,
            device: None,
            unit: 1.0,
        }
    }
}

impl<E: FloatDtype, D: TrainDevice<E>> Total<E, D> {
    pub(crate) fn add_host(&mut self, v: f64) {
        self.host += v;
    }

    pub(crate) fn add_device(&mut self, v: Tensor<Rank0, E, D>) -> Result<()> {
        self.add_device_in(v, 1.0)
    }

    /// Adds `v`, counted in units of `unit` (a scaled sum, [`super::composed`]'s half
    /// precision squares); every device number of a total has the same unit.
    pub(crate) fn add_device_in(&mut self, v: Tensor<Rank0, E, D>, unit: f64) -> Result<()> {
        if self.device.is_some() && self.unit != unit {
            return Err(Error::msg(format!(
                "summing over the gradients: units {unit} and {}",
                self.unit
            )));
        }
        self.unit = unit;
        self.device = Some(match self.device.take() {
            Some(sum) => sum
                .try_add(v)
                .map_err(|e| Error::Device(format!("summing over the gradients: {e:?}")))?,
            None => v,
        });
        Ok(())
    }

    /// The sum, on the host (NaN if the device's part is not a number).
    pub(crate) fn value(self) -> f64 {
        let device = match self.device {
            Some(t) => {
                let v = t.as_vec().first().and_then(|v| v.to_f64());
                v.unwrap_or(f64::NAN) * self.unit
            }
            None => 0.0,
        };
        self.host + device
    }
}

#[cfg(test)]
mod tests {
    use dfdx::tensor::{Cpu, TensorFrom};

    use super::Total;

    #[test]
    fn a_total_adds_the_hosts_numbers_to_the_devices_sum() {
        let dev = Cpu::default();
        let mut t = Total::<f32, Cpu>::default();
        t.add_host(0.5);
        t.add_device(dev.tensor(2.0)).unwrap();
        t.add_device(dev.tensor(4.0)).unwrap();
        t.add_host(0.25);
        assert_eq!(t.value(), 6.75);
        assert_eq!(Total::<f32, Cpu>::default().value(), 0.0, "nothing added");
        let mut t = Total::<f32, Cpu>::default();
        t.add_device(dev.tensor(f32::NAN)).unwrap();
        t.add_device(dev.tensor(1.0)).unwrap();
        assert!(
            t.value().is_nan(),
            "a NaN on the device is not lost in the sum"
        );
    }
}

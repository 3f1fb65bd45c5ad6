//! What the op families take besides tensors: a fused sequence's description ([`Op`],
//! [`Describe`], [`NormState`]), an optimizer step's rule ([`StepRule`]), and sums over
//! gradients ([`GradSum`], [`Total`]).

use dfdx::shapes::Rank0;
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::TryAdd;

use crate::device::{FloatDtype, HostAccess};
use crate::optim::{Clip, Optim, OptimKind};
use crate::shapes::{ConvOptions, Dyn4};
use crate::{Error, Result};

/// What one layer of a fused sequence computes in training, described for any implementation
/// (see [`Fuse`](super::Fuse)).
pub enum Op<'a, E: FloatDtype, D: HostAccess<E>> {
    /// A convolution with these parameters.
    Conv {
        /// `[C_out, C_in / groups, K, K]`.
        weight: Dyn4<E, D>,
        /// `[C_out]`, if the layer has one.
        bias: Option<Tensor<(usize,), E, D>>,
        /// Stride, padding, dilation and groups.
        opts: ConvOptions,
    },
    /// Batch normalization by the batch's statistics, which move the layer's running ones.
    BatchNorm(&'a mut dyn NormState<E, D>),
    /// `max(x, 0)`.
    ReLU,
    /// `relu(f(x) + r(x))`; `r` empty is the identity.
    Residual {
        /// The residual branch.
        f: Vec<Op<'a, E, D>>,
        /// The shortcut.
        r: Vec<Op<'a, E, D>>,
    },
}

/// A module that a fused sequence can run: it describes its training forward as [`Op`]s.
pub trait Describe<E: FloatDtype, D: HostAccess<E>> {
    /// Appends this module's ops, in order, to `ops`.
    fn describe<'a>(&'a mut self, ops: &mut Vec<Op<'a, E, D>>) -> Result<()>;
}

/// A batch norm layer as a fused sequence sees it, whatever its channel count.
pub trait NormState<E: FloatDtype, D: HostAccess<E>> {
    /// The scale γ, `[C]`.
    fn weight(&self) -> Result<Tensor<(usize,), E, D>>;
    /// The shift β, `[C]`.
    fn bias(&self) -> Result<Tensor<(usize,), E, D>>;
    /// Added to the variance before its square root.
    fn epsilon(&self) -> f64;
    /// Moves the running statistics towards a batch's per-channel `mean` and biased `var`,
    /// taken over `per_channel` values each (the variance kept is the unbiased one); fewer
    /// than two values per channel are an error.
    fn update_running(
        &mut self,
        mean: Tensor<(usize,), E, D>,
        var: Tensor<(usize,), E, D>,
        per_channel: usize,
    ) -> Result<()>;
    /// Whether the running step froze its weight (`crate::freeze`): it then normalizes by
    /// its running statistics, which a fused chain does not, so its body runs layer by layer.
    fn frozen(&self) -> bool {
        false
    }
}

/// Whether any batch norm among `ops` is frozen.
pub(crate) fn any_frozen_norm<E: FloatDtype, D: HostAccess<E>>(ops: &[Op<'_, E, D>]) -> bool {
    ops.iter().any(|op| match op {
        Op::BatchNorm(norm) => norm.frozen(),
        Op::Residual { f, r } => any_frozen_norm(f) || any_frozen_norm(r),
        _ => false,
    })
}

/// What one optimizer step does to each parameter.
#[derive(Debug, Clone, Copy)]
pub struct StepRule<'a> {
    /// The optimizer's settings (its learning rate and momentum those of this step).
    pub config: &'a Optim,
    /// The step's number, from 1.
    pub step: u64,
    /// The clipping each gradient gets first.
    pub clip: Clip,
}

impl StepRule<'_> {
    /// The buffers one parameter's update keeps between steps, named as in PyTorch's
    /// `optimizer.state_dict()`.
    pub fn buffers(config: &Optim) -> &'static [&'static str] {
        match config.kind() {
            OptimKind::Sgd => &["momentum_buffer"],
            OptimKind::Adam | OptimKind::AdamW => &["exp_avg", "exp_avg_sq"],
            OptimKind::RmsProp => &["square_avg", "momentum_buffer", "grad_avg"],
        }
    }
}

/// The host kernels' workspace for an optimizer's steps and 16-mixed's unscaling: host
/// copies, reused from step to step.
pub type Scratch<E> = Vec<Vec<E>>;

/// A number summed over gradients, each reduced where it lives ([`Total`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GradSum {
    /// Σ g², for the clipping norm.
    Squares,
    /// 0 when every value is finite, NaN otherwise: the anomaly check (a sum of squares would
    /// overflow on large finite values).
    FiniteProbe,
}

/// A sum of one number per gradient (Σ g², a finiteness probe): in f64 for gradients the host
/// holds, as a scalar on the device for gradients that live there. The device's numbers are
/// added where they are, so a whole model's sum comes to the host once: on CUDA, one copy and
/// one wait per step instead of one per tensor.
pub struct Total<E: FloatDtype, D: HostAccess<E>> {
    host: f64,
    device: Option<Tensor<Rank0, E, D>>,
    /// What one of the device's numbers is worth.
    unit: f64,
}

impl<E: FloatDtype, D: HostAccess<E>> Default for Total<E, D> {
    fn default() -> Self {
        Self {
            host: 0.0,
            device: None,
            unit: 1.0,
        }
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Total<E, D> {
    /// Adds a number the host computed.
    pub fn add_host(&mut self, v: f64) {
        self.host += v;
    }

    /// Adds a number on the device, counted in units of `unit` (a scaled sum: half
    /// precision's squares); every device number of a total has the same unit.
    pub fn add_device(&mut self, v: Tensor<Rank0, E, D>, unit: f64) -> Result<()> {
        if self.device.is_some() && self.unit != unit {
            return Err(Error::msg(format!(
                "summing over the gradients: units {unit} and {}",
                self.unit
            )));
        }
        self.unit = unit;
        self.device = Some(match self.device.take() {
            Some(sum) => sum.try_add(v)?,
            None => v,
        });
        Ok(())
    }

    /// The sum, on the host (NaN if the device's part is not a number).
    pub fn value(self) -> f64 {
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
        t.add_device(dev.tensor(2.0), 1.0).unwrap();
        t.add_device(dev.tensor(4.0), 1.0).unwrap();
        t.add_host(0.25);
        assert_eq!(t.value(), 6.75);
        assert_eq!(Total::<f32, Cpu>::default().value(), 0.0, "nothing added");
        let mut t = Total::<f32, Cpu>::default();
        t.add_device(dev.tensor(f32::NAN), 1.0).unwrap();
        t.add_device(dev.tensor(1.0), 1.0).unwrap();
        assert!(
            t.value().is_nan(),
            "a NaN on the device is not lost in the sum"
        );
    }
}

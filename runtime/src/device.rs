//! The dtype and device bounds of training, bundled so that user code writes `E` and `D` only.

use dfdx::shapes::Dtype;
use dfdx::tensor::{Cpu, Gradients, Tensor};
use dfdx::tensor_ops::Device;

use crate::{Error, Result};

/// A float dtype that fulmen can train in (`f32`, `f64`).
pub trait FloatDtype:
    Dtype + num_traits::Float + rand_distr::uniform::SampleUniform + Send + Sync
{
}

impl<E: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform + Send + Sync> FloatDtype
    for E
{
}

/// A device that fulmen can train on: dfdx's [`Device`] plus host access to the parameter and
/// gradient buffers that fulmen's optimizers update.
pub trait TrainDevice<E: FloatDtype>: Device<E> {
    /// Calls `f` with the parameter's values and its gradient as host slices; whatever `f`
    /// leaves in the parameter slice is written back into the tensor.
    fn update_param<S: dfdx::shapes::Shape>(
        param: &mut Tensor<S, E, Self>,
        grads: &mut Gradients<E, Self>,
        scratch: &mut Vec<E>,
        f: impl FnOnce(&mut [E], &[E]),
    ) -> Result<()>;

    /// Calls `f` with the parameter's gradient as a host slice (clipping, anomaly checks,
    /// checkpoints of accumulated gradients); what `f` leaves there is the gradient.
    fn with_grad<S: dfdx::shapes::Shape>(
        param: &Tensor<S, E, Self>,
        grads: &mut Gradients<E, Self>,
        f: impl FnOnce(&mut [E]),
    ) -> Result<()>;

    /// Moves the gradient of `t` out of `grads` (zeros if it had none), so that an op's
    /// backward can read it while it writes its inputs' gradients; [`TrainDevice::restore_grad`]
    /// puts it back.
    fn take_grad<S: dfdx::shapes::Shape>(
        t: &Tensor<S, E, Self>,
        grads: &mut Gradients<E, Self>,
    ) -> Result<Vec<E>>;

    /// Puts back a gradient that [`TrainDevice::take_grad`] took.
    fn restore_grad<S: dfdx::shapes::Shape>(
        t: &Tensor<S, E, Self>,
        grads: &mut Gradients<E, Self>,
        values: Vec<E>,
    ) -> Result<()>;
}

macro_rules! cpu_train_device {
    ($($e:ty),*) => {$(
        impl TrainDevice<$e> for Cpu {
            fn update_param<S: dfdx::shapes::Shape>(
                param: &mut Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
                scratch: &mut Vec<$e>,
                f: impl FnOnce(&mut [$e], &[$e]),
            ) -> Result<()> {
                let grad = grads
                    .get_or_alloc_mut(param)
                    .map_err(|e| Error::Device(format!("{e:?}")))?;
                scratch.resize(grad.len(), num_traits::Zero::zero());
                param.copy_into(scratch);
                f(scratch, grad);
                param.copy_from(scratch);
                Ok(())
            }

            fn with_grad<S: dfdx::shapes::Shape>(
                param: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
                f: impl FnOnce(&mut [$e]),
            ) -> Result<()> {
                let grad = grads
                    .get_or_alloc_mut(param)
                    .map_err(|e| Error::Device(format!("{e:?}")))?;
                f(grad);
                Ok(())
            }

            fn take_grad<S: dfdx::shapes::Shape>(
                t: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
            ) -> Result<Vec<$e>> {
                let grad = grads
                    .get_or_alloc_mut(t)
                    .map_err(|e| Error::Device(format!("{e:?}")))?;
                Ok(std::mem::take(&mut **grad))
            }

            fn restore_grad<S: dfdx::shapes::Shape>(
                t: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
                values: Vec<$e>,
            ) -> Result<()> {
                let grad = grads
                    .get_or_alloc_mut(t)
                    .map_err(|e| Error::Device(format!("{e:?}")))?;
                **grad = values;
                Ok(())
            }
        }
    )*};
}

/// The dtype of `precision="16-mixed"`: f16 storage, f32 arithmetic in dfdx's kernels.
pub type Half = dfdx::dtypes::AMP<half::f16>;

cpu_train_device!(f32, f64, Half);

/// Which hardware the trainer runs on, as named by Lightning's `accelerator` flag.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Accelerator {
    Cpu,
    Gpu,
    Auto,
}

impl std::str::FromStr for Accelerator {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s.to_ascii_lowercase().as_str() {
            "cpu" => Ok(Accelerator::Cpu),
            "gpu" | "cuda" => Ok(Accelerator::Gpu),
            "auto" => Ok(Accelerator::Auto),
            other => Err(Error::config(
                "accelerator",
                format!("`{other}` is not an accelerator; use \"cpu\", \"gpu\" (or \"cuda\") or \"auto\""),
            )),
        }
    }
}

impl Accelerator {
    /// Resolves `auto` and refuses what this build cannot run.
    pub(crate) fn resolve(self) -> Result<Accelerator> {
        match self {
            Accelerator::Cpu | Accelerator::Auto => Ok(Accelerator::Cpu),
            Accelerator::Gpu => Err(Error::config(
                "accelerator",
                "\"gpu\" was requested but this fulmen was built without CUDA support; \
                 rebuild with `--features cuda`, or pass accelerator \"cpu\" (or \"auto\")",
            )),
        }
    }
}

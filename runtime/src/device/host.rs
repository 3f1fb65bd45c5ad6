//! [`HostAccess`]: what fulmen needs of a device beyond dfdx's ops. Its errors convert into
//! fulmen's with `?`, and the host reaches its gradient buffers (checkpoints of accumulated
//! gradients, the host kernels' backward, DDP over MPI): on the CPU in place, on CUDA through
//! copies.

use std::any::Any;
use std::sync::Arc;

use dfdx::shapes::{HasShape, Shape};
#[cfg(feature = "cuda")]
use dfdx::tensor::Cuda;
use dfdx::tensor::{Cpu, Gradients, Tensor};
use dfdx::tensor_ops::Device;

use super::dtype::{FloatDtype, Half};
use crate::{DeviceFailure, Result};

/// A tensor's values where they lie in host memory, kept alive: a clone of the tensor (dfdx
/// copies a tensor's buffer before writing it while another handle shares it, so the values
/// stay as they are while `keep` lives), the address of the first value, and the strides in
/// values.
pub struct InHostMemory<S: Shape> {
    /// Owns the values.
    pub keep: Arc<dyn Any + Send + Sync>,
    /// The address of the first value.
    pub addr: usize,
    /// The distance between neighbours along each axis, in values.
    pub strides: S::Concrete,
}

/// Only fulmen implements [`HostAccess`]: the host kernels read the memory that
/// [`HostAccess::in_host_memory`] points at.
mod sealed {
    pub trait Sealed {}
    impl Sealed for dfdx::tensor::Cpu {}
    #[cfg(feature = "cuda")]
    impl Sealed for dfdx::tensor::Cuda {}
}

/// A device whose errors convert with `?` and whose gradient buffers the host can reach
/// (sealed: implemented for dfdx's `Cpu` and `Cuda`).
pub trait HostAccess<E: FloatDtype>: Device<E, Err: DeviceFailure> + sealed::Sealed {
    /// Calls `f` with the gradient of `param` in `grads` (allocated, zeroed, if it has none)
    /// as a host slice; what `f` leaves there is the gradient.
    fn with_grad<S: Shape>(
        param: &Tensor<S, E, Self>,
        grads: &mut Gradients<E, Self>,
        f: impl FnOnce(&mut [E]),
    ) -> Result<()>;

    /// Moves the gradient of `t` out of `grads` (zeros if it had none), so that an op's
    /// backward can read it while it writes its inputs' gradients; [`restore_grad`] puts it
    /// back.
    ///
    /// [`restore_grad`]: HostAccess::restore_grad
    fn take_grad<S: Shape>(
        t: &Tensor<S, E, Self>,
        grads: &mut Gradients<E, Self>,
    ) -> Result<Vec<E>>;

    /// Puts back a gradient that [`take_grad`](HostAccess::take_grad) took.
    fn restore_grad<S: Shape>(
        t: &Tensor<S, E, Self>,
        grads: &mut Gradients<E, Self>,
        values: Vec<E>,
    ) -> Result<()>;

    /// Where `t`'s values lie in host memory (on the CPU; `None` on devices whose tensors live
    /// elsewhere, and for an empty tensor). The address is that of the tensor's first value in
    /// the buffer `keep` owns, and the strides are the tensor's: the host kernels read the
    /// values through it.
    fn in_host_memory<S: Shape>(_t: &Tensor<S, E, Self>) -> Option<InHostMemory<S>> {
        None
    }
}

macro_rules! cpu_host_access {
    ($($e:ty),*) => {$(
        impl HostAccess<$e> for Cpu {
            fn with_grad<S: Shape>(
                param: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
                f: impl FnOnce(&mut [$e]),
            ) -> Result<()> {
                f(grads.get_or_alloc_mut(param)?);
                Ok(())
            }

            fn take_grad<S: Shape>(
                t: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
            ) -> Result<Vec<$e>> {
                Ok(std::mem::take(&mut **grads.get_or_alloc_mut(t)?))
            }

            fn restore_grad<S: Shape>(
                t: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
                values: Vec<$e>,
            ) -> Result<()> {
                **grads.get_or_alloc_mut(t)? = values;
                Ok(())
            }

            fn in_host_memory<S: Shape>(t: &Tensor<S, $e, Self>) -> Option<InHostMemory<S>> {
                let dims = t.shape().concrete();
                if t.shape().num_elements() == 0 {
                    return None;
                }
                // The addresses of the first value and of its neighbour along each axis, by
                // dfdx's own indexing: their distances are the strides.
                let origin = S::Concrete::default();
                let addr = |i: S::Concrete| &t[i] as *const $e as usize;
                let base = addr(origin);
                let mut strides = S::Concrete::default();
                for axis in 0..S::NUM_DIMS {
                    if dims[axis] > 1 {
                        let mut next = origin;
                        next[axis] = 1;
                        let bytes = addr(next).checked_sub(base)?;
                        strides[axis] = bytes / std::mem::size_of::<$e>();
                    }
                }
                Some(InHostMemory {
                    keep: Arc::new(t.clone()),
                    addr: base,
                    strides,
                })
            }
        }
    )*};
}

cpu_host_access!(f32, f64, Half);

/// On CUDA the host works on copies: a gradient is copied to the host, changed there, and
/// copied back.
#[cfg(feature = "cuda")]
macro_rules! cuda_host_access {
    ($($e:ty),*) => {$(
        impl HostAccess<$e> for Cuda {
            fn with_grad<S: Shape>(
                param: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
                f: impl FnOnce(&mut [$e]),
            ) -> Result<()> {
                let grad = grads.get_or_alloc_mut(param)?;
                let device = grad.device();
                let mut host = device.dtoh_sync_copy(grad)?;
                f(&mut host);
                Ok(device.htod_sync_copy_into(&host, grad)?)
            }

            fn take_grad<S: Shape>(
                t: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
            ) -> Result<Vec<$e>> {
                let grad = grads.get_or_alloc_mut(t)?;
                Ok(grad.device().dtoh_sync_copy(grad)?)
            }

            fn restore_grad<S: Shape>(
                t: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
                values: Vec<$e>,
            ) -> Result<()> {
                let grad = grads.get_or_alloc_mut(t)?;
                Ok(grad.device().htod_sync_copy_into(&values, grad)?)
            }
        }
    )*};
}

#[cfg(feature = "cuda")]
cuda_host_access!(f32, f64, Half);

//! The devices fulmen trains on, and the bounds that user code writes as `E` and `D`.
//!
//! [`TrainDevice`] is dfdx's `Device` with what fulmen adds: errors that convert with `?` and
//! host access to gradient buffers ([`HostAccess`]), the kernels its layers, optimizer steps
//! and gradient reductions run ([`TrainDevice::Kernels`]: fulmen's host kernels on the CPU,
//! cuDNN's convolutions and dfdx's ops on CUDA; see [`crate::kernels`]), and a reseedable
//! random stream.
//! [`FloatDtype`] and [`Half`] are the dtypes; [`Accelerator`], [`Devices`] and [`RunDevice`]
//! resolve Lightning's `accelerator` and `devices` flags.

mod dtype;
mod host;
mod sample;
mod select;

pub(crate) use dtype::{is_half, of_f64};
pub use dtype::{FloatDtype, Half};
pub use host::{HostAccess, InHostMemory};
pub use sample::{rand, randn};
#[cfg(feature = "cuda")]
pub(crate) use select::open_cuda;
pub use select::{gpu_count, Accelerator, Devices, RunDevice};

use dfdx::tensor::Cpu;
#[cfg(feature = "cuda")]
use dfdx::tensor::Cuda;

use crate::kernels::Kernels;

/// A device that fulmen can train on: dfdx's `Device` with host access to its buffers
/// ([`HostAccess`]) and the kernels fulmen runs on it.
pub trait TrainDevice<E: FloatDtype>: HostAccess<E> {
    /// The implementation of every op family fulmen's layers, optimizers and gradient
    /// reductions call ([`crate::kernels`]): the host kernels on the CPU (or, while a
    /// [`crate::kernels::cpu_runs`] guard lives on the thread, the composed ones), cuDNN's
    /// convolutions and dfdx's ops on CUDA.
    type Kernels: Kernels<E, Self>;

    /// The device to run step `seed`'s random operations on (dropout, augmentation drawn
    /// from the batch's device). On the CPU a fresh generator seeded with `seed`, so that a
    /// resumed run draws the numbers an uninterrupted one did; on CUDA the same device (dfdx
    /// cannot reseed it without rebuilding its handles and kernels).
    fn reseeded(&self, seed: u64) -> Self;
}

macro_rules! train_devices {
    ($($e:ty),*) => {$(
        impl TrainDevice<$e> for Cpu {
            type Kernels = crate::kernels::OnCpu;

            fn reseeded(&self, seed: u64) -> Self {
                Cpu::seed_from_u64(seed)
            }
        }

        #[cfg(feature = "cuda")]
        impl TrainDevice<$e> for Cuda {
            type Kernels = crate::kernels::cudnn::Cudnn;

            fn reseeded(&self, _seed: u64) -> Self {
                self.clone()
            }
        }
    )*};
}

train_devices!(f32, f64, Half);

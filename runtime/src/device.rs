//! The dtype and device bounds of training, bundled so that user code writes `E` and `D` only.

use dfdx::shapes::Dtype;
#[cfg(feature = "cuda")]
use dfdx::tensor::Cuda;
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
    /// Whether fulmen's layers and optimizers run their host kernels on this device's tensors
    /// (the CPU, where they are the fastest path) or dfdx ops ([`crate::layers::composed`],
    /// `optim/composed.rs`), which stay on the device (CUDA, and the CPU while a
    /// [`cpu_runs_device_ops`] guard lives on the thread).
    fn host_kernels() -> bool;

    /// Calls `f` with the parameter's gradient as a host slice (checkpoints of accumulated
    /// gradients, and on the CPU the optimizer step, the clipping norm, the anomaly check and
    /// 16-mixed's unscaling); what `f` leaves there is the gradient.
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

    /// The device to run step `seed`'s random operations on (dropout, augmentation drawn
    /// from the batch's device). On the CPU a fresh generator seeded with `seed`, so that a
    /// resumed run draws the numbers an uninterrupted one did; on CUDA the same device (dfdx
    /// cannot reseed it without rebuilding its handles and kernels).
    fn reseeded(&self, seed: u64) -> Self;

    /// Puts back a gradient that [`TrainDevice::take_grad`] took.
    fn restore_grad<S: dfdx::shapes::Shape>(
        t: &Tensor<S, E, Self>,
        grads: &mut Gradients<E, Self>,
        values: Vec<E>,
    ) -> Result<()>;

    /// Where `t`'s values lie in host memory: the address of its first value and its strides
    /// in values (on the CPU; `None` on devices whose tensors live elsewhere, or for an empty
    /// tensor). [`Host::of`](crate::layers::host::Host::of) reads a recent kernel output in
    /// place by it.
    fn host_layout<S: dfdx::shapes::Shape>(
        _t: &Tensor<S, E, Self>,
    ) -> Option<(usize, S::Concrete)> {
        None
    }

    /// A shared handle on `t` that keeps its values alive, where they live in host memory
    /// (the CPU).
    fn keep<S: dfdx::shapes::Shape>(
        _t: &Tensor<S, E, Self>,
    ) -> Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> {
        None
    }

    /// Averages the trainable gradients of `model` across the ranks on the device itself,
    /// when `c` runs its collectives there (NCCL on CUDA); `Ok(false)` when it does not, and
    /// the gradients go through the host.
    fn average_on_device<M: dfdx::nn::TensorCollection<E, Self>>(
        _c: &dyn crate::distributed::Collective,
        _model: &M,
        _grads: &mut Gradients<E, Self>,
    ) -> Result<bool> {
        Ok(false)
    }
}

/// Whether `E` is a half-precision type. Its squares overflow at 256, and on CUDA dfdx's
/// reductions into a few values are slow in it (atomic adds on a few addresses: 45–55 ms for
/// 8M values into one on an H200, against 0.12 ms into 64 in f32), so fulmen sums it in f32:
/// as matrix products on the device, which cuBLAS accumulates in f32, and in f32 on the host.
pub(crate) fn is_half<E>() -> bool {
    std::mem::size_of::<E>() < 4
}

thread_local! {
    static CPU_RUNS_DEVICE_OPS: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

/// While the returned guard lives, training on the CPU on this thread runs what CUDA runs:
/// dfdx's ops in place of fulmen's host kernels, in the layers ([`crate::layers::composed`]),
/// the optimizer steps, the gradient reductions and 16-mixed's unscaling. For checking the GPU
/// path on a machine without a GPU (`tests/device_ops.rs` trains that way beside the host
/// kernels): slower, and the same results within rounding.
///
/// ```
/// use fulmen::layers::{conv2d, ConvOptions};
/// use fulmen::prelude::*;
///
/// let dev = Cpu::default();
/// let x: Tensor<(usize, usize, usize, usize), f32, Cpu> = dev.sample_normal_like(&(2, 3, 8, 8));
/// let w: Tensor<(usize, usize, usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, 3, 3, 3));
/// let opts = ConvOptions { padding: 1, ..Default::default() };
/// let on_host = conv2d(x.clone(), &w, None, opts).unwrap();
/// let as_on_cuda = {
///     let _guard = fulmen::device::cpu_runs_device_ops();
///     conv2d(x, &w, None, opts).unwrap() // an im2col gather and a matrix product
/// };
/// let (a, b) = (on_host.as_vec(), as_on_cuda.as_vec());
/// assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-4));
/// ```
pub fn cpu_runs_device_ops() -> DeviceOpsOnCpu {
    DeviceOpsOnCpu {
        previous: CPU_RUNS_DEVICE_OPS.replace(true),
        _thread: std::marker::PhantomData,
    }
}

/// The guard of [`cpu_runs_device_ops`]: the CPU runs the device's ops until it is dropped.
#[must_use = "the CPU runs the device's ops only while the guard lives"]
pub struct DeviceOpsOnCpu {
    previous: bool,
    /// The setting is the thread's: the guard stays on it.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Drop for DeviceOpsOnCpu {
    fn drop(&mut self) {
        CPU_RUNS_DEVICE_OPS.set(self.previous);
    }
}

macro_rules! cpu_train_device {
    ($($e:ty),*) => {$(
        impl TrainDevice<$e> for Cpu {
            fn host_kernels() -> bool {
                !CPU_RUNS_DEVICE_OPS.get()
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

            fn host_layout<S: dfdx::shapes::Shape>(
                t: &Tensor<S, $e, Self>,
            ) -> Option<(usize, S::Concrete)> {
                use dfdx::shapes::HasShape;
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
                Some((base, strides))
            }

            fn keep<S: dfdx::shapes::Shape>(
                t: &Tensor<S, $e, Self>,
            ) -> Option<std::sync::Arc<dyn std::any::Any + Send + Sync>> {
                Some(std::sync::Arc::new(t.clone()))
            }

            fn reseeded(&self, seed: u64) -> Self {
                Cpu::seed_from_u64(seed)
            }
        }
    )*};
}

/// The dtype of `precision="16-mixed"`: f16 storage, f32 arithmetic in dfdx's kernels.
pub type Half = dfdx::dtypes::AMP<half::f16>;

cpu_train_device!(f32, f64, Half);

/// On CUDA the gradient hooks (checkpoints of accumulated gradients, 16-mixed's unscaling)
/// work on host copies: the gradient is copied to the host, changed there, and copied back.
/// The optimizer steps, clipping and anomaly checks do not come here: they run as dfdx ops on
/// the device (`optim/composed.rs`).
#[cfg(feature = "cuda")]
macro_rules! cuda_train_device {
    ($($e:ty),*) => {$(
        impl TrainDevice<$e> for Cuda {
            fn host_kernels() -> bool {
                false
            }

            fn with_grad<S: dfdx::shapes::Shape>(
                param: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
                f: impl FnOnce(&mut [$e]),
            ) -> Result<()> {
                let grad = grads.get_or_alloc_mut(param).map_err(cuda_error)?;
                let device = grad.device();
                let mut host = device.dtoh_sync_copy(grad).map_err(cuda_error)?;
                f(&mut host);
                device.htod_sync_copy_into(&host, grad).map_err(cuda_error)
            }

            fn take_grad<S: dfdx::shapes::Shape>(
                t: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
            ) -> Result<Vec<$e>> {
                let grad = grads.get_or_alloc_mut(t).map_err(cuda_error)?;
                grad.device().dtoh_sync_copy(grad).map_err(cuda_error)
            }

            fn restore_grad<S: dfdx::shapes::Shape>(
                t: &Tensor<S, $e, Self>,
                grads: &mut Gradients<$e, Self>,
                values: Vec<$e>,
            ) -> Result<()> {
                let grad = grads.get_or_alloc_mut(t).map_err(cuda_error)?;
                grad.device().htod_sync_copy_into(&values, grad).map_err(cuda_error)
            }

            #[cfg(feature = "nccl")]
            fn average_on_device<M: dfdx::nn::TensorCollection<$e, Self>>(
                c: &dyn crate::distributed::Collective,
                model: &M,
                grads: &mut Gradients<$e, Self>,
            ) -> Result<bool> {
                match c.nccl() {
                    Some(nccl) => <$e as crate::distributed::nccl::OnDevice>::average(nccl, model, grads),
                    None => Ok(false),
                }
            }

            fn reseeded(&self, _seed: u64) -> Self {
                self.clone()
            }
        }
    )*};
}

#[cfg(feature = "cuda")]
cuda_train_device!(f32, f64, Half);

#[cfg(feature = "cuda")]
fn cuda_error(e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("CUDA: {e:?}"))
}

/// Opens CUDA device `ordinal`, then checks that dfdx can compile the kernels it builds at run
/// time with NVRTC (dtype conversion, which every batch goes through, reshapes, concatenation).
/// Their include path is the CUDA headers' folder on the machine that *built* the binary,
/// fixed by dfdx's build script: a binary carried to a machine without that folder would
/// otherwise panic inside dfdx at its first batch. This names the cause before any work.
#[cfg(feature = "cuda")]
pub(crate) fn open_cuda(ordinal: usize, seed: u64) -> Result<Cuda> {
    use dfdx::shapes::Rank1;
    use dfdx::tensor::ZerosTensor;
    let dev = Cuda::try_build(ordinal, seed)
        .map_err(|e| Error::Device(format!("CUDA device {ordinal} could not be opened: {e:?}")))?;
    let probe = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        let t: Tensor<Rank1<1>, f32, Cuda> = dev.try_zeros()?;
        t.try_to_dtype::<f32>()
    }));
    match probe {
        Ok(Ok(_)) => Ok(dev),
        Ok(Err(e)) => Err(cuda_error(e)),
        Err(payload) => Err(Error::Device(format!(
            "CUDA device {ordinal}: dfdx could not compile its run-time kernels with NVRTC: {}. \
             dfdx gives NVRTC the CUDA include folder found where fulmen was built (the \
             --include-path above); install the CUDA headers (cuda_fp16.h) there, or build on \
             this machine",
            Error::panic_message(&*payload)
        ))),
    }
}

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

/// Which devices to run on, as Lightning's `devices` flag names them: a count, a list of
/// ordinals (`"1"` is one device, `"1,"` or `"[1]"` the device with ordinal 1), or `"auto"`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Devices {
    Auto,
    Count(usize),
    Ordinals(Vec<usize>),
}

impl From<usize> for Devices {
    fn from(n: usize) -> Self {
        Devices::Count(n)
    }
}

impl From<&[usize]> for Devices {
    fn from(ordinals: &[usize]) -> Self {
        Devices::Ordinals(ordinals.to_vec())
    }
}

impl<const N: usize> From<[usize; N]> for Devices {
    fn from(ordinals: [usize; N]) -> Self {
        Devices::Ordinals(ordinals.to_vec())
    }
}

impl std::str::FromStr for Devices {
    type Err = String;
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("auto") || t == "-1" {
            return Ok(Devices::Auto);
        }
        let bad = || {
            format!("`{s}` is not a device count, a list of ordinals (`0,1` or `[1]`) or `auto`")
        };
        if let Ok(n) = t.parse::<usize>() {
            return Ok(Devices::Count(n));
        }
        let inner = t
            .strip_prefix('[')
            .and_then(|t| t.strip_suffix(']'))
            .unwrap_or(t);
        let ordinals = inner
            .split(',')
            .map(str::trim)
            .filter(|p| !p.is_empty())
            .map(|p| p.parse::<usize>().map_err(|_| bad()))
            .collect::<std::result::Result<Vec<_>, _>>()?;
        if ordinals.is_empty() {
            return Err(bad());
        }
        Ok(Devices::Ordinals(ordinals))
    }
}

/// Where a run goes: the CPU, or the CUDA device with this ordinal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RunDevice {
    Cpu,
    Cuda(usize),
}

impl Accelerator {
    /// Whether the run goes to GPUs (`auto` when the driver reports one).
    pub(crate) fn is_gpu(self) -> bool {
        match self {
            Accelerator::Gpu => true,
            Accelerator::Auto => gpu_count().is_ok_and(|n| n > 0),
            Accelerator::Cpu => false,
        }
    }

    /// Resolves `auto` and the device list, and refuses what this build or machine cannot
    /// run. In a multi-process run (`local_rank` given) the process takes the local rank's
    /// entry of the list, or the GPU of that ordinal.
    pub(crate) fn place(self, devices: &Devices, local_rank: Option<usize>) -> Result<RunDevice> {
        let ordinals = match devices {
            Devices::Auto => vec![0],
            Devices::Count(1) => vec![0],
            Devices::Count(0) => {
                return Err(Error::config(
                    "devices",
                    "0 devices requested; use at least 1",
                ))
            }
            Devices::Count(n) => (0..*n).collect(),
            Devices::Ordinals(list) => list.clone(),
        };
        let accelerator = match self {
            Accelerator::Auto if self.is_gpu() => Accelerator::Gpu,
            Accelerator::Auto => Accelerator::Cpu,
            other => other,
        };
        let ordinals = match local_rank {
            Some(_) if accelerator == Accelerator::Cpu => vec![0],
            Some(r) if ordinals.len() > 1 => vec![ordinals[r % ordinals.len()]],
            Some(r) => vec![r],
            None => ordinals,
        };
        if ordinals.len() > 1 {
            return Err(Error::config(
                "devices",
                format!(
                    "{} devices requested ({devices:?}) for one process; a process runs on one device: use strategy \"ddp\", one process per device",
                    ordinals.len()
                ),
            ));
        }
        let ordinal = ordinals[0];
        match accelerator {
            Accelerator::Cpu if ordinal != 0 => Err(Error::config(
                "devices",
                format!(
                    "device ordinal {ordinal} was requested on the CPU, which has only device 0"
                ),
            )),
            Accelerator::Cpu => Ok(RunDevice::Cpu),
            _ => {
                let count = gpu_count()?;
                if ordinal >= count {
                    return Err(Error::config(
                        "devices",
                        format!(
                            "CUDA device {ordinal} was requested but this machine has {count} (ordinals 0..{count})"
                        ),
                    ));
                }
                Ok(RunDevice::Cuda(ordinal))
            }
        }
    }
}

/// How many CUDA devices the driver reports (what `accelerator="auto"` looks at); an error
/// that says what is missing when none can be used: a build without the `cuda` feature, a
/// driver that cannot start, or no device.
///
/// ```
/// match fulmen::device::gpu_count() {
///     Ok(n) => println!("{n} GPU(s)"),
///     Err(why) => println!("CPU only: {why}"),
/// }
/// ```
pub fn gpu_count() -> Result<usize> {
    #[cfg(not(feature = "cuda"))]
    return Err(Error::config(
        "accelerator",
        "\"gpu\" was requested but this fulmen was built without CUDA support; \
         rebuild with `--features cuda`, or pass accelerator \"cpu\" (or \"auto\")",
    ));
    #[cfg(feature = "cuda")]
    {
        use cudarc::driver::result;
        let no_gpu = |what: &str| {
            Error::config(
                "accelerator",
                format!("\"gpu\" was requested but {what}; pass accelerator \"cpu\" (or \"auto\")"),
            )
        };
        // The error's code, not its Debug: that asks the driver for a description, which a
        // driver that could not start cannot give.
        result::init().map_err(|e| {
            no_gpu(&format!(
                "the NVIDIA driver (libcuda.so.1) could not start: {:?}",
                e.0
            ))
        })?;
        let n = result::device::get_count().map_err(|e| {
            no_gpu(&format!(
                "the NVIDIA driver could not count its devices: {:?}",
                e.0
            ))
        })?;
        if n <= 0 {
            return Err(no_gpu("the NVIDIA driver reports no CUDA device"));
        }
        Ok(n as usize)
    }
}

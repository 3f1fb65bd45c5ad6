//! Where a run goes: Lightning's `accelerator` and `devices` flags resolved against this build
//! and machine ([`Accelerator`], [`Devices`], [`RunDevice`], [`gpu_count`]).

#[cfg(feature = "cuda")]
use dfdx::tensor::{Cuda, Tensor};

use crate::{Error, Result};

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
        Ok(Err(e)) => Err(e.into()),
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
    /// The CPU (`"cpu"`).
    Cpu,
    /// NVIDIA GPUs through CUDA (`"gpu"` or `"cuda"`); needs the `cuda` feature.
    Gpu,
    /// A GPU when the driver reports one, else the CPU (`"auto"`).
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
    /// One device per process: device 0, or under DDP the local rank's GPU (`"auto"` or `-1`).
    Auto,
    /// This many devices, ordinals `0..n`; more than one needs one process per device.
    Count(usize),
    /// The devices with these ordinals.
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
    /// The CPU.
    Cpu,
    /// The CUDA device with this ordinal.
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

//! [`Cudnn`]: what CUDA runs. Convolutions and f32/f64 batch norms by NVIDIA's cuDNN, which
//! PyTorch's run on, and every other family by the [`Composed`](super::Composed) kernels
//! (dfdx's ops), so far.
//!
//! cuDNN is not linked: it is loaded when the first convolution needs it
//! ([`version`], PyTorch's `torch.backends.cudnn.version()`), so a CUDA build starts without
//! it, and that convolution ends with an error naming what was looked for and where.
//! [`set_enabled`] (or `FULMEN_CUDNN=0` in the environment; PyTorch's
//! `torch.backends.cudnn.enabled`) runs them on the composed kernels instead.
//!
//! In 32-true cuDNN computes in full f32 (no TF32 tensor cores), as the CPU's kernels and
//! the composed ones do; in half precision on tensor cores, accumulating in f32. It picks the
//! convolution algorithms by its heuristics, once per shape, preferring deterministic ones
//! within a 1 GiB workspace. Half batch norms stay composed (cuDNN wants their per-channel
//! operands in f32).
//!
//! ```no_run
//! # fn main() -> fulmen::Result<()> {
//! let v = fulmen::kernels::cudnn::version()?;
//! println!("cuDNN {v}");
//! # Ok(())
//! # }
//! ```

#![cfg_attr(not(feature = "cuda"), allow(dead_code))]

#[cfg(feature = "cuda")]
mod conv;
#[cfg(feature = "cuda")]
mod delegated;
mod descriptors;
#[cfg(feature = "cuda")]
mod handle;
mod library;
#[cfg(feature = "cuda")]
mod norm;
mod values;

use std::sync::atomic::{AtomicU8, Ordering};

pub use library::{LIBRARY, LIBRARY_ENV};

/// The kernels CUDA runs: cuDNN's convolutions and batch norms, the composed kernels'
/// everything else (see the [module docs](self)).
#[derive(Debug, Clone, Copy, Default)]
pub struct Cudnn;

/// A cuDNN failure as the error an op returns.
#[cfg(feature = "cuda")]
fn failed(e: String) -> crate::Error {
    crate::Error::Device(format!("{e} (set FULMEN_CUDNN=0 to run without cuDNN)"))
}

/// A cuDNN failure in a backward op, as a panic: dfdx's backward ops return the device's error
/// type, which has no variant for cuDNN's; the trainer turns the panic into
/// `Error::StepPanicked`.
#[cfg(feature = "cuda")]
fn in_backward(done: Result<(), String>) {
    if let Err(e) = done {
        panic!("{e}");
    }
}

/// Unset (read `FULMEN_CUDNN` at first use), off, on.
static ENABLED: AtomicU8 = AtomicU8::new(UNSET);
const UNSET: u8 = 2;

/// Whether convolutions and batch norms on CUDA run on cuDNN: yes, unless [`set_enabled`] said
/// no or the environment has `FULMEN_CUDNN=0`.
pub fn enabled() -> bool {
    match ENABLED.load(Ordering::Relaxed) {
        UNSET => {
            let on = std::env::var("FULMEN_CUDNN").map_or(true, |v| v.trim() != "0");
            ENABLED.store(on as u8, Ordering::Relaxed);
            on
        }
        v => v == 1,
    }
}

/// Runs CUDA's convolutions and batch norms on cuDNN (`true`, the default) or on the composed
/// kernels, from the next one on, in every thread.
pub fn set_enabled(on: bool) {
    ENABLED.store(on as u8, Ordering::Relaxed);
}

/// The cuDNN this process loads, and the CUDA runtime it was built for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Version {
    /// `major · 10000 + minor · 100 + patch` (cuDNN's `CUDNN_VERSION`: 92801 is 9.28.1).
    pub version: usize,
    /// The CUDA runtime version cuDNN was built against (13000 is 13.0).
    pub cudart: usize,
    /// The library file, as it was asked for ([`LIBRARY`], or what [`LIBRARY_ENV`] names).
    pub library: String,
}

impl std::fmt::Display for Version {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let v = self.version;
        let (major, minor, patch) = (v / 10000, v / 100 % 100, v % 100);
        let cudart = format!("{}.{}", self.cudart / 1000, self.cudart % 1000 / 10);
        write!(
            f,
            "{major}.{minor}.{patch} (for CUDA {cudart}) from {}",
            self.library
        )
    }
}

/// Loads cuDNN if it is not loaded yet and says which it is; an [`Error::Device`] that names
/// the library, where it was looked for and how to install it when it cannot be loaded.
///
/// [`Error::Device`]: crate::Error::Device
#[cfg(feature = "cuda")]
pub fn version() -> crate::Result<Version> {
    let api = library::api().map_err(crate::Error::Device)?;
    // SAFETY: both take no arguments and need no device.
    let (version, cudart) = unsafe { ((api.get_version)(), (api.get_cudart_version)()) };
    Ok(Version {
        version,
        cudart,
        library: api.path.to_string_lossy().into_owned(),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn versions_read_as_cudnn_numbers_them() {
        let v = super::Version {
            version: 92801,
            cudart: 13000,
            library: "libcudnn.so.9".into(),
        };
        assert_eq!(v.to_string(), "9.28.1 (for CUDA 13.0) from libcudnn.so.9");
    }
}

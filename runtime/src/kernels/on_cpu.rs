//! [`OnCpu`]: the CPU's kernels. The host kernels, or the composed ones (what CUDA runs, but
//! for cuDNN's convolutions) while a [`cpu_runs`] guard lives on the thread: how every CI run,
//! on machines without a GPU, trains the GPU's path beside the CPU's (`tests/device_ops.rs`).
//!
//! The choice is made here and nowhere else: every family's call on the CPU reads it once.

use std::cell::Cell;
use std::marker::PhantomData;

use super::composed::Composed;
use super::host::Host;

thread_local! {
    static COMPOSED: Cell<bool> = const { Cell::new(false) };
}

/// An implementation the CPU can run: [`Host`] (the default) or [`Composed`].
pub trait RunsOnCpu {
    /// Whether it is [`Composed`].
    #[doc(hidden)]
    const COMPOSED: bool;
}

impl RunsOnCpu for Host {
    const COMPOSED: bool = false;
}

impl RunsOnCpu for Composed {
    const COMPOSED: bool = true;
}

/// While the returned guard lives, the CPU runs the kernels `K` on this thread: with
/// [`Composed`], what CUDA runs (dfdx's ops in the layers but cuDNN's convolutions, the
/// optimizer steps, the gradient sums and 16-mixed's unscaling), to check the GPU's path on a
/// machine without a GPU: slower, and the same results within rounding.
///
/// ```
/// use fulmen::kernels::{cpu_runs, Composed};
/// use fulmen::layers::{conv2d, ConvOptions};
/// use fulmen::prelude::*;
///
/// let dev = Cpu::default();
/// let x: Tensor<(usize, usize, usize, usize), f32, Cpu> = dev.sample_normal_like(&(2, 3, 8, 8));
/// let w: Tensor<(usize, usize, usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, 3, 3, 3));
/// let opts = ConvOptions { padding: 1, ..Default::default() };
/// let on_host = conv2d(x.clone(), &w, None, opts).unwrap();
/// let as_on_cuda = {
///     let _composed = cpu_runs::<Composed>();
///     conv2d(x, &w, None, opts).unwrap() // an im2col gather and a matrix product
/// };
/// let (a, b) = (on_host.as_vec(), as_on_cuda.as_vec());
/// assert!(a.iter().zip(&b).all(|(a, b)| (a - b).abs() < 1e-4));
/// ```
pub fn cpu_runs<K: RunsOnCpu>() -> CpuKernels {
    CpuKernels {
        previous: COMPOSED.replace(K::COMPOSED),
        _thread: PhantomData,
    }
}

/// The guard of [`cpu_runs`]: the CPU runs the chosen kernels until it is dropped.
#[must_use = "the CPU runs the chosen kernels only while the guard lives"]
pub struct CpuKernels {
    previous: bool,
    /// The choice is the thread's: the guard stays on it.
    _thread: PhantomData<*const ()>,
}

impl Drop for CpuKernels {
    fn drop(&mut self) {
        COMPOSED.set(self.previous);
    }
}

/// The CPU's kernels: [`Host`], or [`Composed`] under a [`cpu_runs`] guard.
#[derive(Debug, Clone, Copy, Default)]
pub struct OnCpu;

/// `Family::method(args)` of [`Composed`] or [`Host`], whichever the thread's guard chose.
macro_rules! chosen {
    ($family:path, $call:ident ($($arg:expr),*)) => {
        if COMPOSED.get() {
            <Composed as $family>::$call($($arg),*)
        } else {
            <Host as $family>::$call($($arg),*)
        }
    };
}

delegate!(OnCpu, chosen: Dense, Conv, Norm, Pool, Elementwise, Fuse, Step, Reduce, Unscale);

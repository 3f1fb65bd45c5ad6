//! [`Host`]: fulmen's own kernels on host memory, spread over rayon's threads. f64 tensors
//! compute in f64 and every other dtype (f32, and half precision as dfdx's AMP does) in f32.
//! On the CPU a tensor's values are read in place (`buf`); on other devices they are copied
//! to the host and back, which only the composed kernels' fallbacks do (grouped
//! convolutions on CUDA).
//!
//! Convolution and training batch norm compute as chains of `HostLayer`s (`chain`): a lone one
//! is a chain of one, a fused sequence the chain of its ops, so that the values between them
//! never become dfdx tensors.

pub(crate) mod buf;
pub(crate) mod chain;
mod conv;
mod conv_gemm;
mod dense;
mod elementwise;
mod fuse;
mod norm;
mod packed_weights;
mod pool;
pub(crate) mod reduce;
mod step;
#[cfg(target_arch = "x86_64")]
mod tiled;
pub(crate) mod values;

pub use packed_weights::{keep_packed_weights, PackedWeights};

/// The instruction set fulmen's f32 products (convolutions, dense layers) run on here:
/// `"AVX-512"` or `"AVX2"`, read once (`FULMEN_NO_AVX512` and `FULMEN_NO_AVX2` turn them off, as
/// on a CPU without them); `None` where they are the `gemm` crate's and dfdx's.
pub fn instruction_set() -> Option<&'static str> {
    #[cfg(target_arch = "x86_64")]
    {
        tiled::isa().map(|isa| match isa {
            tiled::Isa::Avx512 => "AVX-512",
            tiled::Isa::Avx2 => "AVX2",
        })
    }
    #[cfg(not(target_arch = "x86_64"))]
    None
}

/// The host kernels (see the [module docs](self)); each op family's implementation is in the
/// file of its name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Host;

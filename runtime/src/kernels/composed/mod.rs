//! [`Composed`]: every op family written with dfdx's differentiable tensor ops, so that the
//! values never leave the device: what CUDA runs but for its convolutions (cuDNN's, see
//! [`Cudnn`](super::cudnn::Cudnn), unless `FULMEN_CUDNN=0`). Windows are gathered by index (a
//! convolution's im2col is one `gather` of rows), products go to the device's matrix multiply
//! (cuBLAS on CUDA), and dfdx's backward of each op makes the gradients; no kernel of fulmen's
//! own runs on the device.
//!
//! What is written this way is checked on the CPU against the host kernels in every CI run
//! (`tests/composed.rs`, `tests/device_ops.rs`), where cuDNN's results can only be checked on a
//! GPU (`tests/gpu/cudnn.rs` checks them against these).
//!
//! Each layer of more than one op (convolution, batch norm, pooling, the residual add + ReLU)
//! is recorded as a `segment`, on a tape of its own spliced into the caller's: dfdx keeps
//! every gradient of a backward until it ends, and a segment frees those of its intermediate
//! tensors as soon as its own backward is done. Grouped convolutions (depthwise) take the host
//! kernel's path, through copies.

mod conv;
mod dense;
mod elementwise;
mod fuse;
mod norm;
mod planes;
mod pool;
mod reduce;
pub(crate) mod segment;
mod step;

pub use conv::window_pixels;
#[cfg(feature = "cuda")]
pub(crate) use conv::with_bias;

/// The composed kernels (see the [module docs](self)); each op family's implementation is in
/// the file of its name.
#[derive(Debug, Clone, Copy, Default)]
pub struct Composed;

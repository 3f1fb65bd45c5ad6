//! `MaxPool2D<K, STRIDE, PADDING>` and `AvgPool2D<K, STRIDE, PADDING>`: 2-D pooling windows
//! for stable Rust, as PyTorch's `nn.MaxPool2d` / `nn.AvgPool2d` (floor mode; max pooling pads
//! with -∞; average pooling counts padded zeros, `count_include_pad=True`). Differentiable on
//! dfdx's tape: max pooling sends each gradient to the first maximum of its window, as PyTorch's
//! CPU kernel does. [`AdaptiveAvgPool2D`] is PyTorch's `nn.AdaptiveAvgPool2d`.
//!
//! ```
//! use fulmen::layers::MaxPool2D;
//! use fulmen::prelude::*;
//! let pool = MaxPool2D::<3, 2, 1>; // the ImageNet ResNet stem's pool
//! let x: Tensor<(usize, Const<8>, usize, usize), f32, Cpu> = Cpu::default().zeros_like(&(1, Const, 32, 32));
//! assert_eq!(pool.forward(x).shape().2, 16);
//! ```

use dfdx::nn::{Module, NonMutableModule, ZeroSizedModule};
use dfdx::shapes::{Dtype, HasShape};
use dfdx::tensor::Tape;
use dfdx::tensor_ops::Device;

use crate::kernels::Pool;
use crate::shapes::{Images, PoolKind};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// Pools `x` (`[N, C, H, W]`); differentiable through the tape on `x`.
pub fn pool2d<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>, const C: usize>(
    x: Images<C, E, D, T>,
    kind: PoolKind,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Images<C, E, D, T>> {
    let (_, _, h, w) = *x.shape();
    if k == 0 || stride == 0 || 2 * padding > k {
        return Err(Error::config(
            "Pool2D",
            format!("kernel {k}, stride {stride}, padding {padding}: PyTorch asks kernel and stride >= 1 and padding <= kernel / 2"),
        ));
    }
    if h + 2 * padding < k || w + 2 * padding < k {
        return Err(Error::config(
            "Pool2D.kernel_size",
            format!("a {h}×{w} input with padding {padding} is smaller than the {k}×{k} window"),
        ));
    }
    D::Kernels::pool2d(x, kind, k, stride, padding)
}

/// Averages `x` (`[N, C, H, W]`) over `out_h`×`out_w` adaptive windows, as PyTorch's
/// `adaptive_avg_pool2d`; differentiable through the tape on `x`.
pub fn adaptive_avg_pool2d<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>, const C: usize>(
    x: Images<C, E, D, T>,
    out_h: usize,
    out_w: usize,
) -> Result<Images<C, E, D, T>> {
    let (_, _, h, w) = *x.shape();
    if out_h == 0 || out_w == 0 || h == 0 || w == 0 {
        return Err(Error::config(
            "AdaptiveAvgPool2D",
            format!(
                "a {h}×{w} input cannot be pooled to {out_h}×{out_w}: both need at least one pixel"
            ),
        ));
    }
    D::Kernels::adaptive_avg_pool2d(x, out_h, out_w)
}

macro_rules! pool_layer {
    ($(#[$doc:meta])* $name:ident, $kind:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
        pub struct $name<const K: usize, const STRIDE: usize, const PADDING: usize = 0>;

        impl<const K: usize, const S: usize, const P: usize> ZeroSizedModule for $name<K, S, P> {}
        impl<const K: usize, const S: usize, const P: usize> NonMutableModule for $name<K, S, P> {}

        impl<const K: usize, const S: usize, const P: usize> crate::Spec for $name<K, S, P> {
            type Module<E: Dtype, D: Device<E>> = Self;
        }

        impl<const K: usize, const S: usize, const P: usize, const C: usize, E, D, T>
            Module<Images<C, E, D, T>> for $name<K, S, P>
        where
            E: FloatDtype,
            D: TrainDevice<E>,
            T: Tape<E, D>,
        {
            type Output = Images<C, E, D, T>;
            type Error = D::Err;

            /// Panics, with fulmen's message, on a window larger than the padded input (see
            /// [`pool2d`] for a `Result`).
            fn try_forward(&self, x: Images<C, E, D, T>) -> std::result::Result<Self::Output, D::Err> {
                Ok(super::or_panic(pool2d(x, $kind, K, S, P)))
            }
        }
    };
}

pool_layer!(
    /// Max over each `K`×`K` window, every `STRIDE` pixels, the input padded by `PADDING`.
    MaxPool2D,
    PoolKind::Max
);
pool_layer!(
    /// Mean over each `K`×`K` window, every `STRIDE` pixels, the input padded by `PADDING`.
    AvgPool2D,
    PoolKind::Avg
);

/// Averages over `OUT_H`×`OUT_W` windows that tile the input whatever its size, as PyTorch's
/// `nn.AdaptiveAvgPool2d((OUT_H, OUT_W))`; `AdaptiveAvgPool2D<1>` is global average pooling
/// that keeps the `[N, C, 1, 1]` shape.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AdaptiveAvgPool2D<const OUT_H: usize, const OUT_W: usize = OUT_H>;

impl<const H: usize, const W: usize> ZeroSizedModule for AdaptiveAvgPool2D<H, W> {}
impl<const H: usize, const W: usize> NonMutableModule for AdaptiveAvgPool2D<H, W> {}

impl<const H: usize, const W: usize> crate::Spec for AdaptiveAvgPool2D<H, W> {
    type Module<E: Dtype, D: Device<E>> = Self;
}

impl<const H: usize, const W: usize, const C: usize, E, D, T> Module<Images<C, E, D, T>>
    for AdaptiveAvgPool2D<H, W>
where
    E: FloatDtype,
    D: TrainDevice<E>,
    T: Tape<E, D>,
{
    type Output = Images<C, E, D, T>;
    type Error = D::Err;

    /// Panics, with fulmen's message, on an empty input or output (see
    /// [`adaptive_avg_pool2d`] for a `Result`).
    fn try_forward(&self, x: Images<C, E, D, T>) -> std::result::Result<Self::Output, D::Err> {
        Ok(super::or_panic(adaptive_avg_pool2d(x, H, W)))
    }
}

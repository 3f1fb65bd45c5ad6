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
use dfdx::shapes::{Const, Dtype, HasShape};
use dfdx::tensor::{PutTape, SplitTape, Tape};

use super::host::{accumulate_grad, on_backward, on_host, HostFloat};
use super::Images;
use dfdx::tensor_ops::Device;

use crate::{Error, FloatDtype, Result, TrainDevice};

/// Which reduction a window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// Where the windows of a pooling lie.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Windows {
    /// `k`×`k` windows every `stride` pixels of the input padded by `padding`.
    Fixed {
        k: usize,
        stride: usize,
        padding: usize,
    },
    /// PyTorch's adaptive pooling: `out` windows per axis, window `i` covering
    /// `floor(i·len/out)..ceil((i+1)·len/out)`.
    Adaptive { out_h: usize, out_w: usize },
}

/// The geometry of one pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    windows: Windows,
}

impl Geom {
    fn out(&self) -> (usize, usize) {
        match self.windows {
            Windows::Fixed { k, stride, padding } => {
                let out = |len: usize| (len + 2 * padding - k) / stride + 1;
                (out(self.h), out(self.w))
            }
            Windows::Adaptive { out_h, out_w } => (out_h, out_w),
        }
    }
    /// Input rows (or columns, `len` = w) that window `o` of `outs` covers, clipped to the input.
    fn span(&self, o: usize, len: usize, outs: usize) -> std::ops::Range<usize> {
        match self.windows {
            Windows::Fixed { k, stride, padding } => {
                let start = (o * stride) as isize - padding as isize;
                let end = (start + k as isize).min(len as isize);
                (start.max(0) as usize)..(end.max(0) as usize)
            }
            Windows::Adaptive { .. } => (o * len / outs)..((o + 1) * len).div_ceil(outs),
        }
    }
    /// What an average divides by: the whole window, padding included (PyTorch's
    /// `count_include_pad=True`), or an adaptive window's size.
    fn divisor(&self, rows: usize, cols: usize) -> usize {
        match self.windows {
            Windows::Fixed { k, .. } => k * k,
            Windows::Adaptive { .. } => rows * cols,
        }
    }
}

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
    if !D::host_kernels() {
        return super::composed::pool2d(x, kind == PoolKind::Max, k, stride, padding);
    }
    pool(x, kind, Windows::Fixed { k, stride, padding })
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
    if !D::host_kernels() {
        return super::composed::adaptive_avg_pool2d(x, out_h, out_w);
    }
    pool(x, PoolKind::Avg, Windows::Adaptive { out_h, out_w })
}

fn pool<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>, const C: usize>(
    x: Images<C, E, D, T>,
    kind: PoolKind,
    windows: Windows,
) -> Result<Images<C, E, D, T>> {
    let (n, _, h, w) = *x.shape();
    let g = Geom {
        n,
        c: C,
        h,
        w,
        windows,
    };
    let (ho, wo) = g.out();
    let (x, mut tape) = x.split_tape();
    let xs = x.as_vec();
    let mut out = Vec::with_capacity(n * C * ho * wo);
    // For max pooling, the input index each output came from.
    let mut argmax = Vec::new();
    for plane in 0..n * C {
        let src = &xs[plane * h * w..(plane + 1) * h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                let (rows, cols) = (g.span(oy, h, ho), g.span(ox, w, wo));
                match kind {
                    PoolKind::Max => {
                        let mut best: Option<(usize, E)> = None;
                        for iy in rows.clone() {
                            for ix in cols.clone() {
                                let v = src[iy * w + ix];
                                if best.is_none_or(|(_, b)| v > b || v.is_nan()) {
                                    best = Some((iy * w + ix, v));
                                }
                            }
                        }
                        let (i, v) = best.unwrap_or((0, E::neg_infinity()));
                        argmax.push(plane * h * w + i);
                        out.push(v);
                    }
                    PoolKind::Avg => {
                        let sum: f64 = rows
                            .clone()
                            .flat_map(|iy| cols.clone().map(move |ix| iy * w + ix))
                            .map(|i| src[i].to_f64().unwrap_or(f64::NAN))
                            .sum();
                        let div = g.divisor(rows.len(), cols.len());
                        out.push(E::from(sum / div as f64).unwrap_or_else(E::nan));
                    }
                }
            }
        }
    }
    let dev = x.device().clone();
    let out: Images<C, E, D> = dev
        .try_tensor_from_vec(out, (n, Const, ho, wo))
        .map_err(|e| Error::Device(format!("{e:?}")))?;
    on_backward(&mut tape, "Pool2D", &out, move |dy, grads| {
        accumulate_grad(
            &x,
            grads,
            |dx| on_host!(T; Host(dy), HostMut(dx) => pool_backward(&g, kind, &argmax, dy, dx)),
        )
    });
    Ok(out.put_tape(tape))
}

/// Adds the input's gradient into `dx` given the output's, `dy`; `argmax` is where each max
/// came from.
fn pool_backward<T: HostFloat>(g: &Geom, kind: PoolKind, argmax: &[usize], dy: &[T], dx: &mut [T]) {
    match kind {
        PoolKind::Max => {
            for (&i, &d) in argmax.iter().zip(dy) {
                dx[i] += d;
            }
        }
        PoolKind::Avg => {
            let (ho, wo) = g.out();
            for plane in 0..g.n * g.c {
                for oy in 0..ho {
                    for ox in 0..wo {
                        let (rows, cols) = (g.span(oy, g.h, ho), g.span(ox, g.w, wo));
                        let div = g.divisor(rows.len(), cols.len());
                        let d =
                            dy[(plane * ho + oy) * wo + ox] / T::from(div).unwrap_or_else(T::nan);
                        for iy in rows {
                            for ix in cols.clone() {
                                dx[plane * g.h * g.w + iy * g.w + ix] += d;
                            }
                        }
                    }
                }
            }
        }
    }
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
                Ok(super::conv2d::or_panic(pool2d(x, $kind, K, S, P)))
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
        Ok(super::conv2d::or_panic(adaptive_avg_pool2d(x, H, W)))
    }
}

//! `MaxPool2D<K, STRIDE, PADDING>` and `AvgPool2D<K, STRIDE, PADDING>`: 2-D pooling windows
//! for stable Rust, as PyTorch's `nn.MaxPool2d` / `nn.AvgPool2d` (floor mode; max pooling pads
//! with -∞; average pooling counts padded zeros, `count_include_pad=True`). Differentiable on
//! dfdx's tape: max pooling sends each gradient to the first maximum of its window, as PyTorch's
//! CPU kernel does.
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

use super::Images;
use dfdx::tensor_ops::Device;

use crate::{Error, FloatDtype, Result, TrainDevice};

/// Which reduction a window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    Max,
    Avg,
}

/// The geometry of one pooling.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Geom {
    n: usize,
    c: usize,
    h: usize,
    w: usize,
    k: usize,
    stride: usize,
    padding: usize,
}

impl Geom {
    fn out(&self, len: usize) -> usize {
        (len + 2 * self.padding - self.k) / self.stride + 1
    }
    /// Input rows (or columns) window `o` covers, clipped to the input.
    fn span(&self, o: usize, len: usize) -> std::ops::Range<usize> {
        let start = (o * self.stride) as isize - self.padding as isize;
        let end = (start + self.k as isize).min(len as isize);
        (start.max(0) as usize)..(end.max(0) as usize)
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
    let (n, _, h, w) = *x.shape();
    let g = Geom {
        n,
        c: C,
        h,
        w,
        k,
        stride,
        padding,
    };
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
    let (ho, wo) = (g.out(h), g.out(w));
    let (x, mut tape) = x.split_tape();
    let xs = x.as_vec();
    let mut out = Vec::with_capacity(n * C * ho * wo);
    // For max pooling, the input index each output came from.
    let mut argmax = Vec::new();
    for plane in 0..n * C {
        let src = &xs[plane * h * w..(plane + 1) * h * w];
        for oy in 0..ho {
            for ox in 0..wo {
                let (rows, cols) = (g.span(oy, h), g.span(ox, w));
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
                        out.push(E::from(sum / (k * k) as f64).unwrap_or_else(E::nan));
                    }
                }
            }
        }
    }
    let dev = x.device().clone();
    let out: Images<C, E, D> = dev
        .try_tensor_from_vec(out, (n, Const, ho, wo))
        .map_err(|e| Error::Device(format!("{e:?}")))?;
    let out_key = out.clone();
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_key)?;
        let dy = grads.get(&out_key).as_vec();
        let mut dx = vec![E::zero(); g.n * g.c * g.h * g.w];
        match kind {
            PoolKind::Max => {
                for (&i, &d) in argmax.iter().zip(&dy) {
                    dx[i] += d;
                }
            }
            PoolKind::Avg => {
                let scale = E::from(1.0 / (g.k * g.k) as f64).unwrap_or_else(E::nan);
                for plane in 0..g.n * g.c {
                    for oy in 0..ho {
                        for ox in 0..wo {
                            let d = dy[(plane * ho + oy) * wo + ox] * scale;
                            for iy in g.span(oy, g.h) {
                                for ix in g.span(ox, g.w) {
                                    dx[plane * g.h * g.w + iy * g.w + ix] += d;
                                }
                            }
                        }
                    }
                }
            }
        }
        // with_grad fails only when the device cannot allocate a gradient buffer.
        let _ = D::with_grad(&x, grads, |g| {
            g.iter_mut().zip(dx).for_each(|(a, b)| *a += b)
        });
        Ok(())
    });
    Ok(out.put_tape(tape))
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

//! The host kernel of pooling: max (the gradient to the first maximum of its window, as
//! PyTorch's CPU kernel), average (padding counted) and adaptive average pooling.

use dfdx::shapes::{Const, HasShape};
use dfdx::tensor::{PutTape, SplitTape, Tape};

use super::values::{accumulate_grad, on_backward, on_host, HostFloat};
use super::Host;
use crate::device::{of_f64, FloatDtype, HostAccess};
use crate::kernels::Pool;
use crate::shapes::{Images, PoolKind};
use crate::Result;

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

impl<E: FloatDtype, D: HostAccess<E>> Pool<E, D> for Host {
    fn pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        kind: PoolKind,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Images<C, E, D, T>> {
        pool(x, kind, Windows::Fixed { k, stride, padding })
    }

    fn adaptive_avg_pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        out_h: usize,
        out_w: usize,
    ) -> Result<Images<C, E, D, T>> {
        pool(x, PoolKind::Avg, Windows::Adaptive { out_h, out_w })
    }
}

fn pool<E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>, const C: usize>(
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
                        out.push(of_f64(sum / div as f64));
                    }
                }
            }
        }
    }
    let dev = x.device().clone();
    let out: Images<C, E, D> = dev.try_tensor_from_vec(out, (n, Const, ho, wo))?;
    on_backward(&mut tape, "Pool2D", &out, move |dy, grads| {
        accumulate_grad(
            &x,
            grads,
            |dx| on_host!(T; Values(dy), ValuesMut(dx) => pool_backward(&g, kind, &argmax, dy, dx)),
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

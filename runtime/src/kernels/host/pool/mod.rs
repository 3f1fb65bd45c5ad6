//! The host kernel of pooling: max (the gradient to the first maximum of its window, as
//! PyTorch's CPU kernel), average (padding counted) and adaptive average pooling.

use std::ops::Range;

use dfdx::shapes::{Const, HasShape};
use dfdx::tensor::{PutTape, SplitTape, Tape};

use rayon::prelude::*;

#[cfg(target_arch = "x86_64")]
mod avx2;

use super::values::{accumulate_grad, on_backward, on_host, HostFloat, IntoValues, Values};
use super::Host;
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::Pool;
use crate::shapes::{Images, PoolKind};
use crate::{Error, Result};

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
    fn span(&self, o: usize, len: usize, outs: usize) -> Range<usize> {
        match self.windows {
            Windows::Fixed { k, stride, padding } => {
                let start = (o * stride) as isize - padding as isize;
                let end = (start + k as isize).min(len as isize);
                (start.max(0) as usize)..(end.max(0) as usize)
            }
            Windows::Adaptive { .. } => (o * len / outs)..((o + 1) * len).div_ceil(outs),
        }
    }
    /// Input rows and columns that output `o` (of `out` per plane, [`Geom::out`]) covers.
    fn window(&self, o: usize, (ho, wo): (usize, usize)) -> (Range<usize>, Range<usize>) {
        (self.span(o / wo, self.h, ho), self.span(o % wo, self.w, wo))
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
    if u32::try_from(h * w).is_err() {
        return Err(Error::msg(format!(
            "Pool2D: a {h}×{w} plane has more values than the pooling kernel indexes (2³²)"
        )));
    }
    if h * w == 0 && ho * wo > 0 {
        return Err(Error::msg(format!(
            "Pool2D: an empty {h}×{w} plane has no values to pool into {ho}×{wo}"
        )));
    }
    let (x, mut tape) = x.split_tape();
    let xs = Values::of(&x)?;
    let (out, argmax) = on_host!(T; Values(xs) => {
        let (out, argmax) = pool_forward(&g, kind, xs);
        (out.into_values(), argmax)
    });
    let out: Images<C, E, D> = out.into_tensor(x.device(), (n, Const, ho, wo))?;
    on_backward(&mut tape, "Pool2D", &out, move |dy, grads| {
        accumulate_grad(
            &x,
            grads,
            |dx| on_host!(T; Values(dy), ValuesMut(dx) => pool_backward(&g, kind, &argmax, dy, dx)),
        )
    });
    Ok(out.put_tape(tape))
}

/// The pooled planes and, for max pooling, where in its plane each maximum lies (the first
/// of its window, or a NaN); planes across rayon's threads.
fn pool_forward<T: HostFloat>(g: &Geom, kind: PoolKind, xs: &[T]) -> (Vec<T>, Vec<u32>) {
    let (ho, wo) = g.out();
    let (hw, ohw) = (g.h * g.w, ho * wo);
    let planes = g.n * g.c;
    let mut out = vec![T::zero(); planes * ohw];
    if ohw == 0 || hw == 0 {
        return (out, Vec::new());
    }
    match kind {
        PoolKind::Max => {
            let mut argmax = vec![0u32; planes * ohw];
            out.par_chunks_mut(ohw)
                .zip(argmax.par_chunks_mut(ohw))
                .zip(xs.par_chunks(hw))
                .for_each(|((out, argmax), src)| max_plane(g, src, out, argmax));
            (out, argmax)
        }
        PoolKind::Avg => {
            out.par_chunks_mut(ohw)
                .zip(xs.par_chunks(hw))
                .for_each(|(out, src)| {
                    for (o, v) in out.iter_mut().enumerate() {
                        let (rows, cols) = g.window(o, (ho, wo));
                        let div = g.divisor(rows.len(), cols.len());
                        // Summed in f64, as PyTorch's CPU kernel accumulates.
                        let sum: f64 = rows
                            .flat_map(|iy| src[iy * g.w..][cols.clone()].iter())
                            .map(|v| v.to_f64().unwrap_or(f64::NAN))
                            .sum();
                        *v = T::from(sum / div as f64).unwrap_or_else(T::nan);
                    }
                });
            (out, Vec::new())
        }
    }
}

/// One plane's max pooling: each output the first maximum of its window (or its last NaN),
/// and where in the plane it lies. Row by row of windows; 2×2 windows of stride 2, the
/// common case, without a window's bounds computed per output.
fn max_plane<T: HostFloat>(g: &Geom, src: &[T], out: &mut [T], argmax: &mut [u32]) {
    let ((_, wo), w) = (g.out(), g.w);
    // Planes are under 2³² values (checked by `pool`), so every index fits a u32.
    if g.windows
        == (Windows::Fixed {
            k: 2,
            stride: 2,
            padding: 0,
        })
    {
        for (oy, (out, argmax)) in out.chunks_mut(wo).zip(argmax.chunks_mut(wo)).enumerate() {
            let (top, bottom) = (&src[2 * oy * w..][..w], &src[(2 * oy + 1) * w..][..w]);
            let base = (2 * oy * w) as u32;
            // Eight at a time where f32 and AVX2 allow, the rest one by one.
            #[cfg(target_arch = "x86_64")]
            let done = avx2::max_pairs(top, bottom, (out, argmax), base);
            #[cfg(not(target_arch = "x86_64"))]
            let done = 0;
            let pairs = top.chunks_exact(2).zip(bottom.chunks_exact(2)).skip(done);
            let outs = out.iter_mut().zip(argmax).skip(done);
            for (ox, ((t, b), (v, at))) in (done..).zip(pairs.zip(outs)) {
                let (mut best, mut value) = (0, t[0]);
                for (x, i) in [(t[1], 1), (b[0], w as u32), (b[1], w as u32 + 1)] {
                    if x > value || x.is_nan() {
                        (best, value) = (i, x);
                    }
                }
                (*v, *at) = (value, base + 2 * ox as u32 + best);
            }
        }
        return;
    }
    max_windows(g, src, out, argmax);
}

/// [`max_plane`] for any windows: each one's bounds, then its values in order.
fn max_windows<T: HostFloat>(g: &Geom, src: &[T], out: &mut [T], argmax: &mut [u32]) {
    let ((ho, wo), w) = (g.out(), g.w);
    for oy in 0..ho {
        let rows = g.span(oy, g.h, ho);
        for ox in 0..wo {
            let cols = g.span(ox, w, wo);
            let (mut best, mut value) = (None, T::neg_infinity());
            for iy in rows.clone() {
                for ix in cols.clone() {
                    let x = src[iy * w + ix];
                    if best.is_none() || x > value || x.is_nan() {
                        (best, value) = (Some(iy * w + ix), x);
                    }
                }
            }
            (out[oy * wo + ox], argmax[oy * wo + ox]) = (value, best.unwrap_or(0) as u32);
        }
    }
}

/// Adds the input's gradient into `dx` given the output's, `dy`; `argmax` is where in its
/// plane each max came from. Planes across rayon's threads.
fn pool_backward<T: HostFloat>(g: &Geom, kind: PoolKind, argmax: &[u32], dy: &[T], dx: &mut [T]) {
    let (ho, wo) = g.out();
    let (hw, ohw) = (g.h * g.w, ho * wo);
    if ohw == 0 || hw == 0 {
        return;
    }
    match kind {
        PoolKind::Max => dx
            .par_chunks_mut(hw)
            .zip(dy.par_chunks(ohw))
            .zip(argmax.par_chunks(ohw))
            .for_each(|((dx, dy), argmax)| {
                for (&i, &d) in argmax.iter().zip(dy) {
                    dx[i as usize] += d;
                }
            }),
        PoolKind::Avg => dx
            .par_chunks_mut(hw)
            .zip(dy.par_chunks(ohw))
            .for_each(|(dx, dy)| {
                for (o, &d) in dy.iter().enumerate() {
                    let (rows, cols) = g.window(o, (ho, wo));
                    let d = d / T::from(g.divisor(rows.len(), cols.len())).unwrap_or_else(T::nan);
                    for iy in rows {
                        dx[iy * g.w..][cols.clone()]
                            .iter_mut()
                            .for_each(|v| *v += d);
                    }
                }
            }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2×2 windows of stride 2 pick what the general window loop picks: the first of tied
    /// maxima, the last NaN, an all -∞ window's first value; odd edges dropped.
    /// (Rows of 8 windows or more take the AVX2 path where the CPU has it.)
    #[test]
    fn two_by_two_windows_pick_as_every_window_does() {
        let pick = [
            1.0,
            3.0,
            3.0,
            -1.0,
            f32::NAN,
            2.0,
            f32::NEG_INFINITY,
            0.5,
            3.0,
        ];
        for (h, w) in [(2, 2), (4, 6), (5, 7), (3, 2), (4, 40), (5, 35)] {
            let src: Vec<f32> = (0..h * w)
                .map(|i| pick[(i * 7 + i / 3) % pick.len()])
                .collect();
            let g = Geom {
                n: 1,
                c: 1,
                h,
                w,
                windows: Windows::Fixed {
                    k: 2,
                    stride: 2,
                    padding: 0,
                },
            };
            let (ho, wo) = g.out();
            let (mut fast, mut general) = (vec![0f32; ho * wo], vec![0f32; ho * wo]);
            let (mut fast_at, mut general_at) = (vec![0u32; ho * wo], vec![0u32; ho * wo]);
            max_plane(&g, &src, &mut fast, &mut fast_at);
            max_windows(&g, &src, &mut general, &mut general_at);
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&fast), bits(&general), "{h}×{w} values");
            assert_eq!(fast_at, general_at, "{h}×{w} indices");
        }
    }
}

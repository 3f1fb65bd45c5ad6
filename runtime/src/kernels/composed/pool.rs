//! Pooling from dfdx's ops: windows gathered as a convolution's are ([`super::conv`]), then
//! reduced; adaptive pooling as one product with the averaging matrix.

use dfdx::shapes::{Axes3, Axis, Const, HasShape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{MaxTo, MeanTo, PermuteTo, RealizeTo, ReshapeTo, TryMatMul};

use super::conv::{windows, Dyn3};
use super::segment::segment;
use super::Composed;
use crate::device::{of_f64, FloatDtype, HostAccess};
use crate::kernels::Pool;
use crate::shapes::{ConvGeom, Images, PoolKind};
use crate::{Error, Result};

impl<E: FloatDtype, D: HostAccess<E>> Pool<E, D> for Composed {
    /// The windows gathered, then reduced; a segment. Max pooling's gradient goes to every
    /// input equal to the window's maximum (dfdx's rule), where the host kernel gives it to
    /// the first.
    fn pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        kind: PoolKind,
        k: usize,
        stride: usize,
        padding: usize,
    ) -> Result<Images<C, E, D, T>> {
        let max = kind == PoolKind::Max;
        segment([x], Vec::new(), |[x]| {
            pool2d_ops(x, max, k, stride, padding)
        })
    }

    /// One product with the averaging matrix: `[n·c, h·w]` times `[h·w, out_h·out_w]`, whose
    /// column for each output holds 1/size over its window.
    fn adaptive_avg_pool2d<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        out_h: usize,
        out_w: usize,
    ) -> Result<Images<C, E, D, T>> {
        adaptive(x, out_h, out_w)
    }
}

fn pool2d_ops<E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>, const C: usize>(
    x: Images<C, E, D, T>,
    max: bool,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Images<C, E, D, T>> {
    let (n, _, h, w) = *x.shape();
    let g = ConvGeom {
        batch: n,
        c_in: C,
        h,
        w,
        c_out: C,
        k,
        stride,
        padding,
        dilation: 1,
        groups: 1,
    };
    let (ho, wo) = (g.h_out(), g.w_out());
    let x = x
        .try_realize::<(usize, usize, usize, usize)>()
        .map_err(|_| Error::msg("pool2d: not an image batch"))?;
    let pad = if max { E::neg_infinity() } else { E::zero() };
    let rows = windows(x, &g, pad)?.try_reshape_like(&(n, ho * wo, k * k, C))?;
    let pooled: Dyn3<E, D, T> = if max {
        rows.try_max::<_, Axis<2>>()?
    } else {
        rows.try_mean::<_, Axis<2>>()?
    };
    pooled
        .try_permute::<_, Axes3<0, 2, 1>>()?
        .try_reshape_like(&(n, Const::<C>, ho, wo))
        .map_err(crate::Error::from)
}

fn adaptive<E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>, const C: usize>(
    x: Images<C, E, D, T>,
    out_h: usize,
    out_w: usize,
) -> Result<Images<C, E, D, T>> {
    let (n, _, h, w) = *x.shape();
    let span = |o: usize, len: usize, outs: usize| (o * len / outs)..((o + 1) * len).div_ceil(outs);
    let mut avg = vec![E::zero(); h * w * out_h * out_w];
    for oy in 0..out_h {
        for ox in 0..out_w {
            let (rows, cols) = (span(oy, h, out_h), span(ox, w, out_w));
            let share = of_f64::<E>(1.0 / (rows.len() * cols.len()) as f64);
            for iy in rows {
                for ix in cols.clone() {
                    avg[(iy * w + ix) * out_h * out_w + oy * out_w + ox] = share;
                }
            }
        }
    }
    let dev = x.device().clone();
    let avg: Tensor<(usize, usize), E, D> = dev.try_tensor_from_vec(avg, (h * w, out_h * out_w))?;
    x.try_reshape_like(&(n * C, h * w))?
        .try_matmul(avg)?
        .try_reshape_like(&(n, Const::<C>, out_h, out_w))
        .map_err(crate::Error::from)
}

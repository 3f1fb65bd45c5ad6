//! Convolution from dfdx's ops: the image's windows gathered by index (im2col as one `gather`
//! of rows), then one matrix product (cuBLAS on CUDA); a segment. Grouped convolutions
//! (depthwise) take the host kernel's path.

use dfdx::shapes::{Axes3, Axes4, Axis, HasShape};
use dfdx::tensor::{NoneTape, Tape, Tensor};
use dfdx::tensor_ops::{
    BroadcastTo, GatherTo, PermuteTo, ReshapeTo, TryAdd, TryConcatAlong, TryMatMul,
};

use super::planes::Planes;
use super::segment::{segment, Handle};
use super::Composed;
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::{Conv, Host};
use crate::shapes::{ConvGeom, Dyn4};
use crate::{Error, Result};

/// `[n, rows, columns]`: each image's windows, a row per window.
pub(super) type Dyn3<E, D, T> = Tensor<(usize, usize, usize), E, D, T>;

/// For every output pixel and, within it, every kernel tap (output row, output column, kernel
/// row, kernel column, in that order) the input pixel it reads; and how many padding pixels
/// follow the image's `h * w`. Taps in the padding read the padding pixels in turn, each at
/// most `k * k` times, as often as an image pixel is read: the gather's backward adds every
/// tap's gradient to its pixel atomically, and on CUDA f16 atomic adds that pile onto one
/// address are slow (on an H100, the gather's forward and backward for a 3x3 layer on 128
/// images of 32x32 took 12.0 ms in f16 with one padding pixel, 5.1 with them spread; in f32,
/// 4.2 either way).
pub fn window_pixels(g: &ConvGeom) -> (Vec<usize>, usize) {
    let (k, ho, wo) = (g.k, g.h_out(), g.w_out());
    let mut pixels = Vec::with_capacity(ho * wo * k * k);
    let mut padding = 0;
    let at = |o: usize, i: usize| (o * g.stride + i * g.dilation).checked_sub(g.padding);
    for oy in 0..ho {
        for ox in 0..wo {
            for ky in 0..k {
                for kx in 0..k {
                    pixels.push(match (at(oy, ky), at(ox, kx)) {
                        (Some(y), Some(x)) if y < g.h && x < g.w => y * g.w + x,
                        _ => {
                            padding += 1;
                            g.h * g.w + (padding - 1) / (k * k)
                        }
                    });
                }
            }
        }
    }
    (pixels, padding.div_ceil(k * k).max(1))
}

/// The windows of `x` as `[n, h_out·w_out·k·k, c]`: for each image, one row per output pixel
/// and kernel tap (in [`window_pixels`]' order) holding that input pixel's channels; `pad`
/// fills the padding. Rows of a pixel's channels are what the gather copies, so it reads and
/// writes whole rows, and an output pixel's taps are adjacent: a convolution's columns
/// (`[n·h_out·w_out, k·k·c]`) are these windows as they lie, with no copy of their own.
pub(super) fn windows<E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>>(
    x: Dyn4<E, D, T>,
    g: &ConvGeom,
    pad: E,
) -> Result<Dyn3<E, D, T>> {
    let (n, c, h, w) = *x.shape();
    let dev = x.device().clone();
    let (taps, pads) = window_pixels(g);
    // [n, c, h·w] seen as [n, h·w, c] (no copy); the concatenation lays it out channels last,
    // with the padding pixels after each image's.
    let pixels = x
        .try_reshape_like(&(n, c, h * w))?
        .try_permute::<_, Axes3<0, 2, 1>>()?;
    let pad: Dyn3<E, D, NoneTape> =
        dev.try_tensor_from_vec(vec![pad; n * pads * c], (n, pads, c))?;
    let padded = (pixels, pad).try_concat_along(Axis::<1>)?;
    let len = taps.len();
    // One index per window row, the same for every image (broadcast, not copied).
    let idx = dev
        .try_tensor_from_vec(taps, (len,))?
        .try_broadcast_like::<_, Axis<0>>(&(n, len))?;
    padded.try_gather(idx).map_err(Error::from)
}

impl<E: FloatDtype, D: HostAccess<E>> Conv<E, D> for Composed {
    /// One group: im2col as a gather, then one matrix product, as a segment. More groups
    /// (depthwise): the host kernel, through copies.
    fn conv2d<T: Tape<E, D>>(
        x: Dyn4<E, D, T>,
        weight: &Dyn4<E, D>,
        bias: Option<&Tensor<(usize,), E, D>>,
        g: &ConvGeom,
    ) -> Result<Dyn4<E, D, T>> {
        if g.groups != 1 {
            return Host::conv2d(x, weight, bias, g);
        }
        let mut params: Vec<Box<dyn Handle<E, D>>> = vec![Box::new(weight.clone())];
        params.extend(bias.map(|b| Box::new(b.clone()) as Box<dyn Handle<E, D>>));
        segment([x], params, |[x]| conv2d_ops(x, weight, bias, g))
    }
}

fn conv2d_ops<E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>>(
    x: Dyn4<E, D, T>,
    weight: &Dyn4<E, D>,
    bias: Option<&Tensor<(usize,), E, D>>,
    g: &ConvGeom,
) -> Result<Dyn4<E, D, T>> {
    let (n, c, h, w) = (g.batch, g.c_in, g.h, g.w);
    let (ho, wo, k, oc) = (g.h_out(), g.w_out(), g.k, g.c_out);
    let kk = k * k;
    // The product is `[oc, n·ho·wo]`: the output channel by channel, seen as
    // `[n, oc, ho, wo]` (a permuted view whose planes are contiguous, not a copy: a copy would
    // keep the product for its backward, one more output-sized tensor per layer).
    let y = if k == 1 && g.stride == 1 && g.padding == 0 {
        // A pointwise convolution reads every pixel once: `[oc, c]` times the pixels channel by
        // channel, `[c, n·h·w]`, whose copy moves whole planes.
        let planes = x
            .try_reshape_like(&(n, c, h * w))?
            .try_permute::<_, Axes3<1, 0, 2>>()?
            .try_reshape_like(&(c, n * h * w))?;
        weight
            .clone()
            .retaped::<T>()
            .try_reshape_like(&(oc, c))?
            .try_matmul(planes)?
    } else {
        // The weight as `[oc, kk·c]` (a copy, taps first, to match the columns) times the
        // columns `[n·ho·wo, kk·c]` transposed (a view: the product reads them as they lie).
        let cols = windows(x, g, E::zero())?
            .try_reshape_like(&(n * ho * wo, kk * c))?
            .try_permute::<_, dfdx::shapes::Axes2<1, 0>>()?;
        weight
            .clone()
            .retaped::<T>()
            .try_reshape_like(&(oc, c, kk))?
            .try_permute::<_, Axes3<0, 2, 1>>()?
            .try_reshape_like(&(oc, kk * c))?
            .try_matmul(cols)?
    };
    let y = y
        .try_reshape_like(&(oc, n, ho, wo))?
        .try_permute::<_, Axes4<1, 0, 2, 3>>()?;
    with_bias(y, bias)
}

/// `y` plus `bias` per channel (on `y`'s tape), spread as batch norm spreads its shift: in
/// half precision a broadcast's backward would be one of dfdx's slow reductions.
pub(crate) fn with_bias<E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>>(
    y: Dyn4<E, D, T>,
    bias: Option<&Tensor<(usize,), E, D>>,
) -> Result<Dyn4<E, D, T>> {
    let Some(b) = bias else {
        return Ok(y);
    };
    let (n, _, ho, wo) = *y.shape();
    let b = Planes::new(y.device(), (n, ho, wo)).spread(b.clone().retaped::<T>())?;
    y.try_add(b).map_err(Error::from)
}

#[cfg(test)]
mod tests {
    use super::{window_pixels, ConvGeom};

    fn square(h: usize, k: usize, stride: usize, padding: usize, dilation: usize) -> ConvGeom {
        ConvGeom {
            batch: 1,
            c_in: 1,
            h,
            w: h,
            c_out: 1,
            k,
            stride,
            padding,
            dilation,
            groups: 1,
        }
    }

    /// Every tap reads a pixel of the image or one of the padding pixels after it, and no
    /// padding pixel is read more often than an image pixel can be (k·k times).
    #[test]
    fn padding_reads_are_spread_over_the_padding_pixels() {
        for g in [
            square(32, 3, 1, 1, 1),
            square(7, 3, 2, 1, 1),
            square(4, 3, 1, 2, 2),
            square(5, 1, 2, 0, 1),
        ] {
            let (taps, pads) = window_pixels(&g);
            let mut reads = vec![0; g.h * g.w + pads];
            for &t in &taps {
                reads[t] += 1;
            }
            assert!(reads.iter().all(|&r| r <= g.k * g.k), "{reads:?}");
            let in_padding: usize = reads[g.h * g.w..].iter().sum();
            assert_eq!(pads, in_padding.div_ceil(g.k * g.k).max(1));
        }
        // A 3x3 layer on 32x32 reads its padding 380 times: 43 padding pixels, not one.
        let (taps, pads) = window_pixels(&square(32, 3, 1, 1, 1));
        assert_eq!(taps.iter().filter(|&&t| t >= 32 * 32).count(), 380);
        assert_eq!(pads, 43);
    }
}

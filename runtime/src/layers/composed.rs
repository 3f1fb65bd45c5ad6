//! The layers' ops written with dfdx's differentiable tensor ops, for devices where the host
//! kernels would copy every activation to the host and back (CUDA, [`TrainDevice::host_kernels`]
//! false). Windows are gathered by index (a convolution's im2col is one `gather` of rows),
//! products go to the device's matrix multiply (cuBLAS on CUDA), and dfdx's backward of each
//! op makes the gradients, so these need no kernel of fulmen's own on the device.
//!
//! Why this and not cuDNN: cudarc 0.9's cuDNN bindings are for cuDNN 8, the GPU machines carry
//! cuDNN 9, and a layer written this way is checked on the CPU against the host kernels in
//! every CI run (tests/composed.rs), where a cuDNN path could only be checked on a GPU.
//!
//! On the CPU the fused host kernels are several times faster; the layers use these only on
//! other devices, and grouped convolutions (depthwise) always use the host kernels.
//!
//! Each layer of more than one op (convolution, batch norm, pooling, the residual add+ReLU)
//! is recorded as a segment, on a tape of its own spliced into the caller's: dfdx keeps every
//! gradient of a backward until it ends, and a segment frees those of its intermediate tensors
//! as soon as its own backward is done (`segment.rs`).

use std::cell::OnceCell;

use dfdx::shapes::{Axes3, Axes4, Axis, Const, Dim, HasShape, Rank1, Shape};
use dfdx::tensor::{NoneTape, Tape, Tensor};
use dfdx::tensor_ops::{
    BroadcastTo, GatherTo, MaxTo, MeanTo, PermuteTo, RealizeTo, ReshapeTo, TryAdd, TryConcatAlong,
    TryDiv, TryMatMul, TryMul, TrySub,
};

use super::segment::{segment, Handle};
use super::{ConvGeom, Dyn4, Images};
use crate::device::is_half;
use crate::{Error, FloatDtype, Result, TrainDevice};

/// `[n, c, h, w]` images whose channel count is `C`, known at compile time or not.
type Channels<C, E, D, T> = Tensor<(usize, C, usize, usize), E, D, T>;

/// `[n, rows, columns]`: each image's windows, a row per window.
type Dyn3<E, D, T> = Tensor<(usize, usize, usize), E, D, T>;

fn dev_err(e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("{e:?}"))
}

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
fn windows<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
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
        .try_reshape_like(&(n, c, h * w))
        .map_err(dev_err)?
        .try_permute::<_, Axes3<0, 2, 1>>()
        .map_err(dev_err)?;
    let pad: Dyn3<E, D, NoneTape> = dev
        .try_tensor_from_vec(vec![pad; n * pads * c], (n, pads, c))
        .map_err(dev_err)?;
    let padded = (pixels, pad).try_concat_along(Axis::<1>).map_err(dev_err)?;
    let len = taps.len();
    // One index per window row, the same for every image (broadcast, not copied).
    let idx = dev
        .try_tensor_from_vec(taps, (len,))
        .map_err(dev_err)?
        .try_broadcast_like::<_, Axis<0>>(&(n, len))
        .map_err(dev_err)?;
    padded.try_gather(idx).map_err(dev_err)
}

/// 2-D convolution (one group) on any device: im2col as a gather, then one matrix product;
/// a segment.
pub fn conv2d<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    x: Dyn4<E, D, T>,
    weight: &Dyn4<E, D>,
    bias: Option<&Tensor<(usize,), E, D>>,
    g: &ConvGeom,
) -> Result<Dyn4<E, D, T>> {
    if g.groups != 1 {
        return Err(Error::msg("composed conv2d: one group only"));
    }
    let mut params: Vec<Box<dyn Handle<E, D>>> = vec![Box::new(weight.clone())];
    params.extend(bias.map(|b| Box::new(b.clone()) as Box<dyn Handle<E, D>>));
    segment([x], params, |[x]| conv2d_ops(x, weight, bias, g))
}

fn conv2d_ops<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
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
            .try_reshape_like(&(n, c, h * w))
            .map_err(dev_err)?
            .try_permute::<_, Axes3<1, 0, 2>>()
            .map_err(dev_err)?
            .try_reshape_like(&(c, n * h * w))
            .map_err(dev_err)?;
        weight
            .clone()
            .retaped::<T>()
            .try_reshape_like(&(oc, c))
            .map_err(dev_err)?
            .try_matmul(planes)
            .map_err(dev_err)?
    } else {
        // The weight as `[oc, kk·c]` (a copy, taps first, to match the columns) times the
        // columns `[n·ho·wo, kk·c]` transposed (a view: the product reads them as they lie).
        let cols = windows(x, g, E::zero())?
            .try_reshape_like(&(n * ho * wo, kk * c))
            .map_err(dev_err)?
            .try_permute::<_, dfdx::shapes::Axes2<1, 0>>()
            .map_err(dev_err)?;
        weight
            .clone()
            .retaped::<T>()
            .try_reshape_like(&(oc, c, kk))
            .map_err(dev_err)?
            .try_permute::<_, Axes3<0, 2, 1>>()
            .map_err(dev_err)?
            .try_reshape_like(&(oc, kk * c))
            .map_err(dev_err)?
            .try_matmul(cols)
            .map_err(dev_err)?
    };
    let y = y
        .try_reshape_like(&(oc, n, ho, wo))
        .map_err(dev_err)?
        .try_permute::<_, Axes4<1, 0, 2, 3>>()
        .map_err(dev_err)?;
    match bias {
        // Spread as batch norm spreads its shift: in half precision a broadcast's backward
        // would be one of dfdx's slow reductions.
        Some(b) => {
            let b = Planes::new(y.device(), (n, ho, wo)).spread(b.clone().retaped::<T>())?;
            y.try_add(b).map_err(dev_err)
        }
        None => Ok(y),
    }
}

/// Max or average pooling over square windows (averages count the padding, as PyTorch's
/// `count_include_pad=True`); a segment. Max pooling's gradient goes to every input equal
/// to the window's maximum (dfdx's rule), where the host kernel gives it to the first.
pub fn pool2d<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>, const C: usize>(
    x: Images<C, E, D, T>,
    max: bool,
    k: usize,
    stride: usize,
    padding: usize,
) -> Result<Images<C, E, D, T>> {
    segment([x], Vec::new(), |[x]| {
        pool2d_ops(x, max, k, stride, padding)
    })
}

fn pool2d_ops<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>, const C: usize>(
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
    let rows = windows(x, &g, pad)?
        .try_reshape_like(&(n, ho * wo, k * k, C))
        .map_err(dev_err)?;
    let pooled: Dyn3<E, D, T> = if max {
        rows.try_max::<_, Axis<2>>().map_err(dev_err)?
    } else {
        rows.try_mean::<_, Axis<2>>().map_err(dev_err)?
    };
    pooled
        .try_permute::<_, Axes3<0, 2, 1>>()
        .map_err(dev_err)?
        .try_reshape_like(&(n, Const::<C>, ho, wo))
        .map_err(dev_err)
}

/// Adaptive average pooling as one product with the averaging matrix: `[n·c, h·w]` times
/// `[h·w, out_h·out_w]`, whose column for each output holds 1/size over its window.
pub fn adaptive_avg_pool2d<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>, const C: usize>(
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
            let share = E::from(1.0 / (rows.len() * cols.len()) as f64).unwrap_or_else(E::nan);
            for iy in rows {
                for ix in cols.clone() {
                    avg[(iy * w + ix) * out_h * out_w + oy * out_w + ox] = share;
                }
            }
        }
    }
    let dev = x.device().clone();
    let avg: Tensor<(usize, usize), E, D> = dev
        .try_tensor_from_vec(avg, (h * w, out_h * out_w))
        .map_err(dev_err)?;
    x.try_reshape_like(&(n * C, h * w))
        .map_err(dev_err)?
        .try_matmul(avg)
        .map_err(dev_err)?
        .try_reshape_like(&(n, Const::<C>, out_h, out_w))
        .map_err(dev_err)
}

/// What `cell` holds, made by `make` if it holds nothing yet.
fn made<X>(cell: &OnceCell<X>, make: impl FnOnce() -> Result<X>) -> Result<&X> {
    if let Some(x) = cell.get() {
        return Ok(x);
    }
    let x = make()?;
    Ok(cell.get_or_init(|| x))
}

/// A `[rows, cols]` matrix of `value`.
fn constant<E: FloatDtype, D: TrainDevice<E>>(
    dev: &D,
    (rows, cols): (usize, usize),
    value: f64,
) -> Result<Tensor<(usize, usize), E, D>> {
    let v = E::from(value).unwrap_or_else(E::nan);
    dev.try_tensor_from_vec(vec![v; rows * cols], (rows, cols))
        .map_err(dev_err)
}

/// Per-channel means and broadcasts over a batch of `[n, C, h, w]` images: dfdx's reductions
/// and broadcasts, except in half precision, where they are matrix products (and so their
/// backward too). cuBLAS sums in f32 whatever the dtype, where dfdx's reductions into a few
/// values contend on atomic adds, which in f16 are slow: on an H200, summing a CIFAR batch
/// into 64 channels took 30 ms in f16 in one reduction, 0.12 ms in f32, and 0.05 ms for a
/// product reducing as many values. And a sum of 131,072 values in f16 passes its largest
/// value, 65,504, on the way to a mean that does not. In f32 and f64 dfdx's ops keep less for
/// the backward: a reduction keeps nothing and a broadcast keeps its few values, where a
/// product keeps its activation-sized operand and makes a broadcast activation-sized.
struct Planes<E: FloatDtype, D: TrainDevice<E>> {
    dev: D,
    shape: (usize, usize, usize),
    /// The products' constant factors ([`Self::means`], [`Self::copies`]), each pair made (a
    /// copy to the device) when first used: in half precision only, and a convolution's bias
    /// needs only the copies.
    means: OnceCell<Pair<E, D>>,
    copies: OnceCell<Pair<E, D>>,
}

type Pair<E, D> = (Tensor<(usize, usize), E, D>, Tensor<(usize, usize), E, D>);

impl<E: FloatDtype, D: TrainDevice<E>> Planes<E, D> {
    fn new(dev: &D, shape: (usize, usize, usize)) -> Self {
        Self {
            dev: dev.clone(),
            shape,
            means: OnceCell::new(),
            copies: OnceCell::new(),
        }
    }

    /// `([h·w, 1]` of `1/(h·w)`, `[1, n]` of `1/n`): the means over pixels, then images.
    fn means(&self) -> Result<&Pair<E, D>> {
        let (n, h, w) = self.shape;
        made(&self.means, || {
            let pixels = constant(&self.dev, (h * w, 1), 1.0 / (h * w) as f64)?;
            Ok((pixels, constant(&self.dev, (1, n), 1.0 / n as f64)?))
        })
    }

    /// `([n, 1]`, `[1, h·w])` of ones: the copies over images, then pixels.
    fn copies(&self) -> Result<&Pair<E, D>> {
        let (n, h, w) = self.shape;
        made(&self.copies, || {
            let images = constant(&self.dev, (n, 1), 1.0)?;
            Ok((images, constant(&self.dev, (1, h * w), 1.0)?))
        })
    }

    /// The mean of each channel: over each plane's pixels, then over the images.
    fn mean<T: Tape<E, D>, const C: usize>(
        &self,
        x: Images<C, E, D, T>,
    ) -> Result<Tensor<Rank1<C>, E, D, T>> {
        let (n, h, w) = self.shape;
        if !is_half::<E>() {
            return x.try_mean::<Rank1<C>, Axes3<0, 2, 3>>().map_err(dev_err);
        }
        let (pixel_mean, image_mean) = self.means()?;
        let per_plane = x
            .try_reshape_like(&(n * C, h * w))
            .map_err(dev_err)?
            .try_matmul(pixel_mean.clone())
            .map_err(dev_err)?
            .try_reshape_like(&(n, C))
            .map_err(dev_err)?;
        image_mean
            .clone()
            .retaped::<T>()
            .try_matmul(per_plane)
            .map_err(dev_err)?
            .try_reshape_like(&(Const::<C>,))
            .map_err(dev_err)
    }

    /// `v` (a value per channel) at every pixel of every image: copied over the images, then
    /// over each plane's pixels.
    fn spread<T: Tape<E, D>, C: Dim>(
        &self,
        v: Tensor<(C,), E, D, T>,
    ) -> Result<Channels<C, E, D, T>> {
        let (n, h, w) = self.shape;
        let c = v.shape().0;
        if !is_half::<E>() {
            return v
                .try_broadcast_like::<_, Axes3<0, 2, 3>>(&(n, c, h, w))
                .map_err(dev_err);
        }
        let (images, pixels) = self.copies()?;
        images
            .clone()
            .retaped::<T>()
            .try_matmul(v.try_reshape_like(&(1, c.size())).map_err(dev_err)?)
            .map_err(dev_err)?
            .try_reshape_like(&(n * c.size(), 1))
            .map_err(dev_err)?
            .try_matmul(pixels.clone())
            .map_err(dev_err)?
            .try_reshape_like(&(n, c, h, w))
            .map_err(dev_err)
    }
}

/// A batch normalized, scaled and shifted, with the per-channel statistics it was normalized
/// by: `(y, mean, biased variance)`, the statistics off the tape.
pub type Normalized<const C: usize, E, D, T> = (
    Images<C, E, D, T>,
    Tensor<Rank1<C>, E, D>,
    Tensor<Rank1<C>, E, D>,
);

/// Batch norm by the batch's statistics ([`Normalized`]); a segment.
pub fn batch_norm_train<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>, const C: usize>(
    x: Images<C, E, D, T>,
    weight: &Tensor<Rank1<C>, E, D>,
    bias: &Tensor<Rank1<C>, E, D>,
    epsilon: f64,
) -> Result<Normalized<C, E, D, T>> {
    let params: Vec<Box<dyn Handle<E, D>>> = vec![Box::new(weight.clone()), Box::new(bias.clone())];
    let mut stats = None;
    let y = segment([x], params, |[x]| {
        let (y, mean, var) = batch_norm_train_ops(x, weight, bias, epsilon)?;
        stats = Some((mean, var));
        Ok(y)
    })?;
    let (mean, var) = stats.ok_or_else(|| Error::msg("batch norm: no statistics"))?;
    Ok((y, mean, var))
}

fn batch_norm_train_ops<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>, const C: usize>(
    x: Images<C, E, D, T>,
    weight: &Tensor<Rank1<C>, E, D>,
    bias: &Tensor<Rank1<C>, E, D>,
    epsilon: f64,
) -> Result<Normalized<C, E, D, T>> {
    let (n, _, h, w) = *x.shape();
    let planes = Planes::new(x.device(), (n, h, w));
    let eps = E::from(epsilon).unwrap_or_else(E::nan);
    let mean = planes.mean(x.retaped::<T>())?;
    let mean_value = mean.retaped::<NoneTape>();
    let centred = x.try_sub(planes.spread(mean)?).map_err(dev_err)?;
    let var = planes.mean(centred.retaped::<T>().try_square().map_err(dev_err)?)?;
    let var_value = var.retaped::<NoneTape>();
    let scale = weight
        .retaped::<T>()
        .try_div(
            var.try_add(eps)
                .map_err(dev_err)?
                .try_sqrt()
                .map_err(dev_err)?,
        )
        .map_err(dev_err)?;
    let y = centred
        .try_mul(planes.spread(scale)?)
        .map_err(dev_err)?
        .try_add(planes.spread(bias.retaped::<T>())?)
        .map_err(dev_err)?;
    Ok((y, mean_value, var_value))
}

/// Normalizes by given statistics (evaluation): `(x − mean) · weight / √(var + ε) + bias`.
pub fn batch_norm_eval<E: FloatDtype, D: TrainDevice<E>, const C: usize>(
    x: Images<C, E, D>,
    mean: &Tensor<Rank1<C>, E, D>,
    var: &Tensor<Rank1<C>, E, D>,
    weight: &Tensor<Rank1<C>, E, D>,
    bias: &Tensor<Rank1<C>, E, D>,
    epsilon: f64,
) -> Result<Images<C, E, D>> {
    let shape = *x.shape();
    let eps = E::from(epsilon).unwrap_or_else(E::nan);
    let scale = weight
        .clone()
        .try_div(
            var.clone()
                .try_add(eps)
                .map_err(dev_err)?
                .try_sqrt()
                .map_err(dev_err)?,
        )
        .map_err(dev_err)?;
    x.try_sub(mean.clone().try_broadcast_like(&shape).map_err(dev_err)?)
        .map_err(dev_err)?
        .try_mul(scale.try_broadcast_like(&shape).map_err(dev_err)?)
        .map_err(dev_err)?
        .try_add(bias.clone().try_broadcast_like(&shape).map_err(dev_err)?)
        .map_err(dev_err)
}

/// `relu(a + b)`, the end of a residual block; a segment.
pub fn add_relu<S: Shape, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    a: Tensor<S, E, D, T>,
    b: Tensor<S, E, D, T>,
) -> Result<Tensor<S, E, D, T>> {
    segment([a, b], Vec::new(), |[a, b]| {
        a.try_add(b).and_then(|s| s.try_relu()).map_err(dev_err)
    })
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

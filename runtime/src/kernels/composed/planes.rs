//! [`Planes`]: per-channel means and broadcasts over a batch of images, as dfdx's reductions
//! and broadcasts or, in half precision, as matrix products.

use std::cell::OnceCell;

use dfdx::shapes::{Axes3, Const, Dim, HasShape, Rank1};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{BroadcastTo, MeanTo, ReshapeTo, TryMatMul};

use crate::device::{is_half, of_f64, FloatDtype, HostAccess};
use crate::shapes::Images;
use crate::Result;

/// `[n, c, h, w]` images whose channel count is `C`, known at compile time or not.
type Channels<C, E, D, T> = Tensor<(usize, C, usize, usize), E, D, T>;

/// What `cell` holds, made by `make` if it holds nothing yet.
fn made<X>(cell: &OnceCell<X>, make: impl FnOnce() -> Result<X>) -> Result<&X> {
    if let Some(x) = cell.get() {
        return Ok(x);
    }
    let x = make()?;
    Ok(cell.get_or_init(|| x))
}

/// A `[rows, cols]` matrix of `value`.
fn constant<E: FloatDtype, D: HostAccess<E>>(
    dev: &D,
    (rows, cols): (usize, usize),
    value: f64,
) -> Result<Tensor<(usize, usize), E, D>> {
    let v = of_f64::<E>(value);
    dev.try_tensor_from_vec(vec![v; rows * cols], (rows, cols))
        .map_err(crate::Error::from)
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
pub(super) struct Planes<E: FloatDtype, D: HostAccess<E>> {
    dev: D,
    shape: (usize, usize, usize),
    /// The products' constant factors ([`Self::means`], [`Self::copies`]), each pair made (a
    /// copy to the device) when first used: in half precision only, and a convolution's bias
    /// needs only the copies.
    means: OnceCell<Pair<E, D>>,
    copies: OnceCell<Pair<E, D>>,
}

type Pair<E, D> = (Tensor<(usize, usize), E, D>, Tensor<(usize, usize), E, D>);

impl<E: FloatDtype, D: HostAccess<E>> Planes<E, D> {
    pub(super) fn new(dev: &D, shape: (usize, usize, usize)) -> Self {
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
    pub(super) fn mean<T: Tape<E, D>, const C: usize>(
        &self,
        x: Images<C, E, D, T>,
    ) -> Result<Tensor<Rank1<C>, E, D, T>> {
        let (n, h, w) = self.shape;
        if !is_half::<E>() {
            return x
                .try_mean::<Rank1<C>, Axes3<0, 2, 3>>()
                .map_err(crate::Error::from);
        }
        let (pixel_mean, image_mean) = self.means()?;
        let per_plane = x
            .try_reshape_like(&(n * C, h * w))?
            .try_matmul(pixel_mean.clone())?
            .try_reshape_like(&(n, C))?;
        image_mean
            .clone()
            .retaped::<T>()
            .try_matmul(per_plane)?
            .try_reshape_like(&(Const::<C>,))
            .map_err(crate::Error::from)
    }

    /// `v` (a value per channel) at every pixel of every image: copied over the images, then
    /// over each plane's pixels.
    pub(super) fn spread<T: Tape<E, D>, C: Dim>(
        &self,
        v: Tensor<(C,), E, D, T>,
    ) -> Result<Channels<C, E, D, T>> {
        let (n, h, w) = self.shape;
        let c = v.shape().0;
        if !is_half::<E>() {
            return v
                .try_broadcast_like::<_, Axes3<0, 2, 3>>(&(n, c, h, w))
                .map_err(crate::Error::from);
        }
        let (images, pixels) = self.copies()?;
        images
            .clone()
            .retaped::<T>()
            .try_matmul(v.try_reshape_like(&(1, c.size()))?)?
            .try_reshape_like(&(n * c.size(), 1))?
            .try_matmul(pixels.clone())?
            .try_reshape_like(&(n, c, h, w))
            .map_err(crate::Error::from)
    }
}

//! Image samples: `C` channels of `height × width` pixels in PyTorch's CHW order, collated into
//! `[N, C, H, W]` batches (channels fixed at compile time, height and width at run time).

use dfdx::shapes::Const;
use dfdx::tensor::{Tensor, TensorFrom};
use dfdx::tensor_ops::Device;

use super::{Class, Collate, Labels};
use crate::{Error, FloatDtype, Result};

/// One image with `C` channels.
#[derive(Debug, Clone, PartialEq)]
pub struct Image<const C: usize> {
    pixels: Vec<f32>,
    height: usize,
    width: usize,
}

impl<const C: usize> Image<C> {
    /// An image from its pixels in CHW order; refuses a pixel count other than C·height·width.
    pub fn new(pixels: Vec<f32>, height: usize, width: usize) -> Result<Self> {
        if pixels.len() != C * height * width {
            return Err(Error::msg(format!(
                "{} pixel values do not make a {C}×{height}×{width} image",
                pixels.len()
            )));
        }
        Ok(Self {
            pixels,
            height,
            width,
        })
    }
    /// The height in pixels.
    pub fn height(&self) -> usize {
        self.height
    }
    /// The width in pixels.
    pub fn width(&self) -> usize {
        self.width
    }
    /// The pixels, CHW.
    pub fn pixels(&self) -> &[f32] {
        &self.pixels
    }
    /// The pixels, CHW, to change in place.
    pub fn pixels_mut(&mut self) -> &mut [f32] {
        &mut self.pixels
    }
}

/// An image classification batch: `[N, C, H, W]` images and labels in `0..K`.
pub type ImageBatch<const C: usize, const K: usize, E, D> =
    (Tensor<(usize, Const<C>, usize, usize), E, D>, Labels<K, D>);

/// Stacks images of one size. Images of different sizes in one batch cannot form a tensor:
/// that panics, naming both sizes — a dataset serving images must crop or resize them.
impl<E: FloatDtype, D: Device<E>, const C: usize, const K: usize> Collate<ImageBatch<C, K, E, D>, D>
    for (Image<C>, Class<K>)
{
    fn collate(samples: Vec<Self>, device: &D) -> ImageBatch<C, K, E, D> {
        let (h, w) = samples
            .first()
            .map_or((0, 0), |(im, _)| (im.height, im.width));
        let mut data = Vec::with_capacity(samples.len() * C * h * w);
        let mut labels = Vec::with_capacity(samples.len());
        for (image, class) in &samples {
            assert!(
                (image.height, image.width) == (h, w),
                "images of one batch differ in size: {h}×{w} and {}×{}; crop or resize them in the dataset",
                image.height,
                image.width
            );
            data.extend(
                image
                    .pixels
                    .iter()
                    .map(|&v| E::from(v).unwrap_or_else(E::nan)),
            );
            labels.push(class.index());
        }
        let x = device.tensor((data, (samples.len(), Const::<C>, h, w)));
        (x, Labels::new(labels, device.clone()))
    }
}

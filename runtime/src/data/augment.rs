//! Seeded image augmentation: torchvision's `RandomCrop(size, padding)` and
//! `RandomHorizontalFlip()`, then `Normalize(mean, std)` ([`Augmented`]).

use rand::{Rng, SeedableRng};

use super::{Dataset, Image};
use crate::seed::mix;

/// A dataset of images with torchvision's random crops and flips, then normalization. What
/// each sample gets is drawn from (seed, epoch, index) alone: every epoch differs, loader
/// workers agree with inline loading, and a resumed run sees the same images.
///
/// ```
/// use fulmen::data::{cifar10, Augmented, InMemoryDataset};
/// let train = InMemoryDataset::new(Vec::<cifar10::Sample>::new());
/// let augmented = Augmented::new(train, 0).crop_padding(4).horizontal_flip(true)
///     .normalize(cifar10::MEAN, cifar10::STD);
/// ```
#[derive(Debug, Clone)]
pub struct Augmented<D, const C: usize> {
    inner: D,
    seed: u64,
    padding: usize,
    flip: bool,
    normalize: Option<([f32; C], [f32; C])>,
}

impl<D, const C: usize> Augmented<D, C> {
    /// No augmentation until asked for; `seed` picks the random stream.
    pub fn new(inner: D, seed: u64) -> Self {
        Self {
            inner,
            seed,
            padding: 0,
            flip: false,
            normalize: None,
        }
    }
    /// Pad every side by `padding` zero pixels and crop a random window of the original size.
    pub fn crop_padding(mut self, padding: usize) -> Self {
        self.padding = padding;
        self
    }
    /// Mirror left-right with probability ½.
    pub fn horizontal_flip(mut self, on: bool) -> Self {
        self.flip = on;
        self
    }
    /// Subtract `mean` and divide by `std` per channel, after cropping and flipping.
    pub fn normalize(mut self, mean: [f32; C], std: [f32; C]) -> Self {
        self.normalize = Some((mean, std));
        self
    }

    fn apply(&self, image: &Image<C>, index: usize, epoch: usize) -> Image<C> {
        let mut rng =
            rand::rngs::StdRng::seed_from_u64(mix(mix(self.seed, epoch as u64), index as u64));
        let (h, w, p) = (image.height(), image.width(), self.padding);
        let (dy, dx) = (rng.gen_range(0..=2 * p), rng.gen_range(0..=2 * p));
        let flip = self.flip && rng.gen_bool(0.5);
        let src = image.pixels();
        let mut out = vec![0.0; C * h * w];
        for c in 0..C {
            for y in 0..h {
                // Row y + dy of the padded image is row y + dy - p of the original.
                let Some(sy) = (y + dy).checked_sub(p).filter(|&sy| sy < h) else {
                    continue;
                };
                for x in 0..w {
                    let cx = if flip { w - 1 - x } else { x };
                    if let Some(sx) = (cx + dx).checked_sub(p).filter(|&sx| sx < w) {
                        out[(c * h + y) * w + x] = src[(c * h + sy) * w + sx];
                    }
                }
            }
        }
        if let Some((mean, std)) = &self.normalize {
            for (c, plane) in out.chunks_mut(h * w).enumerate() {
                plane.iter_mut().for_each(|v| *v = (*v - mean[c]) / std[c]);
            }
        }
        Image::new(out, h, w).unwrap_or_else(|_| image.clone())
    }
}

impl<D, L, const C: usize> Dataset for Augmented<D, C>
where
    D: Dataset<Item = (Image<C>, L)>,
    L: Send + 'static,
{
    type Item = (Image<C>, L);
    fn len(&self) -> usize {
        self.inner.len()
    }
    fn get(&self, index: usize) -> Self::Item {
        self.get_in_epoch(index, 0)
    }
    fn get_in_epoch(&self, index: usize, epoch: usize) -> Self::Item {
        let (image, label) = self.inner.get_in_epoch(index, epoch);
        (self.apply(&image, index, epoch), label)
    }
}

//! `Flatten<F>`: `[N, C, H, W]` images to `[N, F]` rows, as PyTorch's `nn.Flatten()` before a
//! `Linear<F, _>`. Height and width are known only at run time, so `F = C·H·W` is checked then:
//! a mismatch is an error naming both sizes.
//!
//! ```
//! use fulmen::layers::{Flatten, MaxPool2D};
//! use fulmen::prelude::*;
//!
//! #[module]
//! struct Head {
//!     pool: MaxPool2D<2, 2>,
//!     flat: Flatten<{ 8 * 4 * 4 }>,
//!     fc: Linear<{ 8 * 4 * 4 }, 10>,
//! }
//!
//! let dev = Cpu::default();
//! let head = Head::build(&dev);
//! let x: Tensor<(usize, Const<8>, usize, usize), f32, Cpu> = dev.zeros_like(&(2, Const, 8, 8));
//! let logits = head.fc.forward(head.flat.forward(head.pool.forward(x)));
//! assert_eq!(logits.shape().0, 2);
//! ```

use dfdx::nn::{Module, NonMutableModule, ZeroSizedModule};
use dfdx::shapes::{Const, Dtype, HasShape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{Device, ReshapeTo};

use super::Images;
use crate::{Error, FloatDtype, Result, TrainDevice};

/// Flattens each image to `F` values (channel-major, as PyTorch).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Flatten<const F: usize>;

impl<const F: usize> ZeroSizedModule for Flatten<F> {}
impl<const F: usize> NonMutableModule for Flatten<F> {}

impl<const F: usize> crate::Spec for Flatten<F> {
    type Module<E: Dtype, D: Device<E>> = Self;
}

/// `x` (`[N, C, H, W]`) as `[N, F]`; an error unless `C·H·W = F`.
pub fn flatten<const F: usize, const C: usize, E, D, T>(
    x: Images<C, E, D, T>,
) -> Result<Tensor<(usize, Const<F>), E, D, T>>
where
    E: FloatDtype,
    D: TrainDevice<E>,
    T: Tape<E, D>,
{
    let (n, _, h, w) = *x.shape();
    if C * h * w != F {
        return Err(Error::config(
            format!("Flatten<{F}>"),
            format!(
                "a {C}×{h}×{w} image has {} values, not {F}; the layer after it must take {}",
                C * h * w,
                C * h * w
            ),
        ));
    }
    x.try_reshape_like(&(n, Const::<F>)).map_err(Error::from)
}

impl<const F: usize, const C: usize, E, D, T> Module<Images<C, E, D, T>> for Flatten<F>
where
    E: FloatDtype,
    D: TrainDevice<E>,
    T: Tape<E, D>,
{
    type Output = Tensor<(usize, Const<F>), E, D, T>;
    type Error = D::Err;

    /// Panics, with fulmen's message, when `C·H·W ≠ F` (see [`flatten`] for a `Result`).
    fn try_forward(&self, x: Images<C, E, D, T>) -> std::result::Result<Self::Output, D::Err> {
        Ok(super::or_panic(flatten(x)))
    }
}

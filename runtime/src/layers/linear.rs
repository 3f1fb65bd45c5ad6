//! `Linear<I, O>`: a dense layer, `x · Wᵀ + b`, as PyTorch's `nn.Linear(I, O)` and dfdx's
//! `Linear`, whose tensors (`weight` `[O, I]`, `bias` `[O]`), initialization (uniform in
//! ±1/√I, the same draws) and inputs (`[I]`, `[batch, I]`, `[batch, seq, I]`) it keeps.
//!
//! It replaces dfdx's `Linear` in fulmen's prelude: a batch of rows is computed by the device's
//! kernels ([`Dense`]), on the CPU in f32 by fulmen's AVX-512 or AVX2 products where the CPU has them
//! (dfdx's `gemm` crate runs only AVX2 kernels on stable Rust, 78% of an MLP's training step);
//! other dtypes and CUDA take dfdx's ops. A row and a batch of sequences are reshaped into a
//! batch of rows. Like fulmen's other layers it runs on the devices and dtypes fulmen trains
//! with ([`TrainDevice`]), and a kernel's error is a panic with its message, as dfdx's own
//! layers panic on shapes that cannot work.
//!
//! ```
//! use fulmen::prelude::*;
//!
//! #[module]
//! struct Mlp {
//!     net: (Linear<784, 256>, ReLU, Linear<256, 10>),
//! }
//!
//! let dev = Cpu::default();
//! let mlp = Mlp::build(&dev);
//! let x: Tensor<(usize, Const<784>), f32, Cpu> = dev.sample_normal_like(&(32, Const));
//! let y = mlp.net.forward(x);
//! assert_eq!(y.shape().0, 32);
//! assert_eq!(mlp.net.0.weight.shape(), &(Const::<256>, Const::<784>));
//! ```

use dfdx::nn::{BuildModule, BuildOnDevice, Module, ModuleVisitor, NonMutableModule};
use dfdx::nn::{TensorCollection, TensorOptions};
use dfdx::shapes::{Const, ConstShape, Dim, Dtype, HasShape, Rank1, Rank2};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::{Device, ReshapeTo};
use num_traits::Float;
use rand_distr::uniform::SampleUniform;
use rand_distr::Uniform;

use super::or_panic;
use crate::kernels::Dense;
use crate::{FloatDtype, TrainDevice};

/// The layer's specification (what a struct field names); its module is
/// [`modules::Linear`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Linear<const I: usize, const O: usize>;

impl<const I: usize, const O: usize> crate::Spec for Linear<I, O> {
    type Module<E: Dtype, D: Device<E>> = modules::Linear<I, O, E, D>;
}

impl<const I: usize, const O: usize, E: Dtype, D: Device<E>> BuildOnDevice<D, E> for Linear<I, O>
where
    modules::Linear<I, O, E, D>: BuildModule<D, E>,
{
    type Built = modules::Linear<I, O, E, D>;
    fn try_build_on_device(device: &D) -> Result<Self::Built, D::Err> {
        Self::Built::try_build(device)
    }
}

pub mod modules {
    //! The module of the layer: its tensors, with PyTorch's names.
    use super::*;

    /// The tensors of a [`Linear`](super::Linear).
    #[derive(Debug, Clone)]
    pub struct Linear<const I: usize, const O: usize, E: Dtype, D: Device<E>> {
        /// `[O, I]`, trained, starting uniform in ±1/√I.
        pub weight: Tensor<Rank2<O, I>, E, D>,
        /// `[O]`, trained, starting uniform in ±1/√I.
        pub bias: Tensor<Rank1<O>, E, D>,
    }
}

impl<const I: usize, const O: usize, E: Dtype, D: Device<E>> NonMutableModule
    for modules::Linear<I, O, E, D>
{
}

impl<const I: usize, const O: usize, E, D: Device<E>> TensorCollection<E, D>
    for modules::Linear<I, O, E, D>
where
    E: Dtype + Float + SampleUniform,
{
    type To<E2: Dtype, D2: Device<E2>> = modules::Linear<I, O, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        // dfdx's draws, in its order, so that a seed builds the weights it built before.
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    uniform::<I, _, _, _>(),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    uniform::<I, _, _, _>(),
                ),
            ),
            |(weight, bias)| modules::Linear { weight, bias },
        )
    }
}

/// Values drawn uniformly in ±1/√`FAN_IN`.
fn uniform<const FAN_IN: usize, S, E, D>() -> TensorOptions<S, E, D>
where
    S: ConstShape,
    E: Dtype + Float + SampleUniform,
    D: Device<E>,
{
    TensorOptions::reset_with(|t| {
        let b = E::one() / E::from(FAN_IN).unwrap_or_else(E::one).sqrt();
        t.try_fill_with_distr(Uniform::new(-b, b))
    })
}

/// A batch of rows: the device's dense kernel.
impl<B: Dim, const I: usize, const O: usize, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>
    Module<Tensor<(B, Const<I>), E, D, T>> for modules::Linear<I, O, E, D>
{
    type Output = Tensor<(B, Const<O>), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, Const<I>), E, D, T>) -> Result<Self::Output, D::Err> {
        let (w, b) = (&self.weight, Some(&self.bias));
        Ok(or_panic(D::Kernels::linear(x, w, b)))
    }
}

/// One row: a batch of one (a reshape of a contiguous tensor is free in dfdx, and keeps its
/// gradient's identity).
impl<const I: usize, const O: usize, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>
    Module<Tensor<Rank1<I>, E, D, T>> for modules::Linear<I, O, E, D>
{
    type Output = Tensor<Rank1<O>, E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<Rank1<I>, E, D, T>) -> Result<Self::Output, D::Err> {
        let y = self.try_forward(x.try_reshape_like(&(Const::<1>, Const::<I>))?)?;
        y.try_reshape_like(&(Const::<O>,))
    }
}

/// A batch of sequences: every position a row of one batch.
impl<B: Dim, S: Dim, const I: usize, const O: usize, E, D, T>
    Module<Tensor<(B, S, Const<I>), E, D, T>> for modules::Linear<I, O, E, D>
where
    E: FloatDtype,
    D: TrainDevice<E>,
    T: Tape<E, D>,
{
    type Output = Tensor<(B, S, Const<O>), E, D, T>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<(B, S, Const<I>), E, D, T>) -> Result<Self::Output, D::Err> {
        let (b, s, _) = *x.shape();
        let rows = x.try_reshape_like(&(b.size() * s.size(), Const::<I>))?;
        self.try_forward(rows)?
            .try_reshape_like(&(b, s, Const::<O>))
    }
}

//! `ResidualReLU<F>` and `GeneralizedResidualReLU<F, R>`: the end of a ResNet block,
//! `relu(f(x) + x)` and `relu(f(x) + r(x))`, with the add and the ReLU one op ([`add_relu`]; on
//! the CPU one multithreaded pass each way), where dfdx's `(Residual<F>, ReLU)` runs two
//! single-threaded ops and keeps both their inputs. Tensor names are dfdx's: `0` for the
//! residual branch of `ResidualReLU`, `f` and `r` for `GeneralizedResidualReLU`.
//!
//! ```
//! use fulmen::layers::{BatchNorm2D, Conv2DNoBias, ResidualReLU};
//! use fulmen::prelude::*;
//!
//! #[module]
//! struct Block {
//!     block: ResidualReLU<(Conv2DNoBias<8, 8, 3, 1, 1>, BatchNorm2D<8>)>,
//! }
//!
//! let dev = Cpu::default();
//! let mut b = Block::build(&dev);
//! let x: Tensor<(usize, Const<8>, usize, usize), f32, Cpu> = dev.sample_normal_like(&(2, Const, 5, 5));
//! let y = b.block.forward_mut(x.leaky_traced());
//! assert!(y.as_vec().iter().all(|v| *v >= 0.0));
//! ```

use std::marker::PhantomData;

use dfdx::nn::{Module, ModuleMut, ModuleVisitor, TensorCollection};
use dfdx::shapes::{Dtype, HasShape};
use dfdx::tensor::{OwnedTape, Tape, WithEmptyTape};
use dfdx::tensor_ops::Device;

use super::or_panic;
use crate::kernels::{Describe, Elementwise, Op};
use crate::shapes::{branches_disagree, Images};
use crate::{FloatDtype, Result, TrainDevice};

/// `relu(f(x) + x)`; its module is [`modules::ResidualReLU`].
#[derive(Debug, Clone, Copy, Default)]
pub struct ResidualReLU<F>(PhantomData<F>);

/// `relu(f(x) + r(x))`; its module is [`modules::GeneralizedResidualReLU`].
#[derive(Debug, Clone, Copy, Default)]
pub struct GeneralizedResidualReLU<F, R>(PhantomData<(F, R)>);

impl<F: crate::Spec> crate::Spec for ResidualReLU<F> {
    type Module<E: Dtype, D: Device<E>> = modules::ResidualReLU<F::Module<E, D>>;
}

impl<F: crate::Spec, R: crate::Spec> crate::Spec for GeneralizedResidualReLU<F, R> {
    type Module<E: Dtype, D: Device<E>> =
        modules::GeneralizedResidualReLU<F::Module<E, D>, R::Module<E, D>>;
}

pub mod modules {
    //! The modules of the blocks: their branches.

    /// The residual branch `F` of `relu(F(x) + x)`.
    #[derive(Debug, Clone)]
    pub struct ResidualReLU<F>(pub F);

    /// The branches of `relu(f(x) + r(x))`.
    #[derive(Debug, Clone)]
    pub struct GeneralizedResidualReLU<F, R> {
        /// The branch `f`.
        pub f: F,
        /// The branch `r`, in place of the identity.
        pub r: R,
    }
}

use modules::{GeneralizedResidualReLU as GenMod, ResidualReLU as ResMod};

impl<E: Dtype, D: Device<E>, F: TensorCollection<E, D>> TensorCollection<E, D> for ResMod<F> {
    type To<E2: Dtype, D2: Device<E2>> = ResMod<F::To<E2, D2>>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> std::result::Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(Self::module("0", |s| &s.0, |s| &mut s.0), ResMod)
    }
}

impl<E: Dtype, D: Device<E>, F: TensorCollection<E, D>, R: TensorCollection<E, D>>
    TensorCollection<E, D> for GenMod<F, R>
{
    type To<E2: Dtype, D2: Device<E2>> = GenMod<F::To<E2, D2>, R::To<E2, D2>>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> std::result::Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::module("f", |s| &s.f, |s| &mut s.f),
                Self::module("r", |s| &s.r, |s| &mut s.r),
            ),
            |(f, r)| GenMod { f, r },
        )
    }
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>, F> Module<Images<C, E, D>> for ResMod<F>
where
    F: Module<Images<C, E, D>, Output = Images<C, E, D>, Error = D::Err>,
{
    type Output = Images<C, E, D>;
    type Error = D::Err;

    fn try_forward(&self, x: Images<C, E, D>) -> std::result::Result<Self::Output, D::Err> {
        let fx = self.0.try_forward(x.clone())?;
        Ok(or_panic(add_relu(fx, x)))
    }
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>, F>
    ModuleMut<Images<C, E, D, OwnedTape<E, D>>> for ResMod<F>
where
    F: ModuleMut<
        Images<C, E, D, OwnedTape<E, D>>,
        Output = Images<C, E, D, OwnedTape<E, D>>,
        Error = D::Err,
    >,
{
    type Output = Images<C, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    fn try_forward_mut(
        &mut self,
        x: Images<C, E, D, OwnedTape<E, D>>,
    ) -> std::result::Result<Self::Output, D::Err> {
        let fx = self.0.try_forward_mut(x.with_empty_tape())?;
        Ok(or_panic(add_relu(fx, x)))
    }
}

impl<const I: usize, const O: usize, E: FloatDtype, D: TrainDevice<E>, F, R> Module<Images<I, E, D>>
    for GenMod<F, R>
where
    F: Module<Images<I, E, D>, Output = Images<O, E, D>, Error = D::Err>,
    R: Module<Images<I, E, D>, Output = Images<O, E, D>, Error = D::Err>,
{
    type Output = Images<O, E, D>;
    type Error = D::Err;

    fn try_forward(&self, x: Images<I, E, D>) -> std::result::Result<Self::Output, D::Err> {
        let fx = self.f.try_forward(x.clone())?;
        let rx = self.r.try_forward(x)?;
        Ok(or_panic(add_relu(fx, rx)))
    }
}

impl<const I: usize, const O: usize, E: FloatDtype, D: TrainDevice<E>, F, R>
    ModuleMut<Images<I, E, D, OwnedTape<E, D>>> for GenMod<F, R>
where
    F: ModuleMut<
        Images<I, E, D, OwnedTape<E, D>>,
        Output = Images<O, E, D, OwnedTape<E, D>>,
        Error = D::Err,
    >,
    R: ModuleMut<
        Images<I, E, D, OwnedTape<E, D>>,
        Output = Images<O, E, D, OwnedTape<E, D>>,
        Error = D::Err,
    >,
{
    type Output = Images<O, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    fn try_forward_mut(
        &mut self,
        x: Images<I, E, D, OwnedTape<E, D>>,
    ) -> std::result::Result<Self::Output, D::Err> {
        let fx = self.f.try_forward_mut(x.with_empty_tape())?;
        let rx = self.r.try_forward_mut(x)?;
        Ok(or_panic(add_relu(fx, rx)))
    }
}

/// `relu(a + b)`, differentiable through the tapes of both (merged, as dfdx's binary ops
/// do); the gradient at zero is zero, as dfdx's ReLU. Branches of different shapes are an
/// error naming both.
pub fn add_relu<const C: usize, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    a: Images<C, E, D, T>,
    b: Images<C, E, D, T>,
) -> Result<Images<C, E, D, T>> {
    if a.shape() != b.shape() {
        return Err(branches_disagree(a.shape(), b.shape()));
    }
    D::Kernels::add_relu(a, b)
}

impl<E: FloatDtype, D: TrainDevice<E>, F: Describe<E, D>> Describe<E, D> for ResMod<F> {
    fn describe<'a>(&'a mut self, ops: &mut Vec<Op<'a, E, D>>) -> Result<()> {
        let mut f = Vec::new();
        self.0.describe(&mut f)?;
        ops.push(Op::Residual { f, r: Vec::new() });
        Ok(())
    }
}

impl<E: FloatDtype, D: TrainDevice<E>, F: Describe<E, D>, R: Describe<E, D>> Describe<E, D>
    for GenMod<F, R>
{
    fn describe<'a>(&'a mut self, ops: &mut Vec<Op<'a, E, D>>) -> Result<()> {
        let (mut f, mut r) = (Vec::new(), Vec::new());
        self.f.describe(&mut f)?;
        self.r.describe(&mut r)?;
        ops.push(Op::Residual { f, r });
        Ok(())
    }
}

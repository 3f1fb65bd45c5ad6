//! `Fused<T>`: the layers of a tuple trained as one op, with the same tensors and names as the
//! tuple itself (`Fused<(Conv2DNoBias<..>, BatchNorm2D<..>, ReLU)>` names them `0.weight`,
//! `1.weight`, `1.bias`, …, as the tuple does, so checkpoints do not change).
//!
//! The layers describe what they compute ([`Describe`]) and the device's kernels run the
//! sequence ([`Fuse`]): on the CPU the values between the layers stay host buffers and never
//! become dfdx tensors, so dfdx allocates and zeroes no gradient for them; the composed
//! kernels run each layer as it is. In evaluation, in a FULL_SHARD step (where the
//! [`Unit`](super::Unit)s among the layers gather their parameters) and in a step that froze
//! one of its batch norms ([`crate::freeze`]), the tuple runs as it is.
//! The layers that fuse are fulmen's convolutions, `BatchNorm2D`, `ReLU`, the residual blocks
//! and units, and tuples of them; the ResNet builders fuse their blocks' branches.
//!
//! ```
//! use fulmen::layers::{BatchNorm2D, Conv2DNoBias, Fused};
//! use fulmen::prelude::*;
//!
//! #[module]
//! struct Stem {
//!     stem: Fused<(Conv2DNoBias<3, 8, 3, 1, 1>, BatchNorm2D<8>, ReLU)>,
//! }
//!
//! let dev = Cpu::default();
//! let mut m = Stem::build(&dev);
//! let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> = dev.sample_normal_like(&(2, Const, 6, 6));
//! let y = m.stem.forward_mut(x.leaky_traced());
//! assert!(y.as_vec().iter().all(|v| *v >= 0.0));
//! ```

use std::marker::PhantomData;

use dfdx::nn::{Module, ModuleMut, ModuleVisitor, TensorCollection};
use dfdx::shapes::{Dtype, Shape};
use dfdx::tensor::{OwnedTape, Tensor};
use dfdx::tensor_ops::Device;

use super::or_panic;
use crate::distributed::full_shard;
use crate::kernels::{Describe, Fuse, Op};
use crate::{FloatDtype, Result, TrainDevice};

/// The layers of the tuple `T` run as one op; its module is [`modules::Fused`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Fused<T>(PhantomData<T>);

impl<T: crate::Spec> crate::Spec for Fused<T> {
    type Module<E: Dtype, D: Device<E>> = modules::Fused<T::Module<E, D>>;
}

pub mod modules {
    //! The module of [`Fused`](super::Fused): the tuple's modules.

    /// The tuple of modules, run as one op in training on the CPU.
    #[derive(Debug, Clone)]
    pub struct Fused<T>(pub T);
}

impl<T: Module<X>, X> Module<X> for modules::Fused<T> {
    type Output = T::Output;
    type Error = T::Error;

    fn try_forward(&self, x: X) -> std::result::Result<Self::Output, Self::Error> {
        self.0.try_forward(x)
    }
}

impl<Si, So, E, D, T> ModuleMut<Tensor<Si, E, D, OwnedTape<E, D>>> for modules::Fused<T>
where
    Si: Shape,
    So: Shape,
    E: FloatDtype,
    D: TrainDevice<E>,
    T: ModuleMut<
            Tensor<Si, E, D, OwnedTape<E, D>>,
            Output = Tensor<So, E, D, OwnedTape<E, D>>,
            Error = D::Err,
        > + Describe<E, D>,
{
    type Output = Tensor<So, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    fn try_forward_mut(
        &mut self,
        x: Tensor<Si, E, D, OwnedTape<E, D>>,
    ) -> std::result::Result<Self::Output, D::Err> {
        // In a FULL_SHARD step the layers run one by one, so that the units among them gather
        // their parameters; with a batch norm frozen, so that it normalizes by its running
        // statistics.
        if full_shard::running::<E, D>().is_some() || self.has_frozen_norm() {
            return self.0.try_forward_mut(x);
        }
        Ok(or_panic(D::Kernels::fused(x, &mut self.0)))
    }
}

impl<T> modules::Fused<T> {
    /// Whether the running step froze a batch norm among the layers (none frozen: no look).
    fn has_frozen_norm<E: FloatDtype, D: TrainDevice<E>>(&mut self) -> bool
    where
        T: Describe<E, D>,
    {
        if !crate::freeze::any() {
            return false;
        }
        let mut ops = Vec::new();
        // A layer that cannot describe itself runs layer by layer too.
        self.0
            .describe(&mut ops)
            .map_or(true, |()| crate::kernels::any_frozen_norm(&ops))
    }
}

impl<E: FloatDtype, D: TrainDevice<E>, T: Describe<E, D>> Describe<E, D> for modules::Fused<T> {
    fn describe<'a>(&'a mut self, ops: &mut Vec<Op<'a, E, D>>) -> Result<()> {
        self.0.describe(ops)
    }
}

macro_rules! tuples {
    ($(($($i:tt $t:ident $v:ident),+))+) => {$(
        impl<E: FloatDtype, D: TrainDevice<E>, $($t: Describe<E, D>),+> Describe<E, D>
            for ($($t,)+)
        {
            fn describe<'a>(&'a mut self, ops: &mut Vec<Op<'a, E, D>>) -> Result<()> {
                $(self.$i.describe(ops)?;)+
                Ok(())
            }
        }

        impl<E: Dtype, D: Device<E>, $($t: TensorCollection<E, D>),+> TensorCollection<E, D>
            for modules::Fused<($($t,)+)>
        {
            type To<E2: Dtype, D2: Device<E2>> = modules::Fused<($($t::To<E2, D2>,)+)>;

            fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
                visitor: &mut V,
            ) -> std::result::Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
                visitor.visit_fields(
                    ($(Self::module(stringify!($i), |s| &s.0.$i, |s| &mut s.0.$i),)+),
                    |($($v,)+)| modules::Fused(($($v,)+)),
                )
            }
        }
    )+};
}

tuples! {
    (0 A a, 1 B b)
    (0 A a, 1 B b, 2 C c)
    (0 A a, 1 B b, 2 C c, 3 F f)
    (0 A a, 1 B b, 2 C c, 3 F f, 4 G g)
    (0 A a, 1 B b, 2 C c, 3 F f, 4 G g, 5 H h)
}

//! `Unit<M>`: the layers `M` as one FULL_SHARD unit (FSDP's wrapped module). Under
//! `strategy("fsdp")` each rank holds only its share of a unit's parameters; the unit gathers
//! them from every rank just before its forward, frees them after, and in the backward
//! gathers them again, recomputes its forward and hands each rank its share of the gradients
//! (see [`crate::distributed`]'s FULL_SHARD). Under any other strategy it is `M` itself.
//!
//! A unit changes no tensor name (`Unit<(Linear<4, 8>, ReLU)>` names them `0.weight`, …, as
//! the tuple does), so checkpoints are the same with and without units. Choose units as
//! Lightning's auto-wrap policy does: a few layers large enough that gathering them is worth
//! a collective, small enough that one gathered at a time fits (the ResNet builders make each
//! block one). Parameters outside every unit are gathered by top-level field, for the whole
//! step. Keep layers that draw random numbers (dropout) out of units: the backward's
//! recomputation would draw others, and it stops with an error naming the unit.
//!
//! ```
//! use fulmen::layers::Unit;
//! use fulmen::prelude::*;
//!
//! #[module]
//! struct Mlp {
//!     body: (Unit<(Linear<4, 64>, ReLU)>, Unit<(Linear<64, 64>, ReLU)>),
//!     head: Linear<64, 3>,
//! }
//!
//! let dev = Cpu::default();
//! let mut m = Mlp::build(&dev);
//! let x: Tensor<Rank2<2, 4>, f32, Cpu> = dev.sample_normal();
//! let y = m.head.forward(m.body.forward_mut(x.leaky_traced()));
//! assert_eq!(y.shape(), &(Const::<2>, Const::<3>));
//! ```

use std::marker::PhantomData;

use dfdx::nn::{
    Module, ModuleFields, ModuleMut, ModuleVisitor, ScalarOptions, TensorCollection, TensorOptions,
};
use dfdx::shapes::{Dtype, Shape};
use dfdx::tensor::{OwnedTape, Tensor};
use dfdx::tensor_ops::Device;

use super::or_panic;
use crate::distributed::full_shard;
use crate::kernels::{Describe, Op};
use crate::walk;
use crate::{FloatDtype, TrainDevice};

/// The layers `M` as one FULL_SHARD unit; its module is [`modules::Unit`].
#[derive(Debug, Clone, Copy, Default)]
pub struct Unit<M>(PhantomData<M>);

impl<M: crate::Spec> crate::Spec for Unit<M> {
    type Module<E: Dtype, D: Device<E>> = modules::Unit<M::Module<E, D>>;
}

pub mod modules {
    //! The module of [`Unit`](super::Unit).

    /// The unit's layers, and the number a FULL_SHARD run finds the unit by (shared with its
    /// clones).
    #[derive(Debug, Clone)]
    pub struct Unit<M>(pub M, pub(crate) crate::walk::UnitKey);

    impl<M> Unit<M> {
        /// `module` as a unit.
        pub fn new(module: M) -> Self {
            Self(module, Default::default())
        }
    }
}

impl<E: Dtype, D: Device<E>, M: TensorCollection<E, D>> TensorCollection<E, D>
    for modules::Unit<M>
{
    type To<E2: Dtype, D2: Device<E2>> = modules::Unit<M::To<E2, D2>>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> std::result::Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        walk::in_unit(|k| {
            let built = M::iter_tensors(&mut Through { visitor, k })?;
            Ok(built.map(modules::Unit::new))
        })
    }
}

/// Visits a unit's module as if its fields were the unit's own, so that the unit adds no
/// name; as the walk reads each field it records the unit's key ([`walk::units`]).
struct Through<'v, V> {
    visitor: &'v mut V,
    k: Option<usize>,
}

/// `get(&unit.0)`, telling the trace which key unit `k` has.
fn via<M, F: ?Sized>(
    k: Option<usize>,
    mut get: impl FnMut(&M) -> &F,
) -> impl FnMut(&modules::Unit<M>) -> &F {
    move |u| {
        walk::saw_unit(k, &u.1);
        get(&u.0)
    }
}

/// `get(&mut unit.0)`, telling the trace which key unit `k` has.
fn via_mut<M, F: ?Sized>(
    k: Option<usize>,
    mut get: impl FnMut(&mut M) -> &mut F,
) -> impl FnMut(&mut modules::Unit<M>) -> &mut F {
    move |u| {
        walk::saw_unit(k, &u.1);
        get(&mut u.0)
    }
}

impl<M, V, E, D> ModuleVisitor<M, E, D> for Through<'_, V>
where
    M: TensorCollection<E, D>,
    V: ModuleVisitor<modules::Unit<M>, E, D>,
    E: Dtype,
    D: Device<E>,
{
    type Err = V::Err;
    type E2 = V::E2;
    type D2 = V::D2;

    fn visit_module<Field, GetRef, GetMut>(
        &mut self,
        name: &str,
        get_refs: GetRef,
        get_muts: GetMut,
    ) -> std::result::Result<Option<Field::To<V::E2, V::D2>>, V::Err>
    where
        GetRef: FnMut(&M) -> &Field,
        GetMut: FnMut(&mut M) -> &mut Field,
        Field: TensorCollection<E, D>,
    {
        let k = self.k;
        self.visitor
            .visit_module(name, via(k, get_refs), via_mut(k, get_muts))
    }

    fn visit_tensor<S: Shape, GetRef, GetMut>(
        &mut self,
        name: &str,
        get_refs: GetRef,
        get_muts: GetMut,
        opts: TensorOptions<S, E, D>,
    ) -> std::result::Result<Option<Tensor<S, V::E2, V::D2>>, V::Err>
    where
        GetRef: FnMut(&M) -> &Tensor<S, E, D>,
        GetMut: FnMut(&mut M) -> &mut Tensor<S, E, D>,
    {
        let k = self.k;
        self.visitor
            .visit_tensor(name, via(k, get_refs), via_mut(k, get_muts), opts)
    }

    fn visit_scalar<N, GetRef, GetMut>(
        &mut self,
        name: &str,
        get_refs: GetRef,
        get_muts: GetMut,
        opts: ScalarOptions<N>,
    ) -> std::result::Result<Option<N>, V::Err>
    where
        N: num_traits::NumCast,
        GetRef: FnMut(&M) -> &N,
        GetMut: FnMut(&mut M) -> &mut N,
    {
        let k = self.k;
        self.visitor
            .visit_scalar(name, via(k, get_refs), via_mut(k, get_muts), opts)
    }

    fn visit_fields<F: ModuleFields<M, E, D>>(
        &mut self,
        fields: F,
        builder: impl FnOnce(F::Output<V::E2, V::D2>) -> M::To<V::E2, V::D2>,
    ) -> std::result::Result<Option<M::To<V::E2, V::D2>>, V::Err> {
        let options = fields.visit_fields(self)?;
        Ok(F::handle_options(options).map(builder))
    }
}

impl<Si, So, E, D, M> Module<Tensor<Si, E, D>> for modules::Unit<M>
where
    Si: Shape,
    So: Shape,
    E: FloatDtype,
    D: TrainDevice<E>,
    M: Module<Tensor<Si, E, D>, Output = Tensor<So, E, D>, Error = D::Err>
        + TensorCollection<E, D>
        + Clone,
{
    type Output = Tensor<So, E, D>;
    type Error = D::Err;

    fn try_forward(&self, x: Tensor<Si, E, D>) -> std::result::Result<Self::Output, D::Err> {
        match (full_shard::running::<E, D>(), self.1.get()) {
            (Some(run), Some(k)) => Ok(or_panic(full_shard::evaluate(&run, k, &self.0, x))),
            _ => self.0.try_forward(x),
        }
    }
}

impl<Si, So, E, D, M> Module<Tensor<Si, E, D, OwnedTape<E, D>>> for modules::Unit<M>
where
    Si: Shape,
    So: Shape,
    E: FloatDtype,
    D: TrainDevice<E>,
    M: Module<
            Tensor<Si, E, D, OwnedTape<E, D>>,
            Output = Tensor<So, E, D, OwnedTape<E, D>>,
            Error = D::Err,
        > + TensorCollection<E, D>
        + Clone
        + 'static,
{
    type Output = Tensor<So, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    fn try_forward(
        &self,
        x: Tensor<Si, E, D, OwnedTape<E, D>>,
    ) -> std::result::Result<Self::Output, D::Err> {
        match (full_shard::running::<E, D>(), self.1.get()) {
            (Some(run), Some(k)) => {
                let f = |m: &mut M, x| m.try_forward(x);
                Ok(or_panic(full_shard::forward(
                    &run,
                    k,
                    &mut self.0.clone(),
                    x,
                    f,
                )))
            }
            _ => self.0.try_forward(x),
        }
    }
}

impl<Si, So, E, D, M> ModuleMut<Tensor<Si, E, D, OwnedTape<E, D>>> for modules::Unit<M>
where
    Si: Shape,
    So: Shape,
    E: FloatDtype,
    D: TrainDevice<E>,
    M: ModuleMut<
            Tensor<Si, E, D, OwnedTape<E, D>>,
            Output = Tensor<So, E, D, OwnedTape<E, D>>,
            Error = D::Err,
        > + TensorCollection<E, D>
        + Clone
        + 'static,
{
    type Output = Tensor<So, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    fn try_forward_mut(
        &mut self,
        x: Tensor<Si, E, D, OwnedTape<E, D>>,
    ) -> std::result::Result<Self::Output, D::Err> {
        match (full_shard::running::<E, D>(), self.1.get()) {
            (Some(run), Some(k)) => {
                let f = |m: &mut M, x| m.try_forward_mut(x);
                Ok(or_panic(full_shard::forward(&run, k, &mut self.0, x, f)))
            }
            _ => self.0.try_forward_mut(x),
        }
    }
}

impl<E: FloatDtype, D: TrainDevice<E>, M: Describe<E, D>> Describe<E, D> for modules::Unit<M> {
    /// A unit in a [`Fused`](super::Fused) body fuses as its layers do (outside FULL_SHARD;
    /// under it the body runs layer by layer, and the unit gathers).
    fn describe<'a>(&'a mut self, ops: &mut Vec<Op<'a, E, D>>) -> crate::Result<()> {
        self.0.describe(ops)
    }
}

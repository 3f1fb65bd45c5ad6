//! Layer specifications: from a device-free builder type (`Linear<4, 16>`) to the dfdx module
//! that holds its tensors on a device (`modules::Linear<4, 16, E, D>`).
//!
//! `#[lightning_module]` and `#[module]` rewrite a field `layer_1: Linear<4, 16>` to
//! `<Linear<4, 16> as Spec>::Module<E, D>`, which is how one struct definition serves every
//! dtype and device. Implement [`Spec`] for your own layers to use them as fields; every
//! `#[module]` struct implements it too, so modules nest.
//!
//! ```
//! use fulmen::prelude::*;
//! use fulmen::Spec;
//!
//! type Built = <(Linear<4, 16>, ReLU, Linear<16, 3>) as Spec>::Module<f32, Cpu>;
//! let net: Built = Cpu::default().build_module::<(Linear<4, 16>, ReLU, Linear<16, 3>), f32>();
//! assert_eq!(net.num_trainable_params(), 4 * 16 + 16 + 16 * 3 + 3);
//! ```

use dfdx::nn::{builders as b, modules as m};
use dfdx::shapes::Dtype;
use dfdx::tensor_ops::Device;

/// A layer specification that can be instantiated for any dtype `E` and device `D`.
#[diagnostic::on_unimplemented(
    message = "`{Self}` is not a layer, so it cannot be a field of a #[lightning_module] or #[module] struct",
    label = "not a layer",
    note = "fields must be dfdx builder types (`Linear<4, 16>`, `ReLU`, tuples of up to six of them, `seq![...]` of any number), fulmen layers or #[module] structs; mark plain values #[hparam] (saved) or #[skip] (not saved)"
)]
pub trait Spec {
    /// The module holding this layer's tensors on device `D` with dtype `E`.
    type Module<E: Dtype, D: Device<E>>;
}

/// Layers in sequence, any number of them (Lightning's `nn.Sequential`): a tuple, nested by
/// sixes, since dfdx implements its traits for tuples of up to six layers. The tensors of the
/// seventh layer of `seq![..]` are named `field.5.1.weight` (its place in the nesting).
///
/// ```
/// use fulmen::prelude::*;
///
/// #[lightning_module]
/// pub struct Deep {
///     body: seq![Linear<4, 16>, ReLU, Linear<16, 16>, ReLU, Linear<16, 16>, ReLU, Linear<16, 3>],
/// }
///
/// #[lightning_module]
/// impl Deep {
///     fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
///         cross_entropy_with_logits_loss(self.body.forward(ctx.trace(x)), y.one_hot())
///     }
///     fn configure_optimizers(&self) -> Optim { Optim::sgd(0.1) }
/// }
///
/// let model = Deep::new();
/// assert_eq!(model.num_trainable_params(), 4 * 16 + 16 + 2 * (16 * 16 + 16) + 16 * 3 + 3);
/// ```
#[macro_export]
macro_rules! seq {
    ($a:ty $(,)?) => { $a };
    ($a:ty, $b:ty $(,)?) => { ($a, $b) };
    ($a:ty, $b:ty, $c:ty $(,)?) => { ($a, $b, $c) };
    ($a:ty, $b:ty, $c:ty, $d:ty $(,)?) => { ($a, $b, $c, $d) };
    ($a:ty, $b:ty, $c:ty, $d:ty, $e:ty $(,)?) => { ($a, $b, $c, $d, $e) };
    ($a:ty, $b:ty, $c:ty, $d:ty, $e:ty, $($rest:ty),+ $(,)?) => {
        ($a, $b, $c, $d, $e, $crate::seq![$($rest),+])
    };
}

/// The last field of every `#[lightning_module]` and `#[module]` struct (`__tail`): dfdx's
/// traits need the struct to be `Sized`, which depends on its last field only; with this one
/// it does not depend on a layer, so that a field whose type is not a layer is one error, at
/// the field, and not one per trait the struct implements.
#[doc(hidden)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub struct Tail;

/// The layer fields of a `#[lightning_module]` or `#[module]` struct, with their types as
/// written (what `ModelSummary` prints in its Type column).
pub trait Layers {
    /// Each layer field's name and its type as written, in declaration order.
    const LAYERS: &'static [(&'static str, &'static str)];
}

macro_rules! same_type_specs {
    ($($ty:ty),* $(,)?) => {
        $(impl Spec for $ty { type Module<E: Dtype, D: Device<E>> = $ty; })*
    };
}

// Parameter-free layers are their own modules.
same_type_specs!(
    b::ReLU,
    b::FastGeLU,
    b::AccurateGeLU,
    b::Sin,
    b::Cos,
    b::Ln,
    b::Exp,
    b::Sigmoid,
    b::Tanh,
    b::Square,
    b::Sqrt,
    b::Abs,
    b::Softmax,
    b::LogSoftmax,
    b::Dropout,
    b::AvgPoolGlobal,
    b::MaxPoolGlobal,
    b::MinPoolGlobal,
);

impl<const N: usize> Spec for b::DropoutOneIn<N> {
    type Module<E: Dtype, D: Device<E>> = b::DropoutOneIn<N>;
}

impl<const I: usize, const O: usize> Spec for b::Linear<I, O> {
    type Module<E: Dtype, D: Device<E>> = m::Linear<I, O, E, D>;
}

impl<const I: usize, const O: usize> Spec for b::UnbiasedLinear<I, O> {
    type Module<E: Dtype, D: Device<E>> = m::UnbiasedLinear<I, O, E, D>;
}

impl<const M: usize> Spec for b::LayerNorm1D<M> {
    type Module<E: Dtype, D: Device<E>> = m::LayerNorm1D<M, E, D>;
}

impl<const C: usize> Spec for b::BatchNorm1D<C> {
    type Module<E: Dtype, D: Device<E>> = m::BatchNorm1D<C, E, D>;
}

impl<const C: usize> Spec for b::BatchNorm2D<C> {
    type Module<E: Dtype, D: Device<E>> = m::BatchNorm2D<C, E, D>;
}

impl<const V: usize, const M: usize> Spec for b::Embedding<V, M> {
    type Module<E: Dtype, D: Device<E>> = m::Embedding<V, M, E, D>;
}

impl<T: Spec> Spec for b::Residual<T> {
    type Module<E: Dtype, D: Device<E>> = m::Residual<T::Module<E, D>>;
}

impl<F: Spec, R: Spec> Spec for b::GeneralizedResidual<F, R> {
    type Module<E: Dtype, D: Device<E>> = m::GeneralizedResidual<F::Module<E, D>, R::Module<E, D>>;
}

impl<T: Spec, const N: usize> Spec for b::Repeated<T, N> {
    type Module<E: Dtype, D: Device<E>> = m::Repeated<T::Module<E, D>, N>;
}

macro_rules! tuple_specs {
    ($($name:ident),+) => {
        impl<$($name: Spec),+> Spec for ($($name,)+) {
            type Module<E: Dtype, D: Device<E>> = ($($name::Module<E, D>,)+);
        }
    };
}

tuple_specs!(A);
tuple_specs!(A, B);
tuple_specs!(A, B, C);
tuple_specs!(A, B, C, F);
tuple_specs!(A, B, C, F, G);
tuple_specs!(A, B, C, F, G, H);

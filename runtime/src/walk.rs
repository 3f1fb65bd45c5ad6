//! One walk over a module's tensors for every pass fulmen makes (checkpoints, optimizer
//! steps, gradient clipping, the model summary), each tensor handed over type-erased
//! ([`AnyTensor`], [`AnyTensorMut`]: what the passes and the kernels need of a tensor whose
//! shape they do not know).
//!
//! dfdx's `RecursiveWalker` is instantiated for every field of every layer of a model, once
//! per visitor type. A visitor per pass multiplied that by the number of passes, and for deep
//! models (a ResNet-50 in three dtypes) the walkers were most of the code the compiler
//! generated. Here there are two visitors, one reading and one writing; a pass is a closure
//! over `Item`s or `ItemMut`s.

use std::any::Any;

use dfdx::nn::{
    RecursiveWalker, ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
    ViewTensorName, ViewTensorRef,
};
use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tensor, TensorFrom};
use dfdx::tensor_ops::BroadcastTo;
use dfdx::tensor_ops::ReshapeTo;

use crate::device::{FloatDtype, HostAccess};
use crate::{Error, Result};

/// A flat tensor of `E` on `D`.
type Flat<E, D, T = dfdx::tensor::NoneTape> = Tensor<(usize,), E, D, T>;

/// The id dfdx gives a tensor (and its gradient).
pub(crate) fn id_of<S: dfdx::shapes::Shape, E: dfdx::shapes::Unit, D, T>(
    t: &Tensor<S, E, D, T>,
) -> Option<dfdx::tensor::UniqueId>
where
    D: dfdx::tensor::Storage<E>,
{
    // dfdx names a tensor's id publicly only here.
    let mut unused = dfdx::optim::UnusedTensors::default();
    unused.add(t);
    unused.ids.pop()
}

/// A tensor of any shape, read.
pub trait AnyTensor<E: FloatDtype, D: HostAccess<E>> {
    /// Its dimensions.
    fn dims(&self) -> Vec<usize>;
    /// How many values it holds.
    fn num_values(&self) -> usize;
    /// Its values, copied to the host.
    fn values(&self) -> Vec<E>;
    /// Copies its values into `out` (of [`num_values`](AnyTensor::num_values)).
    fn read_into(&self, out: &mut [E]);
    /// Its values read in place, where the device lets them be (a contiguous CPU tensor).
    fn host_values(&self) -> Option<crate::kernels::host::buf::Buf<E>>;
    /// Its device.
    fn device(&self) -> D;
    /// The id dfdx keys its gradient by.
    fn id(&self) -> Option<dfdx::tensor::UniqueId>;
    /// Calls `f` with the tensor's gradient in `grads` (allocated if it has none), on the host.
    fn with_grad(&self, grads: &mut Gradients<E, D>, f: &mut dyn FnMut(&mut [E])) -> Result<()>;
    /// The values, flat, where they live (sharing them).
    fn flat(&self) -> Result<Flat<E, D>>;
    /// The values, flat, on a tape of their own: differentiating what is computed from them
    /// adds into this tensor's gradient, where it lives.
    fn traced_flat(&self) -> Result<Flat<E, D, OwnedTape<E, D>>>;
    /// The gradient in `grads` (zeros if it has none), flat: a copy, where it lives.
    fn grad_flat(&self, grads: &mut Gradients<E, D>) -> Result<Flat<E, D>>;
    /// The gradient's buffer as the device holds it (allocated if it had none): a `Vec<E>`
    /// on the CPU, a `CudaSlice<E>` on CUDA.
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    fn grad_buffer<'g>(&self, grads: &'g mut Gradients<E, D>) -> Result<&'g mut dyn Any>;
}

/// A tensor of any shape, also written.
pub trait AnyTensorMut<E: FloatDtype, D: HostAccess<E>>: AnyTensor<E, D> {
    /// Takes `values` (as many as the tensor has, from the host) as its values.
    fn set_values(&mut self, values: &[E]);
    /// Takes `values` (flat, of as many values as the tensor has, on its device) as its
    /// values.
    fn set_flat(&mut self, values: Flat<E, D>) -> Result<()>;
    /// `self · keep + update · scale` in place (`update` flat, of as many values), keeping the
    /// tensor's identity: an optimizer step where the parameter lives.
    fn axpy(&mut self, keep: f64, update: Flat<E, D>, scale: f64) -> Result<()>;
    /// Drops the values, keeping the shape: one NaN, broadcast (what a FULL_SHARD run leaves
    /// of a parameter between the times its unit runs; read by mistake, it is NaN, not a
    /// plausible number). [`set_flat`](AnyTensorMut::set_flat) gives it values again.
    fn release(&mut self) -> Result<()>;
}

impl<S: Shape, E: FloatDtype, D: HostAccess<E>> AnyTensor<E, D> for Tensor<S, E, D> {
    fn dims(&self) -> Vec<usize> {
        self.shape().concrete().into_iter().collect()
    }
    fn num_values(&self) -> usize {
        self.shape().num_elements()
    }
    fn values(&self) -> Vec<E> {
        self.as_vec()
    }
    fn read_into(&self, out: &mut [E]) {
        self.copy_into(out);
    }
    fn host_values(&self) -> Option<crate::kernels::host::buf::Buf<E>> {
        crate::kernels::host::buf::Buf::of_tensor(self)
    }
    fn device(&self) -> D {
        Tensor::device(self).clone()
    }
    fn id(&self) -> Option<dfdx::tensor::UniqueId> {
        id_of(self)
    }
    fn with_grad(&self, grads: &mut Gradients<E, D>, f: &mut dyn FnMut(&mut [E])) -> Result<()> {
        D::with_grad(self, grads, f)
    }
    fn flat(&self) -> Result<Flat<E, D>> {
        Ok(self.clone().try_reshape_like(&(self.num_values(),))?)
    }
    fn traced_flat(&self) -> Result<Flat<E, D, OwnedTape<E, D>>> {
        let n = self.num_values();
        Ok(self
            .clone()
            .retaped::<OwnedTape<E, D>>()
            .try_reshape_like(&(n,))?)
    }
    fn grad_flat(&self, grads: &mut Gradients<E, D>) -> Result<Flat<E, D>> {
        grads.try_alloc_for(self)?;
        Ok(grads.get(self).try_reshape_like(&(self.num_values(),))?)
    }
    fn grad_buffer<'g>(&self, grads: &'g mut Gradients<E, D>) -> Result<&'g mut dyn Any> {
        Ok(grads.get_or_alloc_mut(self)?)
    }
}

impl<S: Shape, E: FloatDtype, D: HostAccess<E>> AnyTensorMut<E, D> for Tensor<S, E, D> {
    fn set_values(&mut self, values: &[E]) {
        self.copy_from(values);
    }
    fn set_flat(&mut self, values: Flat<E, D>) -> Result<()> {
        let (n, len) = (self.shape().num_elements(), values.shape().0);
        if n != len {
            return Err(Error::msg(format!(
                "{len} values for a tensor of {n} ({:?})",
                self.dims()
            )));
        }
        *self = values.try_reshape_like(self.shape())?;
        Ok(())
    }
    fn axpy(&mut self, keep: f64, update: Flat<E, D>, scale: f64) -> Result<()> {
        let update = update.try_reshape_like(self.shape())?;
        Ok(self.try_axpy(keep, &update, scale)?)
    }
    fn release(&mut self) -> Result<()> {
        let nan = AnyTensor::device(self).try_tensor(E::nan())?;
        *self = nan.try_broadcast_like::<S, S::AllAxes>(self.shape())?;
        Ok(())
    }
}

/// What a reading walk hands over, by dotted name (`layer_1.weight`).
pub(crate) enum Item<'a, E: FloatDtype, D: HostAccess<E>> {
    /// A tensor, and whether the optimizer trains it (batch norm's running statistics are
    /// not trained).
    Tensor {
        tensor: &'a dyn AnyTensor<E, D>,
        trainable: bool,
    },
    Scalar(Option<f64>),
}

/// What a writing walk hands over.
pub(crate) enum ItemMut<'a, E: FloatDtype, D: HostAccess<E>> {
    Tensor {
        tensor: &'a mut dyn AnyTensorMut<E, D>,
        trainable: bool,
    },
    /// A number-valued setting of a layer (batch norm's `epsilon`) as f64 (`None` if it has
    /// no f64 value); what the pass leaves there is written back.
    Scalar(&'a mut Option<f64>),
}

type Reader<'f, E, D> = dyn FnMut(String, Item<'_, E, D>) -> Result<()> + 'f;
type Writer<'f, E, D> = dyn FnMut(String, ItemMut<'_, E, D>) -> Result<()> + 'f;

/// Calls `f` on every tensor and scalar of `module`, in dfdx's walk order.
pub(crate) fn read<E: FloatDtype, D: HostAccess<E>, M: TensorCollection<E, D>>(
    module: &M,
    mut f: impl FnMut(String, Item<'_, E, D>) -> Result<()>,
) -> Result<()> {
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Read { f: &mut f },
    })
    .map(|_| ())
}

/// Copies the scalars of `from` (batch norm's settings and `num_batches_tracked`) into `to`,
/// the same module in another dtype or on another device, by name: dfdx's `to_dtype` and
/// `to_device` bring scalars back at their defaults.
pub(crate) fn copy_scalars<E1, D1, A, E2, D2, B>(from: &A, to: &mut B) -> Result<()>
where
    E1: FloatDtype,
    D1: HostAccess<E1>,
    A: TensorCollection<E1, D1>,
    E2: FloatDtype,
    D2: HostAccess<E2>,
    B: TensorCollection<E2, D2>,
{
    let mut scalars = Vec::new();
    read(from, |name, item| {
        if let Item::Scalar(value) = item {
            scalars.push((name, value));
        }
        Ok(())
    })?;
    let mut scalars = scalars.into_iter();
    write(to, |name, item| match item {
        ItemMut::Scalar(slot) => match scalars.next() {
            Some((from_name, value)) if from_name == name => {
                *slot = value;
                Ok(())
            }
            _ => Err(Error::msg(format!(
                "scalar `{name}` has no counterpart in the module it is copied from"
            ))),
        },
        ItemMut::Tensor { .. } => Ok(()),
    })
}

/// Calls `f` on every tensor and scalar of `module`, for writing, in dfdx's walk order.
pub(crate) fn write<E: FloatDtype, D: HostAccess<E>, M: TensorCollection<E, D>>(
    module: &mut M,
    mut f: impl FnMut(String, ItemMut<'_, E, D>) -> Result<()>,
) -> Result<()> {
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Write { f: &mut f },
    })
    .map(|_| ())
}

/// Calls `f(name, gradient)` for the gradient of every trainable tensor of `module` (allocated
/// if it has none), on the host, in walk order.
pub(crate) fn each_grad<E: FloatDtype, D: HostAccess<E>, M: TensorCollection<E, D>>(
    module: &M,
    grads: &mut Gradients<E, D>,
    mut f: impl FnMut(&str, &mut [E]),
) -> Result<()> {
    each_trainable(module, &mut |name, tensor| {
        tensor.with_grad(grads, &mut |g| f(name, g))
    })
}

/// Trainable tensors by name, in an order that never changes: what optimizers step and the
/// gradient passes reduce (and 16-mixed's [`Unscale`](crate::kernels::Unscale) converts). A
/// module's are its trainable tensors in walk order; a FULL_SHARD run's are this rank's flat
/// shards of them.
pub trait Params<E: FloatDtype, D: HostAccess<E>> {
    /// Calls `f` on every trainable tensor, in order.
    fn each(&self, f: &mut EachParam<'_, E, D>) -> Result<()>;
}

/// [`Params`], for writing.
pub(crate) trait ParamsMut<E: FloatDtype, D: HostAccess<E>>: Params<E, D> {
    /// Calls `f` on every trainable tensor, for writing, in order.
    fn each_mut(&mut self, f: &mut EachParamMut<'_, E, D>) -> Result<()>;
}

impl<E: FloatDtype, D: HostAccess<E>, P: Params<E, D> + ?Sized> Params<E, D> for &P {
    fn each(&self, f: &mut EachParam<'_, E, D>) -> Result<()> {
        (**self).each(f)
    }
}

/// What [`Params::each`] calls on each tensor.
pub type EachParam<'f, E, D> = dyn FnMut(&str, &dyn AnyTensor<E, D>) -> Result<()> + 'f;

/// What [`ParamsMut::each_mut`] calls on each tensor.
pub(crate) type EachParamMut<'f, E, D> =
    dyn FnMut(&str, &mut dyn AnyTensorMut<E, D>) -> Result<()> + 'f;

/// A module's trainable tensors, as [`Params`].
pub(crate) struct Tensors<'a, M>(pub &'a M);

/// A module's trainable tensors, as [`ParamsMut`].
pub(crate) struct TensorsMut<'a, M>(pub &'a mut M);

/// Calls `f` on every trainable tensor of `module`.
fn each_trainable<E: FloatDtype, D: HostAccess<E>, M: TensorCollection<E, D>>(
    module: &M,
    f: &mut EachParam<'_, E, D>,
) -> Result<()> {
    read(module, |name, item| match item {
        Item::Tensor {
            tensor,
            trainable: true,
        } => f(&name, tensor),
        _ => Ok(()),
    })
}

impl<E: FloatDtype, D: HostAccess<E>, M: TensorCollection<E, D>> Params<E, D> for Tensors<'_, M> {
    fn each(&self, f: &mut EachParam<'_, E, D>) -> Result<()> {
        each_trainable(self.0, f)
    }
}

impl<E: FloatDtype, D: HostAccess<E>, M: TensorCollection<E, D>> Params<E, D>
    for TensorsMut<'_, M>
{
    fn each(&self, f: &mut EachParam<'_, E, D>) -> Result<()> {
        each_trainable(self.0, f)
    }
}

impl<E: FloatDtype, D: HostAccess<E>, M: TensorCollection<E, D>> ParamsMut<E, D>
    for TensorsMut<'_, M>
{
    fn each_mut(&mut self, f: &mut EachParamMut<'_, E, D>) -> Result<()> {
        write(self.0, |name, item| match item {
            ItemMut::Tensor {
                tensor,
                trainable: true,
            } => f(&name, tensor),
            _ => Ok(()),
        })
    }
}

/// Which FULL_SHARD unit ([`Unit`](crate::layers::Unit) layer) holds each trainable tensor of a
/// module, as [`units`] finds them.
pub(crate) struct UnitTrace {
    /// Per trainable tensor in walk order: the innermost unit around it, if any.
    pub innermost: Vec<Option<usize>>,
    /// Per unit, in walk order: the trainable tensors its module spans (its nested units'
    /// included) and the key that finds it from the layer.
    pub units: Vec<(std::ops::Range<usize>, UnitKey)>,
}

/// What a [`Unit`](crate::layers::Unit) layer and its clones share: the number a FULL_SHARD
/// run gave the unit, if one did.
#[derive(Debug, Clone)]
pub(crate) struct UnitKey(std::sync::Arc<std::sync::atomic::AtomicUsize>);

impl Default for UnitKey {
    fn default() -> Self {
        Self(std::sync::Arc::new(usize::MAX.into()))
    }
}

impl UnitKey {
    /// The number a run gave the unit.
    pub fn get(&self) -> Option<usize> {
        match self.0.load(std::sync::atomic::Ordering::Relaxed) {
            usize::MAX => None,
            k => Some(k),
        }
    }

    /// Whether `other` is this key (the same unit, or a clone of it).
    pub fn same(&self, other: &UnitKey) -> bool {
        std::sync::Arc::ptr_eq(&self.0, &other.0)
    }

    /// Gives the unit (and its clones) the number `k`, or none.
    pub fn set(&self, k: Option<usize>) {
        self.0.store(
            k.unwrap_or(usize::MAX),
            std::sync::atomic::Ordering::Relaxed,
        );
    }
}

thread_local! {
    /// While [`units`] walks a module: the trace so far and the units open around the visit.
    static TRACE: std::cell::RefCell<Option<(UnitTrace, Vec<usize>)>> =
        const { std::cell::RefCell::new(None) };
}

/// Which unit holds each trainable tensor of `module` (units nest: a tensor belongs to the
/// innermost).
pub(crate) fn units<E: FloatDtype, D: HostAccess<E>, M: TensorCollection<E, D>>(
    module: &M,
) -> Result<UnitTrace> {
    struct Reset;
    impl Drop for Reset {
        fn drop(&mut self) {
            TRACE.with(|t| t.borrow_mut().take());
        }
    }
    let reset = Reset;
    TRACE.with(|t| {
        *t.borrow_mut() = Some((
            UnitTrace {
                innermost: Vec::new(),
                units: Vec::new(),
            },
            Vec::new(),
        ))
    });
    read(module, |_, _| Ok(()))?;
    let trace = TRACE
        .with(|t| t.borrow_mut().take())
        .map(|(trace, _)| trace);
    drop(reset);
    trace.ok_or_else(|| Error::msg("the walk over the module's units lost its trace"))
}

/// Called by a unit's `iter_tensors` around its module's: what is visited inside `f` is the
/// unit's. Returns the unit's number in this walk while [`units`] traces one.
pub(crate) fn in_unit<R>(f: impl FnOnce(Option<usize>) -> R) -> R {
    let opened = TRACE.with(|t| {
        let mut t = t.borrow_mut();
        let (trace, open) = t.as_mut()?;
        let k = trace.units.len();
        let start = trace.innermost.len();
        trace.units.push((start..start, UnitKey::default()));
        open.push(k);
        Some(k)
    });
    let r = f(opened);
    if let Some(k) = opened {
        TRACE.with(|t| {
            if let Some((trace, open)) = t.borrow_mut().as_mut() {
                open.pop();
                trace.units[k].0.end = trace.innermost.len();
            }
        });
    }
    r
}

/// Called by a unit as a walk reads its fields: records the key the unit `k` of the traced
/// walk is found by.
pub(crate) fn saw_unit(k: Option<usize>, key: &UnitKey) {
    let Some(k) = k else { return };
    TRACE.with(|t| {
        if let Some((trace, _)) = t.borrow_mut().as_mut() {
            if let Some(unit) = trace.units.get_mut(k) {
                unit.1 = key.clone();
            }
        }
    });
}

/// A trainable tensor was visited: while tracing, it belongs to the innermost open unit.
fn saw_trainable() {
    TRACE.with(|t| {
        if let Some((trace, open)) = t.borrow_mut().as_mut() {
            trace.innermost.push(open.last().copied());
        }
    });
}

struct Read<'f, E: FloatDtype, D: HostAccess<E>> {
    f: &'f mut Reader<'f, E, D>,
}

impl<E: FloatDtype, D: HostAccess<E>> TensorVisitor<E, D> for Read<'_, E, D> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = Error;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, D>,
        (tensor, name): (&Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>> {
        let trainable = opts.do_gradient_update;
        if trainable {
            saw_trainable();
        }
        (self.f)(name, Item::Tensor { tensor, trainable })?;
        Ok(None)
    }

    fn visit_scalar<N: num_traits::NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, name): (&N, String),
    ) -> Result<Option<N>> {
        (self.f)(name, Item::Scalar(n.to_f64()))?;
        Ok(None)
    }
}

struct Write<'f, E: FloatDtype, D: HostAccess<E>> {
    f: &'f mut Writer<'f, E, D>,
}

impl<E: FloatDtype, D: HostAccess<E>> TensorVisitor<E, D> for Write<'_, E, D> {
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = Error;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, D>,
        (tensor, name): (&mut Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>> {
        let trainable = opts.do_gradient_update;
        (self.f)(name, ItemMut::Tensor { tensor, trainable })?;
        Ok(None)
    }

    fn visit_scalar<N: num_traits::NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, name): (&mut N, String),
    ) -> Result<Option<N>> {
        let mut value = n.to_f64();
        (self.f)(name.clone(), ItemMut::Scalar(&mut value))?;
        if let Some(v) = value {
            *n = N::from(v)
                .ok_or_else(|| Error::msg(format!("scalar `{name}` cannot hold the value {v}")))?;
        }
        Ok(None)
    }
}

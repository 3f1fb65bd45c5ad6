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
use dfdx::tensor::{Gradients, OwnedTape, Tensor};
use dfdx::tensor_ops::ReshapeTo;

use crate::device::{FloatDtype, HostAccess};
use crate::{Error, Result};

/// A flat tensor of `E` on `D`.
type Flat<E, D, T = dfdx::tensor::NoneTape> = Tensor<(usize,), E, D, T>;

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
    /// Its device.
    fn device(&self) -> D;
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
    fn device(&self) -> D {
        Tensor::device(self).clone()
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
    read(module, |name, item| match item {
        Item::Tensor {
            tensor,
            trainable: true,
        } => tensor.with_grad(grads, &mut |g| f(&name, g)),
        _ => Ok(()),
    })
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

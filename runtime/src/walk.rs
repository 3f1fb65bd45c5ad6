//! One walk over a module's tensors for every pass fulmen makes (checkpoints, optimizer
//! steps, gradient clipping, the model summary), each tensor handed over type-erased.
//!
//! dfdx's `RecursiveWalker` is instantiated for every field of every layer of a model, once
//! per visitor type. A visitor per pass multiplied that by the number of passes, and for deep
//! models (a ResNet-50 in three dtypes) the walkers were most of the code the compiler
//! generated. Here there are two visitors, one reading and one writing; a pass is a closure
//! over [`Item`]s or [`ItemMut`]s.

use dfdx::nn::{
    RecursiveWalker, ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
    ViewTensorName, ViewTensorRef,
};
use dfdx::shapes::{HasShape, Rank0, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tensor};
use dfdx::tensor_ops::ReshapeTo;

use crate::optim::grads::{GradSum, Total};
use crate::optim::rules::StepRule;
use crate::{Error, FloatDtype, Result, TrainDevice};

/// A tensor of any shape, read through its values and its gradient.
pub(crate) trait AnyTensor<E: FloatDtype, D: TrainDevice<E>> {
    fn dims(&self) -> Vec<usize>;
    fn values(&self) -> Vec<E>;
    fn device(&self) -> D;
    /// Calls `f` with the tensor's gradient in `grads` (allocated if it has none).
    fn with_grad(&self, grads: &mut Gradients<E, D>, f: &mut dyn FnMut(&mut [E])) -> Result<()>;
    /// Adds `what` of the tensor's gradient (zeros if it has none) to `total`, reduced where
    /// it lives.
    fn add_grad_sum(
        &self,
        what: GradSum,
        grads: &mut Gradients<E, D>,
        total: &mut Total<E, D>,
    ) -> Result<()>;
    /// The values, flat, where they live.
    fn flat(&self) -> Result<Tensor<(usize,), E, D>>;
    /// The gradient in `grads` (zeros if it has none), flat: a copy, where it lives.
    fn grad_flat(&self, grads: &mut Gradients<E, D>) -> Result<Tensor<(usize,), E, D>>;
    /// `⟨self, g⟩` for a flat `g`, on a tape of its own: differentiating it adds `g`, times
    /// the result's gradient, into this tensor's gradient, where it lives.
    fn dot(&self, g: Tensor<(usize,), E, D>) -> Result<Tensor<Rank0, E, D, OwnedTape<E, D>>>;
    /// The gradient's buffer as the device holds it (allocated if it had none).
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    fn grad_buffer<'g>(
        &self,
        grads: &'g mut Gradients<E, D>,
    ) -> Result<&'g mut <D as dfdx::tensor::Storage<E>>::Vec>;
}

/// A tensor of any shape, also written.
pub(crate) trait AnyTensorMut<E: FloatDtype, D: TrainDevice<E>>: AnyTensor<E, D> {
    fn set_values(&mut self, values: &[E]);
    /// Takes `values` (flat, of as many values as the tensor has, on its device) as its
    /// values.
    fn set_flat(&mut self, values: Tensor<(usize,), E, D>) -> Result<()>;
    /// One optimizer step of the tensor from its gradient, clipped first, with the rule's
    /// buffers for it: on the host ([`TrainDevice::host_kernels`]) or as dfdx ops where it
    /// lives.
    fn step(
        &mut self,
        grads: &mut Gradients<E, D>,
        rule: StepRule<'_>,
        buffers: &mut [Tensor<(usize,), E, D>],
        scratch: &mut Vec<Vec<E>>,
    ) -> Result<()>;
}

impl<S: Shape, E: FloatDtype, D: TrainDevice<E>> AnyTensor<E, D> for Tensor<S, E, D> {
    fn dims(&self) -> Vec<usize> {
        self.shape().concrete().into_iter().collect()
    }
    fn values(&self) -> Vec<E> {
        self.as_vec()
    }
    fn device(&self) -> D {
        Tensor::device(self).clone()
    }
    fn with_grad(&self, grads: &mut Gradients<E, D>, f: &mut dyn FnMut(&mut [E])) -> Result<()> {
        D::with_grad(self, grads, f)
    }
    fn add_grad_sum(
        &self,
        what: GradSum,
        grads: &mut Gradients<E, D>,
        total: &mut Total<E, D>,
    ) -> Result<()> {
        if D::host_kernels() {
            D::with_grad(self, grads, |g| total.add_host(what.on_host(g)))
        } else {
            let (sum, unit) = crate::optim::composed::grad_sum(what, self, grads)?;
            total.add_device_in(sum, unit)
        }
    }
    fn flat(&self) -> Result<Tensor<(usize,), E, D>> {
        let n = self.shape().num_elements();
        self.clone()
            .try_reshape_like(&(n,))
            .map_err(|e| Error::Device(format!("{e:?}")))
    }
    fn grad_flat(&self, grads: &mut Gradients<E, D>) -> Result<Tensor<(usize,), E, D>> {
        crate::optim::composed::gradient(self, grads)
    }
    fn dot(&self, g: Tensor<(usize,), E, D>) -> Result<Tensor<Rank0, E, D, OwnedTape<E, D>>> {
        crate::optim::composed::dot(self, g)
    }
    fn grad_buffer<'g>(
        &self,
        grads: &'g mut Gradients<E, D>,
    ) -> Result<&'g mut <D as dfdx::tensor::Storage<E>>::Vec> {
        grads
            .get_or_alloc_mut(self)
            .map_err(|e| crate::Error::Device(format!("{e:?}")))
    }
}

impl<S: Shape, E: FloatDtype, D: TrainDevice<E>> AnyTensorMut<E, D> for Tensor<S, E, D> {
    fn set_values(&mut self, values: &[E]) {
        self.copy_from(values);
    }
    fn set_flat(&mut self, values: Tensor<(usize,), E, D>) -> Result<()> {
        let (n, len) = (self.shape().num_elements(), values.shape().0);
        if n != len {
            return Err(Error::msg(format!(
                "{len} values for a tensor of {n} ({:?})",
                self.dims()
            )));
        }
        *self = values
            .try_reshape_like(self.shape())
            .map_err(|e| Error::Device(format!("{e:?}")))?;
        Ok(())
    }
    fn step(
        &mut self,
        grads: &mut Gradients<E, D>,
        rule: StepRule<'_>,
        buffers: &mut [Tensor<(usize,), E, D>],
        scratch: &mut Vec<Vec<E>>,
    ) -> Result<()> {
        if D::host_kernels() {
            crate::optim::rules::step(rule, self, grads, buffers, scratch)
        } else {
            crate::optim::composed::step(rule, self, grads, buffers)
        }
    }
}

/// What a reading walk hands over, by dotted name (`layer_1.weight`).
pub(crate) enum Item<'a, E: FloatDtype, D: TrainDevice<E>> {
    /// A tensor, and whether the optimizer trains it (batch norm's running statistics are
    /// not trained).
    Tensor {
        tensor: &'a dyn AnyTensor<E, D>,
        trainable: bool,
    },
    Scalar(Option<f64>),
}

/// What a writing walk hands over.
pub(crate) enum ItemMut<'a, E: FloatDtype, D: TrainDevice<E>> {
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
pub(crate) fn read<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
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
pub(crate) fn write<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &mut M,
    mut f: impl FnMut(String, ItemMut<'_, E, D>) -> Result<()>,
) -> Result<()> {
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Write { f: &mut f },
    })
    .map(|_| ())
}

struct Read<'f, E: FloatDtype, D: TrainDevice<E>> {
    f: &'f mut Reader<'f, E, D>,
}

impl<E: FloatDtype, D: TrainDevice<E>> TensorVisitor<E, D> for Read<'_, E, D> {
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

struct Write<'f, E: FloatDtype, D: TrainDevice<E>> {
    f: &'f mut Writer<'f, E, D>,
}

impl<E: FloatDtype, D: TrainDevice<E>> TensorVisitor<E, D> for Write<'_, E, D> {
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

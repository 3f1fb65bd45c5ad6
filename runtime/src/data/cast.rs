//! Batches in another dtype and on another device: the trainer collates samples on the CPU
//! into the f32 batch the module's `training_step` names, then moves it to the dtype and
//! device it runs in (`precision="64-true"`, `accelerator="gpu"`), so that one compile-time
//! check — sample against the f32 CPU batch — covers every precision and device.

use dfdx::shapes::{Dtype, HasShape, Shape};
use dfdx::tensor::{Cpu, Tensor};
use dfdx::tensor_ops::Device;

use super::Labels;

/// A CPU batch with its float tensors cast to `E2` on `D2`.
pub trait CastBatch<E2: Dtype, D2> {
    /// The batch in dtype `E2` on `D2`.
    type Out;
    /// Moves the batch to `device` and casts its float tensors to `E2`.
    fn cast(self, device: &D2) -> Self::Out;
}

/// Batches are collated in f32 on the CPU, then moved and cast; one that runs in f32 on the
/// CPU stays as it is (the trainer collates it on the run's own CPU device).
impl<S: Shape, E2: Dtype, D2: Device<E2> + Device<f32> + 'static> CastBatch<E2, D2>
    for Tensor<S, f32, Cpu>
{
    type Out = Tensor<S, E2, D2>;
    fn cast(self, device: &D2) -> Self::Out {
        let this: Box<dyn std::any::Any> = Box::new(self);
        match this.downcast::<Tensor<S, E2, D2>>() {
            Ok(same) => *same,
            Err(this) => match this.downcast::<Tensor<S, f32, Cpu>>() {
                Ok(host) => host.to_device(device).to_dtype::<E2>(),
                Err(_) => unreachable!("a tensor is its own type"),
            },
        }
    }
}

impl<const C: usize, E2: Dtype, D2: Clone> CastBatch<E2, D2> for Labels<C, Cpu> {
    type Out = Labels<C, D2>;
    fn cast(self, device: &D2) -> Self::Out {
        Labels::new(self.into_indices(), device.clone())
    }
}

/// Host values (class indices, ids) stay where they are.
impl<E2: Dtype, D2> CastBatch<E2, D2> for Vec<usize> {
    type Out = Vec<usize>;
    fn cast(self, _device: &D2) -> Self::Out {
        self
    }
}

macro_rules! cast_tuple {
    ($($t:ident),+) => {
        impl<E2: Dtype, D2, $($t: CastBatch<E2, D2>),+> CastBatch<E2, D2> for ($($t,)+) {
            type Out = ($($t::Out,)+);
            #[allow(non_snake_case)]
            fn cast(self, device: &D2) -> Self::Out {
                let ($($t,)+) = self;
                ($($t.cast(device),)+)
            }
        }
    };
}

cast_tuple!(A);
cast_tuple!(A, B);
cast_tuple!(A, B, C);
cast_tuple!(A, B, C, F);

/// A batch on its device with its float tensors in dtype `E2` (16-mixed's half step: the batch
/// transferred for the f32 module, cast where it is, as autocast does).
pub trait CastDtype<E2: Dtype> {
    /// The batch in `E2`.
    type Out;
    /// Casts the batch's float tensors to `E2`, on their device.
    fn cast_dtype(self) -> Self::Out;
}

/// The f32 tensors a batch is transferred in.
impl<S: Shape, E2: Dtype, D: Device<f32> + Device<E2>> CastDtype<E2> for Tensor<S, f32, D> {
    type Out = Tensor<S, E2, D>;
    fn cast_dtype(self) -> Self::Out {
        self.to_dtype::<E2>()
    }
}

impl<const C: usize, E2: Dtype, D> CastDtype<E2> for Labels<C, D> {
    type Out = Labels<C, D>;
    fn cast_dtype(self) -> Self::Out {
        self
    }
}

impl<E2: Dtype> CastDtype<E2> for Vec<usize> {
    type Out = Vec<usize>;
    fn cast_dtype(self) -> Self::Out {
        self
    }
}

macro_rules! cast_dtype_tuple {
    ($($t:ident),+) => {
        impl<E2: Dtype, $($t: CastDtype<E2>),+> CastDtype<E2> for ($($t,)+) {
            type Out = ($($t::Out,)+);
            #[allow(non_snake_case)]
            fn cast_dtype(self) -> Self::Out {
                let ($($t,)+) = self;
                ($($t.cast_dtype(),)+)
            }
        }
    };
}

cast_dtype_tuple!(A);
cast_dtype_tuple!(A, B);
cast_dtype_tuple!(A, B, C);
cast_dtype_tuple!(A, B, C, F);

/// A host tensor in f32 as one in the run's dtype `E` on its device `D`: what a
/// `transfer_batch_to_device` hook calls on each tensor of a batch type of its own
/// ([`crate::batch_transfer`]), with no bounds beyond the hook's.
pub fn host_to_device<S: Shape, E: crate::FloatDtype, D: crate::TrainDevice<E>>(
    tensor: &Tensor<S, f32, Cpu>,
    device: &D,
) -> Tensor<S, E, D> {
    let data = (tensor.as_vec().into_iter())
        .map(|v| E::from(v).unwrap_or_else(E::nan))
        .collect();
    device.tensor_from_vec(data, *tensor.shape())
}

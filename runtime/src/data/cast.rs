//! Batches in another dtype and on another device: the trainer collates samples on the CPU
//! into the f32 batch the module's `training_step` names, then moves it to the dtype and
//! device it runs in (`precision="64-true"`, `accelerator="gpu"`), so that one compile-time
//! check — sample against the f32 CPU batch — covers every precision and device.

use dfdx::shapes::{Dtype, Shape};
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

/// Batches are collated in f32 on the CPU, then moved and cast.
impl<S: Shape, E2: Dtype, D2: Device<E2> + Device<f32>> CastBatch<E2, D2> for Tensor<S, f32, Cpu> {
    type Out = Tensor<S, E2, D2>;
    fn cast(self, device: &D2) -> Self::Out {
        self.to_device(device).to_dtype::<E2>()
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

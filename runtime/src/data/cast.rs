//! Batches in another dtype: the trainer collates samples into the f32 batch the module's
//! `training_step` names and casts it to the dtype it runs in (`precision="64-true"`), so that
//! one compile-time check — sample against the f32 batch — covers every precision.

use dfdx::shapes::{Dtype, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use super::Labels;

/// A batch with its float tensors cast to `E2`.
pub trait CastBatch<E2: Dtype> {
    type Out;
    fn cast(self) -> Self::Out;
}

/// Batches are collated in f32, then cast.
impl<S: Shape, E2: Dtype, D: Device<E2> + Device<f32>> CastBatch<E2> for Tensor<S, f32, D> {
    type Out = Tensor<S, E2, D>;
    fn cast(self) -> Self::Out {
        self.to_dtype::<E2>()
    }
}

impl<const C: usize, D, E2: Dtype> CastBatch<E2> for Labels<C, D> {
    type Out = Self;
    fn cast(self) -> Self {
        self
    }
}

macro_rules! cast_tuple {
    ($($t:ident),+) => {
        impl<E2: Dtype, $($t: CastBatch<E2>),+> CastBatch<E2> for ($($t,)+) {
            type Out = ($($t::Out,)+);
            #[allow(non_snake_case)]
            fn cast(self) -> Self::Out {
                let ($($t,)+) = self;
                ($($t.cast(),)+)
            }
        }
    };
}

cast_tuple!(A);
cast_tuple!(A, B);
cast_tuple!(A, B, C);
cast_tuple!(A, B, C, F);

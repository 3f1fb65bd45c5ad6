//! The dtypes fulmen trains in: [`FloatDtype`] (f32, f64, and half precision as [`Half`]).

use dfdx::shapes::Dtype;

/// A float dtype that fulmen can train in (`f32`, `f64`, [`Half`]).
pub trait FloatDtype:
    Dtype + num_traits::Float + rand_distr::uniform::SampleUniform + Send + Sync
{
}

impl<E: Dtype + num_traits::Float + rand_distr::uniform::SampleUniform + Send + Sync> FloatDtype
    for E
{
}

/// The dtype of `precision="16-mixed"` and `"16-true"`: f16 storage, f32 arithmetic in dfdx's
/// kernels.
pub type Half = dfdx::dtypes::AMP<half::f16>;

/// `x` in the dtype `E` (rounded; NaN where `E` has no value for it): the constants of code
/// generic over the dtype.
pub(crate) fn of_f64<E: FloatDtype>(x: f64) -> E {
    E::from(x).unwrap_or_else(E::nan)
}

/// Whether `E` is a half-precision type. Its squares overflow at 256, and on CUDA dfdx's
/// reductions into a few values are slow in it (atomic adds on a few addresses: 45–55 ms for
/// 8M values into one on an H200, against 0.12 ms into 64 in f32), so fulmen sums it in f32:
/// as matrix products on the device, which cuBLAS accumulates in f32, and in f32 on the host.
pub(crate) fn is_half<E>() -> bool {
    std::mem::size_of::<E>() < 4
}

//! Random tensors on a device, in any dtype, from the device's random stream (which a trainer
//! reseeds every step, so that a resumed run draws the same): a GAN's noise, a VAE's ε.
//!
//! ```
//! use fulmen::prelude::*;
//! let dev = Cpu::seed_from_u64(0);
//! let z: Tensor<Rank2<256, 16>, f32, _> = fulmen::device::randn(&dev, Rank2::<256, 16>::default());
//! let mean = z.as_vec().iter().sum::<f32>() / 4096.0;
//! assert!(mean.abs() < 0.1);
//! ```

use dfdx::shapes::Shape;
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use super::{of_f64, FloatDtype};

/// Values drawn uniformly from `[0, 1)` in the shape `shape`.
pub fn rand<S: Shape, E: FloatDtype, D: Device<E>>(device: &D, shape: S) -> Tensor<S, E, D> {
    let drawn = device.sample_like(&shape, rand_distr::Uniform::new(E::zero(), E::one()));
    // In f16 a draw just below 1 rounds to 1 (one in about two thousand), and `randn` would
    // take the log of 0: kept below 1 (which changes no f32 or f64 draw).
    // The largest value below 1 of the dtype (AMP<f16> reports f32's epsilon).
    let below_one = match std::mem::size_of::<E>() {
        2 => 1.0 - 2f64.powi(-11),
        4 => 1.0 - 2f64.powi(-24),
        _ => 1.0 - 2f64.powi(-53),
    };
    drawn.clamp(0.0, below_one)
}

/// Values drawn from the standard normal distribution in the shape `shape` (finite in every
/// dtype).
pub fn randn<S: Shape, E: FloatDtype, D: Device<E>>(device: &D, shape: S) -> Tensor<S, E, D> {
    // Box–Muller: √(−2 ln u) · cos(2π v), with u in (0, 1].
    let u = rand(device, shape).negate() + E::one();
    let v = rand(device, shape) * of_f64::<E>(std::f64::consts::TAU);
    (u.ln() * of_f64::<E>(-2.0)).sqrt() * v.cos()
}

#[cfg(test)]
mod tests {
    use dfdx::shapes::Const;
    use dfdx::tensor::{Cpu, Tensor};

    use super::{rand, randn};
    use crate::device::Half;

    #[test]
    fn half_draws_stay_below_one_and_normal_draws_stay_finite() {
        let dev = Cpu::seed_from_u64(0);
        // A draw just below 1 rounds to 1 in f16 about once in 2,048: 320,000 draws would
        // see it.
        let u: Tensor<(usize, Const<32>), Half, Cpu> = rand(&dev, (10_000, Const));
        let max = u.as_vec().iter().map(|v| v.0.to_f32()).fold(0f32, f32::max);
        assert_eq!(max, 1.0 - 2f32.powi(-11));
        let z: Tensor<(usize, Const<32>), Half, Cpu> = randn(&dev, (10_000, Const));
        assert!(z.as_vec().iter().all(|v| v.0.is_finite()));
    }
}

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
    device.sample_like(&shape, rand_distr::Uniform::new(E::zero(), E::one()))
}

/// Values drawn from the standard normal distribution in the shape `shape`.
pub fn randn<S: Shape, E: FloatDtype, D: Device<E>>(device: &D, shape: S) -> Tensor<S, E, D> {
    // Box–Muller: √(−2 ln u) · cos(2π v), with u in (0, 1].
    let u = rand(device, shape).negate() + E::one();
    let v = rand(device, shape) * of_f64::<E>(std::f64::consts::TAU);
    (u.ln() * of_f64::<E>(-2.0)).sqrt() * v.cos()
}

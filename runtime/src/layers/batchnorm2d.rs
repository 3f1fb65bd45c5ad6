//! `BatchNorm2D<C>`: batch normalization over `[N, C, H, W]` images, as PyTorch's
//! `nn.BatchNorm2d(C)` (eps 1e-5, momentum 0.1, running variance updated unbiased), with
//! PyTorch's tensor names: `weight`, `bias`, `running_mean`, `running_var`.
//!
//! It replaces dfdx's `BatchNorm2D` in fulmen's prelude: the same rules (`forward_mut` on a
//! traced batch normalizes by the batch and updates the running statistics; `forward` on an
//! untraced one normalizes by the running statistics), one fused, multithreaded kernel
//! ([`batchnorm_kernel`](super::batchnorm_kernel)) in place of a dozen broadcasting ops.
//!
//! ```
//! use fulmen::prelude::*;
//!
//! #[module]
//! struct Block {
//!     conv: fulmen::layers::Conv2DNoBias<3, 8, 3, 1, 1>,
//!     bn: BatchNorm2D<8>,
//! }
//!
//! let dev = Cpu::default();
//! let mut block = Block::build(&dev);
//! let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, Const, 8, 8));
//! let y = block.bn.forward_mut(block.conv.forward(x.leaky_traced()));
//! assert!(y.as_vec().iter().sum::<f32>().abs() < 1e-3, "zero mean per channel");
//! assert!(block.bn.running_var.as_vec().iter().all(|v| *v != 1.0), "running statistics moved");
//! ```

use dfdx::nn::{Module, ModuleMut, ModuleVisitor, ScalarOptions, TensorCollection, TensorOptions};
use dfdx::shapes::{Dtype, HasShape, Rank1};
use dfdx::tensor::{NoneTape, OwnedTape, Tape, Tensor};
use dfdx::tensor_ops::Device;

use super::batchnorm_kernel::{self as kernel, BnGeom};
use super::composed;
use super::conv2d::or_panic;
use std::sync::Arc;

use super::chain;
use super::host::{add_grad, Host};
use super::Images;
use crate::{Error, FloatDtype, Result, TrainDevice};

/// The layer's specification (what a struct field names); its module is
/// [`modules::BatchNorm2D`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchNorm2D<const C: usize>;

impl<const C: usize> crate::Spec for BatchNorm2D<C> {
    type Module<E: Dtype, D: Device<E>> = modules::BatchNorm2D<C, E, D>;
}

pub mod modules {
    //! The module of the layer: its tensors, with PyTorch's names.
    use super::*;

    /// The tensors of a [`BatchNorm2D`](super::BatchNorm2D), each `[C]`, and its two settings.
    #[derive(Debug, Clone)]
    pub struct BatchNorm2D<const C: usize, E: Dtype, D: Device<E>> {
        /// The scale γ (PyTorch's `weight`), trained, starting at 1.
        pub weight: Tensor<Rank1<C>, E, D>,
        /// The shift β, trained, starting at 0.
        pub bias: Tensor<Rank1<C>, E, D>,
        /// The running mean, used by `forward`; not trained.
        pub running_mean: Tensor<Rank1<C>, E, D>,
        /// The running (unbiased) variance, used by `forward`; not trained.
        pub running_var: Tensor<Rank1<C>, E, D>,
        /// Added to the variance before its square root (1e-5).
        pub epsilon: f64,
        /// The weight of a batch's statistics in the running ones (0.1).
        pub momentum: f64,
    }
}

impl<const C: usize, E: FloatDtype, D: Device<E>> TensorCollection<E, D>
    for modules::BatchNorm2D<C, E, D>
{
    type To<E2: Dtype, D2: Device<E2>> = modules::BatchNorm2D<C, E2, D2>;

    fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
        visitor: &mut V,
    ) -> std::result::Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
        visitor.visit_fields(
            (
                Self::tensor(
                    "weight",
                    |s| &s.weight,
                    |s| &mut s.weight,
                    TensorOptions::reset_to_ones(),
                ),
                Self::tensor(
                    "bias",
                    |s| &s.bias,
                    |s| &mut s.bias,
                    TensorOptions::reset_to_zeros(),
                ),
                Self::tensor(
                    "running_mean",
                    |s| &s.running_mean,
                    |s| &mut s.running_mean,
                    TensorOptions::detached(|t| t.try_fill_with_zeros()),
                ),
                Self::tensor(
                    "running_var",
                    |s| &s.running_var,
                    |s| &mut s.running_var,
                    TensorOptions::detached(|t| t.try_fill_with_ones()),
                ),
                Self::scalar(
                    "epsilon",
                    |s| &s.epsilon,
                    |s| &mut s.epsilon,
                    ScalarOptions::from_default(1e-5),
                ),
                Self::scalar(
                    "momentum",
                    |s| &s.momentum,
                    |s| &mut s.momentum,
                    ScalarOptions::from_default(0.1),
                ),
            ),
            |(weight, bias, running_mean, running_var, epsilon, momentum)| modules::BatchNorm2D {
                weight,
                bias,
                running_mean,
                running_var,
                epsilon,
                momentum,
            },
        )
    }
}

fn host_f64<const C: usize, E: FloatDtype, D: Device<E>>(t: &Tensor<Rank1<C>, E, D>) -> Vec<f64> {
    t.as_vec()
        .iter()
        .map(|v| v.to_f64().unwrap_or(f64::NAN))
        .collect()
}

fn geom<const C: usize, E: FloatDtype, D: Device<E>, T>(x: &Images<C, E, D, T>) -> BnGeom {
    let (n, _, h, w) = *x.shape();
    BnGeom { n, c: C, hw: h * w }
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>> modules::BatchNorm2D<C, E, D> {
    /// Normalizes by the running statistics (evaluation).
    pub fn eval_forward(&self, x: Images<C, E, D>) -> Result<Images<C, E, D>> {
        if !D::host_kernels() {
            let (m, v) = (&self.running_mean, &self.running_var);
            return composed::batch_norm_eval(x, m, v, &self.weight, &self.bias, self.epsilon);
        }
        let g = geom(&x);
        let (mean, var) = (host_f64(&self.running_mean), host_f64(&self.running_var));
        let (weight, bias) = (host_f64(&self.weight), host_f64(&self.bias));
        let (a, b) = kernel::coefficients(&mean, &var, &weight, &bias, self.epsilon);
        let xs = Host::of(&x)?;
        let y = kernel::affine_host(&g, &xs, &a, &b);
        y.into_tensor(x.device(), *x.shape())
    }

    /// Normalizes by the batch's statistics and moves the running ones towards them
    /// (training); differentiable through the tape on `x`.
    pub fn train_forward<T: Tape<E, D>>(
        &mut self,
        x: Images<C, E, D, T>,
    ) -> Result<Images<C, E, D, T>> {
        let g = geom(&x);
        if !D::host_kernels() {
            let unbias = unbias(&g)?;
            let mom = self.momentum;
            let (y, mean, var) =
                composed::batch_norm_train(x, &self.weight, &self.bias, self.epsilon)?;
            let dev_err = |e| Error::Device(format!("BatchNorm2D: {e:?}"));
            self.running_mean
                .try_axpy(1.0 - mom, &mean, mom)
                .map_err(dev_err)?;
            self.running_var
                .try_axpy(1.0 - mom, &var, mom * unbias)
                .map_err(dev_err)?;
            return Ok(y);
        }
        chain::run("BatchNorm2D", x, &mut [&mut BnLayer(self)])
    }
}

/// `m / (m − 1)` for the running variance, where `m` values of each channel make a batch's
/// statistics; fewer than two are an error.
fn unbias(g: &BnGeom) -> Result<f64> {
    let m = g.per_channel();
    if m < 2 {
        return Err(Error::config(
            "BatchNorm2D",
            format!(
                "training needs more than one value per channel, got a batch of {} image(s) of {} pixel(s)",
                g.n, g.hw
            ),
        ));
    }
    Ok(m as f64 / (m as f64 - 1.0))
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>> super::fused::HostModule<E, D>
    for modules::BatchNorm2D<C, E, D>
{
    fn host_layers<'a>(
        &'a mut self,
        layers: &mut Vec<Box<dyn chain::HostLayer<E, D> + 'a>>,
    ) -> Result<()> {
        layers.push(Box::new(BnLayer(self)));
        Ok(())
    }
}

/// Training-mode batch norm as a [`HostLayer`](chain::HostLayer): normalizes by the batch and
/// moves the running statistics towards it.
pub(crate) struct BnLayer<'a, const C: usize, E: Dtype, D: Device<E>>(
    pub &'a mut modules::BatchNorm2D<C, E, D>,
);

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>> chain::HostLayer<E, D>
    for BnLayer<'_, C, E, D>
{
    fn forward(
        &mut self,
        xs: &Arc<Host>,
        dims: chain::Dims,
    ) -> Result<(Host, chain::Dims, chain::LayerBackward<E, D>)> {
        let bn = &mut *self.0;
        let [n, c, h, w] = dims;
        if c != C {
            return Err(Error::msg(format!(
                "BatchNorm2D<{C}>: an input of {c} channels"
            )));
        }
        let g = BnGeom { n, c, hw: h * w };
        let (unbias, mom) = (unbias(&g)?, bn.momentum);
        let (mean, var) = kernel::stats_host(&g, xs);
        let (weight, bias) = (host_f64(&bn.weight), host_f64(&bn.bias));
        let (a, b) = kernel::coefficients(&mean, &var, &weight, &bias, bn.epsilon);
        let y = kernel::affine_host(&g, xs, &a, &b);

        let blend = |running: &mut Tensor<Rank1<C>, E, D>, batch: &[f64], k: f64| {
            let v: Vec<E> = host_f64(running)
                .iter()
                .zip(batch)
                .map(|(r, b)| E::from((1.0 - mom) * r + mom * b * k).unwrap_or_else(E::nan))
                .collect();
            running.copy_from(&v);
        };
        blend(&mut bn.running_mean, &mean, 1.0);
        blend(&mut bn.running_var, &var, unbias);

        let inv_std: Vec<f64> = var.iter().map(|v| 1.0 / (v + bn.epsilon).sqrt()).collect();
        let (xs, w_key, b_key) = (xs.clone(), bn.weight.clone(), bn.bias.clone());
        let backward: chain::LayerBackward<E, D> = Box::new(move |dy, dx| {
            let (dw, db) = kernel::backward_host(&g, &xs, dy, &mean, &inv_std, &weight, dx);
            Box::new(move |grads| {
                add_grad(&w_key, grads, Host::from_f64::<E>(dw))?;
                add_grad(&b_key, grads, Host::from_f64::<E>(db))
            })
        });
        Ok((y, dims, backward))
    }
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>> Module<Images<C, E, D, NoneTape>>
    for modules::BatchNorm2D<C, E, D>
{
    type Output = Images<C, E, D, NoneTape>;
    type Error = D::Err;

    /// Normalizes by the running statistics. Panics, with fulmen's message, on an input the
    /// layer cannot take (see [`eval_forward`](modules::BatchNorm2D::eval_forward)).
    fn try_forward(&self, x: Images<C, E, D>) -> std::result::Result<Self::Output, D::Err> {
        Ok(or_panic(self.eval_forward(x)))
    }
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>> ModuleMut<Images<C, E, D, OwnedTape<E, D>>>
    for modules::BatchNorm2D<C, E, D>
{
    type Output = Images<C, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    /// Normalizes by the batch and updates the running statistics. Panics, with fulmen's
    /// message, on a batch of one value per channel (see
    /// [`train_forward`](modules::BatchNorm2D::train_forward)).
    fn try_forward_mut(
        &mut self,
        x: Images<C, E, D, OwnedTape<E, D>>,
    ) -> std::result::Result<Self::Output, D::Err> {
        Ok(or_panic(self.train_forward(x)))
    }
}

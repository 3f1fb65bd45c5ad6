//! `BatchNorm2D<C>`: batch normalization over `[N, C, H, W]` images, as PyTorch's
//! `nn.BatchNorm2d(C)` (eps 1e-5, momentum 0.1, running variance updated unbiased), with
//! PyTorch's tensor names: `weight`, `bias`, `running_mean`, `running_var`.
//!
//! It replaces dfdx's `BatchNorm2D` in fulmen's prelude: the same rules (`forward_mut` on a
//! traced batch normalizes by the batch and updates the running statistics; `forward` on an
//! untraced one normalizes by the running statistics), computed by the device's kernels: on
//! the CPU one fused, multithreaded pass each way in place of a dozen broadcasting ops.
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
use dfdx::shapes::{Axes3, Dtype, HasShape, Rank1};
use dfdx::tensor::{NoneTape, OwnedTape, PutTape, SplitTape, Tape, Tensor};
use dfdx::tensor_ops::Device;
use dfdx::tensor_ops::{BroadcastTo, TryAdd, TryMul};

use super::or_panic;
use crate::kernels::{Describe, Norm, NormState, Op};
use crate::shapes::{realize, Images};
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
        /// The batches whose statistics updated the running ones (PyTorch's buffer of the
        /// same name; checkpoints store it as PyTorch does, an int64 scalar).
        pub num_batches_tracked: u64,
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
                ),
                (
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
                    Self::scalar(
                        "num_batches_tracked",
                        |s| &s.num_batches_tracked,
                        |s| &mut s.num_batches_tracked,
                        ScalarOptions::from_default(0),
                    ),
                ),
            ),
            |(
                (weight, bias, running_mean, running_var),
                (epsilon, momentum, num_batches_tracked),
            )| {
                modules::BatchNorm2D {
                    weight,
                    bias,
                    running_mean,
                    running_var,
                    epsilon,
                    momentum,
                    num_batches_tracked,
                }
            },
        )
    }
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>> modules::BatchNorm2D<C, E, D> {
    /// Normalizes by the running statistics (evaluation).
    pub fn eval_forward(&self, x: Images<C, E, D>) -> Result<Images<C, E, D>> {
        let (m, v) = (&self.running_mean, &self.running_var);
        D::Kernels::batch_norm_eval(x, m, v, &self.weight, &self.bias, self.epsilon)
    }

    /// Normalizes by the running statistics, differentiable through the tape on `x` alone
    /// (a frozen batch norm: its tensors get no gradient and keep their values).
    pub fn frozen_forward<T: Tape<E, D>>(
        &self,
        x: Images<C, E, D, T>,
    ) -> std::result::Result<Images<C, E, D, T>, D::Err> {
        let std = (self.running_var.clone() + crate::device::of_f64::<E>(self.epsilon)).sqrt();
        let scale = self.weight.clone() / std;
        let shift = self.bias.clone() - self.running_mean.clone() * scale.clone();
        let shape = *x.shape();
        let scale = scale.try_broadcast_like::<_, Axes3<0, 2, 3>>(&shape)?;
        let shift = shift.try_broadcast_like::<_, Axes3<0, 2, 3>>(&shape)?;
        x.try_mul(scale)?.try_add(shift)
    }

    /// Normalizes by the batch's statistics and moves the running ones towards them
    /// (training); differentiable through the tape on `x`.
    pub fn train_forward<T: Tape<E, D>>(
        &mut self,
        x: Images<C, E, D, T>,
    ) -> Result<Images<C, E, D, T>> {
        let (n, _, h, w) = *x.shape();
        let (y, mean, var) =
            D::Kernels::batch_norm_train(x, &self.weight, &self.bias, self.epsilon)?;
        let (mean, var) = (realize(mean, "mean")?, realize(var, "variance")?);
        self.update_running(mean, var, n * h * w)?;
        Ok(y)
    }
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>> NormState<E, D>
    for modules::BatchNorm2D<C, E, D>
{
    fn weight(&self) -> Result<Tensor<(usize,), E, D>> {
        realize(self.weight.clone(), "BatchNorm2D.weight")
    }

    fn bias(&self) -> Result<Tensor<(usize,), E, D>> {
        realize(self.bias.clone(), "BatchNorm2D.bias")
    }

    fn epsilon(&self) -> f64 {
        self.epsilon
    }

    fn frozen(&self) -> bool {
        crate::freeze::is_frozen(&self.weight)
    }

    /// PyTorch's rule: `running ← (1 − momentum)·running + momentum·batch`, the variance the
    /// unbiased one (`m / (m − 1)` times the batch's, over `m` values per channel).
    fn update_running(
        &mut self,
        mean: Tensor<(usize,), E, D>,
        var: Tensor<(usize,), E, D>,
        per_channel: usize,
    ) -> Result<()> {
        if per_channel < 2 {
            return Err(Error::config(
                "BatchNorm2D",
                format!(
                    "training needs more than one value per channel, got {per_channel} per channel in the batch"
                ),
            ));
        }
        let m = per_channel as f64;
        let (mom, unbias) = (self.momentum, m / (m - 1.0));
        let mean: Tensor<Rank1<C>, E, D> = realize(mean, "BatchNorm2D statistics")?;
        let var: Tensor<Rank1<C>, E, D> = realize(var, "BatchNorm2D statistics")?;
        self.running_mean.try_axpy(1.0 - mom, &mean, mom)?;
        self.running_var.try_axpy(1.0 - mom, &var, mom * unbias)?;
        self.num_batches_tracked += 1;
        Ok(())
    }
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>> Describe<E, D>
    for modules::BatchNorm2D<C, E, D>
{
    fn describe<'a>(&'a mut self, ops: &mut Vec<Op<'a, E, D>>) -> Result<()> {
        ops.push(Op::BatchNorm(self));
        Ok(())
    }
}

/// The batch [`BatchNorm2D`]'s `forward` takes: an untraced one (`NoneTape`, the only tape
/// that implements this). A traced batch there is a compile error that says to call
/// `forward_mut`, which trains.
#[diagnostic::on_unimplemented(
    message = "`BatchNorm2D::forward` takes an untraced batch, and this one may be traced (`{Self}`)",
    label = "a traced batch needs `forward_mut`",
    note = "in training, BatchNorm2D normalizes by the batch and updates its running statistics, which takes `&mut self`: call `forward_mut` on the traced batch (`self.net.forward_mut(ctx.trace(x))` in `training_step`, as examples/cifar10.rs does, or from a `forward` of your own that takes `&mut self`); `forward` normalizes an untraced batch (validation, prediction) by the running statistics"
)]
pub trait Untraced<E: Dtype, D: Device<E>>: Tape<E, D> + sealed::Sealed {}

impl<E: Dtype, D: Device<E>> Untraced<E, D> for NoneTape {}

mod sealed {
    /// `Untraced` is `NoneTape`'s alone.
    pub trait Sealed {}
    impl Sealed for dfdx::tensor::NoneTape {}
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>, T: Untraced<E, D>> Module<Images<C, E, D, T>>
    for modules::BatchNorm2D<C, E, D>
{
    type Output = Images<C, E, D, T>;
    type Error = D::Err;

    /// Normalizes by the running statistics. Panics, with fulmen's message, on an input the
    /// layer cannot take (see [`eval_forward`](modules::BatchNorm2D::eval_forward)).
    fn try_forward(&self, x: Images<C, E, D, T>) -> std::result::Result<Self::Output, D::Err> {
        let (x, tape) = x.split_tape();
        Ok(or_panic(self.eval_forward(x)).put_tape(tape))
    }
}

impl<const C: usize, E: FloatDtype, D: TrainDevice<E>> ModuleMut<Images<C, E, D, OwnedTape<E, D>>>
    for modules::BatchNorm2D<C, E, D>
{
    type Output = Images<C, E, D, OwnedTape<E, D>>;
    type Error = D::Err;

    /// Normalizes by the batch and updates the running statistics; when its weight is frozen
    /// ([`crate::freeze`]), normalizes by the running statistics and leaves them. Panics, with
    /// fulmen's message, on a batch of one value per channel (see
    /// [`train_forward`](modules::BatchNorm2D::train_forward)).
    fn try_forward_mut(
        &mut self,
        x: Images<C, E, D, OwnedTape<E, D>>,
    ) -> std::result::Result<Self::Output, D::Err> {
        if crate::freeze::is_frozen(&self.weight) {
            return self.frozen_forward(x);
        }
        Ok(or_panic(self.train_forward(x)))
    }
}

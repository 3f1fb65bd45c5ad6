//! What callbacks see of the module (Lightning's `pl_module` argument): [`Weights`], its
//! tensors by name and, after the backward, their gradients, handed to
//! [`Callback::with_weights`](crate::Callback::with_weights) at the points [`At`] names.
//! The module's dtype and device are erased: values come to the host as `f32`, and what stays
//! on the device ([`Snapshot`]: a copy of every tensor, blended and swapped where it lives) is
//! what a callback keeps between steps, as `WeightAveraging` keeps its average.
//!
//! ```
//! use fulmen::prelude::*;
//! use fulmen::weights::{At, Weights};
//!
//! /// Prints the largest gradient norm before each optimizer step.
//! struct LargestGrad;
//! impl Callback for LargestGrad {
//!     fn with_weights(&mut self, _trainer: &mut TrainerView, at: At, weights: &mut dyn Weights) {
//!         if at == At::BeforeOptimizerStep {
//!             if let Ok(norms) = weights.grad_norms(2.0) {
//!                 let largest = norms.iter().map(|(_, n)| *n).fold(0.0, f64::max);
//!                 println!("largest gradient norm: {largest}");
//!             }
//!         }
//!     }
//! }
//! ```

use std::any::Any;

use dfdx::nn::TensorCollection;
use dfdx::tensor::{Gradients, Tensor};

use crate::freeze::{Freezing, Unfrozen};
use crate::kernels::{GradSum, Reduce, Total};
use crate::walk::{self, AnyTensor, Item, ItemMut, Params, Tensors};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// Where in training [`Callback::with_weights`](crate::Callback::with_weights) is called.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum At {
    /// After `on_after_backward` (automatic optimization: each batch's backward, this rank's
    /// gradients; manual: each `manual_backward`, averaged over the ranks).
    AfterBackward,
    /// After `on_before_optimizer_step`, before clipping and the step: the gradients are the
    /// window's, averaged over the ranks (what Lightning's `grad_norm` logs).
    BeforeOptimizerStep,
    /// After `on_train_batch_end`: the batch's optimizer step is done.
    TrainBatchEnd,
    /// At the end of a training epoch, before `on_train_epoch_end` (whose checkpoints then
    /// hold what a callback took in here).
    TrainEpochEnd,
    /// After `on_validation_start`, before the first validation batch.
    ValidationStart,
    /// After `on_validation_end`.
    ValidationEnd,
    /// After `on_train_end`: what the module holds now is what `fit` returns.
    TrainEnd,
    /// After `on_fit_start` (a resumed run's checkpoint is loaded), before the sanity check.
    FitStart,
}

/// The module's tensors, by their dotted names (see the [module docs](self)).
pub trait Weights {
    /// The trainable parameters' names, in order.
    fn names(&self) -> Vec<String>;
    /// The values of the tensor `name` (a parameter or a buffer such as a running mean), in
    /// `f32`, copied to the host.
    fn values(&self, name: &str) -> Result<Vec<f32>>;
    /// The `p`-norm of each trainable parameter's gradient (but the frozen ones') (`p` = 2: where it lives; other
    /// `p` and `f64::INFINITY` on the host), in order; an error where there are no gradients
    /// (outside training).
    fn grad_norms(&mut self, p: f64) -> Result<Vec<(String, f64)>>;
    /// A copy of every tensor, parameters and buffers, on the device.
    fn snapshot(&self) -> Result<Snapshot>;
    /// `snapshot ← decay · snapshot + (1 − decay) · module` for every tensor, parameters and
    /// buffers (running statistics: PyTorch's `use_buffers=True`), each where it lives.
    fn blend_into(&self, snapshot: &mut Snapshot, decay: f64) -> Result<()>;
    /// Exchanges the module's values with the snapshot's (each tensor keeps its identity, so
    /// the optimizer and the gradients still know it).
    fn swap(&mut self, snapshot: &mut Snapshot) -> Result<()>;
    /// Sets the values of the tensor `name` (a parameter or a buffer) from `f32`s, as many as
    /// it holds.
    fn set_values(&mut self, name: &str, values: &[f32]) -> Result<()>;
}

/// A copy of a module's tensors on its device, made by [`Weights::snapshot`].
pub struct Snapshot {
    names: Vec<String>,
    flats: Box<dyn Flats>,
}

impl Snapshot {
    /// Every tensor's name and values, in `f32`, copied to the host (what a checkpoint of
    /// the snapshot stores).
    pub fn values(&self) -> Vec<(String, Vec<f32>)> {
        self.names.iter().cloned().zip(self.flats.host()).collect()
    }
}

/// A snapshot's tensors, of whichever dtype and device.
trait Flats {
    fn host(&self) -> Vec<Vec<f32>>;
    fn as_any_mut(&mut self) -> &mut dyn Any;
}

impl<E: FloatDtype, D: TrainDevice<E>> Flats for Vec<Flat<E, D>> {
    fn host(&self) -> Vec<Vec<f32>> {
        let f32s = |t: &Flat<E, D>| {
            t.as_vec()
                .iter()
                .map(|v| v.to_f32().unwrap_or(f32::NAN))
                .collect()
        };
        self.iter().map(f32s).collect()
    }
    fn as_any_mut(&mut self) -> &mut dyn Any {
        self
    }
}

impl std::fmt::Debug for Snapshot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Snapshot")
    }
}

type Flat<E, D> = Tensor<(usize,), E, D>;

/// A module `M` and, in training, its gradients, as [`Weights`].
pub(crate) struct WeightsOf<'a, E: FloatDtype, D: TrainDevice<E>, M> {
    pub module: &'a mut M,
    pub grads: Option<&'a mut Gradients<E, D>>,
    /// Under FULL_SHARD the module holds placeholders: every call is refused.
    pub sharded: bool,
    /// Under SHARD_GRAD_OP each rank holds its own parameters' gradients: norms are refused.
    pub partial_grads: bool,
    /// The frozen parameters have no gradient.
    pub frozen: Freezing,
}

impl<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>> WeightsOf<'_, E, D, M> {
    fn whole(&self) -> Result<()> {
        match self.sharded {
            true => Err(Error::msg("callbacks cannot see the module's weights under FULL_SHARD yet (its parameters are sharded); use \"ddp\"")),
            false => Ok(()),
        }
    }

    fn flats(snapshot: &mut Snapshot) -> Result<&mut Vec<Flat<E, D>>> {
        snapshot.flats.as_any_mut().downcast_mut().ok_or_else(|| {
            Error::msg("this snapshot was taken of a module of another dtype or device")
        })
    }
}

impl<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>> Weights
    for WeightsOf<'_, E, D, M>
{
    fn names(&self) -> Vec<String> {
        let mut names = Vec::new();
        let _ = Tensors(&*self.module).each(&mut |name, _| {
            names.push(name.to_string());
            Ok(())
        });
        names
    }

    fn values(&self, name: &str) -> Result<Vec<f32>> {
        self.whole()?;
        let mut found = None;
        walk::read(&*self.module, |n, item| {
            if let (true, Item::Tensor { tensor, .. }) = (n == name, item) {
                let v = tensor.values();
                found = Some(v.iter().map(|v| v.to_f32().unwrap_or(f32::NAN)).collect());
            }
            Ok(())
        })?;
        found.ok_or_else(|| Error::msg(format!("the module has no tensor `{name}`")))
    }

    fn grad_norms(&mut self, p: f64) -> Result<Vec<(String, f64)>> {
        self.whole()?;
        if self.partial_grads {
            return Err(Error::msg("gradient norms under SHARD_GRAD_OP are not built yet (each rank holds its own parameters' gradients); use \"ddp\""));
        }
        let Some(grads) = self.grads.as_deref_mut() else {
            return Err(Error::msg("gradient norms: there are no gradients here (only in training, from the backward on)"));
        };
        if p.is_nan() || p <= 0.0 {
            return Err(Error::config("norm_type", format!("{p} is not > 0")));
        }
        let mut norms = Vec::new();
        let unfrozen = Unfrozen {
            params: Tensors(&*self.module),
            freezing: &self.frozen,
        };
        unfrozen.each(&mut |name, tensor: &dyn AnyTensor<E, D>| {
            let norm = if p == 2.0 {
                let mut total = Total::default();
                D::Kernels::grad_sum(GradSum::Squares, tensor, grads, &mut total)?;
                total.value().sqrt()
            } else {
                let mut norm = 0.0f64;
                tensor.with_grad(grads, &mut |g| {
                    let abs = g.iter().map(|v| v.to_f64().unwrap_or(f64::NAN).abs());
                    norm = match p.is_infinite() {
                        true => abs.fold(0.0, f64::max),
                        false => abs.map(|a| a.powf(p)).sum::<f64>().powf(1.0 / p),
                    };
                })?;
                norm
            };
            norms.push((name.to_string(), norm));
            Ok(())
        })?;
        Ok(norms)
    }

    fn snapshot(&self) -> Result<Snapshot> {
        self.whole()?;
        let (mut names, mut flats): (_, Vec<Flat<E, D>>) = (Vec::new(), Vec::new());
        walk::read(&*self.module, |name, item| {
            if let Item::Tensor { tensor, .. } = item {
                // A copy, not a share: the module's later steps must not reach it.
                flats.push(tensor.flat()? * E::one());
                names.push(name);
            }
            Ok(())
        })?;
        Ok(Snapshot {
            names,
            flats: Box::new(flats),
        })
    }

    fn blend_into(&self, snapshot: &mut Snapshot, decay: f64) -> Result<()> {
        self.whole()?;
        if !(0.0..=1.0).contains(&decay) {
            return Err(Error::config("decay", format!("{decay} is not in [0, 1]")));
        }
        let flats = Self::flats(snapshot)?;
        let (keep, take) = (
            crate::device::of_f64::<E>(decay),
            crate::device::of_f64::<E>(1.0 - decay),
        );
        let mut i = 0;
        walk::read(&*self.module, |name, item| {
            if let Item::Tensor { tensor, .. } = item {
                let kept = flats.get_mut(i).ok_or_else(|| {
                    Error::msg(format!(
                        "the snapshot has no `{name}`: it was taken of another module"
                    ))
                })?;
                *kept = kept.clone() * keep + tensor.flat()? * take;
                i += 1;
            }
            Ok(())
        })
    }

    fn swap(&mut self, snapshot: &mut Snapshot) -> Result<()> {
        self.whole()?;
        let flats = Self::flats(snapshot)?;
        let mut i = 0;
        walk::write(&mut *self.module, |name, item| {
            if let ItemMut::Tensor { tensor, .. } = item {
                let kept = flats.get_mut(i).ok_or_else(|| {
                    Error::msg(format!(
                        "the snapshot has no `{name}`: it was taken of another module"
                    ))
                })?;
                let current = tensor.flat()? * E::one();
                tensor.axpy(0.0, std::mem::replace(kept, current), 1.0)?;
                i += 1;
            }
            Ok(())
        })
    }

    fn set_values(&mut self, name: &str, values: &[f32]) -> Result<()> {
        self.whole()?;
        let mut found = false;
        walk::write(&mut *self.module, |n, item| {
            if let (true, ItemMut::Tensor { tensor, .. }) = (n == name, item) {
                let count = tensor.num_values();
                if values.len() != count {
                    return Err(Error::msg(format!(
                        "{} values for `{name}`, which holds {count}",
                        values.len()
                    )));
                }
                let values: Vec<E> = values
                    .iter()
                    .map(|&v| crate::device::of_f64(f64::from(v)))
                    .collect();
                tensor.set_values(&values);
                found = true;
            }
            Ok(())
        })?;
        match found {
            true => Ok(()),
            false => Err(Error::msg(format!("the module has no tensor `{name}`"))),
        }
    }
}

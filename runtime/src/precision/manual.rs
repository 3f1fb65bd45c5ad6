//! 16-mixed under manual optimization: `training_step` runs on the half copy, and each of its
//! calls reaches the f32 module the way automatic optimization's step does. `manual_backward`
//! multiplies the loss by the scale, and the half gradients are unscaled into the f32 ones at
//! once (averaged over the ranks there, a toggled optimizer's alone added); `step` skips an
//! optimizer whose gradients were not finite since its last step and updates the scale
//! (Lightning's `scaler.step` and `scaler.update` at each `optimizer.step()`), and steps the
//! f32 parameters otherwise, which the half copy then takes. Clipping, `zero_grad` and the
//! callbacks' weights hooks see the f32 module and its unscaled gradients.

use dfdx::tensor::Gradients;

use super::LossScaler;
use crate::context::mode::{ManualHook, ManualSteps};
use crate::device::{Half, TrainDevice};
use crate::freeze::{Freezing, Unfrozen};
use crate::kernels::{Scratch, Unscale};
use crate::module::LightningModule;
use crate::optim::{grads, ClipAlgorithm};
use crate::walk::{Params, ParamsMut, Tensors, TensorsMut};
use crate::weights::{At, Weights, WeightsOf};
use crate::TrainerView;
use crate::{Error, Result};

/// The trainer's side of a manual step on the half copy: the f32 run's, with the f32 module
/// and its gradients.
pub(super) struct MixedManual<'r, D: TrainDevice<f32>, M> {
    pub run: &'r mut dyn ManualSteps<f32, D>,
    pub model: &'r mut M,
    pub grads: &'r mut Gradients<f32, D>,
    pub scaler: &'r mut LossScaler,
    pub scratch: &'r mut Scratch<f32>,
    /// Per optimizer: whether a backward since its last step had a non-finite gradient
    /// (unscaled into nothing).
    pub found_inf: &'r mut Vec<bool>,
    /// The parameters frozen: their half gradients are not added.
    pub frozen: &'r Freezing,
}

impl<D, M> MixedManual<'_, D, M>
where
    D: TrainDevice<f32> + TrainDevice<Half>,
    M: LightningModule<f32, D>,
{
    /// Marks optimizer `opt` (or, with none toggled, every optimizer) as having seen a
    /// non-finite gradient.
    fn flag(&mut self, opt: Option<usize>) {
        self.found_inf.resize(self.run.count(), false);
        match opt {
            Some(o) => self
                .found_inf
                .iter_mut()
                .skip(o)
                .take(1)
                .for_each(|f| *f = true),
            None => self.found_inf.iter_mut().for_each(|f| *f = true),
        }
    }
}

impl<D, M> ManualSteps<Half, D> for MixedManual<'_, D, M>
where
    D: TrainDevice<f32> + TrainDevice<Half>,
    <D as TrainDevice<f32>>::Kernels: Unscale<D>,
    M: LightningModule<f32, D>,
{
    fn count(&self) -> usize {
        self.run.count()
    }

    fn view(&mut self) -> &mut TrainerView {
        self.run.view()
    }

    fn callbacks(&mut self, hook: ManualHook) {
        self.run.callbacks(hook)
    }

    /// The callbacks see the f32 module and its (unscaled) gradients, not the half copy.
    fn with_weights(&mut self, at: At, _half: &mut dyn Weights) {
        let frozen = self.run.view().freezing().clone();
        let mut weights = WeightsOf {
            module: &mut *self.model,
            grads: Some(&mut *self.grads),
            sharded: false,
            partial_grads: false,
            frozen,
        };
        self.run.with_weights(at, &mut weights);
    }

    fn after_hook(&mut self) -> Result<()> {
        self.run.after_hook()
    }

    fn check_loss(&self, value: f64) -> Result<()> {
        self.run.check_loss(value)
    }

    fn loss_scale(&self) -> Option<f64> {
        Some(self.scaler.scale)
    }

    /// The half gradients, unscaled into f32 ones, averaged over the ranks, added to the f32
    /// module's (under a toggled optimizer, its parameters' alone). The half copy keeps none.
    fn absorb(
        &mut self,
        params: &dyn Params<Half, D>,
        mut fresh: Gradients<Half, D>,
        kept: Option<(Gradients<Half, D>, usize)>,
    ) -> Result<Gradients<Half, D>> {
        let toggled = kept.map(|(_, opt)| opt);
        let mut unscaled = Gradients::leaky();
        let freezing = self.frozen;
        let finite = <D as TrainDevice<f32>>::Kernels::unscale(
            &Unfrozen { params, freezing },
            &mut fresh,
            &Unfrozen {
                params: Tensors(&*self.model),
                freezing,
            },
            &mut unscaled,
            1.0 / self.scaler.scale,
            self.scratch,
        )?;
        if !finite {
            self.flag(toggled);
        }
        drop(fresh);
        let so_far = std::mem::replace(self.grads, Gradients::leaky());
        let module = Tensors(&*self.model);
        *self.grads = match toggled {
            Some(opt) => self.run.absorb(&module, unscaled, Some((so_far, opt)))?,
            None => {
                let mut averaged = self.run.absorb(&module, unscaled, None)?;
                grads::add_grads(&module, &mut averaged, so_far)?
            }
        };
        Ok(Gradients::leaky())
    }

    fn all_agree(&self, ok: bool) -> Result<bool> {
        self.run.all_agree(ok)
    }

    fn clip(
        &mut self,
        opt: usize,
        _half: &dyn Params<Half, D>,
        _none: &mut Gradients<Half, D>,
        max: f64,
        algorithm: ClipAlgorithm,
    ) -> Result<()> {
        let module = Tensors(&*self.model);
        self.run.clip(opt, &module, self.grads, max, algorithm)
    }

    /// Skipped, and counted (as PyTorch's `GradScaler` skips), when a gradient of `opt`'s was
    /// not finite on any rank since its last step; the scale is updated either way.
    fn step(
        &mut self,
        opt: usize,
        half: &mut dyn ParamsMut<Half, D>,
        _none: &mut Gradients<Half, D>,
    ) -> Result<()> {
        let n = self.run.count();
        if opt >= n {
            return Err(Error::msg(format!(
                "optimizer {opt} does not exist: configure_optimizers returns {n}"
            )));
        }
        self.found_inf.resize(n, false);
        let finite = self
            .run
            .all_agree(!std::mem::take(&mut self.found_inf[opt]))?;
        self.scaler.update(!finite);
        self.run.view().loss_scale = Some(self.scaler.scale);
        if !finite {
            self.run.view().global_step += 1;
            return Ok(());
        }
        self.run
            .step(opt, &mut TensorsMut(&mut *self.model), self.grads)?;
        to_half(&*self.model, half)
    }

    fn lr_scheduler_step(&mut self, opt: usize) -> Result<()> {
        self.run.lr_scheduler_step(opt)
    }

    fn zero_grad(
        &mut self,
        opt: usize,
        _half: &dyn Params<Half, D>,
        _none: &mut Gradients<Half, D>,
    ) -> Result<()> {
        // The overflowed gradients are gone with the rest: the next step is not skipped for
        // them.
        if let Some(found) = self.found_inf.get_mut(opt) {
            *found = false;
        }
        let module = Tensors(&*self.model);
        self.run.zero_grad(opt, &module, self.grads)
    }
}

/// The f32 parameters of `model` into their half twins (in the same order).
fn to_half<D, M>(model: &M, half: &mut dyn ParamsMut<Half, D>) -> Result<()>
where
    D: TrainDevice<f32> + TrainDevice<Half>,
    M: LightningModule<f32, D>,
{
    let mut values = Vec::new();
    Tensors(model).each(&mut |name, tensor| {
        values.push((name.to_string(), tensor.flat()?));
        Ok(())
    })?;
    let mut values = values.into_iter();
    half.each_mut(&mut |name, tensor| match values.next() {
        Some((twin, flat)) if twin == name => tensor.set_flat(flat.try_to_dtype::<Half>()?),
        _ => Err(Error::msg(format!("16-mixed: `{name}` has no f32 twin"))),
    })
}

//! Freezing in the loop (`crate::freeze`): what the hooks ask for (`TrainerView::freeze`) is
//! applied before the next training step, and the step runs with it.

use std::rc::Rc;

use dfdx::nn::ZeroGrads;
use dfdx::tensor::Gradients;

use super::Run;
use crate::checkpoint::Ckpt;
use crate::datamodule::DataModule;
use crate::freeze::{self, Unfrozen};
use crate::module::LightningModule;
use crate::optim::grads;
use crate::walk::Tensors;
use crate::{Error, Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// Applies the view's freezing if it changed since the last step: its fields checked
    /// against the module's, the optimizers told, the frozen parameters' gradients dropped
    /// (the others' kept, inside an accumulation window too).
    pub(super) fn apply_freezing(&mut self) -> Result<()> {
        if self.view.freezing == self.optimization.frozen {
            return Ok(());
        }
        let freezing = self.view.freezing.clone();
        if !freezing.is_empty() {
            let o = &self.optimization;
            if o.shards.is_some() || o.full_shard.is_some() {
                return Err(Error::config(
                    "freeze",
                    "freezing under strategy \"fsdp\" is not built yet; use \"ddp\"",
                ));
            }
            freezing.check(&Tensors(&*self.model), M::NAME)?;
        }
        for c in self.optimization.optimizers.iter_mut() {
            c.optimizer.set_frozen(&freezing);
        }
        self.optimization.frozen_ids =
            Rc::new(freeze::frozen_ids(&Tensors(&*self.model), &freezing)?);
        self.optimization.frozen = freezing;
        if let Some(mut before) = self.optimization.grads.take() {
            let unfrozen = self.unfrozen();
            let fresh = freeze::alloc_grads(&unfrozen)?;
            self.optimization.grads = Some(grads::add_grads(&unfrozen, &mut before, fresh)?);
        }
        Ok(())
    }

    /// The parameters not frozen.
    pub(super) fn unfrozen(&self) -> Unfrozen<'_, Tensors<'_, M>> {
        Unfrozen {
            params: Tensors(&*self.model),
            freezing: &self.optimization.frozen,
        }
    }

    /// Zeros in place of `grads` after a step (fresh ones for the parameters not frozen,
    /// when some are).
    pub(super) fn zeroed(&self, mut grads: Gradients<E, D>) -> Result<Gradients<E, D>> {
        if self.optimization.frozen.is_empty() {
            self.model.try_zero_grads(&mut grads)?;
            return Ok(grads);
        }
        freeze::alloc_grads(&self.unfrozen())
    }
}

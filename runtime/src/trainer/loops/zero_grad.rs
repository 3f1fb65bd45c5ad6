//! The module's `optimizer_zero_grad` in the automatic loop (Lightning's call on a window's
//! first batch, after `on_before_zero_grad`). Without the hook the trainer zeroes the
//! gradients after each step; a module that writes it (`HAS_OPTIMIZER_ZERO_GRAD`) decides
//! there, and its step's own backward runs into zeros with the last window's gradients set
//! aside, to be added back if it keeps them.

use dfdx::tensor::Gradients;

use super::Run;
use crate::checkpoint::Ckpt;
use crate::datamodule::DataModule;
use crate::module::LightningModule;
use crate::optim::{grads, ZeroGrad};
use crate::{Error, Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// Before the first step of a window, when the module decides itself when gradients are
    /// zeroed (it wrote `optimizer_zero_grad`): the last window's gradients set aside and the
    /// step's own backward into zeros, where that backward differentiates the module's own
    /// tape (16-mixed's and FULL_SHARD's gradients are added to after the hook).
    pub(super) fn set_aside_grads(&mut self) -> Result<()> {
        let o = &mut self.optimization;
        if !M::HAS_OPTIMIZER_ZERO_GRAD || o.half.is_some() || o.full_shard.is_some() {
            return Ok(());
        }
        o.kept = o.grads.take();
        self.optimization.grads = Some(self.zeroed(Gradients::leaky())?);
        Ok(())
    }

    /// The module's `optimizer_zero_grad` at the start of a window (batch `batch_idx`). The
    /// trainer zeroes the gradients after each step, unless the module wrote the hook: then
    /// they are zeroed here if it asks, and kept (added to) if not.
    pub(super) fn zero_grad(&mut self, batch_idx: usize) -> Result<()> {
        let mut asked = ZeroGrad::default();
        let epoch = self.view.current_epoch;
        (self.model).optimizer_zero_grad(self.view, epoch, batch_idx, &mut asked);
        self.after_hook()?;
        if !M::HAS_OPTIMIZER_ZERO_GRAD {
            return Ok(());
        }
        if !asked.zeroed() {
            let several = self.dist.env.world_size > 1;
            if several && self.optimization.shards.is_some() {
                // Each rank's kept share would be averaged over the ranks again.
                return Err(Error::config(
                    "optimizer_zero_grad",
                    "keeps the gradients across windows, which is not built for \"fsdp:SHARD_GRAD_OP\" on several ranks; use \"ddp\"",
                ));
            }
            return Ok(());
        }
        self.optimization.kept = None;
        if let Some(run) = &self.optimization.full_shard {
            run.borrow_mut().zero_grads();
        }
        if self.optimization.half.is_some() {
            if let Some(grads) = self.optimization.grads.take() {
                self.optimization.grads = Some(self.zeroed(grads)?);
            }
        }
        Ok(())
    }

    /// After the backward: the last window's gradients the module kept, added.
    pub(super) fn add_kept_grads(&mut self) -> Result<()> {
        let Some(mut kept) = self.optimization.kept.take() else {
            return Ok(());
        };
        let Some(grads) = self.optimization.grads.take() else {
            return Ok(());
        };
        let unfrozen = self.unfrozen();
        self.optimization.grads = Some(grads::add_grads(&unfrozen, &mut kept, grads)?);
        Ok(())
    }
}

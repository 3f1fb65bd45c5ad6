//! The batch-norm statistics of weights that were never trained as they are (an average of
//! weights: `StochasticWeightAveraging`), recomputed with one pass over the training data:
//! PyTorch's `torch.optim.swa_utils.update_bn`, which Lightning's SWA runs as an extra epoch.
//! A callback asks for it with `TrainerView::update_bn` by the end of training.

use super::{guard, Run};
use crate::checkpoint::Ckpt;
use crate::context::{OptimizationMode, StepContext};
use crate::data::DataLoader;
use crate::datamodule::{DataModule, Stage};
use crate::module::LightningModule;
use crate::walk::{self, Item, ItemMut};
use crate::{Error, Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// Every training batch through `training_step` without its backward or a step, with
    /// the batch norms' momentum at 1/k for the k-th batch (their running statistics become
    /// the mean over the batches, as PyTorch's momentum `None`), their momenta restored after.
    pub(super) fn update_bn(&mut self, train: &DataLoader<DM::Sample>) -> Result<()> {
        let norms = batch_norms(&*self.model)?;
        if norms.is_empty() {
            return Ok(());
        }
        if let Some(why) = self.update_bn_refusal()? {
            return Err(Error::config("update_bn", why));
        }
        let total = self.position.train_batches;
        let epoch = self.view.current_epoch;
        for (k, samples) in train.epoch_from(epoch, 0).take(total).enumerate() {
            let momentum = 1.0 / (k + 1) as f64;
            set_momenta(&mut *self.model, &norms, |_| momentum)?;
            let info = self.step_info(Stage::Fit, true, k, samples.len());
            let batch = self.collated(samples, k)?;
            let mut ctx = StepContext::<E, D, M::Optimization>::new(self.device.clone(), info);
            let model = &mut *self.model;
            // The loss's tape is dropped: no gradient, no step.
            guard("training_step", k, || model.training_step(batch, &mut ctx))??;
        }
        set_momenta(&mut *self.model, &norms, |saved| saved)?;
        // Each rank saw its own batches: rank 0's statistics are every rank's.
        crate::distributed::broadcast_module(&*self.dist.collective, &mut *self.model)
    }
}

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// Why `update_bn` cannot run in this fit, when the module has batch norms.
    pub(super) fn update_bn_refusal(&self) -> Result<Option<&'static str>> {
        let unbuilt = <M::Optimization as OptimizationMode>::MANUAL;
        if !unbuilt || batch_norms(&*self.model)?.is_empty() {
            return Ok(None);
        }
        Ok(Some("recomputing the batch-norm statistics runs training_step without a backward, which a manual step does itself: not built for manual optimization"))
    }
}

/// The momentum scalar of every batch norm (a layer with a running mean) of `module`, by name.
fn batch_norms<M: dfdx::nn::TensorCollection<E, D>, E: Ckpt, D: TrainDevice<E>>(
    module: &M,
) -> Result<Vec<(String, f64)>> {
    let (mut layers, mut momenta) = (Vec::new(), Vec::new());
    walk::read(module, |name, item| {
        match item {
            Item::Tensor { .. } => {
                layers.extend(name.strip_suffix(".running_mean").map(String::from))
            }
            Item::Scalar(value) => {
                if let (Some(layer), Some(m)) = (name.strip_suffix(".momentum"), value) {
                    momenta.push((layer.to_string(), m));
                }
            }
        }
        Ok(())
    })?;
    momenta.retain(|(layer, _)| layers.contains(layer));
    Ok(momenta)
}

/// Sets the momentum of each batch norm of `norms` (layer, momentum before) to
/// `momentum(before)`.
fn set_momenta<M: dfdx::nn::TensorCollection<E, D>, E: Ckpt, D: TrainDevice<E>>(
    module: &mut M,
    norms: &[(String, f64)],
    momentum: impl Fn(f64) -> f64,
) -> Result<()> {
    walk::write(module, |name, item| {
        if let (ItemMut::Scalar(value), Some(layer)) = (item, name.strip_suffix(".momentum")) {
            if let Some((_, before)) = norms.iter().find(|(l, _)| l == layer) {
                *value = Some(momentum(*before));
            }
        }
        Ok(())
    })
}

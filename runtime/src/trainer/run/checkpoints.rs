//! Checkpoints inside a run: writing what hooks ask for (`TrainerView::save_checkpoint`), and
//! restoring a run from one (module, callbacks and data module first, then optimizer,
//! scheduler, loss scaler, loop position, random streams and accumulated gradients).

use super::{apply, Run};
use crate::checkpoint::{float, Checkpoint, CkptDtype, LoopState, Record, GRADS_PREFIX};
use crate::data::DataLoader;
use crate::datamodule::DataModule;
use crate::module::LightningModule;
use crate::optim::{grads, Interval};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// Checkpoints: saving what hooks asked for, and restoring a run.
impl<E, D, M, DM> Run<'_, E, D, M, DM>
where
    E: FloatDtype + CkptDtype,
    D: TrainDevice<E>,
    M: LightningModule<E, D>,
    DM: DataModule,
{
    /// After every hook: stop on a reported error, else write the checkpoints asked for.
    pub(super) fn after_hook(&mut self) -> Result<()> {
        self.view.take_error()?;
        if self.view.checkpoint_saves.is_empty() && self.view.checkpoint_removals.is_empty() {
            return Ok(());
        }
        let saves = std::mem::take(&mut self.view.checkpoint_saves);
        let removals = std::mem::take(&mut self.view.checkpoint_removals);
        // Rank 0 alone writes; the others keep the same bookkeeping (the metrics that choose
        // the checkpoints are global), and under sharding help gather the optimizer state.
        let writer = self.dist.env.is_global_zero();
        if !writer && self.shards.is_none() {
            return Ok(());
        }
        let (mut full, mut weights) = (None, None);
        for (path, weights_only) in &saves {
            let slot = if *weights_only {
                &mut weights
            } else {
                &mut full
            };
            if slot.is_none() {
                *slot = Some(self.checkpoint(*weights_only)?);
            }
            if let (Some(ckpt), true) = (slot, writer) {
                ckpt.write(path)?;
            }
        }
        // Only once every save succeeded: a failed save keeps the checkpoints it would replace.
        for path in removals
            .iter()
            .filter(|r| !saves.iter().any(|(p, _)| p == *r))
        {
            match std::fs::remove_file(path) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                    return Err(Error::io(path, e))
                }
                _ => {}
            }
        }
        Ok(())
    }

    /// The run as it stands, as a checkpoint (Lightning's `dump_checkpoint`).
    pub(super) fn checkpoint(&mut self, weights_only: bool) -> Result<Checkpoint> {
        let mut ckpt = Checkpoint::of_module(&*self.model, M::NAME)?;
        ckpt.meta.datamodule_hparams = self.dm.hparams();
        if !weights_only {
            ckpt.meta.weights_only = false;
            if let Some(optimizer) = &self.optimizer {
                let shards =
                    (self.shards.as_ref()).map(|shards| (&*self.dist.collective, shards.tensors()));
                ckpt.meta.optimizer = Some(optimizer.save_state(&mut ckpt.records, shards)?);
            }
            ckpt.meta.scheduler = self.scheduler.as_ref().map(|s| s.state.clone());
            ckpt.meta.loss_scaler = self.half.as_ref().map(|h| h.scaler().clone());
            if self.accumulating() {
                if let Some(g) = self.grads.as_mut() {
                    let records = &mut ckpt.records;
                    grads::for_each(&*self.model, g, |name, values| {
                        records.insert(
                            format!("{GRADS_PREFIX}{name}"),
                            Record::from_values(vec![values.len()], values),
                        );
                    })?;
                }
            }
            ckpt.meta.loop_state = Some(LoopState {
                epoch: self.view.current_epoch,
                batches_done: self.position.batches_done,
                epoch_done: self.position.epoch_done,
                global_step: self.view.global_step,
                run_seed: self.run_seed,
                train_loader_seed: self.train_loader_seed,
                callback_metrics: self
                    .view
                    .callback_metrics
                    .iter()
                    .map(|(k, v)| (k.clone(), float::F64(*v)))
                    .collect(),
                epoch_metrics: serde_json::to_value(&self.epoch_metrics)
                    .map_err(|e| Error::msg(format!("epoch metrics: {e}")))?,
            });
            for cb in self.callbacks.iter() {
                if let Some(state) = cb.state_dict() {
                    let key = cb.state_key();
                    if ckpt.meta.callbacks.insert(key.clone(), state).is_some() {
                        return Err(Error::msg(format!(
                            "two callbacks keep state under the key `{key}`: give one of them another `state_key`"
                        )));
                    }
                }
            }
            ckpt.meta.datamodule = self.dm.state_dict();
            for cb in self.callbacks.iter_mut() {
                cb.on_save_checkpoint(self.view, &mut ckpt);
            }
        }
        self.model.on_save_checkpoint(self.view, &mut ckpt);
        self.view.take_error()?;
        Ok(ckpt)
    }

    /// The module's weights, the callbacks' and the data module's state.
    pub(super) fn restore_modules(&mut self, ckpt: &Checkpoint) -> Result<()> {
        if ckpt.weights_only() {
            return Err(ckpt.error(Error::msg(
                "it holds weights only (save_weights_only), not the optimizer and loop state a run \
                 resumes from; load it with `load_from_checkpoint` and start a new fit instead",
            )));
        }
        ckpt.load_weights(self.model)?;
        for cb in self.callbacks.iter_mut() {
            if let Some(state) = ckpt.callback_state(&cb.state_key()) {
                cb.load_state_dict(state).map_err(|e| ckpt.error(e))?;
            }
        }
        if let Some(state) = &ckpt.meta.datamodule {
            self.dm.load_state_dict(state).map_err(|e| ckpt.error(e))?;
        }
        hook!(self, on_load_checkpoint(ckpt));
        Ok(())
    }

    /// The optimizer, the loop position and the random streams; returns the batch of the
    /// current epoch to continue from.
    pub(super) fn restore_training_state(
        &mut self,
        ckpt: &Checkpoint,
        train: &mut DataLoader<DM::Sample>,
    ) -> Result<usize> {
        let (Some(state), Some(opt), Some(optimizer)) = (
            &ckpt.meta.loop_state,
            &ckpt.meta.optimizer,
            self.optimizer.as_mut(),
        ) else {
            return Err(ckpt.error(Error::msg(
                "it has no loop or optimizer state to resume from",
            )));
        };
        optimizer.load_state(&*self.model, opt, ckpt)?;
        if let (Some(half), Some(scaler)) = (self.half.as_mut(), &ckpt.meta.loss_scaler) {
            half.set_scaler(scaler.clone());
        }
        self.view.lr = optimizer.lr();
        match (&ckpt.meta.scheduler, self.scheduler.as_mut()) {
            (Some(saved), Some(scheduler)) => {
                let rates = scheduler.load_state(saved).map_err(|e| ckpt.error(e))?;
                apply(optimizer, self.view, rates)?;
            }
            (None, None) => {}
            (saved, _) => {
                return Err(ckpt.error(Error::msg(format!(
                    "it was saved {} a learning-rate scheduler, but configure_optimizers now returns {}",
                    if saved.is_some() { "with" } else { "without" },
                    if saved.is_some() { "none" } else { "one" },
                ))))
            }
        }
        if !state.epoch_done && state.batches_done > train.len() {
            return Err(ckpt.error(Error::msg(format!(
                "it was saved after batch {} of epoch {}, but the training loader now has {} batches: the data changed",
                state.batches_done, state.epoch, train.len()
            ))));
        }
        *train = train.clone().seed(state.train_loader_seed);
        self.run_seed = state.run_seed;
        self.view.global_step = state.global_step;
        self.view.callback_metrics = state
            .callback_metrics
            .iter()
            .map(|(k, v)| (k.clone(), v.0))
            .collect();
        if state.epoch_done {
            // Saved in on_train_epoch_end: the epoch's scheduler step came after the save.
            self.step_scheduler(Interval::Epoch, state.epoch + 1)?;
            self.view.current_epoch = state.epoch + 1;
            return Ok(0);
        }
        self.view.current_epoch = state.epoch;
        self.epoch_metrics = serde_json::from_value(state.epoch_metrics.clone())
            .map_err(|e| ckpt.error(Error::msg(format!("its epoch metrics: {e}"))))?;
        self.position.batches_done = state.batches_done;
        if self.accumulating() {
            self.restore_grads(ckpt)?;
        }
        Ok(state.batches_done)
    }

    /// Whether gradients of batches not yet stepped on are waiting (inside an accumulation
    /// window).
    pub(super) fn accumulating(&self) -> bool {
        let done = self.position.batches_done;
        !self.position.epoch_done
            && !done.is_multiple_of(self.view.accumulate_grad_batches)
            && done != self.train_batches
    }

    /// The summed gradients of an unfinished accumulation window.
    pub(super) fn restore_grads(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let Some(g) = self.grads.as_mut() else {
            return Ok(());
        };
        let mut failed = Ok(());
        grads::for_each(&*self.model, g, |name, values| {
            let key = format!("{GRADS_PREFIX}{name}");
            match ckpt.values::<E>(&key, &[values.len()]) {
                Ok(saved) => values.copy_from_slice(&saved),
                Err(e) if failed.is_ok() => failed = Err(e),
                Err(_) => {}
            }
        })?;
        failed
    }
}

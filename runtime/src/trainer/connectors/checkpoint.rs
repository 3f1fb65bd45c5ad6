//! Checkpoints and the run (Lightning's `checkpoint_connector.py`): which checkpoint a run
//! resumes from, writing what hooks ask for (`TrainerView::save_checkpoint`), and restoring a
//! run from one (module, callbacks and data module first, then optimizer, scheduler, loss
//! scaler, loop position, random streams and accumulated gradients).

use std::path::{Path, PathBuf};

use crate::callback::CheckpointPaths;
use crate::checkpoint::{
    float, optimizer_prefix, sharded, Checkpoint, Ckpt, CkptPath, LoopState, MoreOptimizer,
    OptimizerState, Record, GRADS_PREFIX, OPTIMIZER_PREFIX,
};
use crate::context::OptimizationMode;
use crate::data::DataLoader;
use crate::datamodule::DataModule;
use crate::distributed::full_shard::Unshard;
use crate::module::LightningModule;
use crate::optim::scheduler::{Rates, SchedulerState};
use crate::optim::Interval;
use crate::trainer::loops::Run;
use crate::trainer::Trainer;
use crate::walk;
use crate::{Error, Result, TrainDevice};

impl Trainer {
    /// Under SLURM with auto-requeue, the newest HPC checkpoint in the default root directory
    /// (what a requeued job resumes from, before any `ckpt_path`, as in Lightning).
    pub(in crate::trainer) fn hpc_checkpoint(&self) -> Result<Option<Checkpoint>> {
        if self.dist.requeue_signal.is_none() {
            return Ok(None);
        }
        let found = crate::distributed::requeue::hpc_checkpoints(&self.default_root_dir);
        let Some((_, path)) = found.last() else {
            return Ok(None);
        };
        if self.dist.env.is_global_zero() {
            println!(
                "Restoring states from the HPC checkpoint at {}",
                path.display()
            );
        }
        Checkpoint::read(path).map(Some)
    }

    /// The file `which` names: a path, the best checkpoint of this trainer's checkpoint
    /// callback, or for "last" the newest `last*.ckpt` (`save_last`'s) in the folders
    /// [`last_dirs`](Self::last_dirs) names, else the newest checkpoint there of any name,
    /// said in a warning (`None` if there is none yet).
    pub(in crate::trainer) fn resolve_checkpoint(
        &self,
        which: CkptPath,
    ) -> Result<Option<PathBuf>> {
        let all: Vec<CheckpointPaths> = self
            .callbacks
            .iter()
            .filter_map(|c| c.checkpoint_paths())
            .collect();
        match which {
            CkptPath::Path(path) => Ok(Some(path)),
            CkptPath::Fresh => Ok(None),
            CkptPath::Best => all.iter().find_map(|p| p.best.clone()).map(Some).ok_or_else(|| {
                Error::config(
                    "ckpt_path",
                    "\"best\" needs a checkpoint callback that saved a best checkpoint in an earlier fit of this trainer (in this process); pass the checkpoint's path instead",
                )
            }),
            CkptPath::Last => {
                let mut candidates: Vec<PathBuf> =
                    all.iter().filter_map(|p| p.last.clone()).collect();
                for dir in self.last_dirs() {
                    candidates.extend(checkpoint_files(&dir));
                }
                let is_last = |p: &PathBuf| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with("last"))
                };
                if candidates.iter().any(is_last) {
                    return Ok(newest(candidates.into_iter().filter(is_last)));
                }
                let found = newest(candidates.into_iter());
                if let (Some(path), true) = (&found, self.dist.env.is_global_zero()) {
                    eprintln!(
                        "ckpt_path \"last\": no last*.ckpt (ModelCheckpoint's save_last writes one); the newest checkpoint is {}",
                        path.display()
                    );
                }
                Ok(found)
            }
        }
    }

    /// Where "last" looks: the folders of the checkpoint callbacks that name one (and, for a
    /// logger's `version_N/checkpoints`, those of its other versions); with none named yet (a
    /// new process, default callbacks), those of the default layout under the root directory:
    /// `lightning_logs/version_*/checkpoints`, and `checkpoints` (runs without a logger).
    pub(in crate::trainer) fn last_dirs(&self) -> Vec<PathBuf> {
        let named: Vec<PathBuf> = (self.callbacks.iter())
            .filter_map(|c| c.checkpoint_paths()?.dirpath)
            .collect();
        let root = &self.default_root_dir;
        let starts = match named.is_empty() {
            false => named,
            true => vec![
                root.join(crate::loggers::DEFAULT_NAME)
                    .join("version_0/checkpoints"),
                root.join("checkpoints"),
            ],
        };
        let mut dirs: Vec<PathBuf> = Vec::new();
        for dir in starts.iter().flat_map(|d| with_earlier_versions(d)) {
            if !dirs.contains(&dir) {
                dirs.push(dir);
            }
        }
        dirs
    }
}

/// The most recently modified of `paths`.
fn newest(paths: impl Iterator<Item = PathBuf>) -> Option<PathBuf> {
    paths
        .filter_map(|p| Some((std::fs::metadata(&p).ok()?.modified().ok()?, p)))
        .max()
        .map(|(_, p)| p)
}

/// `dir`, and when it is a logger's `version_N/checkpoints`, the same folder of every version.
fn with_earlier_versions(dir: &Path) -> Vec<PathBuf> {
    let mut dirs = vec![dir.to_path_buf()];
    let version = dir
        .parent()
        .filter(|_| dir.file_name().is_some_and(|n| n == "checkpoints"));
    let is_version = |p: &Path| {
        p.file_name()
            .and_then(|n| n.to_str())
            .and_then(|n| n.strip_prefix("version_"))
            .is_some_and(|n| n.parse::<u64>().is_ok())
    };
    if let Some(logs) = version.filter(|v| is_version(v)).and_then(Path::parent) {
        let versions = std::fs::read_dir(logs).into_iter().flatten().flatten();
        dirs.extend(
            versions
                .map(|e| e.path())
                .filter(|p| is_version(p))
                .map(|p| p.join("checkpoints"))
                .filter(|p| p != dir),
        );
    }
    dirs
}

/// The checkpoints (`*.ckpt` files, and sharded ones' folders; not temporaries) in `dir`.
fn checkpoint_files(dir: &Path) -> Vec<PathBuf> {
    let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
    entries
        .map(|e| e.path())
        .filter(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.ends_with(".ckpt") && !n.starts_with('.'))
        })
        .collect()
}

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// After every hook: stop on a reported error, else write the checkpoints asked for.
    pub(in crate::trainer) fn after_hook(&mut self) -> Result<()> {
        self.view.take_error()?;
        if self.view.checkpoint_saves.is_empty() && self.view.checkpoint_removals.is_empty() {
            return Ok(());
        }
        let saves = std::mem::take(&mut self.view.checkpoint_saves);
        let removals = std::mem::take(&mut self.view.checkpoint_removals);

        // Rank 0 alone writes (a sharded checkpoint: every rank its file); the others keep the
        // same bookkeeping (the metrics that choose the checkpoints are global), and under
        // sharding help gather the optimizer state (and FULL_SHARD's weights).
        let writer = self.dist.env.is_global_zero();
        let o = &self.optimization;
        if !writer && o.shards.is_none() && o.full_shard.is_none() {
            return Ok(());
        }
        let sharded = self.sharded_checkpoints();
        let (mut full, mut weights) = (None, None);
        for (path, weights_only) in &saves {
            if sharded {
                self.write_sharded(path, *weights_only)?;
                continue;
            }
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
        if !writer {
            return Ok(());
        }
        removals
            .iter()
            .filter(|r| !saves.iter().any(|(p, _)| p == *r))
            .try_for_each(|path| sharded::remove(path))
    }

    /// The run as it stands, as a checkpoint (Lightning's `dump_checkpoint`). Under
    /// FULL_SHARD every rank calls it: the module is whole while it is written.
    pub(in crate::trainer) fn checkpoint(&mut self, weights_only: bool) -> Result<Checkpoint> {
        let Some(run) = self.optimization.full_shard.clone() else {
            return self.checkpoint_whole(weights_only);
        };
        // FULL_SHARD: rank 0's module gets the whole parameters while it is written; the other
        // ranks help gather them, and write nothing.
        let root = self.dist.env.is_global_zero();
        run.borrow_mut()
            .unshard(&mut *self.model, Unshard::Checkpoint { here: root })?;
        if !root {
            let part = Checkpoint::of_module_buffers(&*self.model, M::NAME, false)?;
            return self.complete(part, weights_only, true);
        }
        let ckpt = self.checkpoint_whole(weights_only);
        run.borrow_mut().reshard(&mut *self.model)?;
        ckpt
    }

    /// [`checkpoint`](Self::checkpoint) of the module as it is.
    fn checkpoint_whole(&mut self, weights_only: bool) -> Result<Checkpoint> {
        let ckpt = Checkpoint::of_module(&*self.model, M::NAME)?;
        self.complete(ckpt, weights_only, true)
    }

    /// `ckpt` (the module's tensors, or this rank's part of them) with the run's state unless
    /// `weights_only` (`whole`: see [`save_training_state`](Self::save_training_state)), the
    /// callbacks' and the data module's, and what `on_save_checkpoint` hooks add.
    pub(super) fn complete(
        &mut self,
        mut ckpt: Checkpoint,
        weights_only: bool,
        whole: bool,
    ) -> Result<Checkpoint> {
        ckpt.meta.datamodule_hparams = self.dm.hparams();
        if !weights_only {
            self.save_training_state(&mut ckpt, whole)?;
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

    /// The optimizer (at the run's learning rate), scheduler, loss scaler, loop position and
    /// the gradients of an unfinished accumulation window; `whole`: the optimizer's buffers and
    /// the gradients as whole tensors (else a sharded checkpoint's part adds its shards).
    pub(super) fn save_training_state(&mut self, ckpt: &mut Checkpoint, whole: bool) -> Result<()> {
        ckpt.meta.weights_only = false;
        let pending = self.grads_pending();
        let o = &mut self.optimization;
        let c = &*self.dist.collective;
        for (index, configured) in o.optimizers.iter().enumerate() {
            let optimizer = &configured.optimizer;
            // Every parameter's buffers, whole: a sharded run's gathered from every rank.
            let state = match (&o.shards, &o.full_shard) {
                _ if !whole => Vec::new(),
                (Some(shards), _) => optimizer.gathered(c, shards.tensors())?,
                (_, Some(run)) => {
                    let per_unit: Vec<_> =
                        optimizer.host_state().into_iter().map(|s| s.1).collect();
                    run.borrow()
                        .unflatten(&per_unit, self.dist.env.is_global_zero())?
                }
                _ => optimizer.host_state(),
            };
            let prefix = optimizer_prefix(index);
            let rates = configured.rates();
            let first = rates.first().copied().unwrap_or(Rates {
                lr: optimizer.lr(),
                momentum: None,
            });
            let mut saved = optimizer.save_state(&mut ckpt.records, &prefix, state, first)?;
            let mut schedulers = configured.schedulers().map(|s| s.state.clone());
            let scheduler = schedulers.next();
            saved.group_schedulers = schedulers.collect();
            if index == 0 {
                ckpt.meta.optimizer = Some(saved);
                ckpt.meta.scheduler = scheduler;
            } else {
                ckpt.meta.more_optimizers.push(MoreOptimizer {
                    optimizer: saved,
                    scheduler,
                });
            }
        }
        ckpt.meta.loss_scaler = o.half.as_ref().map(|h| h.scaler().clone());
        // This rank's metric states, which a resumed rank 0 takes back (`restore_modules`). No
        // collective here: under DDP rank 0 alone builds the checkpoint.
        ckpt.meta.metrics = (self.model.metric_fields().into_iter())
            .map(|(field, m)| (field, m.tracked().total().clone()))
            .collect();
        if whole && pending {
            let records = &mut ckpt.records;
            let mut keep = |name: &str, values: &[E]| {
                records.insert(
                    format!("{GRADS_PREFIX}{name}"),
                    Record::from_values(vec![values.len()], values),
                );
            };
            if let Some(run) = &o.full_shard {
                let local = run.borrow_mut().local_grads()?;
                let root = self.dist.env.is_global_zero();
                for (name, values) in run.borrow().unflatten(&local, root)? {
                    keep(&name, values.first().map_or(&[][..], |v| v));
                }
            } else if let Some(g) = o.grads.as_mut() {
                walk::each_grad(&*self.model, g, |name, values| keep(name, values))?;
            }
        }
        let p = &self.position;
        ckpt.meta.loop_state = Some(LoopState {
            epoch: self.view.current_epoch,
            batches_done: p.batches_done,
            epoch_done: p.epoch_done,
            global_step: self.view.global_step,
            run_seed: p.run_seed,
            train_loader_seed: p.train_loader_seed,
            callback_metrics: (self.view.callback_metrics.iter())
                .map(|(k, v)| (k.clone(), float::F64(*v)))
                .collect(),
            epoch_metrics: serde_json::to_value(&p.epoch_metrics)
                .map_err(|e| Error::msg(format!("epoch metrics: {e}")))?,
            freezing: self.view.freezing.clone(),
        });
        Ok(())
    }

    /// The module's weights, the data module's and the callbacks' state, in Lightning's
    /// order: the module's `on_load_checkpoint` first, with the checkpoint to change (tensors
    /// renamed, dropped or added: what then loads is the result), its weights, the data
    /// module's `load_state_dict`, every callback's `on_load_checkpoint`, then every
    /// callback's `load_state_dict`.
    pub(in crate::trainer) fn restore_modules(&mut self, ckpt: &mut Checkpoint) -> Result<()> {
        if ckpt.weights_only() {
            return Err(ckpt.error(Error::msg(
                "it holds weights only (save_weights_only), not the optimizer and loop state a run \
                 resumes from; load it with `load_from_checkpoint` and start a new fit instead",
            )));
        }
        self.model.on_load_checkpoint(self.view, ckpt);
        self.after_hook()?;
        ckpt.load_weights(self.model)?;
        // Rank 0 takes back the checkpoint's metric states (its own) and the others start
        // afresh: under several ranks, their counts of the epoch before the checkpoint are
        // not in it.
        let root = self.dist.env.is_global_zero();
        for (field, metric) in self.model.metric_fields_mut() {
            metric.reset();
            if let (true, Some(saved)) = (root, ckpt.meta.metrics.get(&field)) {
                let loaded = metric.tracked_mut().total_mut().load(saved.clone());
                loaded.map_err(|e| ckpt.error(Error::msg(format!("metric `{field}`: {e}"))))?;
            }
        }
        if let Some(state) = &ckpt.meta.datamodule {
            self.dm.load_state_dict(state).map_err(|e| ckpt.error(e))?;
        }
        for cb in self.callbacks.iter_mut() {
            cb.on_load_checkpoint(self.view, ckpt);
        }
        self.after_hook()?;
        for cb in self.callbacks.iter_mut() {
            if let Some(state) = ckpt.callback_state(&cb.state_key()) {
                cb.load_state_dict(state).map_err(|e| ckpt.error(e))?;
            }
        }
        Ok(())
    }

    /// The optimizer, the loop position and the random streams (the training loader's are
    /// [`resume_loader`](Self::resume_loader)'s, once it is made).
    pub(in crate::trainer) fn restore_training_state(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let Some(state) = &ckpt.meta.loop_state else {
            return Err(ckpt.error(Error::msg(
                "it has no loop or optimizer state to resume from",
            )));
        };
        self.restore_optimization(ckpt)?;
        self.position.run_seed = state.run_seed;
        self.position.train_loader_seed = state.train_loader_seed;
        self.view.global_step = state.global_step;
        self.view.freezing = state.freezing.clone();
        self.view.callback_metrics = (state.callback_metrics.iter())
            .map(|(k, v)| (k.clone(), v.0))
            .collect();
        // The gradients it kept: a window's summed so far, a manual step's (which may carry
        // them over an epoch's end), or a module's that zeroes its own.
        if ckpt.tensor_names().any(|n| n.starts_with(GRADS_PREFIX)) {
            self.restore_grads(ckpt)?;
        }
        self.view.current_epoch = state.epoch;
        if state.epoch_done {
            // Saved in on_train_epoch_end: the epoch's scheduler step came after the save.
            self.step_scheduler(Interval::Epoch, state.epoch + 1)?;
            self.view.current_epoch = state.epoch + 1;
            return Ok(());
        }
        self.position.epoch_metrics = serde_json::from_value(state.epoch_metrics.clone())
            .map_err(|e| ckpt.error(Error::msg(format!("its epoch metrics: {e}"))))?;
        self.position.batches_done = state.batches_done;
        Ok(())
    }

    /// The training loader in the order `ckpt` was saved in, checked against it; returns the
    /// batch of the current epoch to continue from.
    pub(in crate::trainer) fn resume_loader(
        &self,
        ckpt: &Checkpoint,
        train: &mut DataLoader<DM::Sample>,
    ) -> Result<usize> {
        let Some(state) = &ckpt.meta.loop_state else {
            return Ok(0);
        };
        if !state.epoch_done && state.batches_done > train.len() {
            return Err(ckpt.error(Error::msg(format!(
                "it was saved after batch {} of epoch {}, but the training loader now has {} batches: the data changed",
                state.batches_done, state.epoch, train.len()
            ))));
        }
        if let Some(seed) = state.train_loader_seed {
            *train = train.clone().seed(seed);
        }
        Ok(if state.epoch_done {
            0
        } else {
            state.batches_done
        })
    }

    /// The optimizer's settings, step count and buffers, the loss scale, the scheduler and the
    /// learning rate they make.
    fn restore_optimization(&mut self, ckpt: &Checkpoint) -> Result<()> {
        let Some(first) = &ckpt.meta.optimizer else {
            return Err(ckpt.error(Error::msg(
                "it has no loop or optimizer state to resume from",
            )));
        };
        let saved: Vec<(&OptimizerState, Option<&SchedulerState>)> =
            std::iter::once((first, ckpt.meta.scheduler.as_ref()))
                .chain(
                    ckpt.meta
                        .more_optimizers
                        .iter()
                        .map(|m| (&m.optimizer, m.scheduler.as_ref())),
                )
                .collect();
        let o = &mut self.optimization;
        if saved.len() != o.optimizers.len() {
            return Err(ckpt.error(Error::msg(format!(
                "it was saved with {} optimizers, but configure_optimizers now returns {}",
                saved.len(),
                o.optimizers.len()
            ))));
        }
        for (index, (configured, (state, scheduler))) in
            o.optimizers.iter_mut().zip(saved).enumerate()
        {
            let optimizer = &mut configured.optimizer;
            match &o.full_shard {
                // FULL_SHARD: each shard's buffers cut from the whole ones.
                Some(run) => {
                    let run = run.borrow();
                    let mut read = |k: usize, _: &str, buffer: &str, _: usize| {
                        run.shard_of(k, &mut |name, len| {
                            ckpt.values::<E>(&format!("{OPTIMIZER_PREFIX}{name}/{buffer}"), &[len])
                        })
                    };
                    optimizer.load_state_of(&run.params, state, ckpt, &mut read)?;
                }
                None => {
                    optimizer.load_state(&*self.model, &optimizer_prefix(index), state, ckpt)?
                }
            }
            let config = optimizer.config().clone();
            let saved_schedulers: Vec<&SchedulerState> = scheduler
                .into_iter()
                .chain(&state.group_schedulers)
                .collect();
            let has = configured.groups.iter().any(|g| g.scheduler.is_some());
            if has == saved_schedulers.is_empty() {
                return Err(ckpt.error(Error::msg(format!(
                    "its optimizer {index} was saved {} a learning-rate scheduler, but configure_optimizers now returns {}",
                    if has { "without" } else { "with" },
                    if has { "one" } else { "none" },
                ))));
            }
            if has && saved_schedulers.len() != configured.groups.len() {
                return Err(ckpt.error(Error::msg(format!(
                    "its optimizer {index} was saved with {} parameter groups, but configure_optimizers now gives it {}",
                    saved_schedulers.len(),
                    configured.groups.len()
                ))));
            }
            for (g, group) in configured.groups.iter_mut().enumerate() {
                group.rates = Rates {
                    lr: config.for_group(g, None).lr(),
                    momentum: None,
                };
                if let (Some(scheduler), Some(saved)) =
                    (group.scheduler.as_mut(), saved_schedulers.get(g))
                {
                    group.rates = scheduler.load_state(saved).map_err(|e| ckpt.error(e))?;
                }
            }
            // The default group's rate is the one the run had (a callback's request included).
            if let (Some(first), None) = (configured.groups.first_mut(), scheduler) {
                first.rates.lr = optimizer.lr();
            }
        }
        if let (Some(half), Some(scaler)) = (o.half.as_mut(), &ckpt.meta.loss_scaler) {
            half.set_scaler(scaler.clone());
        }
        self.publish_rates();
        Ok(())
    }

    /// Whether the gradients hold what a step has not consumed: inside an accumulation window,
    /// and always under manual optimization (whose step may accumulate over batches).
    fn grads_pending(&self) -> bool {
        <M::Optimization as OptimizationMode>::MANUAL
            || M::HAS_OPTIMIZER_ZERO_GRAD
            || (self.position).accumulating(self.view.accumulate_grad_batches)
    }

    /// The summed gradients of an unfinished accumulation window.
    fn restore_grads(&mut self, ckpt: &Checkpoint) -> Result<()> {
        if let Some(run) = &self.optimization.full_shard {
            let mut run = run.borrow_mut();
            let per_unit = (0..run.unit_names().count())
                .map(|k| {
                    run.shard_of(k, &mut |name, len| {
                        ckpt.values::<E>(&format!("{GRADS_PREFIX}{name}"), &[len])
                    })
                })
                .collect::<Result<Vec<_>>>()?;
            return run.set_local_grads(per_unit);
        }
        let Some(g) = self.optimization.grads.as_mut() else {
            return Ok(());
        };
        let mut failed = Ok(());
        walk::each_grad(&*self.model, g, |name, values| {
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

//! FULL_SHARD's sharded checkpoints (`state_dict_type("sharded")`): every rank writes its own
//! file of a checkpoint directory, with nothing gathered (`checkpoint::sharded` is the format;
//! reading one back is [`Checkpoint::read`]'s).

use std::path::{Path, PathBuf};

use crate::checkpoint::sharded::{self, Kind};
use crate::checkpoint::{Checkpoint, Ckpt, Record};
use crate::datamodule::DataModule;
use crate::kernels::StepRule;
use crate::module::LightningModule;
use crate::trainer::loops::Run;
use crate::{Error, Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// Whether this run's checkpoints are sharded.
    pub(super) fn sharded_checkpoints(&self) -> bool {
        self.dist.sharded_checkpoints && self.optimization.full_shard.is_some()
    }

    /// The sharded checkpoint at `path`: every rank writes its file, and once every rank
    /// has, rank 0 moves the directory into place (a failure on any rank leaves what was at
    /// `path` as it was).
    pub(super) fn write_sharded(&mut self, path: &Path, weights_only: bool) -> Result<()> {
        let (rank, world) = (self.dist.env.global_rank, self.dist.env.world_size);
        let c = &*self.dist.collective;
        // Rank 0's path (without a logger the others' callbacks name another directory),
        // once rank 0 has cleared what an interrupted save left staged there; empty when it
        // cannot be shared.
        let (mut bytes, mut failed) = (Vec::new(), None);
        if rank == 0 {
            match (path.to_str(), sharded::remove(&sharded::staging(path))) {
                (Some(utf8), Ok(())) => bytes.extend(utf8.as_bytes()),
                (_, Err(e)) => failed = Some(e),
                (None, Ok(())) => {}
            }
        }
        c.broadcast(0, &mut bytes)?;
        if let Some(e) = failed {
            return Err(e);
        }
        if bytes.is_empty() {
            return Err(Error::config(
                "state_dict_type",
                format!("rank 0 could not prepare the sharded checkpoint {} (its path must be UTF-8, for the ranks to agree on it)", path.display()),
            ));
        }
        let path = PathBuf::from(String::from_utf8_lossy(&bytes).into_owned());
        let written = self
            .checkpoint_part(weights_only)
            .and_then(|part| part.write_part(&path, rank, world));
        let c = &*self.dist.collective;
        if !crate::distributed::all_true(c, written.is_ok())? || written.is_err() {
            if rank == 0 {
                let _ = sharded::remove(&sharded::staging(&path));
            }
            written?;
            return Err(Error::msg(format!(
                "another rank could not write its part of the checkpoint {}; what was there is left as it was",
                path.display()
            )));
        }
        let committed = match rank {
            0 => sharded::commit(&path),
            _ => Ok(()),
        };
        if !crate::distributed::all_true(c, committed.is_ok())? {
            committed?;
            return Err(Error::msg(format!(
                "rank 0 could not move the checkpoint {} into place",
                path.display()
            )));
        }
        Ok(())
    }

    /// This rank's part of a sharded checkpoint: its shards of the parameters (and of the
    /// optimizer's buffers and the window's gradients), the layout that puts the shards
    /// together, and on rank 0 the module's buffers and the run's state.
    fn checkpoint_part(&mut self, weights_only: bool) -> Result<Checkpoint> {
        let Some(run) = self.optimization.full_shard.clone() else {
            return Err(Error::msg(
                "a sharded checkpoint of a run that is not FULL_SHARD",
            ));
        };
        let root = self.dist.env.is_global_zero();
        let mut ckpt = Checkpoint::of_module_buffers(&*self.model, M::NAME, root)?;
        let mut run = run.borrow_mut();
        let mut keep = |kind: Kind<'_>, k: usize, values: &[E]| {
            let record = Record::from_values(vec![values.len()], values);
            ckpt.records.insert(sharded::shard_name(kind, k), record);
        };
        for (k, values) in run.local_params().iter().enumerate() {
            keep(Kind::Weights, k, values);
        }
        if !weights_only {
            // FULL_SHARD runs automatic optimization: one optimizer.
            if let Some(optimizer) = self.optimization.optimizers.first().map(|c| &c.optimizer) {
                let names = StepRule::buffers(optimizer.config());
                for (k, (_, buffers)) in optimizer.host_state().iter().enumerate() {
                    for (name, values) in names.iter().zip(buffers) {
                        keep(Kind::Optimizer(name), k, values);
                    }
                }
            }
            if (self.position).accumulating(self.view.accumulate_grad_batches) {
                for (k, grads) in run.local_grads()?.iter().enumerate() {
                    keep(Kind::Grads, k, grads.first().map_or(&[][..], |g| g));
                }
            }
        }
        ckpt.meta.layout = Some(run.layout());
        drop(run);
        self.complete(ckpt, weights_only, false)
    }
}

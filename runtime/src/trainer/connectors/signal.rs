//! What every rank agrees on during training (Lightning's `signal_connector.py` and the
//! strategies' `reduce_boolean_decision`): a stop asked for on any rank, and SLURM's requeue
//! signal or SIGTERM.

use crate::checkpoint::Ckpt;
use crate::datamodule::DataModule;
use crate::distributed::requeue;
use crate::module::LightningModule;
use crate::trainer::loops::Run;
use crate::{Error, Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// What every rank must agree on after a step, in one collective: a stop asked for on any
    /// rank (a callback's `should_stop`) stops every rank (a rank going on alone would wait
    /// forever); and SLURM's requeue signal or SIGTERM: the first saves an HPC checkpoint and
    /// requeues the job, the second stops (see [`crate::distributed::requeue`]).
    pub(in crate::trainer) fn agree_after_step(&mut self) -> Result<()> {
        let (mut requeue, mut term) =
            (self.signals.as_ref()).map_or((false, false), |s| s.pending());
        if self.dist.env.world_size > 1 {
            let mut flags = [requeue, term, self.view.should_stop].map(|f| f64::from(u8::from(f)));
            self.dist.collective.all_reduce_max_f64(&mut flags)?;
            (requeue, term) = (flags[0] > 0.0, flags[1] > 0.0);
            self.view.should_stop = flags[2] > 0.0;
        }
        let (epoch, step) = (self.view.current_epoch, self.view.global_step);
        if requeue {
            return Err(self.requeue()?);
        }
        if term {
            return Err(Error::Terminated { epoch, step });
        }
        Ok(())
    }

    /// Saves an HPC checkpoint and requeues the job; the error that ends the run.
    fn requeue(&mut self) -> Result<Error> {
        let path = requeue::next_hpc_checkpoint(&self.view.default_root_dir);
        let job = self.dist.env.job_id.clone().unwrap_or_default();
        // Under sharding every rank takes part: in gathering the optimizer state (and the
        // weights, under FULL_SHARD), or in writing a sharded checkpoint's files.
        let global_zero = self.dist.env.is_global_zero();
        let o = &self.optimization;
        if self.sharded_checkpoints() {
            self.write_sharded(&path, false)?;
        } else if o.shards.is_some() || o.full_shard.is_some() || global_zero {
            let ckpt = self.checkpoint(false)?;
            if global_zero {
                ckpt.write(&path)?;
            }
        }
        if global_zero {
            requeue::requeue(&job)?;
        }
        self.dist.collective.barrier()?;
        Ok(Error::Requeued {
            checkpoint: path,
            job,
            epoch: self.view.current_epoch,
            step: self.view.global_step,
        })
    }

    /// A stop asked for on any rank at the epoch's end (early stopping) stops every rank.
    pub(in crate::trainer) fn sync_stop(&mut self) -> Result<()> {
        if self.dist.env.world_size > 1 {
            let mut any = [f64::from(u8::from(self.view.should_stop))];
            self.dist.collective.all_reduce_max_f64(&mut any)?;
            self.view.should_stop = any[0] > 0.0;
        }
        Ok(())
    }
}

//! Signals and what every rank agrees on during training (Lightning's `signal_connector.py`
//! and the strategies' `reduce_boolean_decision`): a stop asked for on any rank, SLURM's
//! requeue signal, and SIGINT (Ctrl-C) or SIGTERM, which stop the run as Lightning's
//! `KeyboardInterrupt` does: after the step in flight, with `on_exception` run and every logger
//! flushed and closed ([`Error::Interrupted`]). A second SIGINT or SIGTERM exits at once.

use crate::checkpoint::Ckpt;
use crate::datamodule::DataModule;
use crate::distributed::requeue;
use crate::module::LightningModule;
use crate::signals::signal_name;
use crate::trainer::loops::Run;
use crate::{Error, Result, TrainDevice};

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// What every rank must agree on after a step, in one collective: a stop asked for on any
    /// rank (a callback's `should_stop`) stops every rank (a rank going on alone would wait
    /// forever); and SLURM's requeue signal or SIGTERM: the first saves an HPC checkpoint and
    /// requeues the job, the second stops (see [`crate::distributed::requeue`]).
    pub(in crate::trainer) fn agree_after_step(&mut self) -> Result<()> {
        let (mut requeue, mut stop) = (self.signals.requeue(), self.signals.stop());
        if self.dist.env.world_size > 1 {
            let mut flags = [
                f64::from(u8::from(requeue)),
                stop.map_or(0.0, f64::from),
                f64::from(u8::from(self.view.should_stop)),
            ];
            self.dist.collective.all_reduce_max_f64(&mut flags)?;
            requeue = flags[0] > 0.0;
            stop = (flags[1] > 0.0).then_some(flags[1] as i32);
            self.view.should_stop = flags[2] > 0.0;
        }
        if requeue {
            return Err(self.requeue()?);
        }
        match stop {
            Some(signal) => Err(self.interrupted(signal)),
            None => Ok(()),
        }
    }

    /// Between evaluation or prediction batches: a one-process run stops at a stop signal.
    /// Ranks of a larger run take it at their next training step, all together (one going on
    /// alone would wait for the others forever); they say so, once.
    pub(in crate::trainer) fn check_signals(&self) -> Result<()> {
        match self.signals.stop() {
            Some(signal) if self.dist.env.world_size == 1 => Err(self.interrupted(signal)),
            Some(signal) => {
                if self.signals.notice() && self.dist.env.is_global_zero() {
                    let name = signal_name(signal);
                    eprintln!("{name}: the ranks stop together at their next training step (an evaluation or prediction runs to its end first); another {name} exits at once");
                }
                Ok(())
            }
            None => Ok(()),
        }
    }

    fn interrupted(&self, signal: i32) -> Error {
        Error::Interrupted {
            signal: signal_name(signal),
            epoch: self.view.current_epoch,
            step: self.view.global_step,
        }
    }

    /// Saves an HPC checkpoint and requeues the job; the error that ends the run.
    fn requeue(&mut self) -> Result<Error> {
        let path = requeue::next_hpc_checkpoint(&self.view.default_root_dir);
        let job = self.dist.env.job_id.clone().unwrap_or_default();
        // Under sharding every rank takes part: in gathering the optimizer state (and the
        // weights, under FULL_SHARD), or in writing a sharded checkpoint's files.
        let global_zero = self.dist.env.is_global_zero();
        // Every rank is here (they agreed to requeue): rank 0's metric states become every
        // rank's added up, so that the resumed epoch (whose rank 0 takes them back) counts
        // what every rank saw before the requeue.
        if self.dist.env.world_size > 1 {
            for (field, metric) in self.model.metric_fields_mut() {
                let all = (metric.tracked().total().sync(&*self.dist.collective))
                    .map_err(|e| Error::msg(format!("metric `{field}`: {e}")))?;
                match global_zero {
                    true => *metric.tracked_mut().total_mut() = all,
                    false => metric.reset(),
                }
            }
        }
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

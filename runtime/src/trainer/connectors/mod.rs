//! What the loops hand off (Lightning's `trainer/connectors/`), one concern per file:
//! [`checkpoint`] (which checkpoint to resume, saving, restoring), [`logger`] (logged values
//! to `callback_metrics`, the progress bar and the logger), [`signal`] (SIGINT, SIGTERM, SLURM's
//! requeue signal, and what the ranks agree on after a step), [`data`] (each stage's loader),
//! [`sharded_checkpoint`] (FULL_SHARD's checkpoints of one file per rank).

mod checkpoint;
mod data;
mod logger;
mod sharded_checkpoint;
mod signal;

pub(in crate::trainer) use data::Serving;

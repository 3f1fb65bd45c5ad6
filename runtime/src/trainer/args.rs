use std::path::PathBuf;

use super::{Limit, TrainerBuilder};
use crate::optim::ClipAlgorithm;

/// The trainer's command-line flags, to `#[command(flatten)]` into a program's own clap
/// parser; apply them with [`TrainerBuilder::args`]. Flags not given keep the values set in
/// code. Names follow Lightning's `Trainer` arguments (`--max-epochs`, `--limit-val-batches`).
#[derive(Debug, Clone, Default, clap::Args)]
pub struct TrainerArgs {
    /// Maximum number of epochs (-1: no limit).
    #[arg(long, allow_negative_numbers = true, value_parser = count_or_unlimited)]
    pub max_epochs: Option<usize>,
    /// Maximum number of optimizer steps (-1: none, Lightning's default).
    #[arg(long, allow_negative_numbers = true, value_parser = count_or_unlimited)]
    pub max_steps: Option<usize>,
    /// Minimum number of epochs (early stopping waits for it).
    #[arg(long, allow_negative_numbers = true, value_parser = count)]
    pub min_epochs: Option<usize>,
    /// Stop after this much training: seconds (`90`) or Lightning's `DD:HH:MM:SS`.
    #[arg(long, value_parser = parse_max_time)]
    pub max_time: Option<std::time::Duration>,
    /// cpu, gpu (cuda) or auto.
    #[arg(long)]
    pub accelerator: Option<String>,
    /// Devices: a count (1), ordinals (`0,` or `[1]`: GPU 1) or auto (-1).
    #[arg(long, allow_negative_numbers = true)]
    pub devices: Option<crate::device::Devices>,
    /// auto, single_device, ddp, fsdp (FULL_SHARD), fsdp:SHARD_GRAD_OP, fsdp:NO_SHARD, ...
    #[arg(long)]
    pub strategy: Option<String>,
    /// Nodes in the run (must agree with the launcher's).
    #[arg(long, allow_negative_numbers = true, value_parser = count)]
    pub num_nodes: Option<usize>,
    /// How long a rank waits in a collective for the others before it stops: seconds or
    /// DD:HH:MM:SS.
    #[arg(long, value_parser = parse_max_time)]
    pub collective_timeout: Option<std::time::Duration>,
    /// FULL_SHARD's checkpoints: `full` (one file, gathered) or `sharded` (a directory of one
    /// file per rank, written in parallel).
    #[arg(long)]
    pub state_dict_type: Option<String>,
    /// FULL_SHARD on GPUs: keep the shards' optimizer state in host memory.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub cpu_offload: Option<bool>,
    /// The loggers: csv (default), tensorboard, both (`csv,tensorboard` or the flag twice), or
    /// false for none.
    #[arg(long, value_delimiter = ',', value_name = "csv|tensorboard|false")]
    pub logger: Vec<String>,
    /// Where lightning_logs/ and checkpoints are written.
    #[arg(long)]
    pub default_root_dir: Option<PathBuf>,
    /// Training batches per epoch: a count (10) or a fraction (0.25).
    #[arg(long, allow_negative_numbers = true)]
    pub limit_train_batches: Option<Limit>,
    /// Validation batches per run: a count or a fraction.
    #[arg(long, allow_negative_numbers = true)]
    pub limit_val_batches: Option<Limit>,
    /// Test batches: a count or a fraction.
    #[arg(long, allow_negative_numbers = true)]
    pub limit_test_batches: Option<Limit>,
    /// Validate every n training batches, or a fraction of an epoch.
    #[arg(long, allow_negative_numbers = true)]
    pub val_check_interval: Option<Limit>,
    /// Validate in every n-th epoch.
    #[arg(long, allow_negative_numbers = true, value_parser = count)]
    pub check_val_every_n_epoch: Option<usize>,
    /// Validation batches of the sanity check (0 disables it).
    #[arg(long, allow_negative_numbers = true, value_parser = count)]
    pub num_sanity_val_steps: Option<usize>,
    /// Run this many batches of each loop as a smoke test (no logs, no checkpoints).
    #[arg(long, num_args = 0..=1, default_missing_value = "1", allow_negative_numbers = true, value_parser = count)]
    pub fast_dev_run: Option<usize>,
    /// Overfit this many (or this fraction of) training batches.
    #[arg(long, allow_negative_numbers = true)]
    pub overfit_batches: Option<Limit>,
    /// Write step metrics every n steps.
    #[arg(long, allow_negative_numbers = true, value_parser = count)]
    pub log_every_n_steps: Option<usize>,
    /// Accumulate gradients over n batches per optimizer step.
    #[arg(long, allow_negative_numbers = true, value_parser = count)]
    pub accumulate_grad_batches: Option<usize>,
    /// Clip gradients at this norm (or value, with --gradient-clip-algorithm value).
    #[arg(long, allow_negative_numbers = true)]
    pub gradient_clip_val: Option<f64>,
    /// norm or value.
    #[arg(long)]
    pub gradient_clip_algorithm: Option<ClipAlgorithm>,
    /// Stop naming the parameter whose gradient turns NaN or infinite.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub detect_anomaly: Option<bool>,
    /// 32-true (default), 64-true, 16-mixed or 16-true.
    #[arg(long)]
    pub precision: Option<super::Precision>,
    /// Require reproducible runs.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", value_name = "BOOL")]
    pub deterministic: Option<bool>,
    /// Show the progress bar (default true).
    #[arg(long, value_name = "BOOL")]
    pub enable_progress_bar: Option<bool>,
    /// Save checkpoints (`ModelCheckpoint`; default true).
    #[arg(long, value_name = "BOOL")]
    pub enable_checkpointing: Option<bool>,
    /// Print the model summary at the start of fit (default true).
    #[arg(long, value_name = "BOOL")]
    pub enable_model_summary: Option<bool>,
}

impl TrainerArgs {
    pub(super) fn apply(&self, mut b: TrainerBuilder) -> TrainerBuilder {
        macro_rules! given {
            ($($field:ident),*) => {$(
                if let Some(v) = self.$field.clone() {
                    b = b.$field(v);
                }
            )*};
        }
        given!(
            max_epochs,
            min_epochs,
            devices,
            default_root_dir,
            limit_train_batches,
            limit_val_batches,
            limit_test_batches,
            val_check_interval,
            check_val_every_n_epoch,
            num_sanity_val_steps,
            fast_dev_run,
            overfit_batches,
            log_every_n_steps,
            accumulate_grad_batches,
            gradient_clip_val,
            gradient_clip_algorithm,
            precision,
            cpu_offload,
            detect_anomaly,
            deterministic,
            enable_progress_bar,
            enable_checkpointing,
            enable_model_summary
        );
        // Lightning's `max_steps=-1` is its default: no step limit, and 1000 epochs unless
        // max_epochs says otherwise.
        if let Some(steps) = self.max_steps.filter(|&s| s != usize::MAX) {
            b = b.max_steps(steps);
        }
        if !self.logger.is_empty() {
            b = b.loggers(self.logger.clone());
        }
        if let Some(a) = &self.accelerator {
            b = b.accelerator(a);
        }
        if let Some(s) = &self.strategy {
            b = b.strategy(s);
        }
        if let Some(n) = self.num_nodes {
            b = b.num_nodes(n);
        }
        if let Some(limit) = self.max_time {
            b = b.max_time(limit);
        }
        if let Some(t) = self.collective_timeout {
            b = b.collective_timeout(t);
        }
        if let Some(kind) = &self.state_dict_type {
            b = b.state_dict_type(kind);
        }
        b
    }
}

/// A count: 0 or more (clap names the flag before this message).
fn count(s: &str) -> Result<usize, String> {
    match s.trim().parse::<i128>() {
        Ok(n) if n < 0 => Err(format!("{n} is negative: give a count, 0 or more")),
        Ok(n) => usize::try_from(n).map_err(|_| format!("{n} is too large a count")),
        Err(_) => Err(format!("`{s}` is not a whole number")),
    }
}

/// `--max-epochs`, `--max-steps`: a count, or Lightning's -1 for no limit.
fn count_or_unlimited(s: &str) -> Result<usize, String> {
    match s.trim() {
        "-1" => Ok(usize::MAX),
        _ => count(s).map_err(|e| format!("{e} (or -1: no limit)")),
    }
}

/// `--max-time`: seconds, or `DD:HH:MM:SS` as Lightning writes it.
fn parse_max_time(s: &str) -> Result<std::time::Duration, String> {
    let bad = || format!("`{s}` is neither seconds nor DD:HH:MM:SS");
    let secs = if s.contains(':') {
        let parts: Vec<u64> = s
            .split(':')
            .map(|p| p.parse().map_err(|_| bad()))
            .collect::<Result<_, _>>()?;
        let [d, h, m, sec] = parts[..] else {
            return Err(bad());
        };
        (((d * 24 + h) * 60 + m) * 60 + sec) as f64
    } else {
        s.parse::<f64>().map_err(|_| bad())?
    };
    if !(secs >= 0.0 && secs.is_finite()) {
        return Err(bad());
    }
    Ok(std::time::Duration::from_secs_f64(secs))
}

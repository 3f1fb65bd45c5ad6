//! SLURM's auto-requeue (Lightning's `SLURMEnvironment(auto_requeue=True)`): a job submitted
//! with `#SBATCH --signal=SIGUSR1@90` gets the signal 90 s before its time limit; every rank
//! finishes its step, rank 0 saves an HPC checkpoint (`hpc_ckpt_<n>.ckpt` in the default root
//! directory; under sharding every rank takes part, and FULL_SHARD's sharded checkpoints are
//! a directory of one file per rank) and runs `scontrol requeue` for the job, and `fit` ends with
//! [`Error::Requeued`]. When the job starts again, `fit` resumes from
//! the newest HPC checkpoint by itself. SIGTERM (what SLURM sends before killing a job) ends
//! the run as everywhere ([`Error::Interrupted`]).

use crate::{Error, Result};
use std::path::{Path, PathBuf};

/// A signal's number from its name (`SIGUSR1`, `USR1`) or number.
pub fn signal_number(name: &str) -> Result<i32> {
    use signal_hook::consts::*;
    let upper = name.trim().to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    Ok(match bare {
        "USR1" => SIGUSR1,
        "USR2" => SIGUSR2,
        "HUP" => SIGHUP,
        "INT" => SIGINT,
        "QUIT" => SIGQUIT,
        "ALRM" => SIGALRM,
        n => n.parse().map_err(|_| {
            Error::config(
                "requeue_signal",
                format!("`{name}` is not a signal name such as SIGUSR1"),
            )
        })?,
    })
}

/// The HPC checkpoints in `dir`, newest (highest number) last.
pub(crate) fn hpc_checkpoints(dir: &Path) -> Vec<(u64, PathBuf)> {
    let mut found: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().into_string().ok()?;
            let n = name
                .strip_prefix("hpc_ckpt_")?
                .strip_suffix(".ckpt")?
                .parse()
                .ok()?;
            Some((n, e.path()))
        })
        .collect();
    found.sort();
    found
}

/// The path of the next HPC checkpoint in `dir`.
pub(crate) fn next_hpc_checkpoint(dir: &Path) -> PathBuf {
    let n = hpc_checkpoints(dir).last().map_or(1, |(n, _)| n + 1);
    dir.join(format!("hpc_ckpt_{n}.ckpt"))
}

/// `scontrol requeue <job>`, naming the job and scontrol's answer when it fails.
pub(crate) fn requeue(job: &str) -> Result<()> {
    let out = std::process::Command::new("scontrol")
        .args(["requeue", job])
        .output()
        .map_err(|e| Error::msg(format!("running `scontrol requeue {job}`: {e}")))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(Error::msg(format!(
            "`scontrol requeue {job}` failed: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )))
    }
}

//! Where logged metrics go. The default is [`CsvLogger`], Lightning's layout:
//! `lightning_logs/version_N/metrics.csv` and `hparams.yaml`; [`TensorBoardLogger`] writes
//! TensorBoard's event files.

mod csv;
pub mod tensorboard;

pub use self::csv::CsvLogger;
pub use self::tensorboard::TensorBoardLogger;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::hparams::HParams;
use crate::{Error, Result};

/// The folder of the trainer's default logger under its root directory (Lightning's).
pub const DEFAULT_NAME: &str = "lightning_logs";

/// Creates and returns `root/name/version_N` for the first free `N` (Lightning's versioning);
/// creating the directory claims the version, so two runs never share one.
pub(crate) fn claim_version_dir(root: &Path, name: &str) -> Result<PathBuf> {
    let base = root.join(name);
    std::fs::create_dir_all(&base).map_err(|e| Error::io(&base, e))?;
    let mut version = 0;
    loop {
        let dir = base.join(format!("version_{version}"));
        match std::fs::create_dir(&dir) {
            Ok(()) => return Ok(dir),
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => version += 1,
            Err(e) => return Err(Error::io(&dir, e)),
        }
    }
}

/// A destination for metrics and hyperparameters (Lightning's `Logger`).
pub trait Logger {
    /// Records the run's hyperparameters (module's and data module's).
    fn log_hyperparams(&mut self, hparams: &HParams) -> Result<()>;
    /// Records `metrics` at `step`.
    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> Result<()>;
    /// Writes whatever is buffered (the trainer calls it at the end of every stage).
    fn finalize(&mut self) -> Result<()> {
        Ok(())
    }
    /// The directory this run writes to, if any.
    fn log_dir(&self) -> Option<&Path> {
        None
    }
}

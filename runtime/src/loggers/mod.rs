//! Where logged metrics go. The default is [`CsvLogger`], Lightning's layout:
//! `lightning_logs/version_N/metrics.csv` and `hparams.yaml`.

mod csv;

pub use self::csv::CsvLogger;

use std::collections::BTreeMap;
use std::path::Path;

use crate::hparams::HParams;
use crate::Result;

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

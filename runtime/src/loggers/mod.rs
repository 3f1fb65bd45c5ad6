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
    /// Records a PNG image under `tag` at `step` (a confusion matrix, a curve); a logger
    /// without images (the default) leaves it.
    fn log_image(&mut self, _tag: &str, _png: &[u8], _step: usize) -> Result<()> {
        Ok(())
    }
    /// Writes whatever is buffered (the trainer calls it at the end of every stage).
    fn finalize(&mut self) -> Result<()> {
        Ok(())
    }
    /// The directory this run writes to, if any.
    fn log_dir(&self) -> Option<&Path> {
        None
    }
}

/// Several loggers as one (Lightning's list of loggers): each call goes to every one, in order;
/// the first one's folder is the run's `log_dir`.
pub struct Loggers(pub Vec<Box<dyn Logger>>);

impl Logger for Loggers {
    fn log_hyperparams(&mut self, hparams: &HParams) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|l| l.log_hyperparams(hparams))
    }
    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|l| l.log_metrics(metrics, step))
    }
    fn log_image(&mut self, tag: &str, png: &[u8], step: usize) -> Result<()> {
        self.0
            .iter_mut()
            .try_for_each(|l| l.log_image(tag, png, step))
    }
    /// Finalizes every logger, even after one fails; the first failure is returned.
    fn finalize(&mut self) -> Result<()> {
        let results: Vec<Result<()>> = self.0.iter_mut().map(|l| l.finalize()).collect();
        results.into_iter().collect()
    }
    fn log_dir(&self) -> Option<&Path> {
        self.0.first().and_then(|l| l.log_dir())
    }
}

/// Refuses a name that is not a built-in logger, one given twice (two writers of one file),
/// and `false` beside others.
pub(crate) fn check_names(names: &[String]) -> Result<()> {
    for (i, n) in names.iter().enumerate() {
        if names[..i].iter().any(|m| m.eq_ignore_ascii_case(n)) {
            return Err(Error::config("logger", format!("`{n}` is given twice")));
        }
        match n.to_ascii_lowercase().as_str() {
            "csv" | "tensorboard" => {}
            "false" if names.len() == 1 => {}
            "false" => {
                return Err(Error::config(
                    "logger",
                    format!("{names:?}: `false` (no logger) beside others"),
                ))
            }
            _ => {
                return Err(Error::config(
                    "logger",
                    format!("`{n}` is not csv, tensorboard or false"),
                ))
            }
        }
    }
    Ok(())
}

/// The loggers `names` choose (`csv`, `tensorboard`; `false` for none), sharing one
/// `root/lightning_logs/version_N` folder.
/// (The names were checked when the trainer was built: [`check_names`].)
pub(crate) fn by_name(root: &Path, names: &[String]) -> Result<Option<Box<dyn Logger>>> {
    if names.iter().any(|n| n.eq_ignore_ascii_case("false")) {
        return Ok(None);
    }
    let dir = claim_version_dir(root, DEFAULT_NAME)?;
    let mut loggers: Vec<Box<dyn Logger>> = Vec::new();
    for n in names {
        loggers.push(match n.to_ascii_lowercase().as_str() {
            "csv" => Box::new(CsvLogger::in_dir(dir.clone())?),
            _ => Box::new(TensorBoardLogger::in_dir(dir.clone())?),
        });
    }
    Ok(Some(match loggers.len() {
        1 => loggers.remove(0),
        _ => Box::new(Loggers(loggers)),
    }))
}

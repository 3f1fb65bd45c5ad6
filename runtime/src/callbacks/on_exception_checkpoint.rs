//! `OnExceptionCheckpoint`: saves a checkpoint when a run ends on an error — Ctrl-C, SIGTERM,
//! a failed step — so that it can be resumed from there (Lightning's `OnExceptionCheckpoint`).
//!
//! ```
//! use fulmen::callbacks::OnExceptionCheckpoint;
//! let on_error = OnExceptionCheckpoint::new("checkpoints");
//! assert_eq!(on_error.path(), std::path::Path::new("checkpoints/on_exception.ckpt"));
//! ```
//!
//! A run stopped by a signal stops between steps, so the checkpoint resumes exactly
//! (`fit_from(.., "checkpoints/on_exception.ckpt")`). After a failed step it holds the state
//! the failure left. In a run of several ranks it is written only when they all stop together
//! (a signal); one rank's own failure leaves the others unable to help write it.

use std::path::{Path, PathBuf};

use crate::callback::Callback;
use crate::{Error, TrainerView};

/// Saves `dirpath/filename.ckpt` in `on_exception`; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct OnExceptionCheckpoint {
    dirpath: PathBuf,
    filename: String,
}

impl OnExceptionCheckpoint {
    /// Saves `dirpath/on_exception.ckpt`.
    pub fn new(dirpath: impl Into<PathBuf>) -> Self {
        Self {
            dirpath: dirpath.into(),
            filename: "on_exception".into(),
        }
    }

    /// The file's name, without `.ckpt` (default `on_exception`).
    pub fn filename(mut self, name: impl Into<String>) -> Self {
        self.filename = name.into();
        self
    }

    /// Where the checkpoint goes.
    pub fn path(&self) -> PathBuf {
        Path::new(&self.dirpath).join(format!("{}.ckpt", self.filename))
    }
}

impl Callback for OnExceptionCheckpoint {
    fn on_exception(&mut self, trainer: &mut TrainerView, _error: &Error) {
        trainer.save_checkpoint(self.path(), false);
    }
}

//! fulmen's error type: every failure a user can cause names the file, row, setting or step.

use std::path::PathBuf;

/// The result of every fallible fulmen call.
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What went wrong, with enough context to fix it without a debugger.
///
/// Its `Debug` form is its message, so that `fn main() -> fulmen::Result<()>` prints
/// `Error: <the message>` once, readably (and exits with 1; [`Error::exit_code`] is the status
/// a program that handles the error itself exits with).
#[derive(thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A file or directory could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file or directory.
        path: PathBuf,
        /// The operating system's error.
        #[source]
        source: std::io::Error,
    },
    /// A data file exists but its contents are wrong (bad shape, bad value, bad row).
    #[error("{path}: {message}")]
    Data {
        /// The data file.
        path: PathBuf,
        /// What is wrong with it, and where in it.
        message: String,
    },
    /// A data file the program expects is not there.
    #[error("{message}")]
    MissingData {
        /// The path that does not exist.
        path: PathBuf,
        /// The whole message: the path, and how to get the data there.
        message: String,
    },
    /// A trainer, loader or optimizer setting is out of range or contradicts another.
    #[error("invalid setting `{setting}`: {message}")]
    Config {
        /// The setting's name, as the user wrote it (`max_epochs`, `lr_scheduler.frequency`).
        setting: String,
        /// Why its value is refused.
        message: String,
    },
    /// The loss became NaN or infinite.
    #[error("the training loss is {value} at epoch {epoch}, step {step} (batch {batch}): training stopped so that no weights are overwritten with non-finite values")]
    NonFiniteLoss {
        /// The loss `training_step` returned.
        value: f64,
        /// The epoch it happened in (from 0).
        epoch: usize,
        /// The optimizer steps taken before it (`global_step`).
        step: usize,
        /// The batch's index in the epoch.
        batch: usize,
    },
    /// A step panicked — a layer refusing its input's run-time shape, an index out of range —
    /// and the run stopped with the panic's message instead of unwinding through the caller.
    #[error("{hook} panicked on batch {batch}: {message}")]
    StepPanicked {
        /// The step that panicked: `training_step`, `validation_step`, `test_step`,
        /// `predict_step` or `backward`, or the batch-transfer hooks before a step.
        hook: &'static str,
        /// The batch's index in the epoch.
        batch: usize,
        /// The panic's message.
        message: String,
    },
    /// SLURM's requeue signal arrived: the run was saved to `checkpoint` and the job
    /// requeued; the job's next start resumes from the checkpoint.
    #[error("requeue signal at epoch {epoch}, step {step}: saved {}, job {job} requeued", checkpoint.display())]
    Requeued {
        /// The HPC checkpoint the run was saved to.
        checkpoint: PathBuf,
        /// The id of the SLURM job requeued (`JOB_TASK` for an array task).
        job: String,
        /// The epoch the run stopped in (from 0).
        epoch: usize,
        /// The optimizer steps taken (`global_step`).
        step: usize,
    },
    /// SIGINT (Ctrl-C) or SIGTERM arrived: the run stopped after the step in flight, with
    /// `on_exception` run, its logs flushed and every checkpoint whole. A program exits with
    /// [`Error::exit_code`] (the shell's 130 or 143).
    #[error("{signal} at epoch {epoch}, step {step}: the run stopped after the step in flight")]
    Interrupted {
        /// `SIGINT` or `SIGTERM`.
        signal: &'static str,
        /// The epoch the run stopped in (from 0).
        epoch: usize,
        /// The optimizer steps taken (`global_step`).
        step: usize,
    },
    /// A computation on the device failed (out of memory, driver error).
    #[error("device error: {0}")]
    Device(String),
    /// A hook, callback or data module reported a failure of its own.
    #[error("{0}")]
    User(String),
}

/// The error type of a dfdx device (`CpuError`, `CudaError`): out of memory, a driver failure.
/// `?` turns it into [`Error::Device`] in code generic over the device, because
/// [`TrainDevice`](crate::TrainDevice) bounds its device's `Err` by this trait.
pub trait DeviceFailure: std::fmt::Debug {}

impl DeviceFailure for dfdx::tensor::CpuError {}
#[cfg(feature = "cuda")]
impl DeviceFailure for dfdx::tensor::CudaError {}
#[cfg(feature = "cuda")]
impl DeviceFailure for cudarc::driver::DriverError {}

impl<F: DeviceFailure> From<F> for Error {
    fn from(failure: F) -> Self {
        Error::Device(format!("{failure:?}"))
    }
}

impl std::fmt::Debug for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        std::fmt::Display::fmt(self, f)
    }
}

impl Error {
    /// An error raised by user code (a data module's `setup`, a callback), with its message.
    pub fn msg(message: impl Into<String>) -> Self {
        Error::User(message.into())
    }

    pub(crate) fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io {
            path: path.into(),
            source,
        }
    }

    pub(crate) fn data(path: impl Into<PathBuf>, message: impl Into<String>) -> Self {
        Error::Data {
            path: path.into(),
            message: message.into(),
        }
    }

    /// What a caught panic said (its `String` or `&str` payload).
    pub(crate) fn panic_message(payload: &(dyn std::any::Any + Send)) -> String {
        payload
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_else(|| "a panic without a message".into())
    }

    /// The exit status for a program that ends on this error: 130 after SIGINT and 143 after
    /// SIGTERM (what a shell reports for a process those signals ended), 1 otherwise.
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Interrupted {
                signal: "SIGINT", ..
            } => 130,
            Error::Interrupted {
                signal: "SIGTERM", ..
            } => 143,
            _ => 1,
        }
    }

    /// A setting that is out of range or contradicts another, named.
    pub fn config(setting: impl Into<String>, message: impl Into<String>) -> Self {
        Error::Config {
            setting: setting.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_is_the_message_so_main_prints_it_once_readably() {
        let e = Error::config("max_epochs", "-2 is negative");
        assert_eq!(format!("{e:?}"), e.to_string());
        let interrupted = |signal| Error::Interrupted {
            signal,
            epoch: 3,
            step: 40,
        };
        assert_eq!(interrupted("SIGINT").exit_code(), 130);
        assert_eq!(interrupted("SIGTERM").exit_code(), 143);
        assert_eq!(e.exit_code(), 1);
    }
}

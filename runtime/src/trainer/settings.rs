//! The loop settings of a trainer (Lightning's `Trainer` flags), with Lightning's defaults, and
//! their checks.

use std::time::Duration;

use crate::optim::ClipAlgorithm;
use crate::{Error, Result};

/// How many batches of a loader a loop uses: a count, or a fraction of the loader (Lightning's
/// `int` or `float` for `limit_*_batches`, `val_check_interval`, `overfit_batches`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Limit {
    /// This many batches (all of them if the loader has fewer).
    Count(usize),
    /// This fraction of the loader's batches, in [0, 1], rounded down.
    Fraction(f64),
}

impl From<usize> for Limit {
    fn from(n: usize) -> Self {
        Limit::Count(n)
    }
}

impl From<f64> for Limit {
    fn from(f: f64) -> Self {
        Limit::Fraction(f)
    }
}

impl std::str::FromStr for Limit {
    type Err = String;
    /// `"10"` is a count, `"0.25"` a fraction.
    fn from_str(s: &str) -> std::result::Result<Self, String> {
        if s.contains('.') {
            s.parse()
                .map(Limit::Fraction)
                .map_err(|_| format!("`{s}` is not a fraction"))
        } else {
            s.parse()
                .map(Limit::Count)
                .map_err(|_| format!("`{s}` is not a batch count"))
        }
    }
}

impl Limit {
    /// The number of batches out of `batches`; a fraction that rounds to no batch at all is
    /// an error naming `setting`, as in Lightning.
    pub(crate) fn of(self, batches: usize, setting: &str) -> Result<usize> {
        match self {
            Limit::Count(n) => Ok(n.min(batches)),
            Limit::Fraction(f) => {
                let n = (batches as f64 * f) as usize;
                if f > 0.0 && n == 0 && batches > 0 {
                    return Err(Error::config(
                        setting,
                        format!("{f} of {batches} batches is less than one batch; raise it or use a batch count"),
                    ));
                }
                Ok(n)
            }
        }
    }

    fn check(self, setting: &str) -> Result<()> {
        match self {
            Limit::Fraction(f) if !(0.0..=1.0).contains(&f) => Err(Error::config(
                setting,
                format!("{f} is not a fraction in [0, 1]; pass a whole number for a batch count"),
            )),
            _ => Ok(()),
        }
    }
}

/// The numeric precision of training (Lightning's `precision` flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Precision {
    /// f32 weights and compute (the default).
    #[default]
    F32,
    /// f64 weights and compute.
    F64,
    /// f16 compute with f32 master weights and a dynamic loss scaler.
    Mixed16,
    /// f16 weights and compute.
    True16,
}

impl std::str::FromStr for Precision {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "32-true" | "32" => Ok(Precision::F32),
            "64-true" | "64" => Ok(Precision::F64),
            "16-mixed" | "16" => Ok(Precision::Mixed16),
            "16-true" => Ok(Precision::True16),
            b if b.starts_with("bf16") => Err(Error::config(
                "precision",
                format!("\"{b}\": dfdx, fulmen's tensor library, has no bfloat16 dtype; use \"32-true\""),
            )),
            other => Err(Error::config(
                "precision",
                format!("\"{other}\" is not one of \"32-true\", \"64-true\", \"16-mixed\", \"16-true\""),
            )),
        }
    }
}

impl Precision {}

/// What the loops run and how (everything but callbacks, logger and device).
#[derive(Debug, Clone)]
pub(crate) struct Settings {
    pub max_epochs: Option<usize>,
    pub max_steps: Option<usize>,
    pub min_epochs: usize,
    pub min_steps: usize,
    pub max_time: Option<Duration>,
    pub limit_train_batches: Limit,
    pub limit_val_batches: Limit,
    pub limit_test_batches: Limit,
    pub limit_predict_batches: Limit,
    pub val_check_interval: Limit,
    pub check_val_every_n_epoch: usize,
    pub num_sanity_val_steps: usize,
    pub fast_dev_run: usize,
    pub overfit_batches: Limit,
    pub log_every_n_steps: usize,
    pub accumulate_grad_batches: usize,
    pub gradient_clip_val: Option<f64>,
    pub gradient_clip_algorithm: ClipAlgorithm,
    pub check_finite_loss: bool,
    pub detect_anomaly: bool,
    pub deterministic: bool,
    pub precision: Precision,
}

impl Default for Settings {
    fn default() -> Self {
        Self {
            max_epochs: None,
            max_steps: None,
            min_epochs: 0,
            min_steps: 0,
            max_time: None,
            limit_train_batches: Limit::Fraction(1.0),
            limit_val_batches: Limit::Fraction(1.0),
            limit_test_batches: Limit::Fraction(1.0),
            limit_predict_batches: Limit::Fraction(1.0),
            val_check_interval: Limit::Fraction(1.0),
            check_val_every_n_epoch: 1,
            num_sanity_val_steps: 2,
            fast_dev_run: 0,
            overfit_batches: Limit::Count(0),
            log_every_n_steps: 50,
            accumulate_grad_batches: 1,
            gradient_clip_val: None,
            gradient_clip_algorithm: ClipAlgorithm::Norm,
            check_finite_loss: true,
            detect_anomaly: false,
            deterministic: false,
            precision: Precision::F32,
        }
    }
}

impl Settings {
    /// Checks every setting, then applies what `fast_dev_run` and `overfit_batches` imply.
    pub(crate) fn resolve(mut self) -> Result<Self> {
        self.check()?;
        if self.max_epochs.is_none() && self.max_steps.is_none() {
            self.max_epochs = Some(super::DEFAULT_MAX_EPOCHS);
        }
        if let (Some(max), min) = (self.max_epochs, self.min_epochs) {
            if min > max {
                return Err(Error::config(
                    "min_epochs",
                    format!("{min} is more than max_epochs {max}"),
                ));
            }
        }
        if self.fast_dev_run > 0 {
            let n = Limit::Count(self.fast_dev_run);
            self.limit_train_batches = n;
            self.limit_val_batches = n;
            self.limit_test_batches = n;
            self.limit_predict_batches = n;
            self.max_epochs = Some(1);
            self.max_steps = Some(self.fast_dev_run);
            self.num_sanity_val_steps = 0;
            self.val_check_interval = Limit::Fraction(1.0);
            self.check_val_every_n_epoch = 1;
        } else if self.overfit_batches != Limit::Count(0) {
            self.limit_train_batches = self.overfit_batches;
            self.limit_val_batches = self.overfit_batches;
        }
        Ok(self)
    }

    /// Refuses settings out of range, naming them.
    fn check(&self) -> Result<()> {
        for (name, limit) in [
            ("limit_train_batches", self.limit_train_batches),
            ("limit_val_batches", self.limit_val_batches),
            ("limit_test_batches", self.limit_test_batches),
            ("limit_predict_batches", self.limit_predict_batches),
            ("val_check_interval", self.val_check_interval),
            ("overfit_batches", self.overfit_batches),
        ] {
            limit.check(name)?;
        }
        let positive = |name: &str, n: usize| {
            if n == 0 {
                Err(Error::config(name, "must be at least 1"))
            } else {
                Ok(())
            }
        };
        positive("log_every_n_steps", self.log_every_n_steps)?;
        positive("accumulate_grad_batches", self.accumulate_grad_batches)?;
        positive("check_val_every_n_epoch", self.check_val_every_n_epoch)?;
        if matches!(
            self.val_check_interval,
            Limit::Count(0) | Limit::Fraction(0.0)
        ) {
            return Err(Error::config("val_check_interval", "must be above 0"));
        }
        match self.gradient_clip_val {
            Some(c) if !(c > 0.0 && c.is_finite()) => Err(Error::config(
                "gradient_clip_val",
                format!("{c} is not a finite value above 0"),
            )),
            _ => Ok(()),
        }
    }

    /// Whether a stop request may end training now (Lightning's `min_epochs` / `min_steps`).
    pub(crate) fn can_stop(&self, epochs_done: usize, steps_done: usize) -> bool {
        epochs_done >= self.min_epochs && steps_done >= self.min_steps
    }
}

//! The learning-rate range test's settings ([`LrFind`]), its recording callback and its
//! result ([`LrFound`]: the curve, the suggestion, the plot).

use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use crate::callback::Callback;
use crate::{Error, Result, TrainerView};

/// How the rate grows from step to step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LrMode {
    /// By a constant factor (Lightning's `"exponential"`, the default).
    Exponential,
    /// By a constant amount (`"linear"`).
    Linear,
}

/// The range test's settings, with Lightning's defaults: rates from 1e-8 to 1 over 100 steps,
/// exponentially, stopping once the smoothed loss exceeds 4 times the best.
#[derive(Debug, Clone)]
pub struct LrFind {
    pub(super) min_lr: f64,
    pub(super) max_lr: f64,
    pub(crate) num_training: usize,
    pub(super) mode: LrMode,
    pub(super) early_stop_threshold: Option<f64>,
}

impl Default for LrFind {
    fn default() -> Self {
        Self {
            min_lr: 1e-8,
            max_lr: 1.0,
            num_training: 100,
            mode: LrMode::Exponential,
            early_stop_threshold: Some(4.0),
        }
    }
}

impl LrFind {
    /// The first step's rate.
    pub fn min_lr(mut self, lr: f64) -> Self {
        self.min_lr = lr;
        self
    }
    /// The rate the last step would reach.
    pub fn max_lr(mut self, lr: f64) -> Self {
        self.max_lr = lr;
        self
    }
    /// How many optimizer steps the test takes at most.
    pub fn num_training(mut self, steps: usize) -> Self {
        self.num_training = steps;
        self
    }
    /// How the rate grows.
    pub fn mode(mut self, mode: LrMode) -> Self {
        self.mode = mode;
        self
    }
    /// Stops once the smoothed loss exceeds `threshold` times the best (`None`: never).
    pub fn early_stop_threshold(mut self, threshold: Option<f64>) -> Self {
        self.early_stop_threshold = threshold;
        self
    }

    pub(crate) fn validate(&self) -> Result<()> {
        let bad = |setting: &str, why: String| Err(Error::config(setting, why));
        if !(self.min_lr > 0.0 && self.min_lr.is_finite()) {
            return bad(
                "min_lr",
                format!("{} is not a finite rate > 0", self.min_lr),
            );
        }
        if !(self.max_lr > self.min_lr && self.max_lr.is_finite()) {
            return bad(
                "max_lr",
                format!(
                    "{} is not a finite rate above min_lr {}",
                    self.max_lr, self.min_lr
                ),
            );
        }
        if self
            .early_stop_threshold
            .is_some_and(|t| !(t > 0.0 && t.is_finite()))
        {
            return bad(
                "early_stop_threshold",
                format!("{:?} is not a finite factor > 0", self.early_stop_threshold),
            );
        }
        if self.num_training < 2 {
            return bad(
                "num_training",
                format!("{} steps cannot make a curve", self.num_training),
            );
        }
        Ok(())
    }

    /// The rate of optimizer step `step` (from 0).
    fn lr_at(&self, step: usize) -> f64 {
        let r = step as f64 / self.num_training as f64;
        match self.mode {
            LrMode::Exponential => self.min_lr * (self.max_lr / self.min_lr).powf(r),
            LrMode::Linear => self.min_lr + r * (self.max_lr - self.min_lr),
        }
    }
}

/// What the range test found: each step's rate and smoothed loss.
#[derive(Debug, Clone, PartialEq)]
pub struct LrFound {
    /// The rate of each step.
    pub lrs: Vec<f64>,
    /// The loss of each step, smoothed (an exponential average of factor 0.98, corrected for
    /// its start, as Lightning's).
    pub losses: Vec<f64>,
    pub(super) mode: LrMode,
    /// Whether [`plot`](Self::plot) writes (rank 0's does).
    pub(crate) plots: bool,
    /// How many parameter groups the first optimizer has (each stepped at the test's rates).
    pub(crate) groups: usize,
}

impl LrFound {
    /// The rate where the smoothed loss falls fastest, skipping the first 10 steps and the
    /// last (Lightning's `suggestion()`); `None`, with a warning, when too few steps are left.
    pub fn suggestion(&self) -> Option<f64> {
        self.suggestion_skipping(10, 1)
    }

    /// [`suggestion`](Self::suggestion), skipping the first `begin` and the last `end` steps.
    pub fn suggestion_skipping(&self, begin: usize, end: usize) -> Option<f64> {
        let found = self.steepest(begin, end);
        if found.is_none() {
            eprintln!(
                "warning: lr_find: {} steps, fewer than 2 with a finite loss once the first {begin} and the last {end} are skipped: raise num_training or give the loader more batches",
                self.losses.len()
            );
        }
        found
    }

    /// The rate of the steepest fall, skipping the first `begin` and last `end` steps.
    fn steepest(&self, begin: usize, end: usize) -> Option<f64> {
        let n = self.losses.len().min(self.lrs.len());
        let kept: Vec<(f64, f64)> = (begin..n.saturating_sub(end))
            .map(|i| (self.lrs[i], self.losses[i]))
            .filter(|(_, loss)| loss.is_finite())
            .collect();
        if kept.len() < 2 {
            return None;
        }
        // NumPy's gradient at unit spacing: one-sided at the ends, central inside.
        let loss = |i: usize| kept[i].1;
        let last = kept.len() - 1;
        let gradient = |i: usize| match i {
            0 => loss(1) - loss(0),
            i if i == last => loss(last) - loss(last - 1),
            i => (loss(i + 1) - loss(i - 1)) / 2.0,
        };
        let steepest = (0..kept.len()).min_by(|&a, &b| gradient(a).total_cmp(&gradient(b)))?;
        Some(kept[steepest].0)
    }

    /// Writes the curve as a PNG plot at `path`: the loss against the rate (a log scale
    /// for the exponential mode), the suggestion marked in red. Under DDP rank 0 writes it
    /// (every rank has its curve) and the others write nothing.
    pub fn plot(&self, path: impl AsRef<Path>) -> Result<()> {
        if !self.plots {
            return Ok(());
        }
        super::plot::write(self, self.steepest(10, 1), path.as_ref())
    }

    pub(super) fn log_x(&self) -> bool {
        self.mode == LrMode::Exponential
    }
}

/// The callback that sets each step's rate and records the loss.
pub(super) struct Recorder {
    settings: LrFind,
    found: Rc<RefCell<LrFound>>,
    average: f64,
    best: f64,
    /// The open accumulation window: the step it ends in, its rate, its losses' sum and count.
    window: Option<(usize, f64, f64, usize)>,
}

impl Recorder {
    pub fn new(settings: LrFind) -> (Self, Rc<RefCell<LrFound>>) {
        let found = Rc::new(RefCell::new(LrFound {
            lrs: Vec::new(),
            losses: Vec::new(),
            mode: settings.mode,
            plots: true,
            groups: 1,
        }));
        let recorder = Self {
            settings,
            found: found.clone(),
            average: 0.0,
            best: f64::INFINITY,
            window: None,
        };
        (recorder, found)
    }
}

/// The smoothing factor of the loss's average (Lightning's `beta`).
const BETA: f64 = 0.98;

impl Callback for Recorder {
    fn on_train_batch_start(&mut self, trainer: &mut TrainerView, _batch_idx: usize) {
        // A window opens at its first batch: its step's rate for every group.
        if self.window.is_some() {
            return;
        }
        let step = trainer.global_step();
        let lr = self.settings.lr_at(step);
        let groups = trainer.optimizers().first().map_or(1, |o| o.groups.len());
        for g in 0..groups {
            trainer.set_group_lr(0, g, lr);
        }
        self.found.borrow_mut().groups = groups;
        self.window = Some((step, lr, 0.0, 0));
    }

    fn on_train_batch_end(&mut self, trainer: &mut TrainerView, loss: f64, _batch_idx: usize) {
        let Some((step, lr, sum, count)) = self.window.take() else {
            return;
        };
        let (sum, count) = (sum + loss, count + 1);
        // The window closes with its optimizer step (an epoch's last one may be short).
        if trainer.global_step() == step {
            self.window = Some((step, lr, sum, count));
            return;
        }
        let step = trainer.global_step();
        self.average = BETA * self.average + (1.0 - BETA) * sum / count as f64;
        let smoothed = self.average / (1.0 - BETA.powi(step as i32 + 1));
        let diverged = (self.settings.early_stop_threshold)
            .is_some_and(|t| step > 1 && smoothed > t * self.best);
        if diverged || !smoothed.is_finite() {
            trainer.request_stop();
        }
        if smoothed < self.best || step == 1 {
            self.best = smoothed;
        }
        let mut found = self.found.borrow_mut();
        found.lrs.push(lr);
        found.losses.push(smoothed);
    }
}

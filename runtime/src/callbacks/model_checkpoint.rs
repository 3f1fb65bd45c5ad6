//! `ModelCheckpoint`: saves checkpoints during training, keeping the best `save_top_k` by a
//! monitored metric (or the latest, without one), as Lightning's callback of that name.
//!
//! ```
//! use fulmen::callbacks::{ModelCheckpoint, Mode};
//! let best = ModelCheckpoint::new()
//!     .monitor("val_loss")
//!     .mode(Mode::Min)
//!     .filename("{epoch}-{val_loss:.2f}")
//!     .save_top_k(3)
//!     .save_last(true);
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::filename::Template;
use super::Mode;
use crate::callback::{Callback, CheckpointPaths};
use crate::checkpoint::float::F64;
use crate::{Error, Stage, TrainerView};

/// Lightning's default file name: `epoch=3-step=32.ckpt`.
const DEFAULT_FILENAME: &str = "{epoch}-{step}";

/// Saves checkpoints; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ModelCheckpoint {
    dirpath: Option<PathBuf>,
    filename: String,
    monitor: Option<String>,
    mode: Mode,
    save_top_k: i64,
    save_last: bool,
    every_n_epochs: usize,
    every_n_train_steps: usize,
    save_weights_only: bool,
    template: Option<Template>,
    dir: Option<PathBuf>,
    state: State,
}

/// What survives a restart (Lightning's `ModelCheckpoint.state_dict`).
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
struct State {
    dirpath: Option<PathBuf>,
    /// Saved checkpoints with their scores, best first.
    best_k_models: Vec<(PathBuf, F64)>,
    best_model_path: Option<PathBuf>,
    best_model_score: Option<F64>,
    last_model_path: Option<PathBuf>,
    last_global_step_saved: Option<usize>,
}

impl Default for ModelCheckpoint {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelCheckpoint {
    /// Lightning's defaults: the latest checkpoint at the end of every epoch, in
    /// `<log_dir>/checkpoints` (or `<default_root_dir>/checkpoints` without a logger).
    pub fn new() -> Self {
        Self {
            dirpath: None,
            filename: DEFAULT_FILENAME.to_string(),
            monitor: None,
            mode: Mode::Min,
            save_top_k: 1,
            save_last: false,
            every_n_epochs: 1,
            every_n_train_steps: 0,
            save_weights_only: false,
            template: None,
            dir: None,
            state: State::default(),
        }
    }
    /// The directory checkpoints go to.
    pub fn dirpath(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dirpath = Some(dir.into());
        self
    }
    /// The file name template (without `.ckpt`): `{epoch}`, `{step}` and any logged metric,
    /// with an optional format such as `{val_loss:.2f}`.
    pub fn filename(mut self, template: &str) -> Self {
        self.filename = template.to_string();
        self
    }
    /// The metric that ranks checkpoints (without one, the latest is kept).
    pub fn monitor(mut self, metric: &str) -> Self {
        self.monitor = Some(metric.to_string());
        self
    }
    /// Whether `monitor` improves downwards (`Min`, the default) or upwards (`Max`).
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// How many of the best checkpoints to keep: -1 keeps all, 0 none (default 1).
    pub fn save_top_k(mut self, k: i64) -> Self {
        self.save_top_k = k;
        self
    }
    /// Also keep `last.ckpt`, the latest state (what `fit_from(.., "last")` resumes).
    pub fn save_last(mut self, on: bool) -> Self {
        self.save_last = on;
        self
    }
    /// Save at the end of every n-th epoch (default 1; 0 never at epoch ends).
    pub fn every_n_epochs(mut self, n: usize) -> Self {
        self.every_n_epochs = n;
        self
    }
    /// Save every n optimizer steps instead of at epoch ends (0, the default, is off).
    pub fn every_n_train_steps(mut self, n: usize) -> Self {
        self.every_n_train_steps = n;
        self
    }
    /// Save the weights only: smaller files that cannot resume a run.
    pub fn save_weights_only(mut self, on: bool) -> Self {
        self.save_weights_only = on;
        self
    }

    /// The best checkpoint so far (the latest, without `monitor`).
    pub fn best_model_path(&self) -> Option<&Path> {
        self.state.best_model_path.as_deref()
    }
    /// The monitored value of the best checkpoint.
    pub fn best_model_score(&self) -> Option<f64> {
        self.state.best_model_score.map(|s| s.0)
    }
    /// `last.ckpt`, once written.
    pub fn last_model_path(&self) -> Option<&Path> {
        self.state.last_model_path.as_deref()
    }

    /// Checks the settings; the first problem, naming the setting.
    fn check(&self) -> Result<Template, Error> {
        let setting = |name: &str| format!("ModelCheckpoint.{name}");
        if self.save_top_k < -1 {
            return Err(Error::config(
                setting("save_top_k"),
                format!("{} is not -1 (all), 0 (none) or a count", self.save_top_k),
            ));
        }
        if self.monitor.is_none() && self.save_top_k > 1 {
            return Err(Error::config(
                setting("save_top_k"),
                format!(
                    "keeping the {} best checkpoints needs a `monitor` to rank them by",
                    self.save_top_k
                ),
            ));
        }
        Template::parse(&self.filename).map_err(|why| {
            Error::config(setting("filename"), format!("`{}`: {why}", self.filename))
        })
    }

    fn save(&mut self, trainer: &mut TrainerView) {
        let step = trainer.global_step();
        if trainer.sanity_checking()
            || trainer.fast_dev_run()
            || self.state.last_global_step_saved == Some(step)
        {
            return;
        }
        let (Some(dir), Some(template)) = (self.dir.clone(), self.template.clone()) else {
            return;
        };
        let mut values = trainer.callback_metrics().clone();
        values.insert("epoch".into(), trainer.current_epoch() as f64);
        values.insert("step".into(), step as f64);
        let score = match &self.monitor {
            Some(m) => match values.get(m) {
                Some(&v) => Some(v),
                None => {
                    return trainer.fail(Error::config(
                        "ModelCheckpoint.monitor",
                        format!("`{m}` was never logged; the logged metrics are {:?}. Log it with ctx.log(\"{m}\", ..)", trainer.callback_metrics().keys().collect::<Vec<_>>()),
                    ))
                }
            },
            None => None,
        };
        let stem = match template.format(&values) {
            Ok(stem) => stem,
            Err(missing) => {
                return trainer.fail(Error::config(
                    "ModelCheckpoint.filename",
                    format!(
                    "`{}` uses `{missing}`, which was never logged; the logged metrics are {:?}",
                    self.filename,
                    trainer.callback_metrics().keys().collect::<Vec<_>>()
                ),
                ))
            }
        };
        self.state.last_global_step_saved = Some(step);
        if self.save_top_k != 0 {
            let path = self.free_path(&dir, &stem);
            self.keep_top_k(trainer, path, score);
        }
        if self.save_last {
            let last = dir.join("last.ckpt");
            trainer.save_checkpoint(&last, self.save_weights_only);
            self.state.last_model_path = Some(last);
        }
    }

    /// `dir/stem.ckpt`, or `stem-vN.ckpt` when a file that is not ours has that name (a run
    /// resumed into the same directory never overwrites the checkpoints of the first).
    fn free_path(&self, dir: &Path, stem: &str) -> PathBuf {
        let ours = |p: &Path| self.state.best_k_models.iter().any(|(q, _)| q == p);
        let mut path = dir.join(format!("{stem}.ckpt"));
        let mut version = 1;
        while path.exists() && !ours(&path) {
            path = dir.join(format!("{stem}-v{version}.ckpt"));
            version += 1;
        }
        path
    }

    /// Saves `path` if its score is among the best `save_top_k`, dropping the one it displaces.
    fn keep_top_k(&mut self, trainer: &mut TrainerView, path: PathBuf, score: Option<f64>) {
        let mode = self.mode;
        let score = score.unwrap_or(f64::NAN);
        let best = &mut self.state.best_k_models;
        best.retain(|(p, _)| p != &path);
        let keep = match (self.monitor.is_some(), self.save_top_k) {
            (false, -1) => true,
            (false, _) => {
                // No monitor: the latest replaces the one before.
                for (old, _) in best.drain(..) {
                    trainer.remove_checkpoint(old);
                }
                true
            }
            (true, -1) => true,
            (true, k) if (best.len() as i64) < k => true,
            (true, _) => match best.last() {
                Some((_, worst)) if mode.better(score, worst.0) => {
                    if let Some((old, _)) = best.pop() {
                        trainer.remove_checkpoint(old);
                    }
                    true
                }
                _ => false,
            },
        };
        if !keep {
            return;
        }
        trainer.save_checkpoint(&path, self.save_weights_only);
        best.push((path, F64(score)));
        if self.monitor.is_some() {
            // Best first; a NaN score ranks last.
            best.sort_by(|a, b| {
                if mode.better(a.1 .0, b.1 .0) {
                    std::cmp::Ordering::Less
                } else if mode.better(b.1 .0, a.1 .0) {
                    std::cmp::Ordering::Greater
                } else {
                    std::cmp::Ordering::Equal
                }
            });
        }
        let (best_path, best_score) = if self.monitor.is_some() {
            best.first().cloned().unzip()
        } else {
            best.last().cloned().unzip()
        };
        self.state.best_model_path = best_path;
        self.state.best_model_score = best_score.filter(|_| self.monitor.is_some());
    }
}

impl Callback for ModelCheckpoint {
    fn is_monitoring(&self) -> bool {
        true
    }

    fn state_key(&self) -> String {
        format!(
            "ModelCheckpoint{{monitor={:?}, mode={}, every_n_train_steps={}, every_n_epochs={}}}",
            self.monitor,
            self.mode.as_str(),
            self.every_n_train_steps,
            self.every_n_epochs
        )
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        serde_json::to_value(&self.state).ok()
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> crate::Result<()> {
        let state: State = serde_json::from_value(state.clone())
            .map_err(|e| Error::msg(format!("ModelCheckpoint state: {e}")))?;
        // As in Lightning: the ranking carries over only into the same directory.
        if self.dirpath.is_some() && state.dirpath == self.dirpath {
            self.state = state;
        } else {
            self.state.last_model_path = state.last_model_path;
        }
        Ok(())
    }

    fn checkpoint_paths(&self) -> Option<CheckpointPaths> {
        Some(CheckpointPaths {
            dirpath: self.dir.clone().or_else(|| self.dirpath.clone()),
            best: self.state.best_model_path.clone(),
            last: self.state.last_model_path.clone(),
        })
    }

    fn setup(&mut self, trainer: &mut TrainerView, stage: Stage) {
        if stage != Stage::Fit {
            return;
        }
        match self.check() {
            Ok(template) => self.template = Some(template),
            Err(e) => return trainer.fail(e),
        }
        let dir = self.dirpath.clone().unwrap_or_else(|| {
            trainer
                .log_dir()
                .unwrap_or_else(|| trainer.default_root_dir().to_path_buf())
                .join("checkpoints")
        });
        self.state.dirpath = self.dirpath.clone();
        self.dir = Some(dir);
    }

    fn on_train_batch_end(&mut self, trainer: &mut TrainerView, _loss: f64, _batch_idx: usize) {
        let n = self.every_n_train_steps;
        if n > 0 && trainer.global_step().is_multiple_of(n) {
            self.save(trainer);
        }
    }

    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        let n = self.every_n_epochs;
        if self.every_n_train_steps == 0 && n > 0 && (trainer.current_epoch() + 1).is_multiple_of(n)
        {
            self.save(trainer);
        }
    }
}

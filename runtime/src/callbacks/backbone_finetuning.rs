//! `BackboneFinetuning` (Lightning's callback of the same name): the backbone is frozen until
//! epoch `unfreeze_at`, then trains in a parameter group of its own whose learning rate starts
//! at a tenth of the first group's and grows by ×1.5 each epoch, never past it.
//!
//! The backbone's group is written in `configure_optimizers`, where it can be seen (Lightning
//! adds it to the optimizer when it unfreezes): a group of exactly the backbone's field. Until
//! `unfreeze_at` its parameters are frozen (`TrainerView::freeze`), but for its batch norms'
//! with `train_bn(true)` (Lightning's default); with `train_bn(false)` they normalize by their
//! running statistics and keep them (PyTorch's eval mode; Lightning's frozen batch norms
//! normalize by the batch, `track_running_stats=False`, and keep theirs too).
//!
//! ```
//! use fulmen::callbacks::BackboneFinetuning;
//! use fulmen::optim::{Group, Optim};
//!
//! // In configure_optimizers: the head at 1e-3, the backbone in a group of its own.
//! let optim = Optim::adam(1e-3).group(Group::of(["backbone"]));
//! // Frozen for epochs 0 and 1, then at 1e-4, 1.5e-4, 2.25e-4, …, up to 1e-3.
//! let finetuning = BackboneFinetuning::new("backbone", 2);
//! ```

use serde::{Deserialize, Serialize};

use crate::callback::Callback;
use crate::{Error, Result, TrainerView};

/// Freezes a backbone, then trains it at a growing rate; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct BackboneFinetuning {
    backbone: String,
    unfreeze_at: usize,
    lambda: fn(usize) -> f64,
    initial_ratio_lr: f64,
    initial_lr: Option<f64>,
    should_align: bool,
    train_bn: bool,
    /// The last epoch whose rate was set, and the rate (kept by checkpoints, so that a resumed
    /// epoch asks for the same one).
    last: Option<Set>,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
struct Set {
    epoch: usize,
    lr: f64,
}

/// Lightning's `multiplicative`: ×1.5 per epoch.
fn multiplicative(_epoch: usize) -> f64 {
    1.5
}

impl BackboneFinetuning {
    /// Freezes the field `backbone` until epoch `unfreeze_at` (Lightning's
    /// `unfreeze_backbone_at_epoch`).
    pub fn new(backbone: impl Into<String>, unfreeze_at: usize) -> Self {
        Self {
            backbone: backbone.into(),
            unfreeze_at,
            lambda: multiplicative,
            initial_ratio_lr: 0.1,
            initial_lr: None,
            should_align: true,
            train_bn: true,
            last: None,
        }
    }
    /// The factor of the backbone's rate from epoch to epoch, given the epoch it is for
    /// (Lightning's `lambda_func`; default ×1.5).
    pub fn lambda(mut self, f: fn(usize) -> f64) -> Self {
        self.lambda = f;
        self
    }
    /// The backbone's first rate as a fraction of the first group's (default 0.1).
    pub fn initial_ratio_lr(mut self, ratio: f64) -> Self {
        self.initial_ratio_lr = ratio;
        self
    }
    /// The backbone's first rate (in place of the ratio).
    pub fn initial_lr(mut self, lr: f64) -> Self {
        self.initial_lr = Some(lr);
        self
    }
    /// Whether the backbone's rate stops at the first group's (default true).
    pub fn should_align(mut self, align: bool) -> Self {
        self.should_align = align;
        self
    }
    /// Whether the backbone's batch norms train while it is frozen (default true).
    pub fn train_bn(mut self, train: bool) -> Self {
        self.train_bn = train;
        self
    }

    /// The backbone's group in the first optimizer, and that optimizer's first group's rate.
    fn group(&self, trainer: &TrainerView) -> Result<(usize, f64)> {
        let first = trainer.optimizers().first();
        let backbone = [self.backbone.clone()];
        match first.map(|o| (o.group_of(&backbone), o.lr())) {
            Some((Some(g), lr)) => Ok((g, lr)),
            _ => Err(Error::config(
                "BackboneFinetuning",
                format!(
                    "the first optimizer has no parameter group of exactly `{0}`: add `.group(Group::of([\"{0}\"]))` to it in configure_optimizers (the backbone trains at that group's rate once unfrozen)",
                    self.backbone
                ),
            )),
        }
    }

    /// Freezes the backbone (but its batch norms, with `train_bn`).
    fn freeze(&self, trainer: &mut TrainerView) {
        trainer.freeze(&self.backbone);
        if !self.train_bn {
            return;
        }
        // A batch norm is a layer with a running mean.
        let norms: Vec<String> = (trainer.model_parameters().iter())
            .filter_map(|p| p.name.strip_suffix(".running_mean").map(str::to_string))
            .filter(|layer| crate::optim::field_matches(&self.backbone, layer))
            .collect();
        for layer in norms {
            trainer.unfreeze(&layer);
        }
    }

    /// The backbone's rate at `epoch` (from `unfreeze_at` on), set before.
    fn rate(&mut self, epoch: usize, first_lr: f64) -> f64 {
        match self.last {
            Some(set) if set.epoch == epoch => return set.lr,
            _ => {}
        }
        let lr = match (epoch == self.unfreeze_at, self.last) {
            (false, Some(previous)) => {
                let next = (self.lambda)(epoch + 1) * previous.lr;
                match self.should_align && next > first_lr {
                    true => first_lr,
                    false => next,
                }
            }
            _ => (self.initial_lr).unwrap_or(first_lr * self.initial_ratio_lr),
        };
        self.last = Some(Set { epoch, lr });
        lr
    }
}

impl Callback for BackboneFinetuning {
    fn on_train_epoch_start(&mut self, trainer: &mut TrainerView) {
        let (group, first_lr) = match self.group(trainer) {
            Ok(found) => found,
            Err(e) => return trainer.fail(e),
        };
        let epoch = trainer.current_epoch();
        if epoch < self.unfreeze_at {
            return self.freeze(trainer);
        }
        trainer.unfreeze(&self.backbone);
        let lr = self.rate(epoch, first_lr);
        trainer.set_group_lr(0, group, lr);
    }

    fn state_dict(&self) -> Option<serde_json::Value> {
        serde_json::to_value(self.last).ok()
    }

    fn load_state_dict(&mut self, state: &serde_json::Value) -> Result<()> {
        self.last = serde_json::from_value(state.clone())
            .map_err(|e| Error::msg(format!("BackboneFinetuning's state: {e}")))?;
        Ok(())
    }
}

//! `LearningRateFinder`: the learning-rate range test as a callback (Lightning's
//! `LearningRateFinder`): before the fit begins, a trial of up to `num_training` steps at
//! rates growing from `min_lr` to `max_lr` (see [`crate::tuner`]); then the fit starts from
//! the same weights, with every parameter group of the first optimizer at the suggested rate
//! (its scheduler, if any, starts from it). A fit that resumes from a checkpoint runs no
//! trial: its rates are the checkpoint's.
//!
//! ```no_run
//! use fulmen::callbacks::LearningRateFinder;
//! use fulmen::tuner::LrFind;
//! # use fulmen::prelude::*;
//! # fn main() -> fulmen::Result<()> {
//! let finder = LearningRateFinder::new(LrFind::default()).plot_to("lr_find.png");
//! let found = finder.found();
//! let mut trainer = Trainer::builder().callback(finder).build()?;
//! // trainer.fit(&mut model, &mut data)?;
//! if let Some(found) = found.borrow().as_ref() {
//!     println!("trained at {:?}", found.suggestion());
//! }
//! # Ok(())
//! # }
//! ```

use std::cell::RefCell;
use std::path::PathBuf;
use std::rc::Rc;

use crate::callback::{Callback, Trial};
use crate::tuner::{LrFind, LrFound};
use crate::{Stage, TrainerView};

/// The range test before the fit, its suggestion taken as the learning rate.
pub struct LearningRateFinder {
    settings: LrFind,
    update_lr: bool,
    plot: Option<PathBuf>,
    found: Rc<RefCell<Option<LrFound>>>,
}

impl LearningRateFinder {
    /// The range test with `settings`; the fit trains at its suggestion.
    pub fn new(settings: LrFind) -> Self {
        Self {
            settings,
            update_lr: true,
            plot: None,
            found: Rc::default(),
        }
    }

    /// Whether the fit trains at the suggestion (default `true`; Lightning's `update_attr`).
    /// With `false` the test only records (and plots).
    pub fn update_lr(mut self, update: bool) -> Self {
        self.update_lr = update;
        self
    }

    /// Writes the curve as a PNG plot at `path` after the test (rank 0 alone, under DDP).
    pub fn plot_to(mut self, path: impl Into<PathBuf>) -> Self {
        self.plot = Some(path.into());
        self
    }

    /// What the test found, once it ran (Lightning's `optimal_lr`): shared, so that it can
    /// be read after the trainer took the callback.
    pub fn found(&self) -> Rc<RefCell<Option<LrFound>>> {
        self.found.clone()
    }
}

impl Callback for LearningRateFinder {
    fn trial(&mut self) -> crate::Result<Option<Trial>> {
        self.settings.validate()?;
        let (recorder, curve) = crate::tuner::recorder(self.settings.clone());
        let (found, plot) = (self.found.clone(), self.plot.clone());
        let then = move |ranks: &crate::distributed::Ranks<'_>| {
            // Every rank recorded its own losses: rank 0's curve, and so its suggestion, is
            // every rank's (as Lightning broadcasts its results); rank 0 alone plots.
            let mut curve = curve.borrow().clone();
            curve.lrs = ranks.from_rank_zero(&curve.lrs)?;
            curve.losses = ranks.from_rank_zero(&curve.losses)?;
            curve.plots = ranks.rank() == 0;
            if let Some(path) = &plot {
                curve.plot(path)?;
            }
            *found.borrow_mut() = Some(curve);
            Ok(())
        };
        Ok(Some(Trial {
            steps: self.settings.num_training,
            callback: Box::new(recorder),
            then: Box::new(then),
        }))
    }

    /// Before the fit configures its optimizers: the suggestion becomes the rate of every
    /// group of the first (as Lightning sets every group's).
    fn setup(&mut self, trainer: &mut TrainerView, stage: Stage) {
        if stage != Stage::Fit || !self.update_lr {
            return;
        }
        let found = self.found.borrow();
        let Some(found) = found.as_ref() else {
            return;
        };
        let Some(lr) = found.suggestion() else {
            return;
        };
        for group in 0..found.groups {
            trainer.set_group_lr(0, group, lr);
        }
        if found.plots {
            eprintln!("LearningRateFinder: learning rate set to {lr:.3e}");
        }
    }
}

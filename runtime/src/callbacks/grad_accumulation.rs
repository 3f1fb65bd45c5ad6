//! `GradientAccumulationScheduler`: changes `accumulate_grad_batches` by epoch (Lightning's
//! callback of that name).
//!
//! ```
//! use fulmen::callbacks::GradientAccumulationScheduler;
//! // 8 batches per step until epoch 4, then 4, from epoch 8 on 1.
//! let schedule = GradientAccumulationScheduler::new([(0, 8), (4, 4), (8, 1)]);
//! ```

use std::collections::BTreeMap;

use crate::callback::Callback;
use crate::{Error, Stage, TrainerView};

/// Sets `accumulate_grad_batches` per epoch; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct GradientAccumulationScheduler {
    scheduling: BTreeMap<usize, usize>,
}

impl GradientAccumulationScheduler {
    /// `(epoch, k)` pairs: from `epoch` on, `k` batches per optimizer step (1 before the
    /// first epoch named).
    pub fn new(scheduling: impl IntoIterator<Item = (usize, usize)>) -> Self {
        Self {
            scheduling: scheduling.into_iter().collect(),
        }
    }

    /// The count for `epoch`.
    pub fn going_to_accumulate_grad_batches(&self, epoch: usize) -> usize {
        self.scheduling
            .range(..=epoch)
            .next_back()
            .map_or(1, |(_, &k)| k)
    }
}

impl Callback for GradientAccumulationScheduler {
    fn setup(&mut self, trainer: &mut TrainerView, stage: Stage) {
        if stage != Stage::Fit {
            return;
        }
        if let Some((epoch, _)) = self.scheduling.iter().find(|(_, &k)| k == 0) {
            return trainer.fail(Error::config(
                "GradientAccumulationScheduler",
                format!("epoch {epoch} accumulates 0 batches; use at least 1"),
            ));
        }
        if trainer.accumulate_grad_batches() != 1 {
            trainer.fail(Error::config(
                "accumulate_grad_batches",
                "is set on the trainer and by a GradientAccumulationScheduler: keep one of the two",
            ));
        }
    }
    fn on_train_epoch_start(&mut self, trainer: &mut TrainerView) {
        let k = self.going_to_accumulate_grad_batches(trainer.current_epoch());
        trainer.set_accumulate_grad_batches(k);
    }
}

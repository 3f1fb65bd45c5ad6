//! Tuning before training (Lightning's `Tuner`): the learning-rate range test
//! ([`Tuner::lr_find`]; as a callback of the fit itself,
//! [`LearningRateFinder`](crate::callbacks::LearningRateFinder)), whose curve is written as a
//! PNG plot and whose suggestion is the rate where the loss falls fastest.
//!
//! ```no_run
//! # use fulmen::prelude::*;
//! # #[lightning_module]
//! # struct Net { layer: Linear<4, 3>, #[hparam] lr: f64 }
//! # #[lightning_module]
//! # impl Net {
//! #     fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
//! #         cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
//! #     }
//! #     fn configure_optimizers(&self) -> Optim { Optim::adam(self.lr) }
//! # }
//! use fulmen::tuner::{LrFind, Tuner};
//!
//! # fn main() -> fulmen::Result<()> {
//! let data = fulmen::data::iris::load("data/iris.npz")?;
//! let mut loaders = fulmen::datamodule::Loaders {
//!     train: Some(DataLoader::new(InMemoryDataset::new(data), 16).shuffle(true)),
//!     ..Default::default()
//! };
//! let mut model = Net::new(1e-3);
//! let mut trainer = Trainer::builder().max_epochs(10).build()?;
//! let found = Tuner::new(&mut trainer).lr_find(&mut model, &mut loaders, LrFind::default())?;
//! found.plot("lr_find.png")?;
//! if let Some(lr) = found.suggestion() {
//!     model.lr = lr;
//! }
//! trainer.fit(&mut model, &mut loaders)?;
//! # Ok(())
//! # }
//! ```

mod lr_find;
mod plot;

pub use lr_find::{LrFind, LrFound, LrMode};

use std::cell::RefCell;
use std::rc::Rc;

use dfdx::tensor::Cpu;

use crate::callback::Callback;
use crate::callbacks::LearningRateFinder;
use crate::data::Collate;
use crate::datamodule::DataModule;
use crate::module::Precisions;
use crate::stage_data::DataFor;
use crate::{Result, Trainer};

/// Tunes a module's settings with a trainer's runs (Lightning's `Tuner(trainer)`).
pub struct Tuner<'t> {
    trainer: &'t mut Trainer,
}

impl<'t> Tuner<'t> {
    /// A tuner that runs `trainer` (its device, precision, strategy and data settings).
    pub fn new(trainer: &'t mut Trainer) -> Self {
        Self { trainer }
    }

    /// The learning-rate range test (Leslie Smith's, as Lightning's `lr_find`): up to
    /// `settings.num_training` optimizer steps from the module as it is, every parameter
    /// group of the first optimizer at a rate growing from `min_lr` to `max_lr`, the smoothed
    /// loss of each step recorded, stopping early once it exceeds `early_stop_threshold` times
    /// the best. The module's weights and the trainer are then as they were: the fit that
    /// follows starts from the same weights, at the rate it chooses.
    pub fn lr_find<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        settings: LrFind,
    ) -> Result<LrFound>
    where
        M: Precisions,
        DM: DataModule + DataFor<M>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        let mut finder = LearningRateFinder::new(settings).update_lr(false);
        self.trainer.run_trial(model, datamodule, &mut finder)?;
        let found = finder.found().borrow_mut().take();
        found.ok_or_else(|| crate::Error::msg("lr_find: the range test recorded nothing"))
    }
}

/// The callback that sets each step's rate and records the curve, and the curve.
pub(crate) fn recorder(settings: LrFind) -> (impl Callback, Rc<RefCell<LrFound>>) {
    lr_find::Recorder::new(settings)
}

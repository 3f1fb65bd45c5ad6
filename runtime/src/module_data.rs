//! A module that serves its own data, as Lightning's `LightningModule` may: its
//! `train_dataloader`, `val_dataloader`, `test_dataloader` and `predict_dataloader`, written in
//! its `#[lightning_module]` impl as a data module's are (`DataLoader<S>`, `Option`, `Vec` or
//! `Result` of them), make it [`ServesData`]; a stage runs on them when it is given
//! [`FromModule::of`] for its data module.
//!
//! ```no_run
//! use fulmen::module_data::FromModule;
//! use fulmen::prelude::*;
//!
//! #[lightning_module]
//! pub struct Served {
//!     layer: Linear<4, 3>,
//!     /// Kept beside the tensors: a `Clone` type that names neither `E` nor `D` goes with the
//!     /// copy a stage runs in another precision or on a GPU.
//!     #[skip]
//!     data: Vec<fulmen::data::iris::Sample>,
//! }
//!
//! #[lightning_module]
//! impl Served {
//!     fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
//!         cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
//!     }
//!     fn configure_optimizers(&self) -> Optim {
//!         Optim::sgd(0.1)
//!     }
//!     fn train_dataloader(&mut self) -> DataLoader<fulmen::data::iris::Sample> {
//!         DataLoader::new(InMemoryDataset::new(self.data.clone()), 16).shuffle(true)
//!     }
//! }
//!
//! fn main() -> fulmen::Result<()> {
//!     let mut model = Served::new();
//!     model.data = fulmen::data::iris::load("data/iris.npz")?;
//!     let mut own = FromModule::of(&model);
//!     Trainer::builder().max_epochs(10).build()?.fit(&mut model, &mut own)
//! }
//! ```
//!
//! The loaders are asked for where Lightning asks (the validation loaders after the callbacks'
//! `on_sanity_check_start`, the training loader after the sanity check), of the module the
//! stage runs: in another precision or on a GPU a copy, which has the module's `#[skip]` fields
//! of a `Clone` type that names neither `E` nor `D` (`CarryHParams::carry_skipped`).

use std::marker::PhantomData;

use crate::batch_transfer::DataBatchTransfer;
use crate::data::DataLoader;
use crate::datamodule::{DataModule, ItsOwn, TheModule};
use crate::hparams::{HParams, Hyperparameters};
use crate::Result;

/// A module's own loaders (Lightning's `*_dataloader` on the `LightningModule`);
/// `#[lightning_module]` implements it when the impl writes any of them, with the sample
/// types they name.
pub trait ServesData {
    /// What one sample of the training loader is.
    type Sample: Send + 'static;
    /// What one sample of the validation and test loaders is (by default `Sample`).
    type EvalSample: Send + 'static;
    /// What one sample of the prediction loader is (by default `Sample`).
    type PredictSample: Send + 'static;

    /// The training loader; `fit` needs one.
    fn train_dataloader(&mut self) -> Result<Option<DataLoader<Self::Sample>>> {
        Ok(None)
    }
    /// Whether the module wrote `val_dataloader` (without, no sanity check).
    fn has_val_dataloader(&self) -> bool {
        false
    }
    /// The validation loaders.
    fn val_dataloader(&mut self) -> Result<Vec<DataLoader<Self::EvalSample>>> {
        Ok(Vec::new())
    }
    /// The test loaders.
    fn test_dataloader(&mut self) -> Result<Vec<DataLoader<Self::EvalSample>>> {
        Ok(Vec::new())
    }
    /// The prediction loader.
    fn predict_dataloader(&mut self) -> Result<Option<DataLoader<Self::PredictSample>>> {
        Ok(None)
    }
}

/// Where a stage asks for its loaders: `Self` is the data module's [`DataModule::Source`], `M`
/// the module the stage runs.
pub trait LoadersOf<M, DM: DataModule> {
    /// Whose loaders they are, for messages ("the data module's").
    const WHOSE: &'static str;
    /// The training loader.
    fn train(module: &mut M, dm: &mut DM) -> Result<Option<DataLoader<DM::Sample>>>;
    /// Whether validation loaders are defined.
    fn has_val(module: &M, dm: &DM) -> bool;
    /// The validation loaders.
    fn val(module: &mut M, dm: &mut DM) -> Result<Vec<DataLoader<DM::EvalSample>>>;
    /// The test loaders.
    fn test(module: &mut M, dm: &mut DM) -> Result<Vec<DataLoader<DM::EvalSample>>>;
    /// The prediction loader.
    fn predict(module: &mut M, dm: &mut DM) -> Result<Option<DataLoader<DM::PredictSample>>>;
}

/// The data module's.
impl<M, DM: DataModule> LoadersOf<M, DM> for ItsOwn {
    const WHOSE: &'static str = "the data module's";
    fn train(_: &mut M, dm: &mut DM) -> Result<Option<DataLoader<DM::Sample>>> {
        dm.train_dataloader()
    }
    fn has_val(_: &M, dm: &DM) -> bool {
        dm.has_val_dataloader()
    }
    fn val(_: &mut M, dm: &mut DM) -> Result<Vec<DataLoader<DM::EvalSample>>> {
        dm.val_dataloader()
    }
    fn test(_: &mut M, dm: &mut DM) -> Result<Vec<DataLoader<DM::EvalSample>>> {
        dm.test_dataloader()
    }
    fn predict(_: &mut M, dm: &mut DM) -> Result<Option<DataLoader<DM::PredictSample>>> {
        dm.predict_dataloader()
    }
}

/// The module's.
impl<M, DM> LoadersOf<M, DM> for TheModule
where
    DM: DataModule,
    M: ServesData<
        Sample = DM::Sample,
        EvalSample = DM::EvalSample,
        PredictSample = DM::PredictSample,
    >,
{
    const WHOSE: &'static str = "the module's";
    fn train(module: &mut M, _: &mut DM) -> Result<Option<DataLoader<DM::Sample>>> {
        module.train_dataloader()
    }
    fn has_val(module: &M, _: &DM) -> bool {
        module.has_val_dataloader()
    }
    fn val(module: &mut M, _: &mut DM) -> Result<Vec<DataLoader<DM::EvalSample>>> {
        module.val_dataloader()
    }
    fn test(module: &mut M, _: &mut DM) -> Result<Vec<DataLoader<DM::EvalSample>>> {
        module.test_dataloader()
    }
    fn predict(module: &mut M, _: &mut DM) -> Result<Option<DataLoader<DM::PredictSample>>> {
        module.predict_dataloader()
    }
}

/// The data module of a stage whose module serves its own loaders: no loaders, hooks or
/// state of its own (`trainer.fit(&mut model, &mut FromModule::of(&model))`, Lightning's
/// `trainer.fit(model)`).
pub struct FromModule<S, ES = S, PS = S>(PhantomData<Samples<S, ES, PS>>);

/// What a [`FromModule`] names (a function type: it holds none of them).
type Samples<S, ES, PS> = fn() -> (S, ES, PS);

impl FromModule<()> {
    /// The data module for `module`'s own loaders (`module` only names their sample types).
    pub fn of<M: ServesData>(
        _module: &M,
    ) -> FromModule<M::Sample, M::EvalSample, M::PredictSample> {
        FromModule(PhantomData)
    }
}

impl<S, ES, PS> Hyperparameters for FromModule<S, ES, PS> {
    fn hparams(&self) -> HParams {
        HParams::new()
    }
}

impl<S, ES, PS> DataModule for FromModule<S, ES, PS>
where
    S: Send + 'static,
    ES: Send + 'static,
    PS: Send + 'static,
{
    type Source = TheModule;
    type Sample = S;
    type EvalSample = ES;
    type PredictSample = PS;
}

/// The module's batch-transfer hooks run.
impl<S, ES, PS, H, B, D> DataBatchTransfer<H, B, D> for FromModule<S, ES, PS> {}

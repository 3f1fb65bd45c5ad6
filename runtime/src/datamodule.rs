//! The data side of training (Lightning's `LightningDataModule`).

use crate::data::DataLoader;
use crate::hparams::{HParams, Hyperparameters};
use crate::Result;

/// The stage a `setup` / `teardown` call prepares for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Stage {
    /// `fit`: training, with validation when the module has a `validation_step`.
    Fit,
    /// `validate`: one pass over the validation loaders.
    Validate,
    /// `test`: one pass over the test loaders.
    Test,
    /// `predict`: `predict_step` over the prediction loader.
    Predict,
}

impl Stage {
    /// Lightning's name for the stage ("fit", "validate", "test", "predict").
    pub fn as_str(self) -> &'static str {
        match self {
            Stage::Fit => "fit",
            Stage::Validate => "validate",
            Stage::Test => "test",
            Stage::Predict => "predict",
        }
    }
}

impl std::fmt::Display for Stage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where a trainer's data comes from. Write it with `#[data_module]` on the struct and on its
/// impl: every method is optional, and the sample type is taken from the loaders' types.
///
/// The trainer calls `prepare_data` once per machine (download, check files), then
/// `setup(stage)` (load, split), the loaders the stage needs, and `teardown(stage)`.
pub trait DataModule: Hyperparameters {
    /// Whose loaders a stage runs on: [`ItsOwn`] (this data module's, what `#[data_module]`
    /// says) or [`TheModule`]'s (the module serves its own, through
    /// [`FromModule`](crate::module_data::FromModule)).
    type Source;
    /// What one sample of the training loader is; collated into `training_step`'s batch type.
    type Sample: Send + 'static;
    /// What one sample of the validation and test loaders is; collated into
    /// `validation_step`'s and `test_step`'s batch type. `#[data_module]` takes it from
    /// `val_dataloader` or `test_dataloader`, and without them makes it `Sample`.
    type EvalSample: Send + 'static;
    /// What one sample of the prediction loader is (inputs without labels, say); collated
    /// into `predict_step`'s batch type. `#[data_module]` takes it from `predict_dataloader`,
    /// and without one makes it `Sample`.
    type PredictSample: Send + 'static;

    /// Downloads or checks files (Lightning's `prepare_data`): called once per machine, by its
    /// local rank 0, while the other ranks wait; its error ends the stage on every rank (the
    /// others with an error that names the rank it failed on).
    fn prepare_data(&mut self) -> Result<()> {
        Ok(())
    }
    /// Loads and splits the data for `stage` (Lightning's `setup`): called on every rank, before
    /// the stage's loaders are asked for.
    fn setup(&mut self, _stage: Stage) -> Result<()> {
        Ok(())
    }
    /// Frees what `setup` made (Lightning's `teardown`): called after the stage's loop.
    fn teardown(&mut self, _stage: Stage) -> Result<()> {
        Ok(())
    }
    /// The training loader (Lightning's `train_dataloader`); `fit` needs one.
    fn train_dataloader(&mut self) -> Result<Option<DataLoader<Self::Sample>>> {
        Ok(None)
    }
    /// The validation loaders (Lightning's `val_dataloader`, one or several); none trains
    /// without validation, and `validate` needs one. With several, each step's
    /// `ctx.dataloader_idx()` says whose batch it is and the logged names end in
    /// `/dataloader_idx_N`.
    fn val_dataloader(&mut self) -> Result<Vec<DataLoader<Self::EvalSample>>> {
        Ok(Vec::new())
    }
    /// Whether the data module has validation loaders to give (Lightning's "is the
    /// `val_dataloader` defined"): without, `fit` runs no sanity check and none of its hooks.
    /// `#[data_module]` says no when the impl does not write `val_dataloader`.
    fn has_val_dataloader(&self) -> bool {
        true
    }
    /// The test loaders (Lightning's `test_dataloader`, one or several); `test` needs one.
    fn test_dataloader(&mut self) -> Result<Vec<DataLoader<Self::EvalSample>>> {
        Ok(Vec::new())
    }
    /// The prediction loader (Lightning's `predict_dataloader`); `predict` needs one.
    fn predict_dataloader(&mut self) -> Result<Option<DataLoader<Self::PredictSample>>> {
        Ok(None)
    }
    /// What the data module keeps in checkpoints (Lightning's `state_dict`); `None` keeps
    /// nothing.
    fn state_dict(&self) -> Option<serde_json::Value> {
        None
    }
    /// Takes back what [`state_dict`](Self::state_dict) returned, when a run resumes: after
    /// the module's weights are loaded, before the callbacks' state (Lightning's order), and
    /// before any loader of the fit is asked for, so that a loader made from restored state
    /// (a curriculum stage, a sampler position) continues where the run stopped.
    fn load_state_dict(&mut self, _state: &serde_json::Value) -> Result<()> {
        Ok(())
    }
    /// When the run ends on an error, after the callbacks' `on_exception` (Lightning's
    /// `on_exception`): no `teardown` follows it, so this is where to release what `setup`
    /// made and the error leaves behind.
    fn on_exception(&mut self, _error: &crate::Error) {}
}

/// A stage's loaders are the data module's own.
pub struct ItsOwn;

/// A stage's loaders are the module's (Lightning's `train_dataloader` and the others written
/// on the `LightningModule`, [`crate::module_data`]).
pub struct TheModule;

/// Bare loaders as a data module: what `Trainer::fit_loaders` and friends wrap their loaders in
/// (one sample type; a data module whose evaluation or prediction samples differ is a
/// `#[data_module]`).
pub struct Loaders<S> {
    /// The training loader.
    pub train: Option<DataLoader<S>>,
    /// The validation loader.
    pub val: Option<DataLoader<S>>,
    /// The test loader.
    pub test: Option<DataLoader<S>>,
    /// The prediction loader.
    pub predict: Option<DataLoader<S>>,
}

impl<S> Default for Loaders<S> {
    fn default() -> Self {
        Self {
            train: None,
            val: None,
            test: None,
            predict: None,
        }
    }
}

impl<S> Hyperparameters for Loaders<S> {
    fn hparams(&self) -> HParams {
        HParams::new()
    }
}

impl<S: Send + 'static> DataModule for Loaders<S> {
    type Source = ItsOwn;
    type Sample = S;
    type EvalSample = S;
    type PredictSample = S;
    fn train_dataloader(&mut self) -> Result<Option<DataLoader<S>>> {
        Ok(self.train.clone())
    }
    fn val_dataloader(&mut self) -> Result<Vec<DataLoader<S>>> {
        Ok(self.val.clone().into_iter().collect())
    }
    fn has_val_dataloader(&self) -> bool {
        self.val.is_some()
    }
    fn test_dataloader(&mut self) -> Result<Vec<DataLoader<S>>> {
        Ok(self.test.clone().into_iter().collect())
    }
    fn predict_dataloader(&mut self) -> Result<Option<DataLoader<S>>> {
        Ok(self.predict.clone())
    }
}

/// What a `#[data_module]` loader method may return: `DataLoader<S>`, `Option<DataLoader<S>>`
/// or `Result` of either.
pub trait IntoLoader<S> {
    /// The loader, `None` for no loader, or the error.
    fn into_loader(self) -> Result<Option<DataLoader<S>>>;
}

impl<S> IntoLoader<S> for DataLoader<S> {
    fn into_loader(self) -> Result<Option<DataLoader<S>>> {
        Ok(Some(self))
    }
}
impl<S> IntoLoader<S> for Option<DataLoader<S>> {
    fn into_loader(self) -> Result<Option<DataLoader<S>>> {
        Ok(self)
    }
}
impl<S, T: IntoLoader<S>> IntoLoader<S> for Result<T> {
    fn into_loader(self) -> Result<Option<DataLoader<S>>> {
        self?.into_loader()
    }
}

/// What a `#[data_module]` `val_dataloader` or `test_dataloader` may return: one loader
/// (`DataLoader<S>`, `Option<DataLoader<S>>`), several (`Vec<DataLoader<S>>`,
/// `[DataLoader<S>; N]`), or `Result` of any.
pub trait IntoLoaders<S> {
    /// The loaders (none for no loader), or the error.
    fn into_loaders(self) -> Result<Vec<DataLoader<S>>>;
}

impl<S> IntoLoaders<S> for DataLoader<S> {
    fn into_loaders(self) -> Result<Vec<DataLoader<S>>> {
        Ok(vec![self])
    }
}
impl<S> IntoLoaders<S> for Option<DataLoader<S>> {
    fn into_loaders(self) -> Result<Vec<DataLoader<S>>> {
        Ok(self.into_iter().collect())
    }
}
impl<S> IntoLoaders<S> for Vec<DataLoader<S>> {
    fn into_loaders(self) -> Result<Vec<DataLoader<S>>> {
        Ok(self)
    }
}
impl<S, const N: usize> IntoLoaders<S> for [DataLoader<S>; N] {
    fn into_loaders(self) -> Result<Vec<DataLoader<S>>> {
        Ok(self.into())
    }
}
impl<S, T: IntoLoaders<S>> IntoLoaders<S> for Result<T> {
    fn into_loaders(self) -> Result<Vec<DataLoader<S>>> {
        self?.into_loaders()
    }
}

/// What a `#[data_module]` `state_dict` may return: a JSON value, or `Option` of one.
pub trait IntoState {
    /// The state to keep, `None` for none.
    fn into_state(self) -> Option<serde_json::Value>;
}
impl IntoState for serde_json::Value {
    fn into_state(self) -> Option<serde_json::Value> {
        Some(self)
    }
}
impl IntoState for Option<serde_json::Value> {
    fn into_state(self) -> Option<serde_json::Value> {
        self
    }
}

/// What a `#[data_module]` `prepare_data` / `setup` / `teardown` / `load_state_dict` may
/// return: `()` or `Result<()>`.
pub trait IntoResult {
    /// The value as a `Result<()>`.
    fn into_result(self) -> Result<()>;
}
impl IntoResult for () {
    fn into_result(self) -> Result<()> {
        Ok(())
    }
}
impl IntoResult for Result<()> {
    fn into_result(self) -> Result<()> {
        self
    }
}

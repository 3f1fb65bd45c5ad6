use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use dfdx::nn::TensorCollection;

use crate::datamodule::Stage;
use crate::loggers::Logger;
use crate::walk::{self, Item};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// One tensor of the module, as [`TrainerView::model_parameters`] lists it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamInfo {
    /// The dotted path, `layer_1.weight`.
    pub name: String,
    /// Its shape, outermost dimension first.
    pub shape: Vec<usize>,
    /// Whether the optimizer updates it (buffers such as running means are not).
    pub trainable: bool,
}

impl ParamInfo {
    /// Every tensor of `module`: name, shape and whether the optimizer trains it.
    pub(crate) fn of_module<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
        module: &M,
    ) -> Result<Vec<ParamInfo>> {
        let mut out = Vec::new();
        walk::read(module, |name, item| {
            if let Item::Tensor { tensor, trainable } = item {
                out.push(ParamInfo {
                    name,
                    shape: tensor.dims(),
                    trainable,
                });
            }
            Ok(())
        })?;
        Ok(out)
    }
}

/// One optimizer as [`TrainerView::optimizers`] lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct OptimizerInfo {
    /// PyTorch's class name (`SGD`, `Adam`, `AdamW`, `RMSprop`).
    pub name: &'static str,
    /// Each parameter group's learning rate and momentum (SGD's or RMSprop's, or Adam's
    /// beta1) at its next step, the default group first.
    pub groups: Vec<(f64, Option<f64>)>,
    /// The fields each group after the default one covers (`Group::of`), in order.
    pub group_fields: Vec<Vec<String>>,
}

impl OptimizerInfo {
    /// The learning rate of its next step (its default group's).
    pub fn lr(&self) -> f64 {
        self.groups.first().map_or(0.0, |g| g.0)
    }
    /// Its momentum at its next step (its default group's).
    pub fn momentum(&self) -> Option<f64> {
        self.groups.first().and_then(|g| g.1)
    }
    /// The index (in [`groups`](Self::groups)) of the group made of exactly `fields`.
    pub fn group_of(&self, fields: &[String]) -> Option<usize> {
        let found = self.group_fields.iter().position(|f| f == fields);
        found.map(|g| g + 1)
    }
}

/// What callbacks and module hooks see of the trainer (Lightning's `trainer` argument).
pub struct TrainerView {
    pub(crate) stage: Stage,
    pub(crate) sanity_checking: bool,
    pub(crate) current_epoch: usize,
    pub(crate) global_step: usize,
    pub(crate) max_epochs: Option<usize>,
    pub(crate) max_steps: Option<usize>,
    pub(crate) num_training_batches: usize,
    pub(crate) callback_metrics: BTreeMap<String, f64>,
    pub(crate) progress_bar_metrics: BTreeMap<String, f64>,
    pub(crate) logger: Option<Box<dyn Logger>>,
    pub(crate) should_stop: bool,
    /// Each optimizer's name and the rates of its next step, as the loop's optimization has
    /// them.
    pub(crate) optimizers: Vec<OptimizerInfo>,
    /// Rates callbacks asked for (optimizer, group, rate), which the loop makes the next
    /// step's.
    pub(crate) lr_requests: Vec<(usize, usize, f64)>,
    /// Which parameters are frozen (the loop applies a change before the next step).
    pub(crate) freezing: crate::freeze::Freezing,
    /// Whether the batch norms' statistics are recomputed once training ends.
    pub(crate) update_bn: bool,
    /// Why they could not be, in this fit (a manual step, 16-mixed), if the module has any.
    pub(crate) update_bn_refused: Option<&'static str>,
    pub(crate) error: Option<Error>,
    pub(crate) default_root_dir: PathBuf,
    pub(crate) fast_dev_run: bool,
    pub(crate) scheduler_interval: Option<crate::optim::Interval>,
    /// Of several evaluation loaders, the one whose batch the loop is at.
    pub(crate) dataloader_idx: usize,
    pub(crate) accumulate_grad_batches: usize,
    pub(crate) loss_scale: Option<f64>,
    pub(crate) model_parameters: Vec<ParamInfo>,
    pub(crate) model_layers: &'static [(&'static str, &'static str)],
    pub(crate) checkpoint_saves: Vec<(PathBuf, bool)>,
    pub(crate) checkpoint_removals: Vec<PathBuf>,
    pub(crate) global_rank: usize,
    pub(crate) world_size: usize,
}

impl TrainerView {
    pub(crate) fn new(logger: Option<Box<dyn Logger>>) -> Self {
        Self {
            stage: Stage::Fit,
            sanity_checking: false,
            current_epoch: 0,
            global_step: 0,
            max_epochs: None,
            max_steps: None,
            num_training_batches: 0,
            callback_metrics: BTreeMap::new(),
            progress_bar_metrics: BTreeMap::new(),
            logger,
            should_stop: false,
            optimizers: Vec::new(),
            lr_requests: Vec::new(),
            freezing: Default::default(),
            update_bn: false,
            update_bn_refused: None,
            error: None,
            default_root_dir: PathBuf::from("."),
            fast_dev_run: false,
            scheduler_interval: None,
            dataloader_idx: 0,
            accumulate_grad_batches: 1,
            loss_scale: None,
            model_parameters: Vec::new(),
            model_layers: &[],
            checkpoint_saves: Vec::new(),
            checkpoint_removals: Vec::new(),
            global_rank: 0,
            world_size: 1,
        }
    }

    /// A run of `stage` with `settings` begins: a fit starts at epoch 0, step 0, with no
    /// metrics.
    pub(crate) fn start(&mut self, stage: Stage, settings: &super::settings::Settings) {
        self.stage = stage;
        self.should_stop = false;
        self.max_epochs = settings.max_epochs;
        self.max_steps = settings.max_steps;
        self.accumulate_grad_batches = settings.accumulate_grad_batches;
        if stage == Stage::Fit {
            // What an earlier stage asked for is not this fit's.
            self.lr_requests.clear();
            self.freezing = Default::default();
            self.update_bn = false;
            self.current_epoch = 0;
            self.global_step = 0;
            self.callback_metrics.clear();
        }
    }

    /// The stage running now.
    pub fn stage(&self) -> Stage {
        self.stage
    }
    /// Whether the validation loop now running is the sanity check before training.
    pub fn sanity_checking(&self) -> bool {
        self.sanity_checking
    }
    /// The epoch running now (0-based; after `fit`, the number of epochs run).
    pub fn current_epoch(&self) -> usize {
        self.current_epoch
    }
    /// Optimizer steps taken.
    pub fn global_step(&self) -> usize {
        self.global_step
    }
    /// This process's rank in a multi-process run (0 alone).
    pub fn global_rank(&self) -> usize {
        self.global_rank
    }
    /// Processes in the run.
    pub fn world_size(&self) -> usize {
        self.world_size
    }
    /// Whether this is rank 0, the one that logs and writes checkpoints.
    pub fn is_global_zero(&self) -> bool {
        self.global_rank == 0
    }
    /// The epoch limit (`max_epochs`; 1000 when neither it nor `max_steps` was set).
    pub fn max_epochs(&self) -> Option<usize> {
        self.max_epochs
    }
    /// The optimizer-step limit (`max_steps`), if one was set.
    pub fn max_steps(&self) -> Option<usize> {
        self.max_steps
    }
    /// Batches in one training epoch: known once the training loader is made, from
    /// `on_train_start` on (as Lightning's, after the sanity check); 0 before.
    pub fn num_training_batches(&self) -> usize {
        self.num_training_batches
    }
    /// The latest value of every logged metric: step values during an epoch, epoch
    /// reductions once the epoch ends.
    pub fn callback_metrics(&self) -> &BTreeMap<String, f64> {
        &self.callback_metrics
    }
    /// The metrics logged with `prog_bar`.
    pub fn progress_bar_metrics(&self) -> &BTreeMap<String, f64> {
        &self.progress_bar_metrics
    }
    /// The logger, if the trainer has one.
    pub fn logger(&mut self) -> Option<&mut (dyn Logger + 'static)> {
        self.logger.as_deref_mut()
    }
    /// Sends `metrics` to the logger at `step` (Lightning's `trainer.logger.log_metrics`) and
    /// records them in `callback_metrics`; a write error stops the run after this hook.
    pub fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) {
        self.callback_metrics
            .extend(metrics.iter().map(|(k, v)| (k.clone(), *v)));
        if let Some(logger) = self.logger.as_deref_mut() {
            if let Err(e) = logger.log_metrics(metrics, step) {
                self.fail(e);
            }
        }
    }
    /// Sends a PNG image to the logger under `tag` at the current step (TensorBoard's image
    /// summary; loggers without images leave it); a write error stops the run after this
    /// hook.
    pub fn log_image(&mut self, tag: &str, png: &[u8]) {
        let step = self.global_step.saturating_sub(1);
        if let Some(logger) = self.logger.as_deref_mut() {
            if let Err(e) = logger.log_image(tag, png, step) {
                self.fail(e);
            }
        }
    }
    /// Logs one value at the current step (what `self.log` does in an epoch-level hook).
    pub fn log(&mut self, name: &str, value: f64) {
        let step = self.global_step.saturating_sub(1);
        let mut metrics = BTreeMap::from([(name.to_string(), value)]);
        metrics.insert("epoch".to_string(), self.current_epoch as f64);
        self.log_metrics(&metrics, step);
    }
    /// Asks the trainer to stop at the end of this epoch (Lightning's `trainer.should_stop`).
    pub fn request_stop(&mut self) {
        self.should_stop = true;
    }
    /// Whether a stop was requested (Lightning's `trainer.should_stop`).
    pub fn should_stop(&self) -> bool {
        self.should_stop
    }
    /// The learning rate of the next step of the first optimizer (one a callback asked for,
    /// until the loop takes it).
    pub fn lr(&self) -> f64 {
        let asked = self.lr_requests.iter().rev().find(|r| (r.0, r.1) == (0, 0));
        asked.map_or(self.optimizers.first().map_or(0.0, |o| o.lr()), |r| r.2)
    }
    /// The first optimizer's name as PyTorch names its class (`SGD`, `Adam`, `AdamW`,
    /// `RMSprop`).
    pub fn optimizer_name(&self) -> &str {
        self.optimizers.first().map_or("", |o| o.name)
    }
    /// The first optimizer's momentum: SGD's or RMSprop's, or Adam's beta1.
    pub fn momentum(&self) -> Option<f64> {
        self.optimizers.first().and_then(|o| o.momentum())
    }
    /// Every optimizer, in `configure_optimizers`' order, with the rates of its next step.
    pub fn optimizers(&self) -> &[OptimizerInfo] {
        &self.optimizers
    }
    /// Of several validation or test loaders, the one whose batch the loop is at (what
    /// `on_validation_batch_start` and its kin are about; Lightning's `dataloader_idx`
    /// argument); 0 otherwise.
    pub fn dataloader_idx(&self) -> usize {
        self.dataloader_idx
    }
    /// When the learning-rate scheduler steps, if there is one.
    pub fn scheduler_interval(&self) -> Option<crate::optim::Interval> {
        self.scheduler_interval
    }
    /// The loss scale of a "16-mixed" run.
    pub fn loss_scale(&self) -> Option<f64> {
        self.loss_scale
    }
    /// Batches whose gradients are summed per optimizer step in this epoch.
    pub fn accumulate_grad_batches(&self) -> usize {
        self.accumulate_grad_batches
    }
    /// Changes `accumulate_grad_batches` from the next epoch on; call it in
    /// `on_train_epoch_start` (what `GradientAccumulationScheduler` does). 0 is refused.
    pub fn set_accumulate_grad_batches(&mut self, k: usize) {
        if k == 0 {
            self.fail(Error::config(
                "accumulate_grad_batches",
                "must be at least 1",
            ));
        } else {
            self.accumulate_grad_batches = k;
        }
    }
    /// Asks for the learning rate `lr` from the next optimizer step on: the loop makes it the
    /// next step's of the first optimizer's default parameter group (a scheduler's next step
    /// sets its own). A rate that is not finite and
    /// non-negative stops the run with an error at that step.
    pub fn set_lr(&mut self, lr: f64) {
        self.set_group_lr(0, 0, lr);
    }
    /// Asks for the learning rate `lr` of parameter group `group` (0: the default one; see
    /// [`OptimizerInfo::group_of`]) of optimizer `optimizer` from its next step on, as
    /// [`set_lr`](Self::set_lr) does for the first one's default group (PyTorch's
    /// `optimizer.param_groups[group]["lr"] = lr`). One that does not exist stops the run with
    /// an error at that step. Asked before the optimizers exist (in `setup`), it is the
    /// group's rate from the start: its scheduler starts from it.
    pub fn set_group_lr(&mut self, optimizer: usize, group: usize, lr: f64) {
        self.lr_requests.push((optimizer, group, lr));
    }
    /// Freezes the parameters under `field` (a field, a dotted path or a `*` pattern, as
    /// `Optim::params` names them) from the next training step on: no optimizer update, no
    /// gradient kept, batch norms in eval mode (see [`freeze`](crate::freeze)). A field with
    /// no parameters stops the run with an error naming the module's fields.
    pub fn freeze(&mut self, field: &str) {
        self.freezing.freeze(field);
    }
    /// Unfreezes the parameters under `field` from the next training step on.
    pub fn unfreeze(&mut self, field: &str) {
        self.freezing.unfreeze(field);
    }
    /// Asks for the batch norms' running statistics to be recomputed once training ends
    /// (asked by then: in `on_train_end`, or `with_weights` at `At::TrainEnd`): one pass over
    /// the training data through `training_step`, without backward or steps (PyTorch's
    /// `update_bn`, what `StochasticWeightAveraging` needs for its average).
    pub fn update_bn(&mut self) {
        self.update_bn = true;
    }
    /// Why [`update_bn`](Self::update_bn) would fail in this fit (the module has batch norms
    /// and trains under manual optimization or in 16-mixed), known from `on_fit_start` on.
    pub fn update_bn_refused(&self) -> Option<&'static str> {
        self.update_bn_refused
    }
    /// Which parameters are frozen.
    pub fn freezing(&self) -> &crate::freeze::Freezing {
        &self.freezing
    }
    /// Whether this is a `fast_dev_run` (checkpoint callbacks save nothing then).
    pub fn fast_dev_run(&self) -> bool {
        self.fast_dev_run
    }
    /// The module's tensors (name, shape, trainable), known from the start of `fit`.
    pub fn model_parameters(&self) -> &[ParamInfo] {
        &self.model_parameters
    }
    /// The module's layer fields and their types as written (`("layer_1", "Linear<4, 16>")`).
    pub fn model_layers(&self) -> &'static [(&'static str, &'static str)] {
        self.model_layers
    }
    /// Where logs and checkpoints go when no other directory is given.
    pub fn default_root_dir(&self) -> &Path {
        &self.default_root_dir
    }
    /// The logger's directory (`lightning_logs/version_N`), if it has one.
    pub fn log_dir(&self) -> Option<PathBuf> {
        self.logger
            .as_ref()
            .and_then(|l| l.log_dir().map(Path::to_path_buf))
    }
    /// Saves a checkpoint of the run to `path` once the current hook returns (Lightning's
    /// `trainer.save_checkpoint`); `weights_only` leaves out optimizer and loop state. A failed
    /// save stops the run with an error naming the path; the file there before stays whole.
    /// Under SHARD_GRAD_OP and FULL_SHARD every rank must ask for the same saves in the same
    /// hook (the ranks gather or write together), as `ModelCheckpoint` does.
    pub fn save_checkpoint(&mut self, path: impl Into<PathBuf>, weights_only: bool) {
        self.checkpoint_saves.push((path.into(), weights_only));
    }
    /// Deletes the checkpoint at `path` once the saves requested in the same hook succeeded
    /// (how `save_top_k` drops a checkpoint that is no longer among the best).
    pub fn remove_checkpoint(&mut self, path: impl Into<PathBuf>) {
        self.checkpoint_removals.push(path.into());
    }
    /// Stops the run with `error` after the hook that reports it returns.
    pub fn fail(&mut self, error: Error) {
        if self.error.is_none() {
            self.error = Some(error);
        }
    }

    pub(crate) fn take_error(&mut self) -> Result<()> {
        match self.error.take() {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }
}

//! What a step sees: the tape to trace inputs on, `log` (`log.rs`), and under manual
//! optimization its optimizers (`mode.rs`; the calls are `crate::manual`'s).

mod log;
pub(crate) mod mode;

use std::marker::PhantomData;

use dfdx::shapes::{Rank0, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tensor, Trace};

use crate::datamodule::Stage;
use crate::{FloatDtype, TrainDevice};

pub use log::{LogEntries, LogEntry, LogValue, Reduce};
pub use mode::{
    Automatic, AutomaticStep, EvalStep, Manual, ManualOptimization, ManualStep, OptimizationMode,
    OptimizerRef, StepOutput,
};

/// The loss a `training_step` returns: a scalar that carries the tape of the step.
pub type Loss<E, D> = Tensor<Rank0, E, D, OwnedTape<E, D>>;

/// Where in the run a step is.
#[derive(Debug, Clone, Copy)]
pub(crate) struct StepInfo {
    pub stage: Stage,
    pub training: bool,
    pub batch_idx: usize,
    pub batch_size: usize,
    pub epoch: usize,
    pub global_step: usize,
}

/// The context of one training, validation, test or predict step. `O` is the training step's
/// [`OptimizationMode`]: under [`Manual`] the step also reaches its optimizers (see
/// `crate::manual`).
pub struct StepContext<'a, E: FloatDtype, D: TrainDevice<E>, O = Automatic> {
    pub(crate) grads: Option<Gradients<E, D>>,
    pub(crate) logs: Vec<LogEntry>,
    pub(crate) stage: Stage,
    pub(crate) training: bool,
    pub(crate) batch_idx: usize,
    pub(crate) batch_size: usize,
    pub(crate) epoch: usize,
    pub(crate) global_step: usize,
    pub(crate) device: D,
    /// Of several evaluation loaders, the one whose batch this is.
    pub(crate) dataloader_idx: usize,
    /// Manual optimization: the trainer's side of the step.
    pub(crate) manual: Option<&'a mut dyn mode::ManualSteps<E, D>>,
    /// The optimizer `toggle_optimizer` chose, if any.
    pub(crate) toggled: Option<usize>,
    /// While a toggled optimizer's tape holds fresh gradients: the step's own, and the
    /// optimizer they are for.
    pub(crate) kept: Option<(Gradients<E, D>, usize)>,
    mode: PhantomData<O>,
}

impl<'a, E: FloatDtype, D: TrainDevice<E>, O> StepContext<'a, E, D, O> {
    pub(crate) fn new(device: D, at: StepInfo) -> Self {
        Self {
            grads: None,
            logs: Vec::new(),
            stage: at.stage,
            training: at.training,
            batch_idx: at.batch_idx,
            batch_size: at.batch_size,
            epoch: at.epoch,
            global_step: at.global_step,
            device,
            dataloader_idx: 0,
            manual: None,
            toggled: None,
            kept: None,
            mode: PhantomData,
        }
    }

    /// Starts recording operations on `x` so that the loss can be differentiated (dfdx's
    /// `traced`), accumulating into the trainer's gradients (under a toggled optimizer, into
    /// its parameters' alone: see `toggle_optimizer`). In a training step, a tensor made
    /// before the step (its batch) is traced as a copy whose own gradient layers may skip, as
    /// nothing reads it ([`crate::inputs`]); a parameter's clone, and what the step made, keep
    /// their gradients.
    pub fn trace<S: Shape>(&mut self, x: Tensor<S, E, D>) -> Tensor<S, E, D, OwnedTape<E, D>> {
        let x = crate::inputs::input(x);
        if let (Some(k), None) = (self.toggled, &self.kept) {
            if let Some(grads) = self.grads.take() {
                self.kept = Some((grads, k));
            }
            return x.leaky_traced();
        }
        match self.grads.take() {
            Some(grads) => x.traced(grads),
            None => x.leaky_traced(),
        }
    }

    /// Values drawn uniformly from `[0, 1)` in the shape `shape`, on the step's device, from
    /// its random stream (seeded per step: a resumed run draws the same).
    pub fn rand<S: Shape>(&self, shape: S) -> Tensor<S, E, D> {
        crate::device::rand(&self.device, shape)
    }

    /// Values drawn from the standard normal distribution in the shape `shape` (a GAN's noise,
    /// a VAE's ε), on the step's device, from its random stream.
    pub fn randn<S: Shape>(&self, shape: S) -> Tensor<S, E, D> {
        crate::device::randn(&self.device, shape)
    }

    /// Logs `value` under `name` with Lightning's defaults for this stage (training: every
    /// step; validation and test: the batch-size-weighted epoch mean). Chain the returned
    /// entry's methods to change them: `ctx.log("val_acc", acc).prog_bar(true);`
    pub fn log(&mut self, name: &str, value: impl LogValue) -> &mut LogEntry {
        self.logs.push(LogEntry {
            name: name.to_string(),
            value: value.log_value(),
            on_step: self.training,
            on_epoch: !self.training,
            prog_bar: false,
            logger: true,
            reduce: Reduce::Mean,
            batch_size: self.batch_size,
            sync_dist: false,
            metric: (value.as_metric()).map(|m| m.tracked().field().unwrap_or("").to_string()),
        });
        let last = self.logs.len() - 1;
        &mut self.logs[last]
    }

    /// Logs every `(name, value)` of `values` as [`log`](Self::log) does, the options chained
    /// on the result applying to all (Lightning's `self.log_dict`); values of one type, so a
    /// tensor joins numbers as `loss.log_value()`:
    /// `ctx.log_dict([("val_loss", loss.log_value()), ("val_acc", acc)]).prog_bar(true);`
    pub fn log_dict<K: AsRef<str>, V: LogValue>(
        &mut self,
        values: impl IntoIterator<Item = (K, V)>,
    ) -> LogEntries<'_> {
        let first = self.logs.len();
        for (name, value) in values {
            self.log(name.as_ref(), value);
        }
        LogEntries(&mut self.logs[first..])
    }

    /// Which loop runs this step.
    pub fn stage(&self) -> Stage {
        self.stage
    }
    /// The index of this batch within its epoch.
    pub fn batch_idx(&self) -> usize {
        self.batch_idx
    }
    /// The number of samples in this batch, as its loader gave them (before the
    /// batch-transfer hooks, which may change the rows they hold).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }
    /// The current epoch, counted from 0.
    pub fn current_epoch(&self) -> usize {
        self.epoch
    }
    /// Optimizer steps taken so far.
    pub fn global_step(&self) -> usize {
        self.global_step
    }
    /// Of several validation or test loaders, the one whose batch this is (Lightning's
    /// `dataloader_idx`); 0 otherwise.
    pub fn dataloader_idx(&self) -> usize {
        self.dataloader_idx
    }
    /// The device the batch lives on.
    pub fn device(&self) -> &D {
        &self.device
    }
}

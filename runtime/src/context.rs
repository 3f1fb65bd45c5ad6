//! What a step sees: the tape to trace inputs on, and `log`.

use dfdx::shapes::{Dtype, Rank0, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tensor, Trace};
use dfdx::tensor_ops::Device;

use crate::datamodule::Stage;

/// The loss a `training_step` returns: a scalar that carries the tape of the step.
pub type Loss<E, D> = Tensor<Rank0, E, D, OwnedTape<E, D>>;

/// How a logged value is reduced over an epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Serialize, serde::Deserialize)]
pub enum Reduce {
    /// Batch-size-weighted mean (Lightning's default).
    #[default]
    Mean,
    /// The sum of the epoch's values (Lightning's `reduce_fx="sum"`).
    Sum,
    /// The largest of the epoch's values (`reduce_fx="max"`).
    Max,
    /// The smallest of the epoch's values (`reduce_fx="min"`).
    Min,
}

/// One `ctx.log(...)` call; its builder methods set Lightning's `self.log` options.
#[derive(Debug, Clone, PartialEq)]
pub struct LogEntry {
    /// The name it is logged under.
    pub name: String,
    /// The logged value.
    pub value: f64,
    /// Whether it is logged at every step (Lightning's `on_step`).
    pub on_step: bool,
    /// Whether it is reduced over the epoch and logged at its end (Lightning's `on_epoch`).
    pub on_epoch: bool,
    /// Whether the progress bar shows it (Lightning's `prog_bar`).
    pub prog_bar: bool,
    /// Whether it goes to the logger; it reaches `callback_metrics` either way (Lightning's
    /// `logger`).
    pub logger: bool,
    /// How the epoch value is reduced (Lightning's `reduce_fx`).
    pub reduce: Reduce,
    /// Its weight in the epoch mean: the batch's size unless set (Lightning's `batch_size`).
    pub batch_size: usize,
    /// Reduce the epoch value over every rank of a multi-process run.
    pub sync_dist: bool,
}

impl LogEntry {
    /// Reduce the epoch value over every rank of a multi-process run (Lightning's
    /// `sync_dist=True`; validation and test values always are).
    pub fn sync_dist(&mut self, on: bool) -> &mut Self {
        self.sync_dist = on;
        self
    }

    /// Log this value at every step (`name_step` when also logged per epoch).
    pub fn on_step(&mut self, on: bool) -> &mut Self {
        self.on_step = on;
        self
    }
    /// Reduce this value over the epoch (`name_epoch` when also logged per step).
    pub fn on_epoch(&mut self, on: bool) -> &mut Self {
        self.on_epoch = on;
        self
    }
    /// Show this value in the progress bar.
    pub fn prog_bar(&mut self, on: bool) -> &mut Self {
        self.prog_bar = on;
        self
    }
    /// Send this value to the logger (on by default); off keeps it in `callback_metrics` only.
    pub fn logger(&mut self, on: bool) -> &mut Self {
        self.logger = on;
        self
    }
    /// How the epoch value is reduced (`Mean`, weighted by batch size, by default).
    pub fn reduce(&mut self, reduce: Reduce) -> &mut Self {
        self.reduce = reduce;
        self
    }
    /// The weight of this value in the epoch mean (the batch's size by default).
    pub fn batch_size(&mut self, n: usize) -> &mut Self {
        self.batch_size = n;
        self
    }
}

/// The entries of one `ctx.log_dict(...)` call; each option applies to all of them.
pub struct LogEntries<'a>(&'a mut [LogEntry]);

macro_rules! for_each_entry {
    ($($name:ident: $ty:ty),*) => {$(
        #[doc = concat!("[`LogEntry::", stringify!($name), "`] for every entry.")]
        pub fn $name(self, value: $ty) -> Self {
            for e in self.0.iter_mut() {
                e.$name(value);
            }
            self
        }
    )*};
}

impl LogEntries<'_> {
    for_each_entry!(
        sync_dist: bool,
        on_step: bool,
        on_epoch: bool,
        prog_bar: bool,
        logger: bool,
        reduce: Reduce,
        batch_size: usize
    );
}

/// A value that can be logged: numbers and scalar tensors.
pub trait LogValue {
    /// The value as an `f64`.
    fn log_value(&self) -> f64;
}

impl LogValue for f64 {
    fn log_value(&self) -> f64 {
        *self
    }
}
impl LogValue for f32 {
    fn log_value(&self) -> f64 {
        f64::from(*self)
    }
}
impl LogValue for usize {
    fn log_value(&self) -> f64 {
        *self as f64
    }
}
impl<E: Dtype + num_traits::ToPrimitive, D: Device<E>, T> LogValue for Tensor<Rank0, E, D, T> {
    fn log_value(&self) -> f64 {
        self.as_vec()
            .first()
            .and_then(|v| v.to_f64())
            .unwrap_or(f64::NAN)
    }
}
impl<V: LogValue + ?Sized> LogValue for &V {
    fn log_value(&self) -> f64 {
        (**self).log_value()
    }
}

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

/// The context of one training, validation, test or predict step.
pub struct StepContext<E: Dtype, D: Device<E>> {
    pub(crate) grads: Option<Gradients<E, D>>,
    pub(crate) logs: Vec<LogEntry>,
    pub(crate) stage: Stage,
    pub(crate) training: bool,
    pub(crate) batch_idx: usize,
    pub(crate) batch_size: usize,
    pub(crate) epoch: usize,
    pub(crate) global_step: usize,
    pub(crate) device: D,
}

impl<E: Dtype, D: Device<E>> StepContext<E, D> {
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
        }
    }

    /// Starts recording operations on `x` so that the loss can be differentiated (dfdx's
    /// `traced`), accumulating into the trainer's gradients.
    pub fn trace<S: Shape>(&mut self, x: Tensor<S, E, D>) -> Tensor<S, E, D, OwnedTape<E, D>> {
        match self.grads.take() {
            Some(grads) => x.traced(grads),
            None => x.leaky_traced(),
        }
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
    /// The number of samples in this batch.
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
    /// The device the batch lives on.
    pub fn device(&self) -> &D {
        &self.device
    }
}

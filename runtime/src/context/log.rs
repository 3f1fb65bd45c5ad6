//! What a step logs: [`LogEntry`] (one `ctx.log` call and Lightning's `self.log` options),
//! [`LogEntries`] (one `ctx.log_dict`), [`LogValue`] (what can be logged).

use dfdx::shapes::{Dtype, Rank0};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use crate::metrics::{
    Accuracy, Auroc, AveragePrecision, CalibrationError, ExplainedVariance, F1Score, FBetaScore,
    MaxMetric, MeanAbsoluteError, MeanMetric, MeanSquaredError, Metric, MinMetric, PearsonCorrCoef,
    Perplexity, Precision, R2Score, Recall, RootMeanSquaredError, RunningMean, SpearmanCorrCoef,
    Specificity, SumMetric,
};

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
    /// A metric object logged (`fulmen::metrics`): the module field it is (empty when it is
    /// not one, which the trainer refuses). Its epoch value is the metric's, computed from
    /// every rank's state; `value` is the batch's.
    pub metric: Option<String>,
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
    /// The weight of this value in the epoch mean (by default the batch's size: the samples its
    /// loader gave, [`StepContext::batch_size`](crate::StepContext::batch_size); a batch-transfer
    /// hook that changes the row count passes the new one here).
    pub fn batch_size(&mut self, n: usize) -> &mut Self {
        self.batch_size = n;
        self
    }
}

/// The entries of one `ctx.log_dict(...)` call; each option applies to all of them.
pub struct LogEntries<'a>(pub(crate) &'a mut [LogEntry]);

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

/// A value that can be logged: numbers, scalar tensors and metrics.
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot be logged: log a number, a scalar tensor or a metric whose value is a number",
    label = "not a number",
    note = "a confusion matrix or a curve is read (`matrix()`, `curves()`) or drawn (`MetricPlots`), not logged"
)]
pub trait LogValue {
    /// The value as an `f64` (a metric's: the last batch's).
    fn log_value(&self) -> f64;
    /// The metric, when this is one: its epoch value is computed from its state.
    fn as_metric(&self) -> Option<&dyn Metric> {
        None
    }
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
    fn as_metric(&self) -> Option<&dyn Metric> {
        (**self).as_metric()
    }
}

impl LogValue for dyn Metric + '_ {
    fn log_value(&self) -> f64 {
        self.batch_value().unwrap_or(f64::NAN)
    }
    fn as_metric(&self) -> Option<&dyn Metric> {
        Some(self)
    }
}

/// A metric whose value is a number logs as its last batch's value, and as the metric.
macro_rules! loggable {
    ($($ty:ty),*) => {$(
        impl LogValue for $ty {
            fn log_value(&self) -> f64 {
                self.batch_value().unwrap_or(f64::NAN)
            }
            fn as_metric(&self) -> Option<&dyn Metric> {
                Some(self)
            }
        }
    )*};
}

loggable!(
    Accuracy,
    Precision,
    Recall,
    Specificity,
    F1Score,
    FBetaScore,
    Auroc,
    AveragePrecision,
    CalibrationError,
    MeanSquaredError,
    RootMeanSquaredError,
    MeanAbsoluteError,
    R2Score,
    ExplainedVariance,
    PearsonCorrCoef,
    SpearmanCorrCoef,
    MeanMetric,
    SumMetric,
    MinMetric,
    MaxMetric,
    RunningMean,
    Perplexity
);

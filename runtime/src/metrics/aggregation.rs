//! Aggregations of values a step computes itself: [`MeanMetric`] (weighted),
//! [`SumMetric`], [`MinMetric`], [`MaxMetric`], and [`RunningMean`] over the last few updates.
//! A value that is not a number is an error (torchmetrics' `nan_strategy="error"`).
//!
//! ```
//! use fulmen::metrics::{MeanMetric, Metric};
//! let mut mean = MeanMetric::default();
//! mean.update(&[1.0, 2.0][..])?;
//! mean.update_weighted(4.0, 2.0)?;
//! assert_eq!(mean.compute()?, 11.0 / 4.0);
//! # Ok::<(), fulmen::Error>(())
//! ```

use super::regression::Values;
use super::state::{Merge, State};
use super::{Metric, Tracked};
use crate::{Error, Result};

fn finite(metric: &str, values: &[f64]) -> Result<()> {
    match values.iter().position(|v| !v.is_finite()) {
        None => Ok(()),
        Some(i) => Err(Error::msg(format!("{metric}: value {i} is {}", values[i]))),
    }
}

/// The weighted mean of every value.
#[derive(Debug, Clone, PartialEq)]
pub struct MeanMetric {
    tracked: Tracked,
}

impl Default for MeanMetric {
    fn default() -> Self {
        Self {
            tracked: Tracked::new(State::new(&[
                ("sum", Merge::Sum, 1),
                ("weight", Merge::Sum, 1),
            ])),
        }
    }
}

impl MeanMetric {
    /// Adds values, each of weight 1.
    pub fn update(&mut self, values: impl Values) -> Result<()> {
        let v = values.values();
        finite("MeanMetric", &v)?;
        self.add(v.iter().sum(), v.len() as f64)
    }
    /// Adds one value of weight `weight` (a batch's mean, weighted by its size).
    pub fn update_weighted(&mut self, value: f64, weight: f64) -> Result<()> {
        finite("MeanMetric", &[value, weight])?;
        if weight < 0.0 {
            return Err(Error::msg(format!(
                "MeanMetric: weight {weight} is negative"
            )));
        }
        self.add(value * weight, weight)
    }
    fn add(&mut self, sum: f64, weight: f64) -> Result<()> {
        let mut batch = self.tracked.total().emptied();
        batch.get_mut(0)[0] = sum;
        batch.get_mut(1)[0] = weight;
        self.tracked.add(batch)
    }
}

impl Metric for MeanMetric {
    fn name(&self) -> &'static str {
        "MeanMetric"
    }
    fn tracked(&self) -> &Tracked {
        &self.tracked
    }
    fn tracked_mut(&mut self) -> &mut Tracked {
        &mut self.tracked
    }
    fn value_of(&self, state: &State) -> Result<f64> {
        let (sum, weight) = (state.get(0)[0], state.get(1)[0]);
        Ok(if weight == 0.0 {
            f64::NAN
        } else {
            sum / weight
        })
    }
}

macro_rules! fold_metric {
    ($(#[$doc:meta])* $name:ident, $merge:expr, $fold:expr) => {
        $(#[$doc])*
        #[derive(Debug, Clone, PartialEq)]
        pub struct $name {
            tracked: Tracked,
        }

        impl Default for $name {
            fn default() -> Self {
                Self {
                    tracked: Tracked::new(State::new(&[("value", $merge, 1)])),
                }
            }
        }

        impl $name {
            /// Adds values.
            pub fn update(&mut self, values: impl Values) -> Result<()> {
                let v = values.values();
                finite(stringify!($name), &v)?;
                let mut batch = self.tracked.total().emptied();
                let slot = &mut batch.get_mut(0)[0];
                *slot = v.into_iter().fold(*slot, $fold);
                self.tracked.add(batch)
            }
        }

        impl Metric for $name {
            fn name(&self) -> &'static str {
                stringify!($name)
            }
            fn tracked(&self) -> &Tracked {
                &self.tracked
            }
            fn tracked_mut(&mut self) -> &mut Tracked {
                &mut self.tracked
            }
            fn value_of(&self, state: &State) -> Result<f64> {
                Ok(state.get(0)[0])
            }
        }
    };
}

fold_metric!(
    /// The sum of every value.
    SumMetric,
    Merge::Sum,
    |a: f64, b: f64| a + b
);
fold_metric!(
    /// The largest value (−∞ before any).
    MaxMetric,
    Merge::Max,
    f64::max
);
fold_metric!(
    /// The smallest value (+∞ before any).
    MinMetric,
    Merge::Min,
    f64::min
);

/// The mean of the last `window` updates' values (torchmetrics' `RunningMean`): each update
/// adds one value. Under several ranks, every rank's last `window` values.
#[derive(Debug, Clone, PartialEq)]
pub struct RunningMean {
    window: usize,
    tracked: Tracked,
}

impl Default for RunningMean {
    fn default() -> Self {
        Self::new(5)
    }
}

impl RunningMean {
    /// Over the last `window` updates (at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1),
            tracked: Tracked::new(State::new(&[("values", Merge::Cat, 0)])),
        }
    }
    /// Adds one value; the oldest beyond the window is forgotten.
    pub fn update(&mut self, value: f64) -> Result<()> {
        finite("RunningMean", &[value])?;
        let mut batch = self.tracked.total().emptied();
        batch.get_mut(0).push(value);
        self.tracked.add(batch)?;
        let kept = self.tracked.total_mut().get_mut(0);
        let drop = kept.len().saturating_sub(self.window);
        kept.drain(..drop);
        Ok(())
    }
}

impl Metric for RunningMean {
    fn name(&self) -> &'static str {
        "RunningMean"
    }
    fn tracked(&self) -> &Tracked {
        &self.tracked
    }
    fn tracked_mut(&mut self) -> &mut Tracked {
        &mut self.tracked
    }
    fn value_of(&self, state: &State) -> Result<f64> {
        let v = state.get(0);
        Ok(if v.is_empty() {
            f64::NAN
        } else {
            v.iter().sum::<f64>() / v.len() as f64
        })
    }
}

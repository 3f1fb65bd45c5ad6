//! Feature scaling fitted on the training split and applied to every split (scikit-learn's
//! `StandardScaler` and `MinMaxScaler`), saved with the data module's state so that a resumed
//! run, and predictions, scale as training did.
//!
//! ```
//! use fulmen::data::Scaler;
//!
//! let train = vec![[1.0f32, 10.0], [3.0, 30.0]];
//! let scaler = Scaler::standardize(&train).unwrap();
//! let mut x = [2.0f32, 20.0];
//! scaler.apply(&mut x);
//! assert_eq!(x, [0.0, 0.0]);
//! // In a data module: `fn state_dict(&self) -> serde_json::Value { json!({"scaler": self.scaler}) }`.
//! let saved = serde_json::to_value(&scaler).unwrap();
//! assert_eq!(serde_json::from_value::<Scaler<2>>(saved).unwrap(), scaler);
//! ```

use serde::{Deserialize, Serialize};

use crate::{Error, Result};

/// Per-feature `x' = (x - shift) / scale`, fitted on training samples of `N` features.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Scaler<const N: usize> {
    /// `standardize` or `min_max`.
    pub kind: ScalerKind,
    /// What is subtracted from each feature: its mean, or its minimum.
    #[serde(with = "serde_arrays")]
    pub shift: [f32; N],
    /// What each feature is then divided by: its standard deviation, or its range (1 where a
    /// feature is constant, so that it scales to 0 and never to NaN).
    #[serde(with = "serde_arrays")]
    pub scale: [f32; N],
}

/// How a [`Scaler`] was fitted.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ScalerKind {
    /// Zero mean, unit (population) standard deviation.
    Standardize,
    /// Each feature into [0, 1] over the training samples.
    MinMax,
}

impl<const N: usize> Scaler<N> {
    /// Mean 0 and standard deviation 1 over `train`, per feature.
    pub fn standardize(train: &[[f32; N]]) -> Result<Self> {
        let n = nonempty(train)? as f64;
        let mut shift = [0f32; N];
        let mut scale = [1f32; N];
        for j in 0..N {
            let mean = train.iter().map(|x| f64::from(x[j])).sum::<f64>() / n;
            let var = train
                .iter()
                .map(|x| (f64::from(x[j]) - mean).powi(2))
                .sum::<f64>()
                / n;
            shift[j] = mean as f32;
            scale[j] = nonzero(var.sqrt());
        }
        Ok(Self {
            kind: ScalerKind::Standardize,
            shift,
            scale,
        })
    }

    /// Each feature into [0, 1] over `train`.
    pub fn min_max(train: &[[f32; N]]) -> Result<Self> {
        nonempty(train)?;
        let mut shift = [0f32; N];
        let mut scale = [1f32; N];
        for j in 0..N {
            let lo = train.iter().map(|x| x[j]).fold(f32::INFINITY, f32::min);
            let hi = train.iter().map(|x| x[j]).fold(f32::NEG_INFINITY, f32::max);
            shift[j] = lo;
            scale[j] = nonzero(f64::from(hi) - f64::from(lo));
        }
        Ok(Self {
            kind: ScalerKind::MinMax,
            shift,
            scale,
        })
    }

    /// Scales one sample's features in place.
    pub fn apply(&self, x: &mut [f32; N]) {
        for ((v, shift), scale) in x.iter_mut().zip(&self.shift).zip(&self.scale) {
            *v = (*v - shift) / scale;
        }
    }

    /// Scales the features of every `(features, label)` sample in place.
    pub fn apply_all<L>(&self, samples: &mut [([f32; N], L)]) {
        for (x, _) in samples {
            self.apply(x);
        }
    }
}

fn nonempty<T>(train: &[T]) -> Result<usize> {
    match train.len() {
        0 => Err(Error::msg(
            "a scaler is fitted on training samples, and there are none",
        )),
        n => Ok(n),
    }
}

fn nonzero(spread: f64) -> f32 {
    match spread as f32 {
        s if s > 0.0 && s.is_finite() => s,
        _ => 1.0,
    }
}

/// Fixed-size arrays as JSON lists (serde derives them only up to 32 elements).
mod serde_arrays {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer, const N: usize>(a: &[f32; N], s: S) -> Result<S::Ok, S::Error> {
        s.collect_seq(a.iter())
    }

    pub fn deserialize<'de, D: Deserializer<'de>, const N: usize>(
        d: D,
    ) -> Result<[f32; N], D::Error> {
        let v = Vec::<f32>::deserialize(d)?;
        let n = v.len();
        v.try_into().map_err(|_| {
            serde::de::Error::custom(format!("{n} values, but the scaler scales {N} features"))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fitted_on_train_applied_to_any_split_and_constant_features_stay_finite() {
        let train = [[0.0f32, 5.0], [2.0, 5.0], [4.0, 5.0]];
        let s = Scaler::min_max(&train).unwrap();
        let mut unseen = [6.0f32, 7.0];
        s.apply(&mut unseen);
        assert_eq!(unseen, [1.5, 2.0]);
        let z = Scaler::standardize(&train).unwrap();
        let mut mid = [2.0f32, 5.0];
        z.apply(&mut mid);
        assert_eq!(mid, [0.0, 0.0]);
        assert!((z.scale[0] - (8.0f32 / 3.0).sqrt()).abs() < 1e-6);
        assert!(Scaler::<2>::standardize(&[]).is_err());
        let bad = serde_json::json!({"kind": "min_max", "shift": [0.0], "scale": [1.0]});
        let e = serde_json::from_value::<Scaler<2>>(bad)
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("1 values, but the scaler scales 2 features"),
            "{e}"
        );
    }
}

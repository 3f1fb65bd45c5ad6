//! `f64` in JSON, non-finite values included: JSON has no NaN or infinity, so those are
//! written as the strings `"NaN"`, `"inf"` and `"-inf"` and read back as floats.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Serializes an `f64` (use with `#[serde(with = "fulmen::checkpoint::float")]`).
pub fn serialize<S: Serializer>(v: &f64, s: S) -> Result<S::Ok, S::Error> {
    if v.is_finite() {
        s.serialize_f64(*v)
    } else {
        s.serialize_str(&v.to_string())
    }
}

/// Deserializes what [`serialize`] wrote.
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<f64, D::Error> {
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum Repr {
        Num(f64),
        Text(String),
    }
    match Repr::deserialize(d)? {
        Repr::Num(v) => Ok(v),
        Repr::Text(t) => t
            .parse()
            .map_err(|_| serde::de::Error::custom(format!("`{t}` is not a number"))),
    }
}

/// An `f64` that survives JSON whatever its value.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(transparent)]
pub struct F64(#[serde(with = "self")] pub f64);

/// A `Vec<f64>` as [`F64`]s (use with `#[serde(with = "crate::checkpoint::float::many")]`).
pub mod many {
    use super::F64;
    use serde::{Deserialize, Deserializer, Serialize, Serializer};

    /// Serializes each value as [`super::serialize`] does.
    pub fn serialize<S: Serializer>(v: &[f64], s: S) -> Result<S::Ok, S::Error> {
        let wrapped: Vec<F64> = v.iter().map(|&x| F64(x)).collect();
        wrapped.serialize(s)
    }

    /// Deserializes what [`serialize`] wrote.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<f64>, D::Error> {
        Ok(Vec::<F64>::deserialize(d)?
            .into_iter()
            .map(|x| x.0)
            .collect())
    }
}

//! Hyperparameters: the values a module or data module was built with, written to
//! `hparams.yaml` (and to checkpoints), in declaration order.

use serde::Serialize;

use crate::{Error, Result};

/// An ordered map from hyperparameter name to value.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct HParams {
    entries: Vec<(String, serde_yaml::Value)>,
}

impl HParams {
    /// An empty map.
    pub fn new() -> Self {
        Self::default()
    }

    /// Records `value` under `name`, replacing an earlier value of that name. A value serde
    /// cannot represent is recorded as a string saying why, never dropped silently.
    pub fn insert<T: Serialize + ?Sized>(&mut self, name: &str, value: &T) {
        let value = serde_yaml::to_value(value).unwrap_or_else(|e| {
            serde_yaml::Value::String(format!("<not representable as a hyperparameter: {e}>"))
        });
        self.set(name, value);
    }

    fn set(&mut self, name: &str, value: serde_yaml::Value) {
        match self.entries.iter_mut().find(|(n, _)| n == name) {
            Some(slot) => slot.1 = value,
            None => self.entries.push((name.to_string(), value)),
        }
    }

    /// The value recorded under `name`, decoded as `T`.
    pub fn get<T: serde::de::DeserializeOwned>(&self, name: &str) -> Result<T> {
        let (_, value) = self
            .entries
            .iter()
            .find(|(n, _)| n == name)
            .ok_or_else(|| Error::config(name, "no such hyperparameter"))?;
        serde_yaml::from_value(value.clone())
            .map_err(|e| Error::config(name, format!("cannot be read back: {e}")))
    }

    /// Adds every entry of `other`, later entries replacing earlier ones of the same name.
    pub fn extend(&mut self, other: &HParams) {
        for (name, value) in &other.entries {
            self.set(name, value.clone());
        }
    }

    /// The number of hyperparameters.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether there are none.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Name and value of every entry, in order.
    pub fn entries(&self) -> impl Iterator<Item = (&str, &serde_yaml::Value)> {
        self.entries.iter().map(|(n, v)| (n.as_str(), v))
    }

    /// The names, in order.
    pub fn names(&self) -> impl Iterator<Item = &str> {
        self.entries.iter().map(|(n, _)| n.as_str())
    }

    /// The YAML document Lightning writes as `hparams.yaml`.
    pub fn to_yaml(&self) -> String {
        if self.entries.is_empty() {
            return "{}\n".to_string();
        }
        let mut map = serde_yaml::Mapping::new();
        for (name, value) in &self.entries {
            map.insert(serde_yaml::Value::String(name.clone()), value.clone());
        }
        serde_yaml::to_string(&map).unwrap_or_default()
    }
}

/// Implemented by `#[lightning_module]`, `#[module]` and `#[data_module]` for their
/// `#[hparam]` fields (data modules: every field not marked `#[skip]`).
pub trait Hyperparameters {
    /// The hyperparameters, in declaration order.
    fn hparams(&self) -> HParams;
}

/// A type built from its hyperparameters by name: a `#[lightning_module]` (on the CPU, in
/// f32) or a `#[data_module]`; the macros implement it. Checkpoints rebuild modules through it,
/// and [`crate::cli::LightningCli`] fills it from config files and flags.
pub trait FromHParams: Sized {
    /// The hyperparameters [`from_hparams`](Self::from_hparams) reads: name and type as
    /// written, in declaration order.
    const HPARAMS: &'static [(&'static str, &'static str)];

    /// Builds the value; a hyperparameter missing or of another type is an error naming it.
    fn from_hparams(hparams: &HParams) -> Result<Self>;
}

/// Moves a module between devices and dtypes without losing its hyperparameters.
///
/// dfdx's `to_device` / `to_dtype` rebuild a module from its tensors alone; the macros implement
/// this trait so that `#[hparam]` and `#[skip]` fields come along.
pub trait CarryHParams<E: dfdx::shapes::Dtype, D: dfdx::tensor_ops::Device<E>>:
    dfdx::nn::TensorCollection<E, D>
{
    /// Copies this module's non-tensor fields into `to`, a copy of it on another device/dtype.
    fn carry_hparams<E2: dfdx::shapes::Dtype, D2: dfdx::tensor_ops::Device<E2>>(
        &self,
        to: &mut Self::To<E2, D2>,
    );

    /// Copies into `to` the `#[skip]` fields that can go: those whose type names neither the
    /// dtype nor the device and is `Clone`. A stage's placement (`PlaceAs::placed`) carries
    /// them to the copy it runs and back, so that what a module keeps beside its tensors is
    /// there in every precision and device. By default none.
    fn carry_skipped<E2: dfdx::shapes::Dtype, D2: dfdx::tensor_ops::Device<E2>>(
        &self,
        _to: &mut Self::To<E2, D2>,
    ) {
    }

    /// Swaps with `other`, a copy of this module in another dtype or device, the `#[skip]`
    /// fields whose type names neither (the same type in both): 16-mixed's half copy has them
    /// for its step and gives them back. By default none.
    fn swap_skipped<E2: dfdx::shapes::Dtype, D2: dfdx::tensor_ops::Device<E2>>(
        &mut self,
        _other: &mut Self::To<E2, D2>,
    ) {
    }

    /// Takes back from `original` the `#[skip]` fields that
    /// [`carry_skipped`](Self::carry_skipped) cannot carry: a module written back from a
    /// stage's copy keeps them as they were, not as `Default` made them. By default none.
    fn keep_uncarried(&mut self, _original: &mut Self) {}

    /// Copies into `to` everything dfdx's `to_dtype` and `to_device` leave behind: the
    /// non-tensor fields ([`carry_hparams`](Self::carry_hparams)) and the layers' scalars
    /// (batch norm's settings and `num_batches_tracked`, which they reset to defaults).
    fn carry<E2, D2>(&self, to: &mut Self::To<E2, D2>) -> Result<()>
    where
        E: crate::FloatDtype,
        D: crate::device::HostAccess<E>,
        E2: crate::FloatDtype,
        D2: crate::device::HostAccess<E2>,
        Self::To<E2, D2>: dfdx::nn::TensorCollection<E2, D2>,
    {
        self.carry_hparams(to);
        crate::walk::copy_scalars(self, to)
    }

    /// This module on `device`, hyperparameters and scalars included.
    fn moved_to<D2>(&self, device: &D2) -> Result<Self::To<E, D2>>
    where
        E: crate::FloatDtype,
        D: crate::device::HostAccess<E>,
        D2: crate::device::HostAccess<E>,
        Self::To<E, D2>: dfdx::nn::TensorCollection<E, D2>,
    {
        let mut moved = dfdx::nn::ToDevice::to_device(self, device);
        self.carry(&mut moved)?;
        Ok(moved)
    }
}

/// Written as a map in declaration order (checkpoints store hyperparameters this way).
impl Serialize for HParams {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        use serde::ser::SerializeMap;
        let mut map = s.serialize_map(Some(self.entries.len()))?;
        for (name, value) in &self.entries {
            map.serialize_entry(name, value)?;
        }
        map.end()
    }
}

/// Read back in the order written.
impl<'de> serde::Deserialize<'de> for HParams {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        struct Entries;
        impl<'de> serde::de::Visitor<'de> for Entries {
            type Value = HParams;
            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a map of hyperparameters")
            }
            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<HParams, A::Error> {
                let mut hparams = HParams::new();
                while let Some((name, value)) = map.next_entry::<String, serde_yaml::Value>()? {
                    hparams.set(&name, value);
                }
                Ok(hparams)
            }
        }
        d.deserialize_map(Entries)
    }
}

/// How `#[lightning_module]` carries a `#[skip]` field: by `Clone` where its type is (method
/// resolution tries [`Cloned`](skipped::Cloned), on `&Field`, before
/// [`Uncloned`](skipped::Uncloned), on `Field`), else not at all.
#[doc(hidden)]
pub mod skipped {
    /// A `#[skip]` field.
    pub struct Field<'a, T>(pub &'a T);

    /// A field whose type is `Clone`.
    pub trait Cloned<T> {
        /// A clone of the field.
        fn cloned(&self) -> Option<T>;
        /// Yes.
        fn clones(&self) -> bool;
    }
    impl<T: Clone> Cloned<T> for &Field<'_, T> {
        fn cloned(&self) -> Option<T> {
            Some(self.0.clone())
        }
        fn clones(&self) -> bool {
            true
        }
    }

    /// A field whose type is not `Clone`.
    pub trait Uncloned<T> {
        /// None.
        fn cloned(&self) -> Option<T>;
        /// No.
        fn clones(&self) -> bool;
    }
    impl<T> Uncloned<T> for Field<'_, T> {
        fn cloned(&self) -> Option<T> {
            None
        }
        fn clones(&self) -> bool {
            false
        }
    }
}

//! A module's tensors to and from a checkpoint's named tensor records, by fulmen's one walk
//! over a module ([`crate::walk`]; names are the dotted field paths, `layer_1.weight`).

use dfdx::nn::TensorCollection;
use dfdx::shapes::Dtype;
use safetensors::Dtype as SDtype;

use super::{Record, Records, Scalars};
use crate::walk::{self, Item, ItemMut};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// A dtype a checkpoint stores: f32 and f64 as themselves, half precision as F16. Reading
/// converts between them, so a checkpoint of any precision loads into a module of any other.
pub trait CkptDtype: Dtype + num_traits::Float {
    /// The safetensors dtype it is stored as.
    const DTYPE: SDtype;
    /// Appends its little-endian bytes to `out`.
    fn write(self, out: &mut Vec<u8>);
    /// The value of its little-endian bytes.
    fn read(bytes: &[u8]) -> Self;
}

impl CkptDtype for f32 {
    const DTYPE: SDtype = SDtype::F32;
    fn write(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes());
    }
    fn read(b: &[u8]) -> Self {
        f32::from_le_bytes(b.try_into().unwrap_or_default())
    }
}

impl CkptDtype for f64 {
    const DTYPE: SDtype = SDtype::F64;
    fn write(self, out: &mut Vec<u8>) {
        out.extend(self.to_le_bytes());
    }
    fn read(b: &[u8]) -> Self {
        f64::from_le_bytes(b.try_into().unwrap_or_default())
    }
}

impl CkptDtype for crate::device::Half {
    const DTYPE: SDtype = SDtype::F16;
    fn write(self, out: &mut Vec<u8>) {
        out.extend(self.0.to_le_bytes());
    }
    fn read(b: &[u8]) -> Self {
        dfdx::dtypes::AMP(half::f16::from_le_bytes(b.try_into().unwrap_or_default()))
    }
}

/// A dtype fulmen both trains in and stores.
pub(crate) trait Ckpt: CkptDtype + FloatDtype {}
impl<E: CkptDtype + FloatDtype> Ckpt for E {}

impl Record {
    pub(crate) fn from_values<E: CkptDtype>(shape: Vec<usize>, values: &[E]) -> Self {
        let mut data = Vec::with_capacity(std::mem::size_of_val(values));
        for &v in values {
            v.write(&mut data);
        }
        Record {
            dtype: E::DTYPE,
            shape,
            data,
        }
    }

    /// The values as `E`, converting between float widths; `name` is for the error.
    pub(crate) fn values<E: CkptDtype>(&self, name: &str) -> Result<Vec<E>> {
        let width = self.dtype.size();
        let chunks = self.data.chunks_exact(width);
        let convert = |v: f64| {
            E::from(v).ok_or_else(|| {
                Error::msg(format!(
                    "tensor `{name}`: a value does not fit the model's dtype"
                ))
            })
        };
        match self.dtype {
            d if d == E::DTYPE => Ok(chunks.map(E::read).collect()),
            SDtype::F64 => chunks.map(|b| convert(f64::read(b))).collect(),
            SDtype::F32 => chunks.map(|b| convert(f32::read(b) as f64)).collect(),
            SDtype::F16 => chunks
                .map(|b| {
                    convert(f64::from(half::f16::from_le_bytes(
                        b.try_into().unwrap_or_default(),
                    )))
                })
                .collect(),
            // Counters, as batch norm's `num_batches_tracked`.
            SDtype::I64 => chunks
                .map(|b| convert(i64::from_le_bytes(b.try_into().unwrap_or_default()) as f64))
                .collect(),
            other => Err(Error::msg(format!(
                "tensor `{name}` is stored as {other:?}; fulmen reads F16, F32, F64 and I64 tensors"
            ))),
        }
    }
}

/// A scalar that is state, stored as a tensor: a counter PyTorch keeps as an int64 buffer
/// (batch norm's `num_batches_tracked`). Every other scalar (batch norm's `epsilon` and
/// `momentum`) is configuration, kept in the header, so that the tensor names are PyTorch's
/// and a checkpoint loads into the PyTorch twin with `load_state_dict(strict=True)`.
fn is_counter(name: &str) -> bool {
    name.rsplit('.').next() == Some("num_batches_tracked")
}

/// A counter as PyTorch stores it: an int64 scalar.
fn counter_record(value: f64) -> Record {
    Record {
        dtype: SDtype::I64,
        shape: Vec::new(),
        data: (value as i64).to_le_bytes().to_vec(),
    }
}

/// Every tensor (parameters and buffers) of `module` by name into `into`; its configuration
/// scalars into `config`.
pub(crate) fn collect<E: Ckpt, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &M,
    into: &mut Records,
    config: &mut Scalars,
) -> Result<()> {
    collect_where(module, into, config, true)
}

/// The buffers (tensors not trained, as batch norm's statistics) and scalars of `module`.
pub(crate) fn collect_buffers<E: Ckpt, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &M,
    into: &mut Records,
    config: &mut Scalars,
) -> Result<()> {
    collect_where(module, into, config, false)
}

/// [`collect`], with the trainable tensors or without them.
fn collect_where<E: Ckpt, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &M,
    into: &mut Records,
    config: &mut Scalars,
    trained_too: bool,
) -> Result<()> {
    walk::read(module, |name, item| {
        let record = match item {
            Item::Tensor {
                trainable: true, ..
            } if !trained_too => return Ok(()),
            Item::Tensor { tensor, .. } => Record::from_values(tensor.dims(), &tensor.values()),
            Item::Scalar(value) => {
                let value = value.ok_or_else(|| {
                    Error::msg(format!("scalar `{name}` is not representable as f64"))
                })?;
                if !is_counter(&name) {
                    config.insert(name, value);
                    return Ok(());
                }
                counter_record(value)
            }
        };
        into.insert(name, record);
        Ok(())
    })
}

/// Loads every tensor of `module` from `records` and its configuration scalars from `config`,
/// checking names and shapes; the names of `records` the module used are returned so that the
/// caller can refuse leftovers. (Checkpoints of fulmen 0.1 held the scalars as tensors, and no
/// counter: both load.)
pub(crate) fn load<E: Ckpt, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    module: &mut M,
    records: &Records,
    config: &Scalars,
) -> Result<Vec<String>> {
    let mut used = Vec::new();
    walk::write(module, |name, item| {
        match item {
            ItemMut::Tensor { tensor, .. } => {
                let values = lookup(records, &name, &tensor.dims())?.values::<E>(&name)?;
                tensor.set_values(&values);
            }
            ItemMut::Scalar(scalar) => {
                if let Some(&value) = config.get(&name) {
                    *scalar = Some(value);
                    return Ok(());
                }
                if is_counter(&name) && !records.contains_key(&name) {
                    *scalar = Some(0.0);
                    return Ok(());
                }
                let value = lookup(records, &name, &[])?.values::<f64>(&name)?;
                *scalar = Some(
                    (value.first().copied())
                        .ok_or_else(|| Error::msg(format!("scalar `{name}` has no value")))?,
                );
            }
        }
        used.push(name);
        Ok(())
    })?;
    Ok(used)
}

/// Stored tensor `name`, which must have `shape` (the one the model expects).
pub(crate) fn lookup<'a>(records: &'a Records, name: &str, shape: &[usize]) -> Result<&'a Record> {
    let record = records.get(name).ok_or_else(|| {
        Error::msg(format!(
            "the checkpoint has no tensor `{name}` (the model has one of shape {shape:?})"
        ))
    })?;
    if record.shape != shape {
        return Err(Error::msg(format!(
            "tensor `{name}` has shape {:?} in the checkpoint but {shape:?} in the model",
            record.shape
        )));
    }
    Ok(record)
}

//! A module's tensors to and from a checkpoint's named tensor records, walking the module with
//! dfdx's `RecursiveWalker` (names are the dotted field paths, `layer_1.weight`).

use dfdx::nn::{
    RecursiveWalker, ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
    ViewTensorName, ViewTensorRef,
};
use dfdx::shapes::{Dtype, HasShape, Shape};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;
use safetensors::Dtype as SDtype;

use super::{Record, Records};
use crate::{Error, Result};

/// A dtype a checkpoint stores: f32 and f64 as themselves, half precision as F16. Reading
/// converts between them, so a checkpoint of any precision loads into a module of any other.
pub trait CkptDtype: Dtype + num_traits::Float {
    const DTYPE: SDtype;
    fn write(self, out: &mut Vec<u8>);
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
            other => Err(Error::msg(format!(
                "tensor `{name}` is stored as {other:?}; fulmen reads F16, F32 and F64 tensors"
            ))),
        }
    }
}

/// Every tensor (parameters and buffers) and scalar of `module`, by name.
pub(crate) fn collect<E: CkptDtype, D: Device<E>, M: TensorCollection<E, D>>(
    module: &M,
    into: &mut Records,
) -> Result<()> {
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Collect {
            into,
            buffers_only: false,
        },
    })
    .map(|_| ())
}

/// The tensors of `module` that are not trained (batch norm's running statistics), by name.
pub(crate) fn collect_buffers<E: CkptDtype, D: Device<E>, M: TensorCollection<E, D>>(
    module: &M,
) -> Result<Records> {
    let mut into = Records::new();
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Collect {
            into: &mut into,
            buffers_only: true,
        },
    })?;
    Ok(into)
}

struct Collect<'a> {
    into: &'a mut Records,
    buffers_only: bool,
}

impl<E: CkptDtype, D: Device<E>> TensorVisitor<E, D> for Collect<'_> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = Error;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, D>,
        (t, name): (&Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>> {
        if !(self.buffers_only && opts.do_gradient_update) {
            let shape = t.shape().concrete().into_iter().collect();
            self.into
                .insert(name, Record::from_values(shape, &t.as_vec()));
        }
        Ok(None)
    }

    fn visit_scalar<N: num_traits::NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, name): (&N, String),
    ) -> Result<Option<N>> {
        if self.buffers_only {
            return Ok(None);
        }
        let value = n
            .to_f64()
            .ok_or_else(|| Error::msg(format!("scalar `{name}` is not representable as f64")))?;
        self.into
            .insert(name, Record::from_values(Vec::new(), &[value]));
        Ok(None)
    }
}

/// Loads every tensor of `module` from `records`, checking names and shapes; the names of
/// `records` the module used are returned so that the caller can refuse leftovers.
pub(crate) fn load<E: CkptDtype, D: Device<E>, M: TensorCollection<E, D>>(
    module: &mut M,
    records: &Records,
) -> Result<Vec<String>> {
    let mut loader = Load {
        records,
        used: Vec::new(),
        only_present: false,
    };
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut loader,
    })?;
    Ok(loader.used)
}

/// Loads the tensors of `module` that `records` has (by name; shapes must agree), leaving the
/// others as they are.
pub(crate) fn load_present<E: CkptDtype, D: Device<E>, M: TensorCollection<E, D>>(
    module: &mut M,
    records: &Records,
) -> Result<()> {
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Load {
            records,
            used: Vec::new(),
            only_present: true,
        },
    })
    .map(|_| ())
}

struct Load<'a> {
    records: &'a Records,
    used: Vec<String>,
    only_present: bool,
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

impl Load<'_> {
    fn record(&mut self, name: &str, shape: &[usize]) -> Result<&Record> {
        self.used.push(name.to_string());
        lookup(self.records, name, shape)
    }
}

impl<E: CkptDtype, D: Device<E>> TensorVisitor<E, D> for Load<'_> {
    type Viewer = (ViewTensorMut, ViewTensorName);
    type Err = Error;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, E, D>,
        (t, name): (&mut Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>> {
        if self.only_present && !self.records.contains_key(&name) {
            return Ok(None);
        }
        let shape: Vec<usize> = t.shape().concrete().into_iter().collect();
        let values = self.record(&name, &shape)?.values::<E>(&name)?;
        t.copy_from(&values);
        Ok(None)
    }

    fn visit_scalar<N: num_traits::NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, name): (&mut N, String),
    ) -> Result<Option<N>> {
        if self.only_present && !self.records.contains_key(&name) {
            return Ok(None);
        }
        let values = self.record(&name, &[])?.values::<f64>(&name)?;
        *n = values
            .first()
            .and_then(|&v| N::from(v))
            .ok_or_else(|| Error::msg(format!("scalar `{name}` cannot be read back")))?;
        Ok(None)
    }
}

/// Every tensor of `module`: name, shape and whether the optimizer trains it.
pub(crate) fn describe<E: CkptDtype, D: Device<E>, M: TensorCollection<E, D>>(
    module: &M,
) -> Result<Vec<crate::trainer::ParamInfo>> {
    let mut out = Describe(Vec::new());
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut out,
    })?;
    Ok(out.0)
}

struct Describe(Vec<crate::trainer::ParamInfo>);

impl<E: CkptDtype, D: Device<E>> TensorVisitor<E, D> for Describe {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = Error;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        opts: TensorOptions<S, E, D>,
        (t, name): (&Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>> {
        self.0.push(crate::trainer::ParamInfo {
            name,
            shape: t.shape().concrete().into_iter().collect(),
            trainable: opts.do_gradient_update,
        });
        Ok(None)
    }
}

//! A module's tensors to and from a checkpoint's named tensor records, walking the module with
//! dfdx's `RecursiveWalker` (names are the dotted field paths, `layer_1.weight`).

use dfdx::nn::{
    RecursiveWalker, ScalarOptions, TensorCollection, TensorOptions, TensorVisitor, ViewTensorMut,
    ViewTensorName, ViewTensorRef,
};
use dfdx::shapes::{Dtype, HasShape, Shape};
use dfdx::tensor::safetensors::SafeDtype;
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;
use safetensors::Dtype as SDtype;

use super::{Record, Records};
use crate::{Error, Result};

/// A dtype a checkpoint stores: dfdx's safetensors dtypes, read back from either float width.
pub trait CkptDtype: Dtype + SafeDtype + num_traits::Float {}
impl<E: Dtype + SafeDtype + num_traits::Float> CkptDtype for E {}

impl Record {
    pub(crate) fn from_values<E: CkptDtype>(shape: Vec<usize>, values: &[E]) -> Self {
        let mut data = Vec::with_capacity(std::mem::size_of_val(values));
        for &v in values {
            data.extend(v.to_le_bytes());
        }
        Record {
            dtype: E::safe_dtype(),
            shape,
            data,
        }
    }

    /// The values as `E`, converting between float widths; `name` is for the error.
    pub(crate) fn values<E: CkptDtype>(&self, name: &str) -> Result<Vec<E>> {
        let width = self.dtype.size();
        let read = |i: usize| -> f64 {
            let b = &self.data[i * width..(i + 1) * width];
            match self.dtype {
                SDtype::F64 => f64::from_le_bytes(b.try_into().unwrap_or_default()),
                _ => f32::from_le_bytes(b.try_into().unwrap_or_default()) as f64,
            }
        };
        if !matches!(self.dtype, SDtype::F32 | SDtype::F64) {
            return Err(Error::msg(format!(
                "tensor `{name}` is stored as {:?}; fulmen reads F32 and F64 tensors",
                self.dtype
            )));
        }
        if self.dtype == E::safe_dtype() {
            return Ok((0..self.data.len() / width)
                .map(|i| E::from_le_bytes(&self.data, i * width))
                .collect());
        }
        (0..self.data.len() / width)
            .map(|i| {
                E::from(read(i)).ok_or_else(|| {
                    Error::msg(format!(
                        "tensor `{name}`: a value does not fit the model's dtype"
                    ))
                })
            })
            .collect()
    }
}

/// Every tensor (parameters and buffers) and scalar of `module`, by name.
pub(crate) fn collect<E: CkptDtype, D: Device<E>, M: TensorCollection<E, D>>(
    module: &M,
    into: &mut Records,
) -> Result<()> {
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut Collect(into),
    })
    .map(|_| ())
}

struct Collect<'a>(&'a mut Records);

impl<E: CkptDtype, D: Device<E>> TensorVisitor<E, D> for Collect<'_> {
    type Viewer = (ViewTensorRef, ViewTensorName);
    type Err = Error;
    type E2 = E;
    type D2 = D;

    fn visit<S: Shape>(
        &mut self,
        _: TensorOptions<S, E, D>,
        (t, name): (&Tensor<S, E, D>, String),
    ) -> Result<Option<Tensor<S, E, D>>> {
        let shape = t.shape().concrete().into_iter().collect();
        self.0.insert(name, Record::from_values(shape, &t.as_vec()));
        Ok(None)
    }

    fn visit_scalar<N: num_traits::NumCast>(
        &mut self,
        _: ScalarOptions<N>,
        (n, name): (&N, String),
    ) -> Result<Option<N>> {
        let value = n
            .to_f64()
            .ok_or_else(|| Error::msg(format!("scalar `{name}` is not representable as f64")))?;
        self.0
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
    };
    M::iter_tensors(&mut RecursiveWalker {
        m: (module, String::new()),
        f: &mut loader,
    })?;
    Ok(loader.used)
}

struct Load<'a> {
    records: &'a Records,
    used: Vec<String>,
}

impl Load<'_> {
    fn record(&mut self, name: &str, shape: &[usize]) -> Result<&Record> {
        let record = self.records.get(name).ok_or_else(|| {
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
        self.used.push(name.to_string());
        Ok(record)
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

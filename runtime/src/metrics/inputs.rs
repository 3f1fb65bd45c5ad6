//! What a metric is updated with, brought to the host: predictions ([`Preds`]: scores per
//! class or label, or class indices) and targets ([`Targets`]: class indices, or 0/1 per
//! label). Tensors of any dtype on any device, labels, and plain slices all convert.

use dfdx::shapes::{Const, Dtype, HasShape, Shape};
use dfdx::tensor::{NoneTape, Tape, Tensor};
use dfdx::tensor_ops::Device;
use num_traits::ToPrimitive;

use super::scores::Scores;
use crate::data::Labels;
use crate::device::{FloatDtype, HostAccess};
use crate::Result;

/// Predictions on the host.
#[derive(Debug, Clone, PartialEq)]
pub enum HostPreds {
    /// A score (logit or probability) per class or label, or one per sample for binary.
    Scores(Scores),
    /// A class index per sample.
    Classes(Vec<usize>),
}

impl HostPreds {
    /// `rows × cols` scores, row-major; an error unless there are `rows × cols` values.
    pub fn scores<E: FloatDtype>(rows: usize, cols: usize, values: Vec<E>) -> Result<Self> {
        Scores::new(rows, cols, values).map(HostPreds::Scores)
    }
    /// How many samples.
    pub fn rows(&self) -> usize {
        match self {
            HostPreds::Scores(s) => s.rows(),
            HostPreds::Classes(c) => c.len(),
        }
    }
}

/// Targets on the host: `rows × cols` numbers, row-major (one column of class indices or of
/// values, or a 0/1 column per label).
#[derive(Debug, Clone, PartialEq)]
pub struct HostTargets {
    /// Samples.
    pub rows: usize,
    /// Targets per sample.
    pub cols: usize,
    /// `rows × cols` values.
    pub values: Vec<f64>,
}

impl HostTargets {
    /// One column of `values`.
    pub fn column(values: Vec<f64>) -> Self {
        Self {
            rows: values.len(),
            cols: 1,
            values,
        }
    }
}

/// `t` as a class of `0..classes`, if it is one.
pub(crate) fn class_of(t: f64, classes: usize) -> Option<usize> {
    let whole = t.fract() == 0.0 && t >= 0.0 && t < classes as f64;
    whole.then_some(t as usize)
}

/// `t` as a label's target: 0 is false, 1 true, anything else none.
pub(crate) fn flag_of(t: f64) -> Option<bool> {
    (t == 0.0 || t == 1.0).then_some(t == 1.0)
}

/// What predictions a metric takes: a tensor of scores (`(batch, C)` for classes or labels,
/// `(batch,)` for one binary score), score slices, or class indices (`&[usize]`).
pub trait Preds {
    /// The predictions on the host (a device's copy can fail).
    fn host(&self) -> Result<HostPreds>;
}

/// What targets a metric takes: [`Labels`], class indices, a tensor of 0/1 (`(batch,)` for
/// binary, `(batch, L)` for labels), or values (a regression's).
pub trait Targets {
    /// The targets on the host.
    fn host(&self) -> HostTargets;
}

impl<const C: usize, E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>> Preds
    for Tensor<(usize, Const<C>), E, D, T>
{
    fn host(&self) -> Result<HostPreds> {
        let t = self.retaped::<NoneTape>();
        Scores::of_tensor(t.shape().0, C, &t).map(HostPreds::Scores)
    }
}

impl<E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>> Preds for Tensor<(usize,), E, D, T> {
    fn host(&self) -> Result<HostPreds> {
        let t = self.retaped::<NoneTape>();
        Scores::of_tensor(t.shape().0, 1, &t).map(HostPreds::Scores)
    }
}

impl Preds for [usize] {
    fn host(&self) -> Result<HostPreds> {
        Ok(HostPreds::Classes(self.to_vec()))
    }
}

impl Preds for Vec<usize> {
    fn host(&self) -> Result<HostPreds> {
        Ok(HostPreds::Classes(self.clone()))
    }
}

impl<const C: usize> Preds for [[f32; C]] {
    fn host(&self) -> Result<HostPreds> {
        HostPreds::scores(self.len(), C, self.iter().flatten().copied().collect())
    }
}

impl Preds for [f32] {
    fn host(&self) -> Result<HostPreds> {
        HostPreds::scores(self.len(), 1, self.to_vec())
    }
}

impl Preds for [f64] {
    fn host(&self) -> Result<HostPreds> {
        HostPreds::scores(self.len(), 1, self.to_vec())
    }
}

impl<P: Preds + ?Sized> Preds for &P {
    fn host(&self) -> Result<HostPreds> {
        (**self).host()
    }
}

impl<const C: usize, D> Targets for Labels<C, D> {
    fn host(&self) -> HostTargets {
        HostTargets::column(self.indices().iter().map(|&i| i as f64).collect())
    }
}

impl Targets for [usize] {
    fn host(&self) -> HostTargets {
        HostTargets::column(self.iter().map(|&i| i as f64).collect())
    }
}

impl Targets for Vec<usize> {
    fn host(&self) -> HostTargets {
        Targets::host(self.as_slice())
    }
}

impl Targets for [i64] {
    fn host(&self) -> HostTargets {
        HostTargets::column(self.iter().map(|&i| i as f64).collect())
    }
}

impl Targets for [bool] {
    fn host(&self) -> HostTargets {
        HostTargets::column(self.iter().map(|&b| f64::from(u8::from(b))).collect())
    }
}

impl Targets for [f64] {
    fn host(&self) -> HostTargets {
        HostTargets::column(self.to_vec())
    }
}

impl Targets for [f32] {
    fn host(&self) -> HostTargets {
        HostTargets::column(self.iter().map(|&v| f64::from(v)).collect())
    }
}

impl<const L: usize> Targets for [[bool; L]] {
    fn host(&self) -> HostTargets {
        HostTargets {
            rows: self.len(),
            cols: L,
            values: (self.iter().flatten())
                .map(|&b| f64::from(u8::from(b)))
                .collect(),
        }
    }
}

impl<E: Dtype + ToPrimitive, D: Device<E>, T> Targets for Tensor<(usize,), E, D, T> {
    fn host(&self) -> HostTargets {
        HostTargets::column(f64s(self))
    }
}

impl<const L: usize, E: Dtype + ToPrimitive, D: Device<E>, T> Targets
    for Tensor<(usize, Const<L>), E, D, T>
{
    fn host(&self) -> HostTargets {
        HostTargets {
            rows: self.shape().0,
            cols: L,
            values: f64s(self),
        }
    }
}

impl<T: Targets + ?Sized> Targets for &T {
    fn host(&self) -> HostTargets {
        (**self).host()
    }
}

/// A tensor's values in f64 (none for an empty tensor, which dfdx's `as_vec` cannot read).
pub(crate) fn f64s<S: Shape, E: Dtype + ToPrimitive, D: Device<E>, T>(
    t: &Tensor<S, E, D, T>,
) -> Vec<f64> {
    if t.shape().num_elements() == 0 {
        return Vec::new();
    }
    (t.as_vec().into_iter())
        .map(|x| x.to_f64().unwrap_or(f64::NAN))
        .collect()
}

impl Preds for HostPreds {
    fn host(&self) -> Result<HostPreds> {
        Ok(self.clone())
    }
}

impl Targets for HostTargets {
    fn host(&self) -> HostTargets {
        self.clone()
    }
}

use dfdx::shapes::Const;
use dfdx::tensor::{Tensor, TensorFrom};
use dfdx::tensor_ops::Device;

use super::{Class, Labels};
use crate::FloatDtype;

/// A classification batch: `N` features per row and labels in `0..C`.
pub type ClassBatch<const N: usize, const C: usize, E, D> =
    (Tensor<(usize, Const<N>), E, D>, Labels<C, D>);

/// A regression batch: `N` inputs and `M` targets per row.
pub type RegressionBatch<const N: usize, const M: usize, E, D> = (
    Tensor<(usize, Const<N>), E, D>,
    Tensor<(usize, Const<M>), E, D>,
);

/// How a batch of samples becomes the model's batch type `B` on device `D`.
#[diagnostic::on_unimplemented(
    message = "the data yields samples of type `{Self}`, which do not collate into the model's batch type `{B}`",
    label = "the data and the model disagree",
    note = "a sample `([f32; N], Class<C>)` collates into `ClassBatch<N, C, E, D>`, `([f32; N], [f32; M])` into `RegressionBatch<N, M, E, D>`, `[f32; N]` into `Tensor<(usize, Const<N>), E, D>`, `(Image<C>, Class<K>)` into `ImageBatch<C, K, E, D>`: check the feature and class counts of the data module against the model's `training_step`"
)]
pub trait Collate<B, D>: Sized {
    /// Stacks `samples` (at least one) into a batch on `device`.
    fn collate(samples: Vec<Self>, device: &D) -> B;
}

fn rows<E: FloatDtype, D: Device<E>, const N: usize>(
    samples: impl ExactSizeIterator<Item = [f32; N]>,
    device: &D,
) -> Tensor<(usize, Const<N>), E, D> {
    let n = samples.len();
    let mut data = Vec::with_capacity(n * N);
    for row in samples {
        data.extend(row.iter().map(|&v| E::from(v).unwrap_or_else(E::nan)));
    }
    device.tensor((data, (n, Const::<N>)))
}

impl<E: FloatDtype, D: Device<E>, const N: usize> Collate<Tensor<(usize, Const<N>), E, D>, D>
    for [f32; N]
{
    fn collate(samples: Vec<Self>, device: &D) -> Tensor<(usize, Const<N>), E, D> {
        rows(samples.into_iter(), device)
    }
}

impl<E: FloatDtype, D: Device<E>, const N: usize, const C: usize> Collate<ClassBatch<N, C, E, D>, D>
    for ([f32; N], Class<C>)
{
    fn collate(samples: Vec<Self>, device: &D) -> ClassBatch<N, C, E, D> {
        let labels = samples.iter().map(|(_, c)| c.index()).collect();
        let x = rows(samples.into_iter().map(|(x, _)| x), device);
        (x, Labels::new(labels, device.clone()))
    }
}

/// The features of labeled samples, their labels dropped: a `predict_step` that takes
/// features alone predicts on a labeled split as it is.
impl<E: FloatDtype, D: Device<E>, const N: usize, const C: usize>
    Collate<Tensor<(usize, Const<N>), E, D>, D> for ([f32; N], Class<C>)
{
    fn collate(samples: Vec<Self>, device: &D) -> Tensor<(usize, Const<N>), E, D> {
        rows(samples.into_iter().map(|(x, _)| x), device)
    }
}

impl<E: FloatDtype, D: Device<E>, const N: usize, const M: usize>
    Collate<RegressionBatch<N, M, E, D>, D> for ([f32; N], [f32; M])
{
    fn collate(samples: Vec<Self>, device: &D) -> RegressionBatch<N, M, E, D> {
        let x = rows(samples.iter().map(|(x, _)| *x), device);
        let y = rows(samples.into_iter().map(|(_, y)| y), device);
        (x, y)
    }
}

impl<E: FloatDtype, D: Device<E>, const N: usize>
    Collate<(Tensor<(usize, Const<N>), E, D>, Vec<usize>), D> for ([f32; N], usize)
{
    fn collate(samples: Vec<Self>, device: &D) -> (Tensor<(usize, Const<N>), E, D>, Vec<usize>) {
        let labels = samples.iter().map(|(_, y)| *y).collect();
        (rows(samples.into_iter().map(|(x, _)| x), device), labels)
    }
}

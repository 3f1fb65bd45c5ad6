use dfdx::data::OneHotEncode;
use dfdx::shapes::{Const, Dtype};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

/// A class label known to lie in `0..C`: the number of classes is part of the sample's type,
/// so a data set of 4 classes cannot feed a model that predicts 3.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Class<const C: usize>(usize);

impl<const C: usize> Class<C> {
    /// `Some` when `index < C`.
    pub fn new(index: usize) -> Option<Self> {
        (index < C).then_some(Class(index))
    }

    /// The class index, in `0..C`.
    pub fn index(self) -> usize {
        self.0
    }
}

/// The labels of a batch: class indices in `0..C`, on the batch's device.
#[derive(Debug, Clone)]
pub struct Labels<const C: usize, D> {
    indices: Vec<usize>,
    device: D,
}

impl<const C: usize, D> Labels<C, D> {
    /// Labels from class indices on `device`; each must be in `0..C` (checked in debug builds).
    pub fn new(indices: Vec<usize>, device: D) -> Self {
        debug_assert!(indices.iter().all(|&i| i < C));
        Self { indices, device }
    }

    /// The class indices, one per sample.
    pub fn indices(&self) -> &[usize] {
        &self.indices
    }

    /// The class indices, taking the labels apart.
    pub fn into_indices(self) -> Vec<usize> {
        self.indices
    }

    /// The number of labels (the batch's size).
    pub fn len(&self) -> usize {
        self.indices.len()
    }

    /// Whether there are no labels.
    pub fn is_empty(&self) -> bool {
        self.indices.is_empty()
    }

    /// The labels as one-hot rows, the target of `cross_entropy_with_logits_loss`.
    pub fn one_hot<E: Dtype>(&self) -> Tensor<(usize, Const<C>), E, D>
    where
        D: Device<E> + OneHotEncode<E>,
    {
        self.device.one_hot_encode(Const::<C>, self.indices.clone())
    }
}

use std::sync::Arc;

/// Random access to samples, as PyTorch's map-style `Dataset`.
pub trait Dataset: Send + Sync {
    /// One sample.
    type Item: Send + 'static;
    /// The number of samples.
    fn len(&self) -> usize;
    /// Sample `index`, `0 <= index < len()`.
    fn get(&self, index: usize) -> Self::Item;
    /// Sample `index` as epoch `epoch` sees it: the same as [`get`](Self::get) unless the
    /// dataset draws something per epoch (augmentation), which it then derives from the
    /// epoch and the index alone, so that loader workers and resumed runs agree.
    fn get_in_epoch(&self, index: usize, _epoch: usize) -> Self::Item {
        self.get(index)
    }
    /// Whether the dataset has no samples.
    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Samples held in memory (PyTorch's `TensorDataset`). Cloning shares the samples.
#[derive(Debug)]
pub struct InMemoryDataset<T> {
    items: Arc<[T]>,
}

impl<T> Clone for InMemoryDataset<T> {
    fn clone(&self) -> Self {
        Self {
            items: self.items.clone(),
        }
    }
}

impl<T> InMemoryDataset<T> {
    /// A dataset of `items`, in order.
    pub fn new(items: Vec<T>) -> Self {
        Self {
            items: items.into(),
        }
    }

    /// The samples, in order.
    pub fn items(&self) -> &[T] {
        &self.items
    }
}

impl<T: Clone + Send + Sync + 'static> Dataset for InMemoryDataset<T> {
    type Item = T;
    fn len(&self) -> usize {
        self.items.len()
    }
    fn get(&self, index: usize) -> T {
        self.items[index].clone()
    }
}

impl<D: Dataset + ?Sized> Dataset for Arc<D> {
    type Item = D::Item;
    fn len(&self) -> usize {
        (**self).len()
    }
    fn get(&self, index: usize) -> Self::Item {
        (**self).get(index)
    }
    fn get_in_epoch(&self, index: usize, epoch: usize) -> Self::Item {
        (**self).get_in_epoch(index, epoch)
    }
}

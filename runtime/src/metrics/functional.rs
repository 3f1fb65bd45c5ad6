//! Metrics of one batch, computed on the host (no state): what a step can log as a number.

use dfdx::shapes::{Const, Dtype};
use dfdx::tensor::Tensor;
use dfdx::tensor_ops::Device;

use crate::data::Labels;

/// The fraction of rows whose largest logit is at the label's index.
///
/// ```
/// use fulmen::prelude::*;
/// let dev = Cpu::default();
/// let logits = dev.tensor((vec![2.0f32, 0.0, 0.0, 1.0], (2, Const::<2>)));
/// let labels = Labels::<2, Cpu>::new(vec![0, 0], dev.clone());
/// assert_eq!(accuracy(&logits, &labels), 0.5);
/// ```
pub fn accuracy<const C: usize, E: Dtype + PartialOrd, D: Device<E>, T>(
    logits: &Tensor<(usize, Const<C>), E, D, T>,
    labels: &Labels<C, D>,
) -> f64 {
    let values = logits.as_vec();
    if labels.is_empty() {
        return 0.0;
    }
    let correct = values
        .chunks_exact(C)
        .zip(labels.indices())
        .filter(|(row, &label)| {
            let best = row
                .iter()
                .enumerate()
                .fold(0, |best, (i, v)| if *v > row[best] { i } else { best });
            best == label
        })
        .count();
    correct as f64 / labels.len() as f64
}

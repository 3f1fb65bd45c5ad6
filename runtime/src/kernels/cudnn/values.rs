//! A tensor's values in a buffer of fulmen's own, and a buffer of fulmen's own as a tensor,
//! through dfdx's public API alone (its tensors' data is private).
//!
//! - In: the gradient of `Σ u·t` with respect to `u` is `t`, exactly, whatever `u` holds (each
//!   value times a gradient of one, added to a zeroed buffer: only a zero's sign is lost);
//!   `Gradients::get_or_alloc_mut` hands out that gradient's buffer, which is swapped out for
//!   fulmen to keep. `u` is zeros, set on the device. A few passes over `t`, and dfdx allocates
//!   three more buffers of its size while the backward runs (the product, its gradient and
//!   `t`'s, which nobody reads).
//! - Out: a buffer swapped into a `Gradients` as the gradient of a tensor of the wanted shape
//!   comes back from `Gradients::get` as a tensor of that shape (one copy).
//!
//! Generic over the device, so the CPU's tests check what CUDA runs.

use dfdx::shapes::{HasShape, Rank0, Shape};
use dfdx::tensor::{Gradients, Storage, Tensor, Trace};
use dfdx::tensor_ops::{Backward, SumTo, TryMul};

use crate::device::{FloatDtype, HostAccess};
use crate::Result;

/// `t`'s values, in a buffer of `t`'s length in the device's own storage type.
pub(crate) fn values_of<S: Shape, E: FloatDtype, D: HostAccess<E>>(
    t: &Tensor<S, E, D>,
) -> Result<<D as Storage<E>>::Vec> {
    let dev = t.device().clone();
    // Zeros, not ones: dfdx makes ones on the host and copies them over.
    let u: Tensor<S, E, D> = dev.try_zeros_like(t.shape())?;
    let product: Tensor<Rank0, E, D, _> = u.clone().leaky_traced().try_mul(t.clone())?.try_sum()?;
    let mut grads = product.try_backward()?;
    // Swapped out for a buffer of one value, which `grads` drops with the rest.
    let mut kept = <D as Storage<E>>::try_alloc_len(&dev, 1)?;
    std::mem::swap(&mut kept, grads.get_or_alloc_mut(&u)?);
    Ok(kept)
}

/// Frees `spent`, an op's output's gradient, now rather than when the whole backward ends: a
/// one-value buffer takes its place. Every op that read the output has added to it before the
/// op's own backward runs, and nothing reads it again (the composed kernels' segments do the
/// same).
pub(crate) fn release<E, D: Storage<E>>(spent: &mut D::Vec, dev: &D) -> Result<(), D::Err> {
    let mut one = dev.try_alloc_len(1)?;
    std::mem::swap(spent, &mut one);
    Ok(())
}

/// `buf` (as many values as `shape` has, laid out contiguously) as a tensor of `shape`.
pub(crate) fn tensor_of<S: Shape, E: FloatDtype, D: HostAccess<E>>(
    dev: &D,
    shape: S,
    mut buf: <D as Storage<E>>::Vec,
) -> Result<Tensor<S, E, D>> {
    let key: Tensor<S, E, D> = dev.try_zeros_like(&shape)?;
    let mut grads = Gradients::leaky();
    std::mem::swap(grads.get_or_alloc_mut(&key)?, &mut buf);
    Ok(grads.get(&key))
}

#[cfg(test)]
mod tests {
    use dfdx::prelude::*;

    use super::*;
    use crate::device::Half;

    /// Every value comes through both ways unchanged, in every dtype, the extremes included
    /// (a product or sum over them overflows; the values do not); −0 comes back as 0.
    #[test]
    fn values_go_out_and_back_unchanged() {
        let dev = Cpu::default();
        let raw = [
            1.5,
            -0.0,
            f64::MAX,
            f64::MIN_POSITIVE / 4.0,
            -3.25e-300,
            7.0,
        ];
        fn check<E: FloatDtype>(dev: &Cpu, raw: &[f64])
        where
            Cpu: HostAccess<E>,
        {
            let values: Vec<E> = raw
                .iter()
                .map(|&v| E::from(v).unwrap_or(E::max_value()))
                .collect();
            let t: Tensor<(usize, Const<3>), E, Cpu> =
                dev.tensor_from_vec(values.clone(), (2, Const));
            let buf = values_of(&t).unwrap();
            let back = tensor_of(dev, *t.shape(), buf).unwrap();
            let same =
                |a: &[E], b: &[E]| a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x == y);
            assert!(
                same(&back.as_vec(), &values),
                "{:?}",
                back.as_vec().iter().map(|v| v.to_f64()).collect::<Vec<_>>()
            );
            assert_eq!(back.shape(), t.shape());
        }
        check::<f64>(&dev, &raw);
        check::<f32>(&dev, &raw);
        check::<Half>(&dev, &raw);
    }

    /// A permuted view comes out in its logical order, as the kernels read a contiguous one.
    #[test]
    fn a_view_comes_out_contiguous() {
        let dev = Cpu::default();
        let t: Tensor<Rank2<2, 3>, f32, Cpu> = dev.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]]);
        let p = t.permute::<Rank2<3, 2>, _>();
        let back = tensor_of(&dev, Rank2::<3, 2>::default(), values_of(&p).unwrap()).unwrap();
        assert_eq!(back.array(), [[1.0, 4.0], [2.0, 5.0], [3.0, 6.0]]);
    }
}

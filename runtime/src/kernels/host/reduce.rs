//! Sums over gradients on the host: Σ g² and the finiteness probe of one gradient, and
//! 16-mixed's unscaling through host copies.

use dfdx::tensor::Gradients;
use num_traits::ToPrimitive;

use super::Host;
use crate::device::{is_half, FloatDtype, Half, HostAccess};
use crate::kernels::{GradSum, Reduce, Scratch, Total, Unscale};
use crate::walk::{AnyTensor, Params};
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Reduce<E, D> for Host {
    fn grad_sum(
        what: GradSum,
        param: &dyn AnyTensor<E, D>,
        grads: &mut Gradients<E, D>,
        total: &mut Total<E, D>,
    ) -> Result<()> {
        param.with_grad(grads, &mut |g| {
            total.add_host(match what {
                GradSum::Squares => sum_of_squares(g),
                GradSum::FiniteProbe if g.iter().all(|v| v.is_finite()) => 0.0,
                GradSum::FiniteProbe => f64::NAN,
            })
        })
    }
}

/// Σ v² of one tensor, in eight lanes (the lanes let the compiler vectorize) of the tensor's
/// dtype, or of f32 for half precision (whose squares overflow at 256), as PyTorch
/// accumulates; then in f64 across tensors.
pub(crate) fn sum_of_squares<E: FloatDtype>(g: &[E]) -> f64 {
    if is_half::<E>() {
        return in_lanes(g, |v| v.to_f32().unwrap_or(f32::NAN));
    }
    in_lanes(g, |v| v)
}

/// Σ widen(v)² in eight lanes of the widened type.
fn in_lanes<E: Copy, A: num_traits::Float + std::ops::AddAssign>(
    g: &[E],
    widen: impl Fn(E) -> A,
) -> f64 {
    let mut lanes = [A::zero(); 8];
    let chunks = g.chunks_exact(8);
    let rest = chunks.remainder();
    for c in chunks {
        for (lane, &v) in lanes.iter_mut().zip(c) {
            let v = widen(v);
            *lane += v * v;
        }
    }
    let tail = rest.iter().fold(A::zero(), |a, &v| a + widen(v) * widen(v));
    lanes
        .iter()
        .chain([&tail])
        .map(|v| v.to_f64().unwrap_or(f64::NAN))
        .sum()
}

impl<D: HostAccess<f32> + HostAccess<Half>> Unscale<D> for Host {
    /// Through host copies (`scratch`, reused between steps): every half gradient times `inv`
    /// in f32, then, if all are finite, added to the gradients of `into`.
    fn unscale(
        from: &dyn Params<Half, D>,
        from_grads: &mut Gradients<Half, D>,
        into: &dyn Params<f32, D>,
        grads: &mut Gradients<f32, D>,
        inv: f64,
        scratch: &mut Scratch<f32>,
    ) -> Result<bool> {
        let (mut finite, mut i) = (true, 0);
        from.each(&mut |_, tensor| {
            tensor.with_grad(from_grads, &mut |g| {
                if scratch.len() <= i {
                    scratch.push(Vec::new());
                }
                let out = &mut scratch[i];
                out.clear();
                out.extend(g.iter().map(|v| {
                    let x = (v.to_f64().unwrap_or(f64::NAN) * inv) as f32;
                    finite &= x.is_finite();
                    x
                }));
                i += 1;
            })
        })?;
        if !finite {
            return Ok(false);
        }
        let mut j = 0;
        into.each(&mut |_, tensor| {
            let values = scratch.get(j);
            j += 1;
            tensor.with_grad(grads, &mut |g| {
                if let Some(values) = values {
                    for (a, &b) in g.iter_mut().zip(values) {
                        *a += b;
                    }
                }
            })
        })?;
        Ok(true)
    }
}

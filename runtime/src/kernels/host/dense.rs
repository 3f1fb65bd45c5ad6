//! The host kernel of a dense layer, `x · Wᵀ + b`: f32 on a CPU with AVX-512 or AVX2, the
//! three products of a training step (output, input gradient, weight gradient) on fulmen's
//! tiles ([`tiled::matmul`](super::tiled::matmul)), each reading its operands in place,
//! transposed or not, across rayon's threads; every other dtype and CPU through dfdx's ops
//! ([`Composed`]).

use dfdx::shapes::{Const, Dim, Rank1, Rank2};
use dfdx::tensor::{Tape, Tensor};

use super::Host;
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::{Composed, Dense};
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Dense<E, D> for Host {
    fn linear<B: Dim, const I: usize, const O: usize, T: Tape<E, D>>(
        x: Tensor<(B, Const<I>), E, D, T>,
        weight: &Tensor<Rank2<O, I>, E, D>,
        bias: Option<&Tensor<Rank1<O>, E, D>>,
    ) -> Result<Tensor<(B, Const<O>), E, D, T>> {
        #[cfg(target_arch = "x86_64")]
        if std::any::TypeId::of::<E>() == std::any::TypeId::of::<f32>() && super::tiled::available()
        {
            return on_tiles::linear(x, weight, bias);
        }
        <Composed as Dense<E, D>>::linear(x, weight, bias)
    }
}

#[cfg(target_arch = "x86_64")]
mod on_tiles {
    //! f32 on the tiled products.

    use dfdx::shapes::HasShape;
    use dfdx::tensor::{PutTape, SplitTape};

    use super::*;
    use crate::kernels::host::tiled::{matmul, matmul_packed, Mat};
    use crate::kernels::host::values::{accumulate_grad, on_backward, Values, ValuesMut};
    use crate::Error;

    /// The layer, its backward on the tape.
    pub fn linear<
        E: FloatDtype,
        D: HostAccess<E>,
        B: Dim,
        const I: usize,
        const O: usize,
        T: Tape<E, D>,
    >(
        x: Tensor<(B, Const<I>), E, D, T>,
        weight: &Tensor<Rank2<O, I>, E, D>,
        bias: Option<&Tensor<Rank1<O>, E, D>>,
    ) -> Result<Tensor<(B, Const<O>), E, D, T>> {
        // Gradients nobody reads are not computed: a step's input's, a frozen weight's.
        let want_dx = !crate::inputs::is_input(&x);
        let want_dw = !crate::freeze::is_frozen(weight);
        let bias_grad = bias.filter(|b| !crate::freeze::is_frozen(*b)).cloned();
        let (x, mut tape) = x.split_tape();
        let batch = x.shape().0.size();
        let (Values::F32(xs), Values::F32(ws)) = (Values::of(&x)?, Values::of(weight)?) else {
            return Err(not_f32());
        };
        // y = x · Wᵀ + b: each row starts as the bias, and the product adds to it.
        let mut y = match bias.map(Values::of).transpose()? {
            Some(Values::F32(b)) => b.repeat(batch),
            Some(_) => return Err(not_f32()),
            None => vec![0f32; batch * O],
        };
        let (x_rows, w_t) = (Mat::rows(&xs, I), Mat::transposed(&ws, I));
        match crate::kernels::host::packed_weights::packed(&ws, I) {
            Some(w_t) => matmul_packed((batch, I, O), x_rows, &w_t, &mut y, O, true),
            None => matmul((batch, I, O), x_rows, w_t, &mut y, O, true),
        }
        let out = Values::F32(y.into()).into_tensor(x.device(), (x.shape().0, Const))?;
        let weight = weight.clone();
        on_backward(&mut tape, "Linear", &out, move |dy, grads| {
            let Values::F32(dy) = dy else {
                return Err(not_f32());
            };
            // dx += dy · W
            if want_dx {
                accumulate_grad(&x, grads, |dx| {
                    let (dy, w) = (Mat::rows(dy, O), Mat::rows(&ws, I));
                    f32s(dx).map(|dx| matmul((batch, O, I), dy, w, dx, I, true))
                })??;
            }
            // dW += dyᵀ · x
            if want_dw {
                accumulate_grad(&weight, grads, |dw| {
                    let (dy_t, x) = (Mat::transposed(dy, O), Mat::rows(&xs, I));
                    f32s(dw).map(|dw| matmul((O, batch, I), dy_t, x, dw, I, true))
                })??;
            }
            // db += Σ_rows dy
            match &bias_grad {
                Some(b) => accumulate_grad(b, grads, |db| {
                    f32s(db).map(|db| {
                        for row in dy.chunks(O.max(1)) {
                            db.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
                        }
                    })
                })?,
                None => Ok(()),
            }
        });
        Ok(out.put_tape(tape))
    }

    /// A gradient buffer's values: f32 on this path.
    fn f32s(v: ValuesMut<'_>) -> Result<&mut [f32]> {
        match v {
            ValuesMut::F32(v) => Ok(v),
            _ => Err(not_f32()),
        }
    }

    fn not_f32() -> Error {
        Error::msg("the tiled dense kernel was handed values that are not f32")
    }
}

//! The host kernel of a dense layer, `x · Wᵀ + b`: f32 on a CPU with AVX-512, the three
//! products of a training step (output, input gradient, weight gradient) on fulmen's AVX-512
//! tile ([`conv_avx512::matmul`](super::conv_avx512::matmul)), each reading its operands in
//! place, transposed or not, across rayon's threads; every other dtype and CPU through dfdx's
//! ops ([`Composed`]), whose `gemm` crate runs AVX2 kernels on stable Rust.

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
        if std::any::TypeId::of::<E>() == std::any::TypeId::of::<f32>()
            && super::conv_avx512::available()
        {
            return on_avx512::linear(x, weight, bias);
        }
        <Composed as Dense<E, D>>::linear(x, weight, bias)
    }
}

#[cfg(target_arch = "x86_64")]
mod on_avx512 {
    //! f32 on the AVX-512 products.

    use dfdx::shapes::HasShape;
    use dfdx::tensor::{PutTape, SplitTape};

    use super::*;
    use crate::kernels::host::conv_avx512::{matmul, Mat};
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
        let (x, mut tape) = x.split_tape();
        let dims = Dims {
            batch: x.shape().0.size(),
            i: I,
            o: O,
        };
        let (xs, ws) = (Values::of(&x)?, Values::of(weight)?);
        let bs = bias.map(Values::of).transpose()?;
        let y = forward(dims, &xs, &ws, bs.as_ref())?;
        let out = y.into_tensor(x.device(), (x.shape().0, Const))?;
        let (weight, bias) = (weight.clone(), bias.cloned());
        on_backward(&mut tape, "Linear", &out, move |dy, grads| {
            accumulate_grad(&x, grads, |dx| input_grad(dims, dy, &ws, dx))??;
            accumulate_grad(&weight, grads, |dw| weight_grad(dims, dy, &xs, dw))??;
            match &bias {
                Some(b) => accumulate_grad(b, grads, |db| bias_grad(dims, dy, db))?,
                None => Ok(()),
            }
        });
        Ok(out.put_tape(tape))
    }

    /// A batch of `batch` rows, `i` values in and `o` out.
    #[derive(Debug, Clone, Copy)]
    struct Dims {
        batch: usize,
        i: usize,
        o: usize,
    }

    fn not_f32() -> Error {
        Error::msg("the AVX-512 dense kernel was handed values that are not f32")
    }

    /// `y = x · Wᵀ + b`: each row starts as the bias, and the product adds to it.
    fn forward(d: Dims, x: &Values, w: &Values, bias: Option<&Values>) -> Result<Values> {
        let (Values::F32(x), Values::F32(w)) = (x, w) else {
            return Err(not_f32());
        };
        let mut y = match bias {
            Some(Values::F32(b)) => b.repeat(d.batch),
            Some(_) => return Err(not_f32()),
            None => vec![0f32; d.batch * d.o],
        };
        let (x, w) = (Mat::rows(x, d.i), Mat::transposed(w, d.i));
        matmul((d.batch, d.i, d.o), x, w, &mut y, d.o, true);
        Ok(Values::F32(y.into()))
    }

    /// `dx += dy · W`.
    fn input_grad(d: Dims, dy: &Values, w: &Values, dx: ValuesMut<'_>) -> Result<()> {
        let (Values::F32(dy), Values::F32(w), ValuesMut::F32(dx)) = (dy, w, dx) else {
            return Err(not_f32());
        };
        matmul(
            (d.batch, d.o, d.i),
            Mat::rows(dy, d.o),
            Mat::rows(w, d.i),
            dx,
            d.i,
            true,
        );
        Ok(())
    }

    /// `dW += dyᵀ · x`.
    fn weight_grad(d: Dims, dy: &Values, x: &Values, dw: ValuesMut<'_>) -> Result<()> {
        let (Values::F32(dy), Values::F32(x), ValuesMut::F32(dw)) = (dy, x, dw) else {
            return Err(not_f32());
        };
        matmul(
            (d.o, d.batch, d.i),
            Mat::transposed(dy, d.o),
            Mat::rows(x, d.i),
            dw,
            d.i,
            true,
        );
        Ok(())
    }

    /// `db += Σ_rows dy`.
    fn bias_grad(d: Dims, dy: &Values, db: ValuesMut<'_>) -> Result<()> {
        let (Values::F32(dy), ValuesMut::F32(db)) = (dy, db) else {
            return Err(not_f32());
        };
        if d.o == 0 {
            return Ok(());
        }
        for row in dy.chunks(d.o) {
            db.iter_mut().zip(row).for_each(|(s, &v)| *s += v);
        }
        Ok(())
    }
}

//! Host values for the host kernels: a tensor's values as `f32` or `f64` ([`Values`]), read in
//! place when the tensor already has that dtype ([`Buf`]), and the plumbing between them and
//! dfdx's tensors and tape: gradients added into dfdx's buffers ([`accumulate_grad`]), an op's
//! backward recorded on the tape ([`on_backward`]).
//!
//! The kernels ([`conv_gemm`](super::conv_gemm), [`norm`](super::norm)) are generic over
//! [`HostFloat`]; f64 tensors compute in f64 and every other dtype (f32, and half precision as
//! dfdx's AMP does) in f32.

use std::any::TypeId;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Gradients, Tape, Tensor};
use dfdx::tensor_ops::ReshapeTo;
use rayon::prelude::*;

use super::buf::Buf;
use crate::device::{FloatDtype, HostAccess};
use crate::{Error, Result};

/// `len` copies of `value`, written by all of rayon's threads: a large buffer that the calling
/// thread filled alone would hold up a step (the kernels' own work is parallel).
pub fn filled<T: Copy + Send + Sync>(len: usize, value: T) -> Vec<T> {
    let mut v = Vec::with_capacity(len);
    v.spare_capacity_mut()
        .par_chunks_mut(1 << 15)
        .for_each(|chunk| chunk.fill(std::mem::MaybeUninit::new(value)));
    // SAFETY: the chunks cover the `len` reserved elements, and each was written above.
    unsafe { v.set_len(len) };
    v
}

/// `chunk` filled with `value`, as the initialized slice it now is.
pub fn init_with<T: Copy>(chunk: &mut [std::mem::MaybeUninit<T>], value: T) -> &mut [T] {
    chunk.fill(std::mem::MaybeUninit::new(value));
    // SAFETY: every element was just written; MaybeUninit<T> has T's layout.
    unsafe { std::slice::from_raw_parts_mut(chunk.as_mut_ptr().cast(), chunk.len()) }
}

const LANES: usize = 16;

/// Chunks added into the lanes before they are added up in f64: enough to amortize that, few
/// enough (4096 values per lane) that the lanes lose no precision a long sum would keep.
const FLUSH: usize = 256;

/// Σ f(a\[i\], b\[i\]), in lanes of `T` added up in f64: whole chunks, so that the loop has no
/// bounds checks and vectorizes (a plain sum is one chain of dependent adds), and a large
/// sum does not lose its small terms.
pub fn lane_sum<T: HostFloat>(a: &[T], b: &[T], f: impl Fn(T, T) -> T) -> f64 {
    lane_sums(std::iter::once((a, b)), f)
}

/// [`lane_sum`] over several pairs of slices (the planes of one channel) as one sum: the lanes
/// run on across the pairs, so that small planes do not each pay for adding them up.
pub fn lane_sums<'a, T: HostFloat>(
    pairs: impl Iterator<Item = (&'a [T], &'a [T])>,
    f: impl Fn(T, T) -> T,
) -> f64 {
    let to_f64 = |v: T| v.to_f64().unwrap_or(f64::NAN);
    let mut acc = [T::zero(); LANES];
    let (mut total, mut chunks) = (0.0f64, 0);
    for (a, b) in pairs {
        let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
        total += ca
            .remainder()
            .iter()
            .zip(cb.remainder())
            .map(|(&x, &y)| to_f64(f(x, y)))
            .sum::<f64>();
        for (xa, xb) in ca.zip(cb) {
            for l in 0..LANES {
                acc[l] += f(xa[l], xb[l]);
            }
            chunks += 1;
            if chunks == FLUSH {
                total += acc.iter().map(|&v| to_f64(v)).sum::<f64>();
                acc = [T::zero(); LANES];
                chunks = 0;
            }
        }
    }
    total + acc.iter().map(|&v| to_f64(v)).sum::<f64>()
}

/// A float type the host kernels compute in.
pub trait HostFloat:
    Copy + Send + Sync + 'static + num_traits::Float + std::ops::AddAssign + std::iter::Sum
{
}
impl HostFloat for f32 {}
impl HostFloat for f64 {}

/// Values in the dtype their kernel computes in: the kernel's own, or a tensor's, read in place
/// ([`Buf`]).
#[derive(Debug, Clone)]
pub enum Values {
    /// The values of every dtype but f64.
    F32(Buf<f32>),
    /// The values of an f64 tensor.
    F64(Buf<f64>),
}

/// `v` as a mutable slice of `T` when `E` is `T`.
fn cast_slice_mut<E: 'static, T: 'static>(v: &mut [E]) -> Option<&mut [T]> {
    // SAFETY: the type ids are equal, so `E` and `T` are one type; the borrow is moved.
    (TypeId::of::<E>() == TypeId::of::<T>())
        .then(|| unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len()) })
}

/// `v` as a `Vec<T>`, moved without a copy when `E` is `T`.
fn cast_vec<E: 'static, T: 'static>(v: Vec<E>) -> std::result::Result<Vec<T>, Vec<E>> {
    if TypeId::of::<E>() != TypeId::of::<T>() {
        return Err(v);
    }
    let mut v = std::mem::ManuallyDrop::new(v);
    // SAFETY: `E` and `T` are one type, so pointer, length and capacity describe a Vec<T>.
    Ok(unsafe { Vec::from_raw_parts(v.as_mut_ptr().cast(), v.len(), v.capacity()) })
}

impl Values {
    /// `v` in its kernel's dtype.
    pub fn from_vec<E: FloatDtype>(v: Vec<E>) -> Values {
        let v = match cast_vec::<E, f32>(v) {
            Ok(v) => return Values::F32(v.into()),
            Err(v) => v,
        };
        match cast_vec::<E, f64>(v) {
            Ok(v) => Values::F64(v.into()),
            Err(v) => Values::F32(
                v.iter()
                    .map(|x| x.to_f32().unwrap_or(f32::NAN))
                    .collect::<Vec<_>>()
                    .into(),
            ),
        }
    }

    /// `v` (computed in f64, as small per-channel results are) in `E`'s kernel dtype.
    pub fn from_f64<E: FloatDtype>(v: Vec<f64>) -> Values {
        match cast_vec::<E, f64>(Vec::new()) {
            Ok(_) => Values::F64(v.into()),
            Err(_) => Values::F32(v.into_iter().map(|x| x as f32).collect::<Vec<_>>().into()),
        }
    }

    /// The values of `t`: read in place when they are contiguous in host memory and of a
    /// kernel dtype ([`Buf::of_tensor`]), else copied once (a contiguous copy is made first if
    /// `t` is a view).
    pub fn of<S: Shape, E: FloatDtype, D: HostAccess<E>>(t: &Tensor<S, E, D>) -> Result<Values> {
        if let Some(b) = Buf::<f32>::of_tensor(t) {
            return Ok(Values::F32(b));
        }
        if let Some(b) = Buf::<f64>::of_tensor(t) {
            return Ok(Values::F64(b));
        }
        let t = t.clone().try_contiguous()?;
        let mut v = filled(t.shape().num_elements(), E::zero());
        t.copy_into(&mut v);
        Ok(Values::from_vec(v))
    }

    /// How many values.
    pub fn len(&self) -> usize {
        match self {
            Values::F32(v) => v.len(),
            Values::F64(v) => v.len(),
        }
    }

    /// The values as dtype `E`, moved without a copy when `E` is the kernel's dtype and the
    /// values are owned.
    pub fn into_vec<E: FloatDtype>(self) -> Vec<E> {
        let cast = |x: f64| E::from(x).unwrap_or_else(E::nan);
        match self {
            Values::F32(v) => cast_vec::<f32, E>(v.into_vec())
                .unwrap_or_else(|v| v.iter().map(|&x| cast(x as f64)).collect()),
            Values::F64(v) => cast_vec::<f64, E>(v.into_vec())
                .unwrap_or_else(|v| v.into_iter().map(cast).collect()),
        }
    }

    /// The values as a tensor of shape `shape` on `dev`; on the CPU the buffer becomes the
    /// tensor's, without a copy when its dtype is the tensor's.
    pub fn into_tensor<S: Shape, E: FloatDtype, D: HostAccess<E>>(
        self,
        dev: &D,
        shape: S,
    ) -> Result<Tensor<S, E, D>> {
        Ok(dev.try_tensor_from_vec(self.into_vec(), shape)?)
    }
}

/// Runs `f32` or `f64` kernel code on [`Values`] and [`ValuesMut`] buffers, all of one
/// dtype: inside the body each name is bound to its values (or buffer) in that dtype, and `$t`
/// names the dtype.
///
/// ```text
/// let y: Values = on_host!(T; Values(x), Values(w) => kernel::<T>(x, w).into_values());
/// ```
macro_rules! on_host {
    ($t:ident; $($kind:ident($v:ident)),+ => $body:expr) => {
        match ($($crate::kernels::host::values::on_host!(@arg $kind $v),)+) {
            ($($crate::kernels::host::values::$kind::F32($v),)+) => {
                #[allow(dead_code)]
                type $t = f32;
                $body
            }
            ($($crate::kernels::host::values::$kind::F64($v),)+) => {
                #[allow(dead_code)]
                type $t = f64;
                $body
            }
            #[allow(unreachable_patterns)]
            _ => unreachable!("one dtype converts to one host dtype"),
        }
    };
    (@arg Values $v:ident) => { &$v };
    (@arg ValuesMut $v:ident) => { $v };
}
pub(crate) use on_host;

/// A gradient buffer in its kernel's dtype, for kernels that accumulate into it.
pub enum ValuesMut<'a> {
    /// The gradient of every dtype but f64.
    F32(&'a mut [f32]),
    /// The gradient of an f64 tensor.
    F64(&'a mut [f64]),
}

/// Wraps kernel output of either host dtype back into [`Values`].
pub trait IntoValues {
    /// The values, owned.
    fn into_values(self) -> Values;
}
impl IntoValues for Vec<f32> {
    fn into_values(self) -> Values {
        Values::F32(self.into())
    }
}
impl IntoValues for Vec<f64> {
    fn into_values(self) -> Values {
        Values::F64(self.into())
    }
}

/// Calls `f` with the gradient of `t` in its kernel's dtype, for `f` to add into: the buffer
/// itself when `E` is f32 or f64, else a buffer of zeros that is added to it afterwards.
pub fn accumulate_grad<S: Shape, E: FloatDtype, D: HostAccess<E>, R>(
    t: &Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
    f: impl FnOnce(ValuesMut<'_>) -> R,
) -> Result<R> {
    let mut out = None;
    D::with_grad(t, grads, |g| {
        if let Some(g) = cast_slice_mut::<E, f32>(g) {
            out = Some(f(ValuesMut::F32(g)));
        } else if let Some(g) = cast_slice_mut::<E, f64>(g) {
            out = Some(f(ValuesMut::F64(g)));
        } else {
            let mut buf = vec![0f32; g.len()];
            out = Some(f(ValuesMut::F32(&mut buf)));
            let add = Values::F32(buf.into()).into_vec::<E>();
            g.iter_mut().zip(add).for_each(|(a, b)| *a += b);
        }
    })?;
    out.ok_or_else(|| Error::msg("a gradient buffer was not handed to its writer"))
}

/// Adds `values` into `into` (of the same dtype), across rayon's threads.
pub fn add_values(values: &Values, into: ValuesMut<'_>) {
    on_host!(T; Values(values), ValuesMut(into) => {
        into.par_chunks_mut(1 << 14)
            .zip(values.par_chunks(1 << 14))
            .for_each(|(a, b)| a.iter_mut().zip(b).for_each(|(a, &b)| *a += b))
    })
}

impl ValuesMut<'_> {
    /// The same buffer, borrowed again (to add into it twice).
    pub fn reborrow(&mut self) -> ValuesMut<'_> {
        match self {
            ValuesMut::F32(v) => ValuesMut::F32(v),
            ValuesMut::F64(v) => ValuesMut::F64(v),
        }
    }
}

/// Adds `values` (of `E`'s kernel dtype) into the gradient of `t`.
pub fn add_grad<S: Shape, E: FloatDtype, D: HostAccess<E>>(
    t: &Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
    values: Values,
) -> Result<()> {
    accumulate_grad(t, grads, |g| {
        on_host!(T; Values(values), ValuesMut(g) => {
            g.iter_mut().zip(values.iter()).for_each(|(a, &b)| *a += b)
        })
    })
}

/// Records an op's backward on `tape`: `f` gets the gradient of the op's output `out` (zeros
/// if it has none yet) in its kernel's dtype, moved out of `grads` and back rather than copied
/// when `E` is f32 or f64, and adds its inputs' gradients into `grads` meanwhile. `op` names
/// the op in the panic that an error there becomes: dfdx's tape closures cannot return
/// fulmen's errors, and the only one possible (a device that cannot hand over a gradient
/// buffer) fails dfdx's own ops first.
pub fn on_backward<S: Shape, E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>>(
    tape: &mut T,
    op: &'static str,
    out: &Tensor<S, E, D>,
    f: impl FnOnce(&Values, &mut Gradients<E, D>) -> Result<()> + 'static,
) {
    let out = out.clone();
    tape.add_backward_op(move |grads| {
        let backward = |grads: &mut Gradients<E, D>| {
            let dy = Values::from_vec(D::take_grad(&out, grads)?);
            let result = f(&dy, grads);
            D::restore_grad(&out, grads, dy.into_vec())?;
            result
        };
        backward(grads).map_err(|e| panic!("{op} backward: {e}"))
    });
}

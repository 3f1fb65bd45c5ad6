//! Host layers run back to back as one op on dfdx's tape.
//!
//! Each of fulmen's CPU layers is a [`HostLayer`]: a forward on host values that returns its
//! output and its backward. [`run`] takes a tensor through one or more of them and records a
//! single backward: the values between the layers never become dfdx tensors, so they get no
//! gradient buffer, which dfdx would zero on the calling thread while the others wait (in the
//! small ResNet that zeroing was a tenth of each step's wall time). A lone layer (a `Conv2D`,
//! a `BatchNorm2D`) is a chain of one; [`ConvBn`](super::ConvBn) is a chain of two.

use std::sync::Arc;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Gradients, PutTape, SplitTape, Tape, Tensor};

use super::host::{accumulate_grad, filled, on_backward, Host, HostMut};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// Adds a layer's parameter gradients into dfdx's gradients.
pub type ParamGrads<E, D> = Box<dyn FnOnce(&mut Gradients<E, D>) -> Result<()>>;

/// A layer's backward: given its output's gradient, adds its input's gradient into the buffer
/// it is handed, and returns what adds its parameters' gradients.
pub type LayerBackward<E, D> = Box<dyn FnOnce(&Host, HostMut<'_>) -> ParamGrads<E, D>>;

/// Images `[N, C, H, W]`, as the layers see their shape.
pub type Dims = [usize; 4];

/// A layer that runs on host values.
pub trait HostLayer<E: FloatDtype, D: TrainDevice<E>> {
    /// The layer on `x` of shape `dims` (training: batch statistics are used and updated): its
    /// output, the output's shape, and its backward.
    fn forward(&mut self, x: &Arc<Host>, dims: Dims) -> Result<(Host, Dims, LayerBackward<E, D>)>;
}

/// `x` through `layers`, one after the other, as one differentiable op named `name`.
pub fn run<Si: Shape, So: Shape, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    name: &'static str,
    x: Tensor<Si, E, D, T>,
    layers: &mut [&mut dyn HostLayer<E, D>],
) -> Result<Tensor<So, E, D, T>> {
    let concrete = x.shape().concrete();
    let mut dims: Dims = concrete
        .as_ref()
        .try_into()
        .map_err(|_| Error::msg(format!("{name}: the input is not [N, C, H, W]")))?;
    let (x, mut tape) = x.split_tape();
    let mut h = Arc::new(Host::of(&x)?);
    let mut backward = Vec::with_capacity(layers.len());
    for layer in layers.iter_mut() {
        let len = h.len();
        let (y, out, back) = layer.forward(&h, dims)?;
        backward.push((len, back));
        h = Arc::new(y);
        dims = out;
    }
    if So::NUM_DIMS != 4 {
        return Err(Error::msg(format!(
            "{name}: the output is not [N, C, H, W]"
        )));
    }
    let mut concrete = So::Concrete::default();
    for (i, d) in dims.into_iter().enumerate() {
        concrete[i] = d;
    }
    let shape = So::from_concrete(&concrete).ok_or_else(|| {
        Error::msg(format!(
            "{name}: the output {dims:?} does not have the layer's channels"
        ))
    })?;
    let y = Arc::try_unwrap(h).unwrap_or_else(|h| (*h).clone());
    let out = y.into_tensor(x.device(), shape)?;
    on_backward(&mut tape, name, &out, move |dy, grads| {
        let mut params = Vec::with_capacity(backward.len());
        let mut inner: Option<Host> = None;
        while let Some((len, back)) = backward.pop() {
            let dy = inner.as_ref().unwrap_or(dy);
            if backward.is_empty() {
                params.push(accumulate_grad(&x, grads, |dx| back(dy, dx))?);
            } else {
                let mut dx = Host::zeros_like(dy, len);
                params.push(back(dy, dx.as_mut()?));
                inner = Some(dx);
            }
        }
        params.into_iter().try_for_each(|add| add(grads))
    });
    Ok(out.put_tape(tape))
}

impl Host {
    /// `len` zeros in `like`'s dtype, written by all threads.
    fn zeros_like(like: &Host, len: usize) -> Host {
        match like {
            Host::F32(_) => Host::F32(filled(len, 0f32).into()),
            Host::F64(_) => Host::F64(filled(len, 0f64).into()),
        }
    }

    /// The values as a buffer to add into (owned values only).
    fn as_mut(&mut self) -> Result<HostMut<'_>> {
        use super::recent::Buf;
        match self {
            Host::F32(Buf::Owned(v)) => Ok(HostMut::F32(v)),
            Host::F64(Buf::Owned(v)) => Ok(HostMut::F64(v)),
            _ => Err(Error::msg("a shared host buffer cannot be written")),
        }
    }
}

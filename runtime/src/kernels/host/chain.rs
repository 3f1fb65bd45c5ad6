//! Host layers run back to back as one op on dfdx's tape: the host kernels' way to fuse.
//!
//! Each op the host kernels compute is a [`HostLayer`]: a forward on host values that returns
//! its output and its backward. [`run`] takes a tensor through one or more of them and records
//! a single backward: the values between the layers never become dfdx tensors, so they get no
//! gradient buffer, which dfdx would zero on the calling thread while the others wait (in the
//! small ResNet that zeroing was a tenth of each step's wall time). A lone convolution or
//! batch norm is a chain of one; a fused sequence ([`crate::kernels::Fuse`]) is a chain of its
//! [`Op`]s ([`layers`]), and a residual block is one layer made of the chains of its branches.
//!
//! Why not [`segment`](crate::kernels::composed::segment), the composed kernels' mechanism:
//! a segment records dfdx ops whose outputs are dfdx tensors, and frees their gradients early;
//! a chain's values between layers are never tensors and never get a gradient buffer at all,
//! which on the CPU is what costs. Each is its implementation's answer to the same question.

use std::sync::Arc;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::{Gradients, PutTape, SplitTape, Tape, Tensor};

use super::values::{accumulate_grad, add_values, filled, on_backward, Values, ValuesMut};
use crate::device::{FloatDtype, HostAccess};
use crate::{Error, Result};

/// Adds a layer's parameter gradients into dfdx's gradients.
pub type ParamGrads<E, D> = Box<dyn FnOnce(&mut Gradients<E, D>) -> Result<()>>;

/// A layer's backward: given its output's gradient, adds its input's gradient into the buffer
/// it is handed, and returns what adds its parameters' gradients.
pub type LayerBackward<E, D> = Box<dyn FnOnce(&Values, ValuesMut<'_>) -> ParamGrads<E, D>>;

/// Images `[N, C, H, W]`, as the layers see their shape.
pub type Dims = [usize; 4];

/// A layer that runs on host values.
pub trait HostLayer<E: FloatDtype, D: HostAccess<E>> {
    /// The layer on `x` of shape `dims` (training: batch statistics are used and updated): its
    /// output, the output's shape, and its backward.
    fn forward(
        &mut self,
        x: &Arc<Values>,
        dims: Dims,
    ) -> Result<(Values, Dims, LayerBackward<E, D>)>;
}

/// `x` through `layers`, one after the other, as one differentiable op named `name`.
pub fn run<Si: Shape, So: Shape, E: FloatDtype, D: HostAccess<E>, T: Tape<E, D>>(
    name: &'static str,
    x: Tensor<Si, E, D, T>,
    layers: &mut [&mut dyn HostLayer<E, D>],
) -> Result<Tensor<So, E, D, T>> {
    let concrete = x.shape().concrete();
    let dims: Dims = concrete
        .as_ref()
        .try_into()
        .map_err(|_| Error::msg(format!("{name}: the input is not [N, C, H, W]")))?;
    if So::NUM_DIMS != 4 {
        return Err(Error::msg(format!(
            "{name}: the output is not [N, C, H, W]"
        )));
    }
    let (x, mut tape) = x.split_tape();
    let (y, dims, backward) = forward_all(
        layers.iter_mut().map(|l| &mut **l),
        Arc::new(Values::of(&x)?),
        dims,
    )?;
    let mut concrete = So::Concrete::default();
    for (i, d) in dims.into_iter().enumerate() {
        concrete[i] = d;
    }
    let shape = So::from_concrete(&concrete).ok_or_else(|| {
        Error::msg(format!(
            "{name}: the output {dims:?} does not have the layer's channels"
        ))
    })?;
    let y = Arc::try_unwrap(y).unwrap_or_else(|y| (*y).clone());
    let out = y.into_tensor(x.device(), shape)?;
    on_backward(&mut tape, name, &out, move |dy, grads| {
        let params = accumulate_grad(&x, grads, |dx| backward_all(backward, dy, dx))?;
        params.into_iter().try_for_each(|add| add(grads))
    });
    Ok(out.put_tape(tape))
}

/// The backward of a run of layers: each layer's backward with the length of its input.
pub type Backwards<E, D> = Vec<(usize, LayerBackward<E, D>)>;

/// `x` through `layers`: the output, its shape, and the backward of each layer.
pub fn forward_all<'a, 'b: 'a, E: FloatDtype, D: HostAccess<E>>(
    layers: impl IntoIterator<Item = &'a mut (dyn HostLayer<E, D> + 'b)>,
    x: Arc<Values>,
    mut dims: Dims,
) -> Result<(Arc<Values>, Dims, Backwards<E, D>)> {
    let mut h = x;
    let mut backward = Vec::new();
    for layer in layers {
        let (y, out, back) = layer.forward(&h, dims)?;
        backward.push((h.len(), back));
        h = Arc::new(y);
        dims = out;
    }
    Ok((h, dims, backward))
}

/// Runs `backward` (from [`forward_all`]) from the output's gradient `dy`, last layer first,
/// adding the input's gradient into `dx` (`dy` itself when there are no layers); returns
/// what adds the layers' parameter gradients.
pub fn backward_all<E: FloatDtype, D: HostAccess<E>>(
    mut backward: Backwards<E, D>,
    dy: &Values,
    dx: ValuesMut<'_>,
) -> Vec<ParamGrads<E, D>> {
    let mut params = Vec::with_capacity(backward.len());
    let mut inner: Option<Values> = None;
    let mut dx = Some(dx);
    while let Some((len, back)) = backward.pop() {
        let dy = inner.as_ref().unwrap_or(dy);
        match dx.take() {
            Some(dx) if backward.is_empty() => params.push(back(dy, dx)),
            rest => {
                dx = rest;
                let mut d = Values::zeros_like(dy, len);
                params.push(back(dy, d.buffer()));
                inner = Some(d);
            }
        }
    }
    if let Some(dx) = dx {
        add_values(dy, dx);
    }
    params
}

impl Values {
    /// `len` zeros in `like`'s dtype, written by all threads.
    fn zeros_like(like: &Values, len: usize) -> Values {
        match like {
            Values::F32(_) => Values::F32(filled(len, 0f32).into()),
            Values::F64(_) => Values::F64(filled(len, 0f64).into()),
        }
    }

    /// The values of a buffer this chain made, to add into.
    fn buffer(&mut self) -> ValuesMut<'_> {
        // zeros_like makes owned buffers only.
        let unowned = "a chain's own buffer is owned";
        match self {
            Values::F32(v) => ValuesMut::F32(v.as_mut_vec().expect(unowned)),
            Values::F64(v) => ValuesMut::F64(v.as_mut_vec().expect(unowned)),
        }
    }
}

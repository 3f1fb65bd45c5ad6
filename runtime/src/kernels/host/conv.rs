//! The host convolution: fulmen's tiled kernels ([`tiled`](super::tiled), AVX-512 or AVX2)
//! for one-group f32 convolutions on CPUs that have them, im2col on the `gemm` crate
//! ([`conv_gemm`](super::conv_gemm)) for every other; as a [`HostLayer`] of a chain.

use std::sync::Arc;

use dfdx::shapes::HasShape;
use dfdx::tensor::{Tape, Tensor};

use super::chain::{Dims, HostLayer, LayerBackward};
use super::values::{add_grad, on_host, IntoValues, Values, ValuesMut};
use super::Host;
use crate::device::{FloatDtype, HostAccess};
use crate::kernels::Conv;
use crate::shapes::{ConvGeom, ConvOptions, Dyn4};
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Conv<E, D> for Host {
    /// As a chain of one.
    fn conv2d<T: Tape<E, D>>(
        x: Dyn4<E, D, T>,
        weight: &Dyn4<E, D>,
        bias: Option<&Tensor<(usize,), E, D>>,
        g: &ConvGeom,
    ) -> Result<Dyn4<E, D, T>> {
        let mut layer = ConvLayer {
            weight: weight.clone(),
            bias: bias.cloned(),
            opts: g.options(),
        };
        super::chain::run("Conv2D", x, &mut [&mut layer])
    }
}

/// A convolution as a chain's layer: its parameters and options.
pub(crate) struct ConvLayer<E: FloatDtype, D: HostAccess<E>> {
    pub weight: Dyn4<E, D>,
    pub bias: Option<Tensor<(usize,), E, D>>,
    pub opts: ConvOptions,
}

impl<E: FloatDtype, D: HostAccess<E>> ConvLayer<E, D> {
    /// The convolution's geometry on images of shape `dims`.
    fn geom(&self, dims: Dims) -> Result<ConvGeom> {
        let bias = self.bias.as_ref().map(|b| b.shape().0);
        ConvGeom::of(dims, *self.weight.shape(), bias, self.opts)
    }
}

impl<E: FloatDtype, D: HostAccess<E>> HostLayer<E, D> for ConvLayer<E, D> {
    fn forward(
        &mut self,
        x: &Arc<Values>,
        dims: Dims,
    ) -> Result<(Values, Dims, LayerBackward<E, D>)> {
        let g = self.geom(dims)?;
        let ws = Values::of(&self.weight)?;
        let bs = self.bias.as_ref().map(Values::of).transpose()?;
        let out = forward(&g, x, &ws, bs.as_ref());
        let (xs, weight, bias) = (x.clone(), self.weight.clone(), self.bias.clone());
        let backward: LayerBackward<E, D> = Box::new(move |dy, dx| {
            let (dw, db) = backward(&g, (&xs, &ws, dy), dx, bias.is_some());
            Box::new(move |grads| {
                add_grad(&weight, grads, dw)?;
                match &bias {
                    Some(b) => add_grad(b, grads, db),
                    None => Ok(()),
                }
            })
        });
        Ok((out, [g.batch, g.c_out, g.h_out(), g.w_out()], backward))
    }
}

/// The convolution's output. Not generic, so that it is compiled once, in fulmen, and not
/// again in every crate whose models convolve.
fn forward(g: &ConvGeom, x: &Values, w: &Values, bias: Option<&Values>) -> Values {
    #[cfg(target_arch = "x86_64")]
    if let (Values::F32(x), Values::F32(w), None | Some(Values::F32(_))) = (x, w, bias) {
        if super::tiled::handles(g) {
            let b = match bias {
                Some(Values::F32(b)) => Some(&b[..]),
                _ => None,
            };
            return Values::F32(super::tiled::forward(g, x, w, b).into());
        }
    }
    use super::conv_gemm::forward;
    match bias {
        Some(b) => {
            on_host!(T; Values(x), Values(w), Values(b) => forward(g, x, w, Some(b)).into_values())
        }
        None => on_host!(T; Values(x), Values(w) => forward(g, x, w, None).into_values()),
    }
}

/// Adds the input's gradient into `dx`; returns the weight's and the bias's (compiled once, as
/// [`forward`]).
fn backward(
    g: &ConvGeom,
    (x, w, dy): (&Values, &Values, &Values),
    dx: ValuesMut<'_>,
    with_bias: bool,
) -> (Values, Values) {
    #[cfg(target_arch = "x86_64")]
    let dx = match (x, w, dy, dx) {
        (Values::F32(x), Values::F32(w), Values::F32(dy), ValuesMut::F32(dx))
            if super::tiled::handles(g) =>
        {
            let (dw, db) = super::tiled::backward(g, x, w, dy, dx, with_bias);
            return (Values::F32(dw.into()), Values::F32(db.into()));
        }
        (_, _, _, dx) => dx,
    };
    on_host!(T; Values(x), Values(w), Values(dy), ValuesMut(dx) => {
        let (dw, db) = super::conv_gemm::backward(g, x, w, dy, dx, with_bias);
        (dw.into_values(), db.into_values())
    })
}

//! Layers dfdx 0.13 has only behind its (broken) nightly feature, for stable Rust.
//!
//! [`conv2d`] is the differentiable 2-D convolution: its CPU kernel ([`conv_kernel`]) and its
//! backward on dfdx's tape, so that gradients reach dfdx's `Gradients` like any other op's.

pub mod conv_kernel;

use dfdx::shapes::{Dtype, HasShape};
use dfdx::tensor::{Cpu, PutTape, SplitTape, Tape, Tensor, TensorFromVec};

use crate::{Error, Result};
pub use conv_kernel::{ConvDtype, ConvGeom};

/// A 4-D tensor with run-time dimensions, `[N, C, H, W]` (or `[C_out, C_in/groups, K, K]`).
pub type Dyn4<E, T = dfdx::tensor::NoneTape> = Tensor<(usize, usize, usize, usize), E, Cpu, T>;

/// Stride, padding, dilation and groups of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvOptions {
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl Default for ConvOptions {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// `x` convolved with `weight` (PyTorch's `conv2d`, cross-correlation), plus `bias`, on the
/// CPU. Differentiable: with a tape on `x`, backward fills the gradients of `x`, `weight` and
/// `bias`.
pub fn conv2d<E: ConvDtype + Dtype, T: Tape<E, Cpu>>(
    x: Dyn4<E, T>,
    weight: &Dyn4<E>,
    bias: Option<&Tensor<(usize,), E, Cpu>>,
    opts: ConvOptions,
) -> Result<Dyn4<E, T>> {
    let (n, c_in, h, w) = *x.shape();
    let (c_out, cin_g, k, k2) = *weight.shape();
    let geom = ConvGeom {
        batch: n,
        c_in,
        h,
        w,
        c_out,
        k,
        stride: opts.stride,
        padding: opts.padding,
        dilation: opts.dilation,
        groups: opts.groups,
    };
    geom.check()?;
    if k != k2 || cin_g * opts.groups != c_in {
        return Err(Error::config(
            "Conv2D.weight",
            format!(
                "a weight of shape [{c_out}, {cin_g}, {k}, {k2}] does not fit {c_in} input channels in {} groups with a square kernel",
                opts.groups
            ),
        ));
    }
    if let Some(b) = bias {
        if b.shape().0 != c_out {
            return Err(Error::config(
                "Conv2D.bias",
                format!("{} biases for {c_out} output channels", b.shape().0),
            ));
        }
    }
    let (x, mut tape) = x.split_tape();
    let dev = x.device().clone();
    let (xs, ws) = (x.as_vec(), weight.as_vec());
    let bs = bias.map(|b| b.as_vec());
    let out_data = conv_kernel::forward(&geom, &xs, &ws, bs.as_deref());
    let out: Dyn4<E> = dev.tensor_from_vec(out_data, (n, c_out, geom.h_out(), geom.w_out()));
    let (out_key, weight_key, bias_key) = (out.clone(), weight.clone(), bias.cloned());
    tape.add_backward_op(move |grads| {
        let dy = grads.get_or_alloc_mut(&out_key)?.to_vec();
        let (dx, dw, db) = conv_kernel::backward(&geom, &xs, &ws, &dy);
        let add =
            |into: &mut [E], from: Vec<E>| into.iter_mut().zip(from).for_each(|(a, b)| *a += b);
        add(grads.get_or_alloc_mut(&x)?, dx);
        add(grads.get_or_alloc_mut(&weight_key)?, dw);
        if let Some(b) = &bias_key {
            add(grads.get_or_alloc_mut(b)?, db);
        }
        Ok(())
    });
    Ok(out.put_tape(tape))
}

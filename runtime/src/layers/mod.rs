//! Layers dfdx 0.13 has only behind its (broken) nightly feature, for stable Rust.
//!
//! [`conv2d()`] is the differentiable 2-D convolution: its CPU kernel ([`conv_kernel`]) and its
//! backward on dfdx's tape, so that gradients reach dfdx's `Gradients` like any other op's.
//! [`Conv2D`] and [`Conv2DNoBias`] are the layers that use it in `#[module]` structs;
//! [`MaxPool2D`] and [`AvgPool2D`] are the pooling windows (dfdx's global pools and
//! `BatchNorm2D` work on stable as they are).

pub mod conv2d;
pub mod conv_kernel;
pub mod pool2d;

pub use self::conv2d::{Conv2D, Conv2DNoBias};
pub use self::pool2d::{pool2d, AvgPool2D, MaxPool2D, PoolKind};

use dfdx::shapes::HasShape;
use dfdx::tensor::{Cpu, NoneTape, PutTape, SplitTape, Tape, Tensor};

use crate::{Error, FloatDtype, Result, TrainDevice};
pub use conv_kernel::{ConvDtype, ConvGeom};

/// A batch of images with `C` channels: `[N, C, H, W]`, only the channels fixed at compile time.
pub type Images<const C: usize, E, D = Cpu, T = NoneTape> =
    Tensor<(usize, dfdx::shapes::Const<C>, usize, usize), E, D, T>;

/// A 4-D tensor with run-time dimensions, `[N, C, H, W]` (or `[C_out, C_in/groups, K, K]`).
pub type Dyn4<E, D = Cpu, T = NoneTape> = Tensor<(usize, usize, usize, usize), E, D, T>;

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

/// Host values in the kernel's dtype: f64 stays f64, every other dtype computes in f32 (half
/// precision included, as dfdx's AMP does).
enum Host {
    F32(Vec<f32>),
    F64(Vec<f64>),
}

/// `v` as a `Vec<T>` without a copy when `E` is `T`.
fn same<E: 'static, T: 'static>(v: Vec<E>) -> Result<Vec<T>, Vec<E>> {
    let any: Box<dyn std::any::Any> = Box::new(v);
    match any.downcast::<Vec<T>>() {
        Ok(t) => Ok(*t),
        Err(any) => Err(*any.downcast::<Vec<E>>().unwrap_or_else(|_| unreachable!())),
    }
}

fn to_host<E: FloatDtype>(v: Vec<E>) -> Host {
    let v = match same::<E, f32>(v) {
        Ok(v) => return Host::F32(v),
        Err(v) => v,
    };
    match same::<E, f64>(v) {
        Ok(v) => Host::F64(v),
        Err(v) => Host::F32(
            v.into_iter()
                .map(|x| x.to_f32().unwrap_or(f32::NAN))
                .collect(),
        ),
    }
}

fn from_host<E: FloatDtype>(h: Host) -> Vec<E> {
    let cast = |x: f64| E::from(x).unwrap_or_else(E::nan);
    match h {
        Host::F32(v) => {
            same::<f32, E>(v).unwrap_or_else(|v| v.into_iter().map(|x| cast(x as f64)).collect())
        }
        Host::F64(v) => same::<f64, E>(v).unwrap_or_else(|v| v.into_iter().map(cast).collect()),
    }
}

fn host_forward(g: &ConvGeom, x: &Host, w: &Host, b: Option<&Host>) -> Host {
    match (x, w, b) {
        (Host::F64(x), Host::F64(w), b) => Host::F64(conv_kernel::forward(
            g,
            x,
            w,
            b.map(|b| match b {
                Host::F64(b) => b.as_slice(),
                Host::F32(_) => &[],
            }),
        )),
        (Host::F32(x), Host::F32(w), b) => Host::F32(conv_kernel::forward(
            g,
            x,
            w,
            b.map(|b| match b {
                Host::F32(b) => b.as_slice(),
                Host::F64(_) => &[],
            }),
        )),
        _ => unreachable!("one dtype converts to one host dtype"),
    }
}

fn host_backward(g: &ConvGeom, x: &Host, w: &Host, dy: Host) -> (Host, Host, Host) {
    match (x, w, dy) {
        (Host::F64(x), Host::F64(w), Host::F64(dy)) => {
            let (a, b, c) = conv_kernel::backward(g, x, w, &dy);
            (Host::F64(a), Host::F64(b), Host::F64(c))
        }
        (Host::F32(x), Host::F32(w), Host::F32(dy)) => {
            let (a, b, c) = conv_kernel::backward(g, x, w, &dy);
            (Host::F32(a), Host::F32(b), Host::F32(c))
        }
        _ => unreachable!("one dtype converts to one host dtype"),
    }
}

/// `x` convolved with `weight` (PyTorch's `conv2d`, cross-correlation), plus `bias`.
/// Differentiable: with a tape on `x`, backward fills the gradients of `x`, `weight` and
/// `bias`. The kernel runs on the host (f64 in f64, f32 for every other dtype).
pub fn conv2d<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    x: Dyn4<E, D, T>,
    weight: &Dyn4<E, D>,
    bias: Option<&Tensor<(usize,), E, D>>,
    opts: ConvOptions,
) -> Result<Dyn4<E, D, T>> {
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
    let (xs, ws) = (to_host(x.as_vec()), to_host(weight.as_vec()));
    let bs = bias.map(|b| to_host(b.as_vec()));
    let out_data = from_host::<E>(host_forward(&geom, &xs, &ws, bs.as_ref()));
    let out: Dyn4<E, D> = dev
        .try_tensor_from_vec(out_data, (n, c_out, geom.h_out(), geom.w_out()))
        .map_err(|e| Error::Device(format!("{e:?}")))?;
    let (out_key, weight_key, bias_key) = (out.clone(), weight.clone(), bias.cloned());
    tape.add_backward_op(move |grads| {
        grads.try_alloc_for(&out_key)?;
        let dy = to_host(grads.get(&out_key).as_vec());
        let (dx, dw, db) = host_backward(&geom, &xs, &ws, dy);
        let add =
            |into: &mut [E], from: Vec<E>| into.iter_mut().zip(from).for_each(|(a, b)| *a += b);
        // with_grad fails only when the device cannot allocate a gradient buffer; dfdx's tape
        // closure cannot carry fulmen's error, and its own ops would have failed first.
        let _ = D::with_grad(&x, grads, |g| add(g, from_host(dx)));
        let _ = D::with_grad(&weight_key, grads, |g| add(g, from_host(dw)));
        if let Some(b) = &bias_key {
            let _ = D::with_grad(b, grads, |g| add(g, from_host(db)));
        }
        Ok(())
    });
    Ok(out.put_tape(tape))
}

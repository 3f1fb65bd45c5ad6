//! The host kernel of 2-D batch normalization, fused: one pass for the statistics, one for
//! the output, and the same for the backward, where dfdx's composed version runs a dozen
//! broadcasting ops. Channels and planes are spread over rayon's threads. [`BnLayer`] is the
//! kernel as a chain's layer, and [`batch_norm_train`] / [`batch_norm_eval`] the entry points.
//!
//! Layout `[N, C, HW]`, contiguous. Sums are taken in lanes of the kernel's dtype and added up
//! in f64, so that a channel of a large batch does not lose its small terms.

use std::sync::Arc;

use dfdx::shapes::{HasShape, Rank1};
use dfdx::tensor::{Tape, Tensor};
use rayon::prelude::*;

use super::chain::{self, Dims, HostLayer, LayerBackward};
use super::values::{add_grad, lane_sums, on_host, HostFloat, IntoValues, Values, ValuesMut};
use super::Host;
use crate::device::{of_f64, FloatDtype, HostAccess};
use crate::kernels::{Norm, NormState, Normalized};
use crate::shapes::{realize, Images};
use crate::{Error, Result};

/// The shape of one batch norm: `n` images of `c` channels of `hw` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct BnGeom {
    pub n: usize,
    pub c: usize,
    pub hw: usize,
}

impl BnGeom {
    /// Values per channel.
    pub fn per_channel(&self) -> usize {
        self.n * self.hw
    }
    /// The planes of channel `ch`.
    fn planes<'a, T>(&self, v: &'a [T], ch: usize) -> impl Iterator<Item = &'a [T]> + 'a {
        let (c, hw) = (self.c, self.hw);
        (0..self.n).map(move |i| &v[(i * c + ch) * hw..(i * c + ch + 1) * hw])
    }
}

fn t<T: HostFloat>(v: f64) -> T {
    T::from(v).unwrap_or_else(T::nan)
}

/// Per-channel mean and biased variance of `x` (two passes: the mean, then squares about it).
fn stats<T: HostFloat>(g: &BnGeom, x: &[T]) -> (Vec<f64>, Vec<f64>) {
    let m = g.per_channel() as f64;
    (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let planes = || g.planes(x, ch).map(|p| (p, p));
            let mean = lane_sums(planes(), |x, _| x) / m;
            let mt = t::<T>(mean);
            let var = lane_sums(planes(), |x, _| (x - mt) * (x - mt)) / m;
            (mean, var)
        })
        .unzip()
}

/// `y = x·a[c] + b[c]` for every plane: the normalization and the affine map in one.
fn affine<T: HostFloat>(g: &BnGeom, x: &[T], a: &[f64], b: &[f64]) -> Vec<T> {
    let mut y = Vec::with_capacity(x.len());
    y.spare_capacity_mut()[..x.len()]
        .par_chunks_mut(g.hw)
        .zip(x.par_chunks(g.hw))
        .enumerate()
        .for_each(|(plane, (yp, xp))| {
            let ch = plane % g.c;
            let (a, b) = (t::<T>(a[ch]), t::<T>(b[ch]));
            for (y, &x) in yp.iter_mut().zip(xp) {
                y.write(x * a + b);
            }
        });
    // SAFETY: the planes cover all of `x.len()` values, and each was written above.
    unsafe { y.set_len(x.len()) };
    y
}

/// The scale and shift that normalize by `mean`, `var` and apply `weight`, `bias`.
fn coefficients(
    mean: &[f64],
    var: &[f64],
    weight: &[f64],
    bias: &[f64],
    eps: f64,
) -> (Vec<f64>, Vec<f64>) {
    (0..mean.len())
        .map(|ch| {
            let a = weight[ch] / (var[ch] + eps).sqrt();
            (a, bias[ch] - mean[ch] * a)
        })
        .unzip()
}

/// The backward of training-mode batch norm: adds the input's gradient into `dx` and returns
/// the gradients of the weight and the bias. `mean` and `inv_std` are the forward's.
fn backward<T: HostFloat>(
    g: &BnGeom,
    x: &[T],
    dy: &[T],
    mean: &[f64],
    inv_std: &[f64],
    weight: &[f64],
    dx: &mut [T],
) -> (Vec<f64>, Vec<f64>) {
    let m = g.per_channel() as f64;
    // Per channel: Σ dy (the bias's gradient) and Σ dy·(x − mean), which inv_std turns into
    // Σ dy·x̂ (the weight's gradient).
    let (d_bias, sum_dy_xc): (Vec<f64>, Vec<f64>) = (0..g.c)
        .into_par_iter()
        .map(|ch| {
            let mt = t::<T>(mean[ch]);
            (
                lane_sums(g.planes(dy, ch).map(|p| (p, p)), |d, _| d),
                lane_sums(g.planes(dy, ch).zip(g.planes(x, ch)), |d, x| d * (x - mt)),
            )
        })
        .unzip();
    let d_weight: Vec<f64> = sum_dy_xc.iter().zip(inv_std).map(|(s, i)| s * i).collect();
    // dx = w·σ⁻¹·(dy − mean(dy) − x̂·mean(dy·x̂)) = k_dy·dy + k_x·(x − mean) + k_1.
    let coef: Vec<(f64, f64, f64)> = (0..g.c)
        .map(|ch| {
            let ws = weight[ch] * inv_std[ch];
            let (mdy, mdxh) = (d_bias[ch] / m, d_weight[ch] / m);
            (ws, -ws * inv_std[ch] * mdxh, -ws * mdy)
        })
        .collect();
    dx.par_chunks_mut(g.hw)
        .zip(x.par_chunks(g.hw).zip(dy.par_chunks(g.hw)))
        .enumerate()
        .for_each(|(plane, (dxp, (xp, dp)))| {
            let ch = plane % g.c;
            let (k_dy, k_x, k_1) = coef[ch];
            let (k_dy, k_x, k_1, mt) = (t::<T>(k_dy), t::<T>(k_x), t::<T>(k_1), t::<T>(mean[ch]));
            for ((d, &x), &dy) in dxp.iter_mut().zip(xp).zip(dp) {
                *d += k_dy * dy + k_x * (x - mt) + k_1;
            }
        });
    (d_weight, d_bias)
}

/// [`stats`] on host values of either dtype. The `_values` functions are not generic, so that
/// they are compiled once, in fulmen, and not again in every crate whose models normalize.
fn stats_values(g: &BnGeom, x: &Values) -> (Vec<f64>, Vec<f64>) {
    on_host!(T; Values(x) => stats(g, x))
}

/// [`affine`] on host values of either dtype.
fn affine_values(g: &BnGeom, x: &Values, a: &[f64], b: &[f64]) -> Values {
    on_host!(T; Values(x) => affine(g, x, a, b).into_values())
}

/// [`backward`] on host values of either dtype.
#[allow(clippy::too_many_arguments)]
fn backward_values(
    g: &BnGeom,
    x: &Values,
    dy: &Values,
    mean: &[f64],
    inv_std: &[f64],
    weight: &[f64],
    dx: ValuesMut<'_>,
) -> (Vec<f64>, Vec<f64>) {
    on_host!(T; Values(x), Values(dy), ValuesMut(dx) => backward(g, x, dy, mean, inv_std, weight, dx))
}

/// A per-channel tensor's values in f64.
fn host_f64<E: FloatDtype, D: HostAccess<E>>(t: &Tensor<(usize,), E, D>) -> Vec<f64> {
    t.as_vec()
        .iter()
        .map(|v| v.to_f64().unwrap_or(f64::NAN))
        .collect()
}

/// Per-channel values as a tensor of `E` on `dev`.
fn per_channel<E: FloatDtype, D: HostAccess<E>>(
    dev: &D,
    values: &[f64],
) -> Result<Tensor<(usize,), E, D>> {
    let v = values.iter().map(|&x| of_f64(x)).collect();
    Ok(dev.try_tensor_from_vec(v, (values.len(),))?)
}

/// Where a batch norm layer's batch statistics go: into the layer's running ones (in a fused
/// sequence), or back to the caller (a lone layer, which moves its running ones itself).
pub(crate) enum Sink<'a, E: FloatDtype, D: HostAccess<E>> {
    Running(&'a mut dyn NormState<E, D>),
    Caller(&'a mut Option<(Vec<f64>, Vec<f64>)>),
}

/// Training-mode batch norm as a chain's layer: normalizes by the batch and sends its
/// statistics to `sink`.
pub(crate) struct BnLayer<'a, E: FloatDtype, D: HostAccess<E>> {
    pub weight: Tensor<(usize,), E, D>,
    pub bias: Tensor<(usize,), E, D>,
    pub epsilon: f64,
    pub sink: Sink<'a, E, D>,
}

impl<'a, E: FloatDtype, D: HostAccess<E>> BnLayer<'a, E, D> {
    /// The layer of a fused sequence's batch norm.
    pub fn of(norm: &'a mut dyn NormState<E, D>) -> Result<Self> {
        Ok(BnLayer {
            weight: norm.weight()?,
            bias: norm.bias()?,
            epsilon: norm.epsilon(),
            sink: Sink::Running(norm),
        })
    }
}

impl<E: FloatDtype, D: HostAccess<E>> HostLayer<E, D> for BnLayer<'_, E, D> {
    fn forward(
        &mut self,
        xs: &Arc<Values>,
        dims: Dims,
    ) -> Result<(Values, Dims, LayerBackward<E, D>)> {
        let [n, c, h, w] = dims;
        let channels = self.weight.shape().0;
        if c != channels {
            return Err(Error::msg(format!(
                "BatchNorm2D<{channels}>: an input of {c} channels"
            )));
        }
        let g = BnGeom { n, c, hw: h * w };
        let (mean, var) = stats_values(&g, xs);
        let (weight, bias) = (host_f64(&self.weight), host_f64(&self.bias));
        let (a, b) = coefficients(&mean, &var, &weight, &bias, self.epsilon);
        let y = affine_values(&g, xs, &a, &b);
        match &mut self.sink {
            Sink::Running(norm) => {
                let dev = self.weight.device();
                let (m, v) = (per_channel(dev, &mean)?, per_channel(dev, &var)?);
                norm.update_running(m, v, g.per_channel())?;
            }
            Sink::Caller(out) => **out = Some((mean.clone(), var.clone())),
        }
        let inv_std: Vec<f64> = var
            .iter()
            .map(|v| 1.0 / (v + self.epsilon).sqrt())
            .collect();
        let (xs, w_key, b_key) = (xs.clone(), self.weight.clone(), self.bias.clone());
        let backward: LayerBackward<E, D> = Box::new(move |dy, dx| {
            let (dw, db) = backward_values(&g, &xs, dy, &mean, &inv_std, &weight, dx);
            Box::new(move |grads| {
                add_grad(&w_key, grads, Values::from_f64::<E>(dw))?;
                add_grad(&b_key, grads, Values::from_f64::<E>(db))
            })
        });
        Ok((y, dims, backward))
    }
}

impl<E: FloatDtype, D: HostAccess<E>> Norm<E, D> for Host {
    /// As a chain of one.
    fn batch_norm_train<T: Tape<E, D>, const C: usize>(
        x: Images<C, E, D, T>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Normalized<C, E, D, T>> {
        let dev = x.device().clone();
        let mut stats = None;
        let y = chain::run(
            "BatchNorm2D",
            x,
            &mut [&mut BnLayer {
                weight: realize(weight.clone(), "BatchNorm2D.weight")?,
                bias: realize(bias.clone(), "BatchNorm2D.bias")?,
                epsilon,
                sink: Sink::Caller(&mut stats),
            }],
        )?;
        let (mean, var) = stats.ok_or_else(|| Error::msg("batch norm: no statistics"))?;
        let channels = |v| realize::<Rank1<C>, _, _, _, _>(v, "BatchNorm2D statistics");
        Ok((
            y,
            channels(per_channel(&dev, &mean)?)?,
            channels(per_channel(&dev, &var)?)?,
        ))
    }

    /// In one pass.
    fn batch_norm_eval<const C: usize>(
        x: Images<C, E, D>,
        mean: &Tensor<Rank1<C>, E, D>,
        var: &Tensor<Rank1<C>, E, D>,
        weight: &Tensor<Rank1<C>, E, D>,
        bias: &Tensor<Rank1<C>, E, D>,
        epsilon: f64,
    ) -> Result<Images<C, E, D>> {
        let (n, _, h, w) = *x.shape();
        let g = BnGeom { n, c: C, hw: h * w };
        let f64s = |t: &Tensor<Rank1<C>, E, D>| -> Result<Vec<f64>> {
            Ok(host_f64(&realize(t.clone(), "BatchNorm2D")?))
        };
        let (a, b) = coefficients(
            &f64s(mean)?,
            &f64s(var)?,
            &f64s(weight)?,
            &f64s(bias)?,
            epsilon,
        );
        let y = affine_values(&g, &Values::of(&x)?, &a, &b);
        y.into_tensor(x.device(), *x.shape())
    }
}

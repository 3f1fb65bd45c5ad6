//! The CPU kernel of 2-D batch normalization, fused: one pass for the statistics, one for the
//! output, and the same for the backward, where dfdx's composed version runs a dozen
//! broadcasting ops. Channels and planes are spread over rayon's threads.
//!
//! Layout `[N, C, HW]`, contiguous. Sums are taken in lanes of the kernel's dtype and added up
//! in f64, so that a channel of a large batch does not lose its small terms.

use rayon::prelude::*;

use super::host::{lane_sums, on_host, Host, HostFloat, HostMut, IntoHost};

/// The shape of one batch norm: `n` images of `c` channels of `hw` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BnGeom {
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
pub fn stats<T: HostFloat>(g: &BnGeom, x: &[T]) -> (Vec<f64>, Vec<f64>) {
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
pub fn affine<T: HostFloat>(g: &BnGeom, x: &[T], a: &[f64], b: &[f64]) -> Vec<T> {
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
pub fn coefficients(
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
pub fn backward<T: HostFloat>(
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

/// [`stats`] on host values of either dtype. The `_host` functions are not generic, so that
/// they are compiled once, in fulmen, and not again in every crate whose models normalize.
pub fn stats_host(g: &BnGeom, x: &Host) -> (Vec<f64>, Vec<f64>) {
    on_host!(T; Host(x) => stats(g, x))
}

/// [`affine`] on host values of either dtype.
pub fn affine_host(g: &BnGeom, x: &Host, a: &[f64], b: &[f64]) -> Host {
    on_host!(T; Host(x) => affine(g, x, a, b).into_host())
}

/// [`backward`] on host values of either dtype.
#[allow(clippy::too_many_arguments)]
pub fn backward_host(
    g: &BnGeom,
    x: &Host,
    dy: &Host,
    mean: &[f64],
    inv_std: &[f64],
    weight: &[f64],
    dx: HostMut<'_>,
) -> (Vec<f64>, Vec<f64>) {
    on_host!(T; Host(x), Host(dy), HostMut(dx) => backward(g, x, dy, mean, inv_std, weight, dx))
}

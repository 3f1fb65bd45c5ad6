//! 3×3 convolutions of stride 1 and padding 1 (a ResNet's, a VGG's) by Winograd's minimal
//! filtering F(2×2, 3×3) (Lavin and Gray, 2016): each 2×2 block of outputs ("tile") comes from
//! the 4×4 block of the image around it in 16 multiplications per pair of channels, where the
//! direct product takes 36. The transformed weights `U = G g Gᵀ` and image blocks
//! `V = Bᵀ d B` are 4×4; for each of their 16 positions `ξ` one plain product on the tiles,
//! `M[ξ] (C_out × tiles) = U[ξ] (C_out × C_in) · V[ξ] (C_in × tiles)`, and each tile's outputs
//! are `Aᵀ M A`. The weights are transformed once per call, straight into packed left
//! operands ([`transformed`]); the image a strip of tiles at a time, straight into the
//! products' panels ([`convolve`]).
//!
//! All three products of a training step run here ([`backward`]): the input gradient is the
//! output gradient, padded by 1, convolved with the weights flipped and transposed (the same
//! geometry); the weights' gradient is, per position, `dU[ξ] = Σ dM[ξ] · V[ξ]ᵀ` over the
//! tiles, with `dM = A dY Aᵀ`, then `dW = Gᵀ dU G` ([`weight_gradient`]). The transforms
//! ([`transforms`]) are sums, differences and halves, and every output sums its channels (or,
//! for the weights' gradient, its tiles) pass by pass in order, so the output and the input
//! gradient are the same whatever the number of threads; each differs from the direct
//! product's by rounding (measured against f64 sums in the tests). Only layers of
//! [`CHANNELS`] channels or more run here; `FULMEN_NO_WINOGRAD` turns it off.

use std::sync::OnceLock;

use super::matmul::{block_rows, Lhs};
use super::*;
use transforms::*;

mod transforms;

/// Input and output channels from which a convolution is computed here: with fewer, the
/// transforms cost more than the products save (the small ResNet, 16 to 64 channels, trained at
/// 585 images/s with every layer here, 667 from 32 channels, 688 from 64, 648 with none; the
/// MNIST net, 1 and 16 input channels, 3,121 with every layer, 3,423 with none).
const CHANNELS: usize = 64;

/// Whether `g` is computed here.
pub(super) fn handles(g: &ConvGeom) -> bool {
    static ON: OnceLock<bool> = OnceLock::new();
    let on = *ON.get_or_init(|| std::env::var_os("FULMEN_NO_WINOGRAD").is_none());
    on && available()
        && g.c_in.min(g.c_out) >= CHANNELS
        && g.h > 0
        && g.w > 0
        && g.k == 3
        && g.stride == 1
        && g.dilation == 1
        && g.padding == 1
        && g.groups == 1
        && g.w.div_ceil(2) <= NB
}

/// The channels and the size of the images a [`convolve`] reads (its output's are the same).
#[derive(Debug, Clone, Copy)]
pub(super) struct Images {
    pub(super) c_in: usize,
    pub(super) c_out: usize,
    pub(super) h: usize,
    pub(super) w: usize,
}

impl Images {
    /// The images of `g`'s forward, or (`dual`) of its input gradient: the output gradient's.
    pub(super) fn of(g: &ConvGeom, dual: bool) -> Images {
        let (c_in, c_out) = if dual {
            (g.c_out, g.c_in)
        } else {
            (g.c_in, g.c_out)
        };
        Images {
            c_in,
            c_out,
            h: g.h,
            w: g.w,
        }
    }
}

/// `U[ξ] = (G g Gᵀ)[ξ]` of every kernel `g` of `w` (`[C_out, C_in, 3, 3]`), one left operand
/// per position `ξ`, packed: `C_out` rows of `C_in` columns, or, `dual`, of the weights
/// flipped and transposed (the input gradient's), `C_in` rows of `C_out` columns.
pub(super) fn transformed(w: &[f32], c_out: usize, c_in: usize, dual: bool) -> Vec<Packed> {
    assert!(w.len() == c_out * c_in * 9, "3×3 weights");
    assert!(available(), "tiled kernels on a CPU without AVX2");
    let (rows, cols) = if dual { (c_in, c_out) } else { (c_out, c_in) };
    let block = MR * cols;
    let blocks = rows.div_ceil(MR);
    let mut packed: Vec<Packed> = (0..16)
        .map(|_| Packed {
            m: rows,
            k: cols,
            data: vec![0f32; blocks * block],
        })
        .collect();
    let mut chunks: Vec<_> = packed
        .iter_mut()
        .map(|p| p.data.chunks_mut(block))
        .collect();
    let parts: Vec<Vec<&mut [f32]>> = (0..blocks)
        .map(|_| chunks.iter_mut().filter_map(|c| c.next()).collect())
        .collect();
    parts
        .into_par_iter()
        .enumerate()
        .for_each(|(blk, mut part)| {
            for c in 0..cols {
                // The block's kernels of column `c`, one per lane (rows past `rows` zero).
                let mut g = [[0f32; MR]; 9];
                for i in 0..MR.min(rows - blk * MR) {
                    let r = blk * MR + i;
                    for (t, tap) in g.iter_mut().enumerate() {
                        tap[i] = match dual {
                            true => w[(c * c_in + r) * 9 + 8 - t],
                            false => w[(r * c_in + c) * 9 + t],
                        };
                    }
                }
                // SAFETY: the tiles' instruction sets are here (this runs only with them).
                let u = unsafe { kernels(&g) };
                for (p, u) in part.iter_mut().zip(&u) {
                    p[c * MR..][..MR].copy_from_slice(u);
                }
            }
        });
    packed
}

/// Tile columns per strip at most: its 16 panels and 16 products' outputs stay in L2.
fn strip_cap(c_out: usize) -> usize {
    let w = isa::strip_width();
    ((8192 / c_out.max(1)).clamp(w, 96)) / w * w
}

/// `out` (+)= `x` (`[N, C_in, H, W]`) convolved with the transformed weights `u` (`C_out` rows
/// each), plus `bias`: `[N, C_out, H, W]`, images across rayon's threads.
pub(super) fn convolve(
    s: Images,
    x: &[f32],
    u: &[Packed],
    bias: Option<&[f32]>,
    out: &mut [f32],
    add: bool,
) {
    let Images { c_in, c_out, h, w } = s;
    let (img_in, img_out) = (c_in * h * w, c_out * h * w);
    assert!(
        u.len() == 16 && u.iter().all(|u| u.m == c_out && u.k == c_in),
        "transformed weights of these channels"
    );
    assert!(
        img_in > 0
            && img_out > 0
            && x.len().is_multiple_of(img_in)
            && out.len() == x.len() / img_in * img_out,
        "whole images"
    );
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    assert!(tw <= NB, "image rows wider than a strip");
    assert!(available(), "tiled kernels on a CPU without AVX2");
    let per_strip = (strip_cap(c_out) / tw).max(1);
    let per_task = images_per_task(x.len() / img_in);
    x.par_chunks(per_task * img_in)
        .zip(out.par_chunks_mut(per_task * img_out))
        .for_each(|(xs, outs)| {
            let rows = tile_rows(xs.len() / img_in, th);
            let width = per_strip * tw;
            let mut panels: Vec<Panel> = (0..16).map(|_| Panel::new(c_in, width)).collect();
            let mut m = vec![0f32; 16 * c_out * width];
            let mut v = vec![0f32; 16 * width];
            let mut scratch = vec![0f32; 20 * width];
            for strip in rows.chunks(per_strip) {
                let width = strip.len() * tw;
                for (k0, kc) in isa::passes(c_in) {
                    panels.iter_mut().for_each(|p| p.rows(kc));
                    for ci in k0..k0 + kc {
                        let planes = Planes::channel(xs, ci, c_in, (h, w));
                        // SAFETY: the tiles' instruction sets are here (asserted).
                        unsafe { image_strip(planes, strip, &mut scratch, (&mut v, width)) };
                        for (panel, v) in panels.iter_mut().zip(v.chunks(width)) {
                            panel.put(ci - k0, 0, v);
                        }
                    }
                    for (xi, (panel, m)) in
                        panels.iter().zip(m.chunks_mut(c_out * width)).enumerate()
                    {
                        panel.pass(u[xi].left(), k0, width, m, width, k0 > 0);
                    }
                }
                for co in 0..c_out {
                    let at: [&[f32]; 16] =
                        std::array::from_fn(|xi| &m[(xi * c_out + co) * width..][..width]);
                    let planes = Planes::channel(&mut *outs, co, c_out, (h, w));
                    let b = (bias.map_or(0.0, |b| b[co]), add);
                    // SAFETY: as above.
                    unsafe { output_strip(&at, planes, strip, b, &mut scratch) };
                }
            }
        });
}

/// Adds the input's gradient into `dx` and returns the gradients of the weight and the bias
/// (zeros unless `with_bias`), given the output's gradient `dy`.
pub(super) fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    with_bias: bool,
) -> (Vec<f32>, Vec<f32>) {
    let u = transformed(w, g.c_out, g.c_in, true);
    convolve(Images::of(g, true), dy, &u, None, dx, true);
    drop(u);
    let dw = weight_gradient(Images::of(g, false), x, dy);
    let mut db = vec![0f32; g.c_out];
    if with_bias {
        for (c, plane) in dy.chunks(g.h * g.w).enumerate() {
            db[c % g.c_out] += lane_sum(plane, plane, |d, _| d) as f32;
        }
    }
    (dw, db)
}

/// The weights' gradient, `[C_out, C_in, 3, 3]`, of a convolution of `x` whose output's
/// gradient is `dy`, by the same transforms: per position `ξ`, `dU[ξ] (C_out × C_in) +=
/// dM[ξ] (C_out × tiles) · V[ξ]ᵀ (tiles × C_in)` with `dM = A dY Aᵀ` (each output gradient
/// tile's 4×4) and `V` the forward's; then `dW = Gᵀ dU G`. Images across rayon's threads,
/// their sums added in order.
fn weight_gradient(s: Images, x: &[f32], dy: &[f32]) -> Vec<f32> {
    let Images { c_in, c_out, h, w } = s;
    let (img_in, img_out) = (c_in * h * w, c_out * h * w);
    assert!(
        img_in > 0 && x.len().is_multiple_of(img_in) && dy.len() == x.len() / img_in * img_out,
        "whole images"
    );
    assert!(available(), "tiled kernels on a CPU without AVX2");
    let (th, tw) = (h.div_ceil(2), w.div_ceil(2));
    // Rows of tiles per product: its reduction, one pass deep.
    let per_chunk = (isa::depth() / tw).max(1);
    let per_task = images_per_task(x.len() / img_in);
    let partial: Vec<Vec<f32>> = x
        .par_chunks(per_task * img_in)
        .zip(dy.par_chunks(per_task * img_out))
        .map(|(xs, dys)| {
            let rows = tile_rows(xs.len() / img_in, th);
            let most = per_chunk.min(rows.len()) * tw;
            let (mut v, mut dm) = (vec![0f32; 16 * c_in * most], vec![0f32; 16 * c_out * most]);
            let mut du = vec![0f32; 16 * c_out * c_in];
            let mut scratch = vec![0f32; 20 * most];
            for chunk in rows.chunks(per_chunk) {
                let width = chunk.len() * tw;
                for ci in 0..c_in {
                    let planes = Planes::channel(xs, ci, c_in, (h, w));
                    let at = (&mut v[ci * width..], c_in * width);
                    // SAFETY: the tiles' instruction sets are here (asserted).
                    unsafe { image_strip(planes, chunk, &mut scratch, at) };
                }
                for co in 0..c_out {
                    let planes = Planes::channel(dys, co, c_out, (h, w));
                    let at = (&mut dm[co * width..], c_out * width);
                    // SAFETY: as above.
                    unsafe { gradient_strip(planes, chunk, &mut scratch, at) };
                }
                for xi in 0..16 {
                    let dm = Mat::rows(&dm[xi * c_out * width..][..c_out * width], width);
                    let vt = Mat::transposed(&v[xi * c_in * width..][..c_in * width], width);
                    let lhs = Lhs::Rows {
                        a: dm,
                        r0: 0,
                        m: c_out,
                        k: width,
                    };
                    let du = &mut du[xi * c_out * c_in..][..c_out * c_in];
                    block_rows(lhs, &vt, c_in, du, c_in, true);
                }
            }
            let mut dw = vec![0f32; c_out * c_in * 9];
            for (co, dw) in dw.chunks_mut(c_in * 9).enumerate() {
                let du: [&[f32]; 16] =
                    std::array::from_fn(|xi| &du[(xi * c_out + co) * c_in..][..c_in]);
                // SAFETY: as above.
                unsafe { kernel_gradients(&du, dw) };
            }
            dw
        })
        .collect();
    let mut dw = vec![0f32; c_out * c_in * 9];
    for part in partial {
        dw.iter_mut().zip(part).for_each(|(a, b)| *a += b);
    }
    dw
}

/// One channel of every image of a task: image `img`'s plane at `values[first + img·stride..]`,
/// `h × w`.
struct Planes<T> {
    values: T,
    first: usize,
    stride: usize,
    h: usize,
    w: usize,
}

impl<T> Planes<T> {
    /// Channel `c` of images of `channels` channels, `h × w`, one after another in `values`.
    fn channel(values: T, c: usize, channels: usize, (h, w): (usize, usize)) -> Planes<T> {
        Planes {
            values,
            first: c * h * w,
            stride: channels * h * w,
            h,
            w,
        }
    }
}

/// The rows of tiles `(image, ty)` of `images` images of `th` rows of tiles, in order.
fn tile_rows(images: usize, th: usize) -> Vec<(usize, usize)> {
    (0..images)
        .flat_map(|img| (0..th).map(move |ty| (img, ty)))
        .collect()
}

#[cfg(test)]
mod tests;

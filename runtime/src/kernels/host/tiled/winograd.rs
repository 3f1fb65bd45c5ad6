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
//! The forward and the input gradient (the output gradient, padded by 1, convolved with the
//! weights flipped and transposed: the same geometry) run here. The transforms' values are
//! sums and differences and halves, exact or rounded once, and every output still sums its
//! input channels pass by pass in order, so the result is the same whatever the number of
//! threads; it differs from the direct product's by rounding (measured against it in the
//! tests). `FULMEN_NO_WINOGRAD` turns it off.

use std::sync::OnceLock;

use super::matmul::{block_rows, Lhs};
use super::*;

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

/// `G g Gᵀ` of `MR` 3×3 kernels, lane by lane (`g[t]` is tap `t`'s, row-major):
/// `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`.
#[target_feature(enable = "avx2,fma")]
fn kernels(g: &[[f32; MR]; 9]) -> [[f32; MR]; 16] {
    // G times the column (a, b, c), into `out[0]`, `out[step]`, ….
    #[inline(always)]
    fn side(a: &[f32; MR], b: &[f32; MR], c: &[f32; MR], out: &mut [[f32; MR]], step: usize) {
        for l in 0..MR {
            out[0][l] = a[l];
            out[step][l] = (a[l] + b[l] + c[l]) * 0.5;
            out[2 * step][l] = (a[l] - b[l] + c[l]) * 0.5;
            out[3 * step][l] = c[l];
        }
    }
    // G g, 4 rows of 3; then each of its rows times Gᵀ.
    let mut gg = [[0f32; MR]; 12];
    for x in 0..3 {
        let (a, b, c) = (g[x], g[3 + x], g[6 + x]);
        side(&a, &b, &c, &mut gg[x..], 3);
    }
    let mut u = [[0f32; MR]; 16];
    for y in 0..4 {
        let (a, b, c) = (gg[3 * y], gg[3 * y + 1], gg[3 * y + 2]);
        side(&a, &b, &c, &mut u[4 * y..], 1);
    }
    u
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
            let rows: Vec<(usize, usize)> = (0..xs.len() / img_in)
                .flat_map(|img| (0..th).map(move |ty| (img, ty)))
                .collect();
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
                        let planes = Planes {
                            values: xs,
                            first: ci * h * w,
                            stride: img_in,
                            h,
                            w,
                        };
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
                    let planes = Planes {
                        values: &mut *outs,
                        first: co * h * w,
                        stride: img_out,
                        h,
                        w,
                    };
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
            let rows: Vec<(usize, usize)> = (0..xs.len() / img_in)
                .flat_map(|img| (0..th).map(move |ty| (img, ty)))
                .collect();
            let most = per_chunk.min(rows.len()) * tw;
            let (mut v, mut dm) = (vec![0f32; 16 * c_in * most], vec![0f32; 16 * c_out * most]);
            let mut du = vec![0f32; 16 * c_out * c_in];
            let mut scratch = vec![0f32; 20 * most];
            for chunk in rows.chunks(per_chunk) {
                let width = chunk.len() * tw;
                for ci in 0..c_in {
                    let planes = Planes {
                        values: xs,
                        first: ci * h * w,
                        stride: img_in,
                        h,
                        w,
                    };
                    let at = (&mut v[ci * width..], c_in * width);
                    // SAFETY: the tiles' instruction sets are here (asserted).
                    unsafe { image_strip(planes, chunk, &mut scratch, at) };
                }
                for co in 0..c_out {
                    let planes = Planes {
                        values: dys,
                        first: co * h * w,
                        stride: img_out,
                        h,
                        w,
                    };
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

/// The transformed blocks `Bᵀ d B` of a strip's tiles (its rows of tiles `(image, ty)`, each
/// `tw` wide), of one channel (`planes`, zero past their edges): position `ξ` of the strip's
/// tile `col` at `v[ξ·ld + col]`. `Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`.
/// `scratch` holds 20 × `width`.
#[target_feature(enable = "avx2,fma")]
fn image_strip(
    p: Planes<&[f32]>,
    strip: &[(usize, usize)],
    scratch: &mut [f32],
    (v, ld): (&mut [f32], usize),
) {
    let (h, w) = (p.h, p.w);
    let tw = w.div_ceil(2);
    let width = strip.len() * tw;
    let (d, c) = scratch[..20 * width].split_at_mut(4 * width);
    for i in 0..4 {
        // Row `i` of every tile's block: tile `tx` reads image columns `2tx - 1 ..= 2tx + 2`,
        // `d[0..4]` (zero past the edges), each a run across the strip…
        let (d0, rest) = d.split_at_mut(width);
        let (d1, rest) = rest.split_at_mut(width);
        let (d2, d3) = rest.split_at_mut(width);
        for (r, &(img, ty)) in strip.iter().enumerate() {
            let run = r * tw..(r + 1) * tw;
            let d0 = &mut d0[run.clone()];
            let d1 = &mut d1[run.clone()];
            let d2 = &mut d2[run.clone()];
            let d3 = &mut d3[run];
            let Some(y) = (2 * ty + i).checked_sub(1).filter(|&y| y < h) else {
                [d0, d1, d2, d3].into_iter().for_each(|d| d.fill(0.0));
                continue;
            };
            let row = &p.values[p.first + img * p.stride + y * w..][..w];
            let at = |x: usize| row.get(x).copied().unwrap_or(0.0);
            for tx in 0..tw {
                d0[tx] = if tx > 0 { row[2 * tx - 1] } else { 0.0 };
                d1[tx] = row[2 * tx];
                d2[tx] = at(2 * tx + 1);
                d3[tx] = at(2 * tx + 2);
            }
        }
        // …then its 4 columns of `d B`.
        let (d0, d1, d2, d3) = (&*d0, &*d1, &*d2, &*d3);
        let ci = &mut c[4 * i * width..][..4 * width];
        let (c0, rest) = ci.split_at_mut(width);
        let (c1, rest) = rest.split_at_mut(width);
        let (c2, c3) = rest.split_at_mut(width);
        for col in 0..width {
            c0[col] = d0[col] - d2[col];
            c1[col] = d1[col] + d2[col];
            c2[col] = d2[col] - d1[col];
            c3[col] = d1[col] - d3[col];
        }
    }
    // Down the rows: `Bᵀ (d B)`.
    for j in 0..4 {
        let row = |i: usize| &c[(4 * i + j) * width..][..width];
        let (c0, c1, c2, c3) = (row(0), row(1), row(2), row(3));
        for col in 0..width {
            v[j * ld + col] = c0[col] - c2[col];
            v[(4 + j) * ld + col] = c1[col] + c2[col];
            v[(8 + j) * ld + col] = c2[col] - c1[col];
            v[(12 + j) * ld + col] = c1[col] - c3[col];
        }
    }
}

/// The outputs `Aᵀ M A` (`Aᵀ = [1 1 1 0; 0 1 -1 -1]`) of a strip's tiles into one channel
/// (`planes`; outputs past their edges dropped), plus `bias`, written or (`add`) added; `m[ξ]`
/// is position `ξ` of the strip's tiles. `scratch` holds 6 × `width`.
#[target_feature(enable = "avx2,fma")]
fn output_strip(
    m: &[&[f32]; 16],
    p: Planes<&mut [f32]>,
    strip: &[(usize, usize)],
    (bias, add): (f32, bool),
    scratch: &mut [f32],
) {
    let (h, w) = (p.h, p.w);
    let tw = w.div_ceil(2);
    let width = strip.len() * tw;
    let (r, ys) = scratch[..6 * width].split_at_mut(4 * width);
    let (left, right) = ys.split_at_mut(width);
    for a in 0..2 {
        // Row `a` of `Aᵀ M`, then the two outputs of each tile on that row.
        for (j, rj) in r.chunks_mut(width).enumerate() {
            let (m0, m1, m2, m3) = (
                &m[j][..width],
                &m[4 + j][..width],
                &m[8 + j][..width],
                &m[12 + j][..width],
            );
            for col in 0..width {
                rj[col] = match a {
                    0 => m0[col] + m1[col] + m2[col],
                    _ => m1[col] - m2[col] - m3[col],
                };
            }
        }
        let (r0, rest) = r.split_at(width);
        let (r1, rest) = rest.split_at(width);
        let (r2, r3) = rest.split_at(width);
        for col in 0..width {
            left[col] = r0[col] + r1[col] + r2[col] + bias;
            right[col] = r1[col] - r2[col] - r3[col] + bias;
        }
        for (run, &(img, ty)) in strip.iter().enumerate() {
            let y = 2 * ty + a;
            if y >= h {
                continue;
            }
            let row = &mut p.values[p.first + img * p.stride + y * w..][..w];
            let (l, r) = (&left[run * tw..][..tw], &right[run * tw..][..tw]);
            for ((out, &l), &r) in row.chunks_mut(2).zip(l).zip(r) {
                match out {
                    [o0, o1] if add => (*o0, *o1) = (*o0 + l, *o1 + r),
                    [o0, o1] => (*o0, *o1) = (l, r),
                    [o0] if add => *o0 += l,
                    [o0] => *o0 = l,
                    _ => {}
                }
            }
        }
    }
}

/// `A dY Aᵀ` (`A = [1 0; 1 1; 1 -1; 0 -1]`) of a strip's tiles of one channel of the output
/// gradient (`planes`, zero past their edges): position `ξ` of the strip's tile `col` at
/// `m[ξ·ld + col]`. `scratch` holds 10 × `width`.
#[target_feature(enable = "avx2,fma")]
fn gradient_strip(
    p: Planes<&[f32]>,
    strip: &[(usize, usize)],
    scratch: &mut [f32],
    (m, ld): (&mut [f32], usize),
) {
    let (h, w) = (p.h, p.w);
    let tw = w.div_ceil(2);
    let width = strip.len() * tw;
    let (g, e) = scratch[..10 * width].split_at_mut(2 * width);
    for a in 0..2 {
        // Row `a` of every tile: its two values across the strip…
        let (g0, g1) = g.split_at_mut(width);
        for (r, &(img, ty)) in strip.iter().enumerate() {
            let run = r * tw..(r + 1) * tw;
            let (g0, g1) = (&mut g0[run.clone()], &mut g1[run]);
            let Some(y) = Some(2 * ty + a).filter(|&y| y < h) else {
                g0.fill(0.0);
                g1.fill(0.0);
                continue;
            };
            let row = &p.values[p.first + img * p.stride + y * w..][..w];
            for (tx, pair) in row.chunks(2).enumerate() {
                g0[tx] = pair[0];
                g1[tx] = pair.get(1).copied().unwrap_or(0.0);
            }
        }
        // …times `Aᵀ`: its 4 values.
        let (g0, g1) = (&*g0, &*g1);
        let ea = &mut e[4 * a * width..][..4 * width];
        let (e0, rest) = ea.split_at_mut(width);
        let (e1, rest) = rest.split_at_mut(width);
        let (e2, e3) = rest.split_at_mut(width);
        for col in 0..width {
            e0[col] = g0[col];
            e1[col] = g0[col] + g1[col];
            e2[col] = g0[col] - g1[col];
            e3[col] = -g1[col];
        }
    }
    // Then `A` times the two rows.
    for j in 0..4 {
        let (r0, r1) = (&e[j * width..][..width], &e[(4 + j) * width..][..width]);
        for col in 0..width {
            m[j * ld + col] = r0[col];
            m[(4 + j) * ld + col] = r0[col] + r1[col];
            m[(8 + j) * ld + col] = r0[col] - r1[col];
            m[(12 + j) * ld + col] = -r1[col];
        }
    }
}

/// `Gᵀ dU G` (`Gᵀ = [1 ½ ½ 0; 0 ½ -½ 0; 0 ½ ½ 1]`) of one output channel's 4×4 gradients
/// (`du[ξ][ci]`), into its kernels' gradients `dw[ci·9..][..9]`, 8 input channels at a time.
#[target_feature(enable = "avx2,fma")]
fn kernel_gradients(du: &[&[f32]; 16], dw: &mut [f32]) {
    // Gᵀ times the column (a, b, c, d), into `out[0]`, `out[step]`, `out[2·step]`.
    #[inline(always)]
    fn side(u: [&[f32; 8]; 4], out: &mut [[f32; 8]], step: usize) {
        let [a, b, c, d] = u;
        for l in 0..8 {
            out[0][l] = a[l] + (b[l] + c[l]) * 0.5;
            out[step][l] = (b[l] - c[l]) * 0.5;
            out[2 * step][l] = (b[l] + c[l]) * 0.5 + d[l];
        }
    }
    let c_in = dw.len() / 9;
    for c0 in (0..c_in).step_by(8) {
        let lanes = 8.min(c_in - c0);
        let mut u = [[0f32; 8]; 16];
        for (ux, du) in u.iter_mut().zip(du) {
            ux[..lanes].copy_from_slice(&du[c0..c0 + lanes]);
        }
        // Gᵀ dU, 3 rows of 4; then each of its rows times G.
        let mut t = [[0f32; 8]; 12];
        for j in 0..4 {
            let (a, b, c, d) = (u[j], u[4 + j], u[8 + j], u[12 + j]);
            side([&a, &b, &c, &d], &mut t[j..], 4);
        }
        let mut k = [[0f32; 8]; 9];
        for r in 0..3 {
            let (a, b, c, d) = (t[4 * r], t[4 * r + 1], t[4 * r + 2], t[4 * r + 3]);
            side([&a, &b, &c, &d], &mut k[3 * r..], 1);
        }
        for l in 0..lanes {
            for (tap, kt) in k.iter().enumerate() {
                dw[(c0 + l) * 9 + tap] = kt[l];
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The direct convolution, in f64.
    fn direct(s: Images, x: &[f32], w: &[f32], n: usize) -> Vec<f64> {
        let Images {
            c_in,
            c_out,
            h,
            w: wd,
        } = s;
        let mut out = vec![0f64; n * c_out * h * wd];
        for img in 0..n {
            for co in 0..c_out {
                for y in 0..h {
                    for xo in 0..wd {
                        let mut sum = 0f64;
                        for ci in 0..c_in {
                            for ky in 0..3 {
                                for kx in 0..3 {
                                    let (iy, ix) = ((y + ky) as isize - 1, (xo + kx) as isize - 1);
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= wd as isize {
                                        continue;
                                    }
                                    let xv =
                                        x[((img * c_in + ci) * h + iy as usize) * wd + ix as usize];
                                    let wv = w[((co * c_in + ci) * 3 + ky) * 3 + kx];
                                    sum += f64::from(xv) * f64::from(wv);
                                }
                            }
                        }
                        out[((img * c_out + co) * h + y) * wd + xo] = sum;
                    }
                }
            }
        }
        out
    }

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// Odd and even sizes, images narrower than a tile, channels past a pass and a block of
    /// rows, several strips per image and several images per strip: the direct sums, within
    /// rounding; the same bits on 1 and 3 threads; `add` adds.
    #[test]
    fn winograd_convolutions_are_the_direct_sums() {
        if !available() {
            return;
        }
        for (n, c_in, c_out, h, w) in [
            (1, 1, 1, 1, 1),
            (2, 3, 5, 5, 7),
            (3, 16, 9, 4, 4),
            (2, 300, 20, 6, 3),
            (1, 8, 130, 33, 32),
            (5, 4, 8, 2, 2),
        ] {
            let s = Images { c_in, c_out, h, w };
            let x = values(n * c_in * h * w, 1);
            let wt = values(c_out * c_in * 9, 2);
            let bias = values(c_out, 3);
            let want = direct(s, &x, &wt, n);
            let u = transformed(&wt, c_out, c_in, false);
            let mut got = vec![f32::NAN; n * c_out * h * w];
            convolve(s, &x, &u, Some(&bias), &mut got, false);
            let plane = h * w;
            for (i, (&g, &d)) in got.iter().zip(&want).enumerate() {
                let d = d + f64::from(bias[i / plane % c_out]);
                let tol = 2e-6 * (c_in as f64 * 9.0).sqrt() * 4.0;
                assert!(
                    (f64::from(g) - d).abs() <= tol,
                    "{n}×{c_in}→{c_out} {h}×{w} at {i}: {g} vs {d}"
                );
            }
            for threads in [1, 3] {
                let pool = rayon::ThreadPoolBuilder::new()
                    .num_threads(threads)
                    .build()
                    .expect("a pool");
                let mut again = vec![0f32; got.len()];
                pool.install(|| convolve(s, &x, &u, Some(&bias), &mut again, false));
                let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                assert_eq!(bits(&again), bits(&got), "on {threads} threads");
            }
            let mut twice = got.clone();
            convolve(s, &x, &u, None, &mut twice, true);
            for (i, (&t, &g)) in twice.iter().zip(&got).enumerate() {
                let want = 2.0 * g - bias[i / plane % c_out];
                assert!(
                    (t - want).abs() <= 1e-4 * (1.0 + want.abs()),
                    "added at {i}"
                );
            }
        }
    }

    /// The weights' gradient is the direct sums' over every image and pixel, within rounding,
    /// for sizes with strips of several chunks, odd edges and narrow images.
    #[test]
    fn weight_gradients_are_the_direct_sums() {
        if !available() {
            return;
        }
        for (n, c_in, c_out, h, w) in [
            (1, 1, 1, 1, 1),
            (2, 3, 5, 5, 7),
            (3, 16, 9, 4, 4),
            (2, 10, 20, 33, 40),
            (5, 9, 3, 2, 3),
        ] {
            let s = Images { c_in, c_out, h, w };
            let x = values(n * c_in * h * w, 5);
            let dy = values(n * c_out * h * w, 6);
            let got = weight_gradient(s, &x, &dy);
            for co in 0..c_out {
                for ci in 0..c_in {
                    for t in 0..9 {
                        let (ky, kx) = (t / 3, t % 3);
                        let mut sum = 0f64;
                        for img in 0..n {
                            for y in 0..h {
                                for xo in 0..w {
                                    let (iy, ix) = ((y + ky) as isize - 1, (xo + kx) as isize - 1);
                                    if iy < 0 || ix < 0 || iy >= h as isize || ix >= w as isize {
                                        continue;
                                    }
                                    let xv =
                                        x[((img * c_in + ci) * h + iy as usize) * w + ix as usize];
                                    let d = dy[((img * c_out + co) * h + y) * w + xo];
                                    sum += f64::from(xv) * f64::from(d);
                                }
                            }
                        }
                        let g = got[(co * c_in + ci) * 9 + t];
                        let tol = 4e-6 * ((n * h * w) as f64).sqrt() * 4.0;
                        assert!(
                            (f64::from(g) - sum).abs() <= tol,
                            "{n}×{c_in}→{c_out} {h}×{w} at {co},{ci},{t}: {g} vs {sum}"
                        );
                    }
                }
            }
        }
    }

    /// The dual weights convolve as the flipped, transposed kernels do.
    #[test]
    fn dual_weights_are_flipped_and_transposed() {
        if !available() {
            return;
        }
        let (c_out, c_in) = (5, 3);
        let wt = values(c_out * c_in * 9, 4);
        let mut flipped = vec![0f32; wt.len()];
        for co in 0..c_out {
            for ci in 0..c_in {
                for t in 0..9 {
                    flipped[(ci * c_out + co) * 9 + t] = wt[(co * c_in + ci) * 9 + 8 - t];
                }
            }
        }
        let (dual, plain) = (
            transformed(&wt, c_out, c_in, true),
            transformed(&flipped, c_in, c_out, false),
        );
        for (d, p) in dual.iter().zip(&plain) {
            assert_eq!((d.m, d.k), (p.m, p.k));
            assert_eq!(d.data, p.data);
        }
    }
}

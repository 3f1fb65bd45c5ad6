//! f32 convolutions and dense products on fulmen's own tiles, used by [`conv`](super::conv)
//! for one-group convolutions and by [`dense`](super::dense) whenever the CPU has AVX-512 or
//! AVX2 with FMA ([`isa`]: each instruction set's tiles are a file, [`avx512`] and [`avx2`]).
//!
//! Why: the `gemm` crate enables AVX-512 only on nightly Rust, so on stable it runs AVX2
//! kernels, at about half of what this machine kind's cores do with AVX-512 (measured: 85 vs
//! 152 GFLOP/s of FMA per core); and an im2col copy of the image, which `gemm` then packs
//! again, cost as much time as the products for a ResNet's small convolutions, with AVX2 too.
//!
//! The idea ("implicit GEMM"): every row of a convolution's column matrix is a run of the
//! (zero-padded) image at a fixed offset, so the products read the image through a table of
//! row offsets instead of a copy of it ([`product`]). Three products make a convolution's
//! forward and backward:
//! - the output: weights (packed, [`Packed`]) times the image's rows;
//! - the weight gradient: output gradient times the image's rows transposed ([`weight_product`]);
//! - the input gradient, for stride 1: itself a stride-1 convolution, of the padded output
//!   gradient with the weights flipped and transposed, so the same [`product`]; for other
//!   strides, the column gradient (the transposed weights times the output gradient), each row
//!   added back, as one contiguous run, where the forward read it in the phase planes.
//!
//! The output and the stride-1 input gradient multiply all of a block's images at once
//! ([`multiply`]): with 64 rows or more, strips of their output columns are packed into one
//! contiguous panel ([`gathered`]), so that a 4×4 image does not leave two thirds of a 48-wide
//! tile masked off and rows a power of two apart do not fight over cache sets; with fewer
//! rows the copy costs more than it saves, and each image is its own product.
//!
//! 3×3 convolutions of stride 1 and padding 1 compute their output and input gradient by
//! Winograd's F(2×2, 3×3) instead ([`winograd`]): 16 products on the same tiles with 2.25
//! times fewer multiply-adds (ResNet-18 trained 20% faster on one AVX2 core).
//!
//! Strided convolutions read `stride²` phase planes of the image (every `stride`-th pixel of
//! every `stride`-th row, per offset), in which each tap's window is again a contiguous run;
//! see [`Plan`]. Layouts are PyTorch's, as in [`conv`](super::conv).

use std::arch::x86_64::*;

use rayon::prelude::*;

use super::conv_gemm::images_per_task;
use super::values::{init_with, lane_sum};
use crate::shapes::ConvGeom;

/// Output channels (rows) per tile of [`product`].
const MR: usize = 8;
/// 16-float vectors per tile row of [`product`]: a tile is `MR × 48` outputs.
const NV: usize = 3;
/// Reduction depth per pass, at most ([`isa::depth`] is the instruction set's).
const KC: usize = 512;
/// Columns per strip of a pass (a multiple of the tile's 48).
const NB: usize = 192;
/// Rows × columns of a [`weight_product`] tile.
const WR: usize = 4;
const WC: usize = 6;

/// `len` zeros from a cache line's start: a tile's vectors in a panel (rows `NB` apart) then
/// each lie in whole lines, not two halves of two (a large `Vec`'s values start 16 bytes into
/// a page).
pub(super) struct Lines {
    data: Vec<f32>,
    at: usize,
    len: usize,
}

impl Lines {
    pub(super) fn zeros(len: usize) -> Lines {
        let data = vec![0f32; len + 15];
        let at = data.as_ptr().align_offset(64).min(15);
        Lines { data, at, len }
    }
}

impl std::ops::Deref for Lines {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.data[self.at..self.at + self.len]
    }
}

impl std::ops::DerefMut for Lines {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.data[self.at..self.at + self.len]
    }
}

/// Whether these kernels compute convolution `g`: one group, and for stride 1, padding no
/// larger than the kernel's span (so that the input gradient is a convolution too).
pub fn handles(g: &ConvGeom) -> bool {
    g.groups == 1 && (g.stride != 1 || g.padding <= g.dilation * (g.k - 1)) && available()
}

mod avx2;
mod avx512;
mod isa;
mod matmul;
mod panel;
mod plan;
mod product;
mod transpose;
mod weight;
mod winograd;

pub use isa::{available, isa, Isa};
use isa::{tile, weight_tile, Tile};
use matmul::pack_rows;
pub use matmul::{matmul, matmul_packed, Mat};
pub use panel::Panels;

use panel::Panel;
use plan::*;
use product::*;
use transpose::transpose8;
use weight::*;

/// The output `[N, C_out, H_out, W_out]` of `x` convolved with `w`, plus `bias`.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    if winograd::handles(g) {
        let u = winograd::transformed(w, g.c_out, g.c_in, false);
        let mut out = vec![0f32; g.output_len()];
        winograd::convolve(winograd::Images::of(g, false), x, &u, bias, &mut out, false);
        return out;
    }
    let plan = Plan::new(g);
    let k = plan.offs.len();
    let a = pack_rows(Mat::rows(w, k), 0, g.c_out, k);
    let (img_in, hw) = (g.c_in * g.h * g.w, g.h_out() * g.w_out());
    let img_out = g.c_out * hw;
    let per_task = images_per_task(g.batch);
    let per_block = plan.per_block();
    let pointwise = plan.pointwise();
    let mut out = Vec::with_capacity(g.output_len());
    x.par_chunks(per_task * img_in)
        .zip(out.spare_capacity_mut()[..g.output_len()].par_chunks_mut(per_task * img_out))
        .for_each(|(xs, outs)| {
            let outs = init_with(outs, 0.0);
            let mut srcs = vec![
                0f32;
                if pointwise {
                    0
                } else {
                    per_block * plan.src_len()
                }
            ];
            for (xb, ob) in xs
                .chunks(per_block * img_in)
                .zip(outs.chunks_mut(per_block * img_out))
            {
                let count = xb.len() / img_in;
                let (src, images): (&[f32], Vec<Image>) = if pointwise {
                    (xb, whole_images(count, img_in, img_out, hw))
                } else {
                    for (xi, src) in xb.chunks(img_in).zip(srcs.chunks_mut(plan.src_len())) {
                        plan.load(xi, src);
                    }
                    (&srcs, plan.images(count, img_out))
                };
                multiply(&a, src, &plan.offs, &images, ob, hw, false);
            }
            if let Some(bias) = bias {
                for (c, plane) in outs.chunks_mut(hw).enumerate() {
                    let b = bias[c % g.c_out];
                    plane.iter_mut().for_each(|v| *v += b);
                }
            }
        });
    // SAFETY: each task initialized all of its images' outputs (`init_with`).
    unsafe { out.set_len(g.output_len()) };
    out
}

/// Adds the input's gradient into `dx` and returns the gradients of the weight and the bias
/// (zeros unless `with_bias`), given the output's gradient `dy`.
pub fn backward(
    g: &ConvGeom,
    x: &[f32],
    w: &[f32],
    dy: &[f32],
    dx: &mut [f32],
    with_bias: bool,
) -> (Vec<f32>, Vec<f32>) {
    if winograd::handles(g) {
        return winograd::backward(g, x, w, dy, dx, with_bias);
    }
    let plan = Plan::new(g);
    let k = plan.offs.len();
    let (img_in, hw) = (g.c_in * g.h * g.w, g.h_out() * g.w_out());
    let img_out = g.c_out * hw;
    let (wo, taps) = (g.w_out(), g.k * g.k);
    let pointwise = plan.pointwise();
    // The input gradient's product. Stride 1: the output gradient, padded by `q` on each
    // side, convolved with the weights flipped and transposed (`C_in × C_out·K·K`); else the
    // column gradient, the transposed weights (`C_in·K·K × C_out`) times the output gradient.
    let q = (g.dilation * (g.k - 1)).saturating_sub(g.padding);
    let dual = ConvGeom {
        c_in: g.c_out,
        c_out: g.c_in,
        h: g.h_out(),
        w: wo,
        padding: q,
        ..*g
    };
    let dual_plan = Plan::new(&dual);
    let wt = if g.stride == 1 {
        // Row `ci`: for each output channel, its taps flipped.
        let mut flipped = vec![0f32; g.c_in * g.c_out * taps];
        flipped
            .par_chunks_mut(g.c_out * taps)
            .enumerate()
            .for_each(|(ci, row)| {
                for (co, dst) in row.chunks_exact_mut(taps).enumerate() {
                    let src = &w[(co * g.c_in + ci) * taps..][..taps];
                    dst.iter_mut()
                        .zip(src.iter().rev())
                        .for_each(|(d, &v)| *d = v);
                }
            });
        pack_rows(
            Mat::rows(&flipped, g.c_out * taps),
            0,
            g.c_in,
            g.c_out * taps,
        )
    } else {
        pack_rows(Mat::transposed(w, k), 0, k, g.c_out)
    };
    // Output gradient rows, in the product's columns (`n = hw` when they need no widening).
    let dy_offs: Vec<usize> = (0..g.c_out).map(|co| co * plan.n).collect();
    let per_task = images_per_task(g.batch);
    let per_block = plan.per_block();
    let partial: Vec<(Vec<f32>, Vec<f32>)> = x
        .par_chunks(per_task * img_in)
        .zip(dy.par_chunks(per_task * img_out))
        .zip(dx.par_chunks_mut(per_task * img_in))
        .map(|((xs, dys), dxs)| {
            let mut dw = vec![0f32; g.c_out * k];
            let mut db = vec![0f32; g.c_out];
            // Per image of a block: its phase planes, and (when they are wider than the
            // output) its output gradient in the product's columns, zero in the extra ones.
            let mut srcs = vec![
                0f32;
                if pointwise {
                    0
                } else {
                    per_block * plan.src_len()
                }
            ];
            let shaped = plan.ws != wo;
            let mut dys_wide = vec![
                0f32;
                if shaped {
                    per_block * g.c_out * plan.n
                } else {
                    0
                }
            ];
            let dual_len = dual_plan.src_len();
            let mut dual_srcs = vec![
                0f32;
                if g.stride == 1 && !pointwise {
                    per_block * dual_len
                } else {
                    0
                }
            ];
            let mut dphase = vec![0f32; if g.stride == 1 { 0 } else { plan.src_len() }];
            let mut gbuf = vec![0f32; if g.stride == 1 { 0 } else { k * plan.n }];
            for ((xb, dyb), dxb) in xs
                .chunks(per_block * img_in)
                .zip(dys.chunks(per_block * img_out))
                .zip(dxs.chunks_mut(per_block * img_in))
            {
                if with_bias {
                    for (c, plane) in dyb.chunks(hw).enumerate() {
                        db[c % g.c_out] += lane_sum(plane, plane, |d, _| d) as f32;
                    }
                }
                let count = xb.len() / img_in;
                if !pointwise {
                    for (xi, src) in xb.chunks(img_in).zip(srcs.chunks_mut(plan.src_len())) {
                        plan.load(xi, src);
                    }
                }
                if shaped {
                    for (dyi, wide) in dyb
                        .chunks(img_out)
                        .zip(dys_wide.chunks_mut(g.c_out * plan.n))
                    {
                        for (plane, to) in dyi.chunks(hw).zip(wide.chunks_mut(plan.n)) {
                            for (row, dst) in plane.chunks(wo).zip(to.chunks_mut(plan.ws)) {
                                dst[..wo].copy_from_slice(row);
                            }
                        }
                    }
                }
                // dW: the output gradients times the sources' rows.
                let images: Vec<(&[f32], &[f32])> = (0..count)
                    .map(|i| {
                        let dyi: &[f32] = if shaped {
                            &dys_wide[i * g.c_out * plan.n..(i + 1) * g.c_out * plan.n]
                        } else {
                            &dyb[i * img_out..(i + 1) * img_out]
                        };
                        let src: &[f32] = if pointwise {
                            &xb[i * img_in..(i + 1) * img_in]
                        } else {
                            &srcs[i * plan.src_len()..(i + 1) * plan.src_len()]
                        };
                        (dyi, src)
                    })
                    .collect();
                let ldy = if shaped { plan.n } else { hw };
                weight_product(&images, g.c_out, ldy, &plan.offs, plan.n, &mut dw);
                // dX: for stride 1 one product over the block's images.
                if pointwise {
                    let images = whole_images(count, img_out, img_in, hw);
                    multiply(&wt, dyb, &dy_offs, &images, dxb, hw, true);
                } else if g.stride == 1 {
                    for (dyi, src) in dyb.chunks(img_out).zip(dual_srcs.chunks_mut(dual_len)) {
                        dual_plan.load(dyi, src);
                    }
                    let images = dual_plan.images(count, img_in);
                    multiply(
                        &wt,
                        &dual_srcs,
                        &dual_plan.offs,
                        &images,
                        dxb,
                        g.h * g.w,
                        true,
                    );
                } else {
                    // Strided: per image, the column gradient (transposed weights times the
                    // widened output gradient), each row added into the phase planes where
                    // its forward row was read (one contiguous run), then the planes into dX.
                    let n = plan.n;
                    for (i, (dyi, dxi)) in
                        dyb.chunks(img_out).zip(dxb.chunks_mut(img_in)).enumerate()
                    {
                        let dyw = if shaped {
                            &dys_wide[i * g.c_out * n..(i + 1) * g.c_out * n]
                        } else {
                            dyi
                        };
                        product(&wt, dyw, &dy_offs, n, &mut gbuf, n, false);
                        for (&at, row) in plan.offs.iter().zip(gbuf.chunks(n)) {
                            dphase[at..at + n]
                                .iter_mut()
                                .zip(row)
                                .for_each(|(d, &v)| *d += v);
                        }
                        plan.unload(&mut dphase, dxi);
                    }
                }
            }
            (dw, db)
        })
        .collect();
    let mut dw = vec![0f32; g.c_out * k];
    let mut db = vec![0f32; g.c_out];
    for (pw, pb) in partial {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dw, db)
}

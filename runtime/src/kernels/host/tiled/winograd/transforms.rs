//! The transforms of [Winograd's F(2×2, 3×3)](super), each vectorized across a strip of
//! tiles (or, for the weights, across 8 kernels): the weights' `G g Gᵀ` ([`kernels`]), the
//! image's `Bᵀ d B` ([`image_strip`]), the outputs' `Aᵀ M A` ([`output_strip`]), and for the
//! weights' gradient the output gradient's `A dY Aᵀ` ([`gradient_strip`]) and the kernels'
//! `Gᵀ dU G` ([`kernel_gradients`]). Each is compiled for AVX2 and FMA: the caller checks
//! that they are here.

use super::{Planes, MR};

/// `G g Gᵀ` of `MR` 3×3 kernels, lane by lane (`g[t]` is tap `t`'s, row-major):
/// `G = [1 0 0; ½ ½ ½; ½ -½ ½; 0 0 1]`.
#[target_feature(enable = "avx2,fma")]
pub(super) fn kernels(g: &[[f32; MR]; 9]) -> [[f32; MR]; 16] {
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

/// The transformed blocks `Bᵀ d B` of a strip's tiles (its rows of tiles `(image, ty)`, each
/// `tw` wide), of one channel (`planes`, zero past their edges): position `ξ` of the strip's
/// tile `col` at `v[ξ·ld + col]`. `Bᵀ = [1 0 -1 0; 0 1 1 0; 0 -1 1 0; 0 1 0 -1]`.
/// `scratch` holds 20 × `width`.
#[target_feature(enable = "avx2,fma")]
pub(super) fn image_strip(
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
pub(super) fn output_strip(
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
pub(super) fn gradient_strip(
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
pub(super) fn kernel_gradients(du: &[&[f32]; 16], dw: &mut [f32]) {
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

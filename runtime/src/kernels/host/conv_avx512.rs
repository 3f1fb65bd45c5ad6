//! f32 convolution on AVX-512 without a column matrix ("implicit GEMM"), used by
//! [`conv`](super::conv) for one-group convolutions whenever the CPU has AVX-512.
//!
//! Why: the `gemm` crate enables AVX-512 only on nightly Rust, so on stable it runs AVX2
//! kernels, at about half of what this machine kind's cores do with AVX-512 (measured: 85 vs
//! 152 GFLOP/s of FMA per core); and an im2col copy of the image, which `gemm` then packs
//! again, cost as much time as the products for a ResNet's small convolutions.
//!
//! The idea: every row of a convolution's column matrix is a run of the (zero-padded) image at
//! a fixed offset, so the products read the image through a table of row offsets instead of
//! a copy of it ([`product`]). Three products make a convolution's forward and backward:
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
/// 16-float vectors per tile row of [`product`]: a tile is `MR × 48` outputs, 24 registers.
const NV: usize = 3;
/// Reduction depth per pass.
const KC: usize = 512;
/// Columns per strip of a pass (a multiple of the tile's 48).
const NB: usize = 192;
/// Rows × columns of a [`weight_product`] tile (24 accumulators).
const WR: usize = 4;
const WC: usize = 6;

/// Whether this CPU runs these kernels. AVX-512VL is not used by them but enabled with F:
/// without it LLVM keeps accumulators out of registers 16 to 31 and spills them.
pub fn available() -> bool {
    std::arch::is_x86_feature_detected!("avx512f")
        && std::arch::is_x86_feature_detected!("avx512vl")
}

/// Whether these kernels compute convolution `g`: one group, and for stride 1, padding no
/// larger than the kernel's span (so that the input gradient is a convolution too).
pub fn handles(g: &ConvGeom) -> bool {
    g.groups == 1 && (g.stride != 1 || g.padding <= g.dilation * (g.k - 1)) && available()
}

/// A left operand, `m × k`, packed for [`product`]: blocks of `MR` rows, each `k` columns of
/// `MR` values (rows past `m` are zero).
struct Packed {
    m: usize,
    k: usize,
    data: Vec<f32>,
}

impl Packed {
    fn new(m: usize, k: usize, at: impl Fn(usize, usize) -> f32) -> Packed {
        let mut data = vec![0f32; m.div_ceil(MR) * MR * k];
        for (b, block) in data.chunks_mut(MR * k).enumerate() {
            for (kk, col) in block.chunks_mut(MR).enumerate() {
                for (i, v) in col.iter_mut().enumerate() {
                    let row = b * MR + i;
                    if row < m {
                        *v = at(row, kk);
                    }
                }
            }
        }
        Packed { m, k, data }
    }
}

/// Masks of the lanes of a strip's `NV` vectors that lie before column `n`.
fn lane_masks(j0: usize, n: usize) -> [__mmask16; NV] {
    std::array::from_fn(|v| {
        let start = j0 + 16 * v;
        let live = n.saturating_sub(start).min(16);
        ((1u32 << live) - 1) as __mmask16
    })
}

/// `c[i·ldc + j] (+)= Σ_kk a[i, kk] · b[offs[kk] + j]` for `i < a.m`, `j < n`.
fn product(a: &Packed, b: &[f32], offs: &[usize], n: usize, c: &mut [f32], ldc: usize, add: bool) {
    assert_eq!(offs.len(), a.k, "one offset per reduction row");
    if n == 0 || a.m == 0 {
        return;
    }
    let reach = offs.iter().max().map_or(0, |&o| o + n);
    assert!(reach <= b.len(), "rhs rows out of bounds");
    assert!((a.m - 1) * ldc + n <= c.len(), "dst out of bounds");
    assert!(available(), "AVX-512 kernels on a CPU without AVX-512");
    let blocks = a.m.div_ceil(MR);
    // A pass's strip of columns (`KC × NB` of `b`) stays in L2 while every block of rows
    // passes over it, and a block's packed weights (`MR × KC`) in L1 across the strip.
    for k0 in (0..a.k).step_by(KC) {
        let kc = KC.min(a.k - k0);
        for jb in (0..n).step_by(NB) {
            for blk in 0..blocks {
                let rows = MR.min(a.m - blk * MR);
                for j0 in (jb..n.min(jb + NB)).step_by(16 * NV) {
                    // SAFETY: AVX-512 is present (asserted). Tile reads: packed values
                    // `blk·MR·k + (k0..k0+kc)·MR + i` < data.len(); rhs lanes `offs[kk] + j`
                    // with j < n (masked) < reach <= b.len(); dst lanes
                    // `(blk·MR + i)·ldc + j`, i < rows, j < n, within c (asserted).
                    unsafe {
                        tile(
                            kc,
                            a.data.as_ptr().add(blk * MR * a.k + k0 * MR),
                            b.as_ptr().add(j0),
                            &offs[k0..k0 + kc],
                            c.as_mut_ptr().add(blk * MR * ldc + j0),
                            ldc,
                            rows,
                            lane_masks(j0, n),
                            add || k0 > 0,
                        );
                    }
                }
            }
        }
    }
}

/// Rows of output that [`multiply`] computes at least to pack its operand: below, the
/// panel's copy costs about what it saves.
const GATHER_ROWS: usize = 64;

/// One image's part of a [`multiply`]: `rows` output rows of `w` columns, whose reduction
/// row `kk` starts at `b[from + offs[kk]]` with rows `ws` apart (`ws ≥ w`: the extra columns
/// are not outputs), into `c[to + i·ldc]` for output row (channel) `i`, rows `w` apart.
#[derive(Debug, Clone, Copy)]
struct Image {
    from: usize,
    to: usize,
    rows: usize,
    w: usize,
    ws: usize,
}

/// `c (+)= a · b` over the columns of `images` (see [`Image`]): one packed product over all
/// of them ([`gathered`]) when `a` has enough rows, else a [`product`] per image, through
/// `ws`-wide rows cropped to `w`.
fn multiply(
    a: &Packed,
    b: &[f32],
    offs: &[usize],
    images: &[Image],
    c: &mut [f32],
    ldc: usize,
    add: bool,
) {
    if a.m >= GATHER_ROWS {
        let runs: Vec<Run> = images
            .iter()
            .flat_map(|im| {
                (0..im.rows).map(move |y| Run {
                    from: im.from + y * im.ws,
                    to: im.to + y * im.w,
                    len: im.w,
                })
            })
            .collect();
        return gathered(a, b, offs, &runs, c, ldc, add);
    }
    let mut wide = Vec::new();
    for im in images {
        let n = im.rows * im.ws;
        if im.ws == im.w {
            product(a, &b[im.from..], offs, n, &mut c[im.to..], ldc, add);
            continue;
        }
        wide.resize(a.m * n, 0.0);
        product(a, &b[im.from..], offs, n, &mut wide, n, false);
        for (i, from) in wide.chunks(n).enumerate() {
            let to = &mut c[im.to + i * ldc..];
            for (row, src) in to.chunks_mut(im.w).zip(from.chunks(im.ws)).take(im.rows) {
                if add {
                    row.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                } else {
                    row.copy_from_slice(&src[..im.w]);
                }
            }
        }
    }
}

/// `count` images of `len` columns each, `from` and `to` apart: a 1×1 convolution's.
fn whole_images(count: usize, from: usize, to: usize, len: usize) -> Vec<Image> {
    (0..count)
        .map(|i| Image {
            from: i * from,
            to: i * to,
            rows: 1,
            w: len,
            ws: len,
        })
        .collect()
}

/// A run of a [`gathered`] product's columns: `len` columns whose reduction row `kk` starts
/// at `b[from + offs[kk]]` and whose output row `i` starts at `c[to + i·ldc]`.
#[derive(Debug, Clone, Copy)]
struct Run {
    from: usize,
    to: usize,
    len: usize,
}

/// `c[run.to + i·ldc + j] (+)= Σ_kk a[i, kk] · b[run.from + offs[kk] + j]` for every run,
/// `i < a.m`, `j < run.len`: one product over the columns of many runs (the output rows of
/// several images, say), each strip of them first copied ("packed") into a contiguous panel.
///
/// Why: a product per image leaves most of each 48-wide tile masked off when images are small
/// (a 4×4 output has 16 columns), and rows `offs` apart at a power of two (a 32×32 image's
/// channels) fight over the same cache sets. The panel's copy is made once per strip and read
/// by every block of rows.
fn gathered(
    a: &Packed,
    b: &[f32],
    offs: &[usize],
    runs: &[Run],
    c: &mut [f32],
    ldc: usize,
    add: bool,
) {
    assert_eq!(offs.len(), a.k, "one offset per reduction row");
    if a.m == 0 {
        return;
    }
    let reach = offs.iter().max().map_or(0, |&o| o);
    for r in runs {
        assert!(r.from + reach + r.len <= b.len(), "rhs rows out of bounds");
        assert!(
            r.len == 0 || r.to + (a.m - 1) * ldc + r.len <= c.len(),
            "dst out of bounds"
        );
    }
    let blocks = a.m.div_ceil(MR);
    let panel_offs: Vec<usize> = (0..KC.min(a.k)).map(|kk| kk * NB).collect();
    let mut panel = vec![0f32; KC.min(a.k) * NB];
    let mut out = vec![0f32; blocks * MR * NB];
    // The runs, cut into strips of NB columns: (run, first column in it, columns).
    let mut cursor = (0, 0);
    let mut pieces = cut(runs, &mut cursor, NB);
    while !pieces.is_empty() {
        let width: usize = pieces.iter().map(|p| p.2).sum();
        let next = cut(runs, &mut cursor, NB);
        for k0 in (0..a.k).step_by(KC) {
            let kc = KC.min(a.k - k0);
            for (kk, row) in panel.chunks_mut(NB).take(kc).enumerate() {
                let mut col = 0;
                for &(r, at, take) in &pieces {
                    let from = runs[r].from + offs[k0 + kk] + at;
                    row[col..col + take].copy_from_slice(&b[from..from + take]);
                    col += take;
                }
            }
            for blk in 0..blocks {
                let rows = MR.min(a.m - blk * MR);
                for j0 in (0..width).step_by(16 * NV) {
                    // SAFETY: AVX-512 is present (`gathered` is reached through `handles`).
                    // Packed values `blk·MR·k + (k0..k0+kc)·MR + i` < data.len(); panel lanes
                    // `kk·NB + j`, kk < kc, j < width (masked) <= NB; out lanes
                    // `(blk·MR + i)·NB + j` within blocks·MR·NB.
                    unsafe {
                        tile(
                            kc,
                            a.data.as_ptr().add(blk * MR * a.k + k0 * MR),
                            panel.as_ptr().add(j0),
                            &panel_offs[..kc],
                            out.as_mut_ptr().add(blk * MR * NB + j0),
                            NB,
                            rows,
                            lane_masks(j0, width),
                            k0 > 0,
                        );
                    }
                }
            }
        }
        // The strip's outputs to their places.
        for (i, from_row) in out.chunks(NB).take(a.m).enumerate() {
            let mut col = 0;
            for &(r, at, take) in &pieces {
                let to = runs[r].to + i * ldc + at;
                let (dst, src) = (&mut c[to..to + take], &from_row[col..col + take]);
                if add {
                    dst.iter_mut().zip(src).for_each(|(d, &v)| *d += v);
                } else {
                    dst.copy_from_slice(src);
                }
                col += take;
            }
        }
        pieces = next;
    }
}

/// The next `width` columns of `runs` from `cursor` (run, column in it), as pieces (run,
/// first column, columns); the cursor moves past them.
fn cut(runs: &[Run], cursor: &mut (usize, usize), width: usize) -> Vec<(usize, usize, usize)> {
    let mut pieces = Vec::new();
    let mut filled = 0;
    while filled < width && cursor.0 < runs.len() {
        let (r, at) = *cursor;
        let take = (runs[r].len - at).min(width - filled);
        if take > 0 {
            pieces.push((r, at, take));
        }
        filled += take;
        *cursor = if at + take == runs[r].len {
            (r + 1, 0)
        } else {
            (r, at + take)
        };
    }
    pieces
}

/// One `MR × 48` tile of [`product`] over `kc` reduction rows: `a` the packed block at the
/// first row, `b` the strip's first column, `c` the tile's first output.
#[allow(clippy::too_many_arguments)]
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn tile(
    kc: usize,
    a: *const f32,
    b: *const f32,
    offs: &[usize],
    c: *mut f32,
    ldc: usize,
    rows: usize,
    masks: [__mmask16; NV],
    add: bool,
) {
    let mut acc = [[_mm512_setzero_ps(); NV]; MR];
    if add {
        for (i, row) in acc.iter_mut().enumerate().take(rows) {
            for (v, lane) in row.iter_mut().enumerate() {
                *lane = _mm512_maskz_loadu_ps(masks[v], c.add(i * ldc + 16 * v));
            }
        }
    }
    for (kk, &off) in offs.iter().enumerate().take(kc) {
        let src = b.add(off);
        // Loops, not `array::from_fn` or `map`: closures do not inherit the target feature,
        // and an intrinsic that is not inlined is a call per vector.
        let mut bv = [_mm512_setzero_ps(); NV];
        for (v, lane) in bv.iter_mut().enumerate() {
            *lane = _mm512_maskz_loadu_ps(masks[v], src.add(16 * v));
        }
        let ak = a.add(kk * MR);
        for (i, row) in acc.iter_mut().enumerate() {
            let ai = _mm512_set1_ps(*ak.add(i));
            for (lane, &bj) in row.iter_mut().zip(&bv) {
                *lane = _mm512_fmadd_ps(ai, bj, *lane);
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (v, &lane) in row.iter().enumerate() {
            _mm512_mask_storeu_ps(c.add(i * ldc + 16 * v), masks[v], lane);
        }
    }
}

/// `dw[i·k + kk] += Σ_images Σ_j dy[i·ldy + j] · x[offs[kk] + j]` for `i < m`, `j < n`: each
/// image is a pair (its output gradient rows, its input rows).
fn weight_product(
    images: &[(&[f32], &[f32])],
    m: usize,
    ldy: usize,
    offs: &[usize],
    n: usize,
    dw: &mut [f32],
) {
    let k = offs.len();
    if n == 0 || m == 0 || k == 0 || images.is_empty() {
        return;
    }
    let reach = offs.iter().max().map_or(0, |&o| o + n);
    for (dy, x) in images {
        assert!(
            (m - 1) * ldy + n <= dy.len(),
            "output gradient out of bounds"
        );
        assert!(reach <= x.len(), "input rows out of bounds");
    }
    assert!(dw.len() >= m * k, "weight gradient out of bounds");
    assert!(available(), "AVX-512 kernels on a CPU without AVX-512");
    for i0 in (0..m).step_by(WR) {
        for r0 in (0..k).step_by(WC) {
            let (rows, cols) = (WR.min(m - i0), WC.min(k - r0));
            // Rows and columns past the edge repeat the last one; their sums are dropped.
            let dy_rows: [usize; WR] = std::array::from_fn(|i| (i0 + i.min(rows - 1)) * ldy);
            let x_rows: [usize; WC] = std::array::from_fn(|r| offs[r0 + r.min(cols - 1)]);
            // SAFETY: AVX-512 is present; every lane read is `dy_rows[i] + j` or
            // `x_rows[r] + j` with j < n (masked), inside each image's slices (asserted).
            let sums = unsafe { weight_tile(images, &dy_rows, &x_rows, n) };
            for (i, row) in sums.iter().enumerate().take(rows) {
                for (r, &s) in row.iter().enumerate().take(cols) {
                    dw[(i0 + i) * k + r0 + r] += s;
                }
            }
        }
    }
}

/// The `WR × WC` sums of one [`weight_product`] tile.
#[target_feature(enable = "avx512f,avx512vl")]
unsafe fn weight_tile(
    images: &[(&[f32], &[f32])],
    dy_rows: &[usize; WR],
    x_rows: &[usize; WC],
    n: usize,
) -> [[f32; WC]; WR] {
    let mut acc = [[_mm512_setzero_ps(); WC]; WR];
    for (dy, x) in images {
        let (dy, x) = (dy.as_ptr(), x.as_ptr());
        // Plain pointer arithmetic: no intrinsic in these closures to miss the target feature.
        let dy_at: [*const f32; WR] = std::array::from_fn(|i| dy.add(dy_rows[i]));
        let x_at: [*const f32; WC] = std::array::from_fn(|r| x.add(x_rows[r]));
        for j in (0..n).step_by(16) {
            let mask = ((1u32 << (n - j).min(16)) - 1) as __mmask16;
            // Index loops over constant bounds, which unroll into registers (iterator
            // adaptors here left accumulators on the stack).
            let mut d = [_mm512_setzero_ps(); WR];
            #[allow(clippy::needless_range_loop)]
            for i in 0..WR {
                d[i] = _mm512_maskz_loadu_ps(mask, dy_at[i].add(j));
            }
            #[allow(clippy::needless_range_loop)]
            for r in 0..WC {
                let xv = _mm512_maskz_loadu_ps(mask, x_at[r].add(j));
                for i in 0..WR {
                    acc[i][r] = _mm512_fmadd_ps(d[i], xv, acc[i][r]);
                }
            }
        }
    }
    let mut sums = [[0f32; WC]; WR];
    for (sum, row) in sums.iter_mut().zip(&acc) {
        for (s, &v) in sum.iter_mut().zip(row) {
            *s = _mm512_reduce_add_ps(v);
        }
    }
    sums
}

/// How the products see one convolution's images: as `stride²` phase planes of the padded
/// image (phase `(py, px)` holds the padded pixels `(Y·s + py, X·s + px)`), in which every tap's
/// window over the output is one contiguous run when the output is computed `ws` wide (the
/// extra columns are cropped). For stride 1 the one phase is the padded image itself.
struct Plan {
    g: ConvGeom,
    /// Columns of one image's product: `h_out × ws`.
    n: usize,
    /// Width of a phase plane, and of an output row in the product's columns.
    ws: usize,
    /// Height of a phase plane.
    hs: usize,
    /// Where each row of the column matrix, `(c_in, ky, kx)`, starts in the phase planes.
    offs: Vec<usize>,
}

impl Plan {
    fn new(g: &ConvGeom) -> Plan {
        let s = g.stride;
        let (hs, ws) = (
            (g.h + 2 * g.padding).div_ceil(s),
            (g.w + 2 * g.padding).div_ceil(s),
        );
        let taps = g.k * g.k;
        let offs = (0..g.c_in * taps)
            .map(|r| {
                let (ci, ky, kx) = (r / taps, r % taps / g.k, r % g.k);
                let (oy, ox) = (ky * g.dilation, kx * g.dilation);
                let phase = (oy % s) * s + ox % s;
                (phase * g.c_in + ci) * hs * ws + (oy / s) * ws + ox / s
            })
            .collect();
        Plan {
            g: *g,
            n: g.h_out() * ws,
            ws,
            hs,
            offs,
        }
    }

    /// A 1×1 stride-1 convolution without padding: the image is its own phase plane.
    fn pointwise(&self) -> bool {
        self.g.k == 1 && self.g.stride == 1 && self.g.padding == 0
    }

    /// Length of one image's phase planes, with room for the last taps' runs.
    fn src_len(&self) -> usize {
        let planes = self.g.stride * self.g.stride * self.g.c_in * self.hs * self.ws;
        planes.max(self.offs.iter().max().map_or(0, |&o| o + self.n))
    }

    /// Calls `f(first, at, count)` for every run of an image's pixels that lands contiguously
    /// in its phase planes: pixels `first, first + s, …` (`count` of them, indices into the
    /// image) at `at, at + 1, …` of the planes. Phases no tap reads (a 1×1 strided
    /// convolution reads one) are skipped.
    fn runs(&self, mut f: impl FnMut(usize, usize, usize)) {
        let g = &self.g;
        let (s, p, plane) = (g.stride, g.padding, self.hs * self.ws);
        let read: Vec<bool> = (0..s)
            .map(|r| (0..g.k).any(|t| t * g.dilation % s == r))
            .collect();
        for c in 0..g.c_in {
            for y in 0..g.h {
                let yy = y + p;
                let py = yy % s;
                if !read[py] {
                    continue;
                }
                let row = (c * g.h + y) * g.w;
                // Pixel x lands in phase (py, (x + p) % s), column (x + p) / s: the pixels
                // j, j + s, … of phase (j + p) % s start at column (j + p) / s.
                for j in 0..s.min(g.w) {
                    let px = (j + p) % s;
                    if read[px] {
                        let at = ((py * s + px) * g.c_in + c) * plane + yy / s * self.ws;
                        f(row + j, at + (j + p) / s, (g.w - j).div_ceil(s));
                    }
                }
            }
        }
    }

    /// Writes image `x`'s phase planes into `src` (whose padding is zero and stays so).
    fn load(&self, x: &[f32], src: &mut [f32]) {
        let s = self.g.stride;
        self.runs(|first, at, count| {
            let to = &mut src[at..at + count];
            if s == 1 {
                to.copy_from_slice(&x[first..first + count]);
            } else {
                to.iter_mut()
                    .zip(x[first..].iter().step_by(s))
                    .for_each(|(d, &v)| *d = v);
            }
        });
    }

    /// Adds the image parts of phase planes `src` into image gradient `dx` (the transpose of
    /// [`Plan::load`]), and clears `src`.
    fn unload(&self, src: &mut [f32], dx: &mut [f32]) {
        let s = self.g.stride;
        self.runs(|first, at, count| {
            let from = &src[at..at + count];
            dx[first..]
                .iter_mut()
                .step_by(s)
                .zip(from)
                .for_each(|(d, &v)| *d += v);
        });
        src.fill(0.0);
    }

    /// The parts of a [`multiply`] for `count` images whose phase planes lie `src_len()`
    /// apart, into outputs `img_out` apart.
    fn images(&self, count: usize, img_out: usize) -> Vec<Image> {
        let len = self.src_len();
        (0..count)
            .map(|i| Image {
                from: i * len,
                to: i * img_out,
                rows: self.g.h_out(),
                w: self.g.w_out(),
                ws: self.ws,
            })
            .collect()
    }

    /// Images whose weight gradients are summed in one pass: enough columns for the sums'
    /// final reductions not to matter.
    fn per_block(&self) -> usize {
        2048usize
            .div_ceil(self.n.max(1))
            .clamp(1, images_per_task(self.g.batch))
    }
}

/// The output `[N, C_out, H_out, W_out]` of `x` convolved with `w`, plus `bias`.
pub fn forward(g: &ConvGeom, x: &[f32], w: &[f32], bias: Option<&[f32]>) -> Vec<f32> {
    let plan = Plan::new(g);
    let k = plan.offs.len();
    let a = Packed::new(g.c_out, k, |co, kk| w[co * k + kk]);
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
        Packed::new(g.c_in, g.c_out * taps, |ci, r| {
            let (co, t) = (r / taps, taps - 1 - r % taps);
            w[(co * g.c_in + ci) * taps + t]
        })
    } else {
        Packed::new(k, g.c_out, |r, co| w[co * k + r])
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

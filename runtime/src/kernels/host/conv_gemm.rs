//! The CPU kernel of 2-D convolution: a column matrix per image, then matrix products on the
//! `gemm` crate (the one dfdx itself uses), images spread over rayon's threads.
//!
//! How an image becomes its column matrix depends on the convolution (its `Layout`): a 1×1
//! convolution with stride 1 (most of a Bottleneck's) multiplies the image itself; any other
//! stride-1 convolution copies the image once into a padded buffer, where each column row is
//! one contiguous run; strided ones use classic im2col. Small images are multiplied several
//! at a time, side by side, so that no product is too narrow to run well. [`forward`] and
//! [`backward`] are the entry points ([`super::conv`] picks them or the tiled kernels).
//!
//! Layouts are PyTorch's: input `[N, C_in, H, W]`, weight `[C_out, C_in / groups, K, K]`,
//! output `[N, C_out, H_out, W_out]`, all contiguous, row-major.
//!
//! Why im2col + gemm rather than a direct loop: the column matrix turns the convolution into
//! the one operation CPUs are best at; its cost (K² copies of the input) is small next to the
//! product for the 3×3 and 1×1 convolutions of a ResNet.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::values::{lane_sum, HostFloat};
use crate::shapes::ConvGeom;

/// Where a product goes: written into fresh memory, over old values, or added to them.
enum Dst<'a, T> {
    Uninit(&'a mut [MaybeUninit<T>]),
    Overwrite(&'a mut [T]),
    Add(&'a mut [T]),
}

/// `c (m×n) = a (m×k) · b (k×n)` (or `c +=` it); each operand is given by its row and column
/// strides, so that a transpose costs nothing. Every element of `c`'s `m×n` block is written.
fn matmul<T: HostFloat>(
    (m, n, k): (usize, usize, usize),
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (b_rs, b_cs): (usize, usize),
    c: Dst<'_, T>,
) {
    let (c_ptr, c_len, accumulate) = match c {
        Dst::Uninit(c) => (c.as_mut_ptr().cast::<T>(), c.len(), false),
        Dst::Overwrite(c) => (c.as_mut_ptr(), c.len(), false),
        Dst::Add(c) => (c.as_mut_ptr(), c.len(), true),
    };
    if m == 0 || n == 0 {
        return;
    }
    let last = |rows: usize, cols: usize, rs: usize, cs: usize| {
        (rows.saturating_sub(1)) * rs + (cols.saturating_sub(1)) * cs
    };
    // The bounds every pointer offset below stays within.
    assert!(
        k == 0 || last(m, k, a_rs, a_cs) < a.len(),
        "lhs out of bounds"
    );
    assert!(
        k == 0 || last(k, n, b_rs, b_cs) < b.len(),
        "rhs out of bounds"
    );
    assert!(last(m, n, n, 1) < c_len, "dst out of bounds");
    if k == 0 {
        if !accumulate {
            for i in 0..m * n {
                // SAFETY: i < m·n <= c_len (asserted), and a zero is a valid value to write.
                unsafe { c_ptr.add(i).write(T::zero()) };
            }
        }
        return;
    }
    // SAFETY: the asserts above bound every element gemm reads (a, b) or writes (c) inside the
    // slices, which are valid for the call; `c` is borrowed mutably, so nothing aliases it.
    // gemm reads `c` only when accumulating, which only initialized (`Add`) buffers ask for.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c_ptr,
            1,
            n as isize,
            accumulate,
            a.as_ptr(),
            a_cs as isize,
            a_rs as isize,
            b.as_ptr(),
            b_cs as isize,
            b_rs as isize,
            T::one(),
            T::one(),
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// The output columns `lo..hi` whose input column `ox·stride + offset - padding` lies inside
/// the row (`offset` = kx·dilation): outside them the window reads padding.
fn valid_columns(g: &ConvGeom, offset: usize) -> (usize, usize) {
    let wo = g.w_out();
    let lo = g.padding.saturating_sub(offset).div_ceil(g.stride).min(wo);
    let hi = if g.w + g.padding > offset {
        ((g.w + g.padding - offset - 1) / g.stride + 1).min(wo)
    } else {
        0
    };
    (lo, hi.max(lo))
}

/// The column matrix of image `x` (`[C_in, H, W]`) for group `g`: `col_rows` rows of `hw_out`
/// values, row `r` at `cols[r·ld..]`.
fn im2col<T: HostFloat>(g: &ConvGeom, x: &[T], group: usize, cols: &mut [T], ld: usize) {
    let (ho, wo) = (g.h_out(), g.w_out());
    let mut row = 0;
    for ci in group * g.cin_g()..(group + 1) * g.cin_g() {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let (lo, hi) = valid_columns(g, kx * g.dilation);
                let out = &mut cols[row * ld..row * ld + ho * wo];
                for oy in 0..ho {
                    let iy = (oy * g.stride + ky * g.dilation) as isize - g.padding as isize;
                    let line = &mut out[oy * wo..(oy + 1) * wo];
                    if iy < 0 || iy >= g.h as isize {
                        line.fill(T::zero());
                        continue;
                    }
                    let src = &plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    line[..lo].fill(T::zero());
                    line[hi..].fill(T::zero());
                    if lo == hi {
                        continue;
                    }
                    // First input column read: lo·stride + kx·dilation - padding (>= 0 by the
                    // choice of lo).
                    let first = lo * g.stride + kx * g.dilation - g.padding;
                    if g.stride == 1 {
                        line[lo..hi].copy_from_slice(&src[first..first + (hi - lo)]);
                    } else {
                        let reads = src[first..].iter().step_by(g.stride);
                        for (v, &s) in line[lo..hi].iter_mut().zip(reads) {
                            *v = s;
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// Adds the column matrix `cols` (rows `ld` apart) of group `g` back into image gradient `dx`
/// (the transpose of [`im2col`]).
fn col2im<T: HostFloat>(g: &ConvGeom, cols: &[T], ld: usize, group: usize, dx: &mut [T]) {
    let (ho, wo) = (g.h_out(), g.w_out());
    let mut row = 0;
    for ci in group * g.cin_g()..(group + 1) * g.cin_g() {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let (lo, hi) = valid_columns(g, kx * g.dilation);
                let src = &cols[row * ld..row * ld + ho * wo];
                for oy in 0..ho {
                    let iy = (oy * g.stride + ky * g.dilation) as isize - g.padding as isize;
                    if iy < 0 || iy >= g.h as isize || lo == hi {
                        continue;
                    }
                    let line = &mut plane[iy as usize * g.w..(iy as usize + 1) * g.w];
                    let first = lo * g.stride + kx * g.dilation - g.padding;
                    let from = &src[oy * wo + lo..oy * wo + hi];
                    if g.stride == 1 {
                        let to = &mut line[first..first + from.len()];
                        for (d, &v) in to.iter_mut().zip(from) {
                            *d += v;
                        }
                    } else {
                        for (d, &v) in line[first..].iter_mut().step_by(g.stride).zip(from) {
                            *d += v;
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// Images per task: the batch split evenly over rayon's threads.
pub(crate) fn images_per_task(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().clamp(1, n.max(1)))
        .max(1)
}

/// About how many columns one product should have: small images are multiplied several at a
/// time, side by side, so that no product is too narrow for the matrix kernel to run well.
const PRODUCT_COLUMNS: usize = 1024;

/// How an image becomes the column matrix that the weights multiply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Layout {
    /// 1×1, stride 1, no padding: the image is its own column matrix.
    Pointwise,
    /// Stride 1: the image is copied once into a zero-padded buffer, in which every kernel
    /// tap's window is one contiguous run when the output is computed `w + 2·padding` wide;
    /// a column row is then one copy (not one per output row), and the extra output columns
    /// are cropped.
    Padded,
    /// Any stride: classic im2col, row by row.
    Im2col,
}

impl ConvGeom {
    fn layout(&self) -> Layout {
        match (self.k, self.stride, self.padding) {
            (1, 1, 0) => Layout::Pointwise,
            (_, 1, _) => Layout::Padded,
            _ => Layout::Im2col,
        }
    }
    /// Width and height of the padded image.
    fn wp(&self) -> usize {
        self.w + 2 * self.padding
    }
    fn hp(&self) -> usize {
        self.h + 2 * self.padding
    }
    /// Columns one image contributes to a product.
    fn col_len(&self) -> usize {
        match self.layout() {
            Layout::Padded => self.h_out() * self.wp(),
            _ => self.hw_out(),
        }
    }
    /// The padded image buffer: every channel's plane, then room for the last taps' runs.
    fn padded_len(&self) -> usize {
        self.c_in * self.hp() * self.wp() + (self.k - 1) * self.dilation
    }
    /// Where each row of group `group`'s column matrix starts in an image laid out for
    /// `Pointwise` (the image itself) or `Padded` (the padded copy): row (channel, ky, kx) is
    /// the run of `col_len` values from there.
    fn row_starts(&self, group: usize) -> impl Iterator<Item = usize> + '_ {
        let (plane, taps) = (self.hp() * self.wp(), self.k * self.k);
        (group * self.cin_g() * taps..(group + 1) * self.cin_g() * taps).map(move |r| {
            let (ci, ky, kx) = (r / taps, r % taps / self.k, r % self.k);
            ci * plane + (ky * self.wp() + kx) * self.dilation
        })
    }
    /// Each input row's start in the image and in its padded copy.
    fn padded_rows(&self) -> impl Iterator<Item = (usize, usize)> + '_ {
        (0..self.c_in * self.h).map(move |row| {
            let (c, y) = (row / self.h, row % self.h);
            let at = c * self.hp() * self.wp() + (y + self.padding) * self.wp() + self.padding;
            (row * self.w, at)
        })
    }
    /// Images one product takes side by side.
    fn images_per_product(&self) -> usize {
        PRODUCT_COLUMNS
            .div_ceil(self.col_len())
            .clamp(1, images_per_task(self.batch))
    }
}

/// The buffers one task reuses from block to block of `b` images, whose columns lie side by
/// side: image `i`'s part of row `r` of a column matrix starts at `r·ld + i·len`.
struct Workspace<T> {
    b: usize,
    len: usize,
    /// The padded images (`Padded`), zero outside the images.
    xpad: Vec<T>,
    /// A column matrix.
    cols: Vec<T>,
    /// The column matrix's gradient.
    dcols: Vec<T>,
    /// The padded images' gradients.
    dxpad: Vec<T>,
}

impl<T: HostFloat> Workspace<T> {
    fn new(g: &ConvGeom, backward: bool) -> Self {
        let (b, len) = (g.images_per_product(), g.col_len());
        let layout = g.layout();
        let direct = b == 1 && layout == Layout::Pointwise;
        let zeros = |n: usize| vec![T::zero(); n];
        let cols = if direct { 0 } else { g.col_rows() * b * len };
        let padded = if layout == Layout::Padded {
            b * g.padded_len()
        } else {
            0
        };
        Workspace {
            b,
            len,
            xpad: zeros(padded),
            cols: zeros(cols),
            dcols: zeros(if backward { cols } else { 0 }),
            dxpad: zeros(if backward { padded } else { 0 }),
        }
    }

    /// Whether products read and write the images' own buffers (one image at a time, and no
    /// layout to change).
    fn direct_columns(&self, g: &ConvGeom) -> bool {
        self.b == 1 && g.layout() == Layout::Pointwise
    }
    /// Whether products write the output itself (one image at a time, and no crop).
    fn direct_output(&self, g: &ConvGeom) -> bool {
        self.b == 1 && g.layout() != Layout::Padded
    }

    /// The buffer that holds a block's outputs (or output gradients) side by side, when
    /// they are not the output itself.
    fn output_buffer(&self, g: &ConvGeom) -> Vec<T> {
        let len = if self.direct_output(g) {
            0
        } else {
            g.c_out * self.b * self.len
        };
        vec![T::zero(); len]
    }

    /// Copies the images of a block into their padded buffers (`Padded`).
    fn load(&mut self, g: &ConvGeom, images: &[T]) {
        if g.layout() != Layout::Padded {
            return;
        }
        for (xi, xpad) in images
            .chunks(g.c_in * g.h * g.w)
            .zip(self.xpad.chunks_mut(g.padded_len()))
        {
            for (from, at) in g.padded_rows() {
                xpad[at..at + g.w].copy_from_slice(&xi[from..from + g.w]);
            }
        }
    }

    /// Group `group`'s column matrix of the block's images and its row stride.
    fn columns<'a>(&'a mut self, g: &ConvGeom, images: &'a [T], group: usize) -> (&'a [T], usize) {
        let (len, img) = (self.len, g.c_in * g.h * g.w);
        let plane = g.h * g.w;
        if self.direct_columns(g) {
            let rows = &images[group * g.cin_g() * plane..(group + 1) * g.cin_g() * plane];
            return (rows, len);
        }
        let ld = len * images.len() / img;
        for (i, xi) in images.chunks(img).enumerate() {
            let cols = &mut self.cols[i * len..];
            if g.layout() == Layout::Im2col {
                im2col(g, xi, group, cols, ld);
                continue;
            }
            let src = match g.layout() {
                Layout::Padded => &self.xpad[i * g.padded_len()..],
                _ => xi,
            };
            for (r, at) in g.row_starts(group).enumerate() {
                cols[r * ld..r * ld + len].copy_from_slice(&src[at..at + len]);
            }
        }
        (&self.cols[..g.col_rows() * ld], ld)
    }

    /// Adds group `group`'s column gradient (rows `ld` apart) into the block's image gradients
    /// `dx` (through the padded gradients for `Padded`, which [`Workspace::store_dx`] crops).
    fn fold_columns(&mut self, g: &ConvGeom, group: usize, ld: usize, dx: &mut [T]) {
        let (len, plane) = (self.len, g.h * g.w);
        for (i, dxi) in dx.chunks_mut(g.c_in * plane).enumerate() {
            let dcols = &self.dcols[i * len..];
            if g.layout() == Layout::Im2col {
                col2im(g, dcols, ld, group, dxi);
                continue;
            }
            let dst = match g.layout() {
                Layout::Padded => &mut self.dxpad[i * g.padded_len()..],
                _ => dxi,
            };
            for (r, at) in g.row_starts(group).enumerate() {
                for (d, &v) in dst[at..at + len]
                    .iter_mut()
                    .zip(&dcols[r * ld..r * ld + len])
                {
                    *d += v;
                }
            }
        }
    }

    /// Adds the padded gradients' image parts into `dx` and clears them (`Padded`).
    fn store_dx(&mut self, g: &ConvGeom, dx: &mut [T]) {
        if g.layout() != Layout::Padded {
            return;
        }
        for (dxi, dxpad) in dx
            .chunks_mut(g.c_in * g.h * g.w)
            .zip(self.dxpad.chunks_mut(g.padded_len()))
        {
            for (to, at) in g.padded_rows() {
                for (d, &v) in dxi[to..to + g.w].iter_mut().zip(&dxpad[at..at + g.w]) {
                    *d += v;
                }
            }
            dxpad.fill(T::zero());
        }
    }
}

/// The block's output gradients as one operand, rows `ld` apart: `dy` itself when it already
/// is one, else copied side by side into `ybuf` (rows `w + 2·padding` wide for `Padded`, the
/// extra columns zero).
fn output_grads<'a, T: HostFloat>(
    g: &ConvGeom,
    ws: &Workspace<T>,
    dy: &'a [T],
    ybuf: &'a mut [T],
) -> (&'a [T], usize) {
    let len = ws.len;
    if ws.direct_output(g) {
        return (dy, len);
    }
    let ld = len * dy.len() / (g.c_out * g.hw_out());
    let (wo, wp) = (g.w_out(), g.wp());
    for (i, dyi) in dy.chunks(g.c_out * g.hw_out()).enumerate() {
        for (co, src) in dyi.chunks(g.hw_out()).enumerate() {
            let dst = &mut ybuf[co * ld + i * len..co * ld + (i + 1) * len];
            if g.layout() == Layout::Padded {
                for (row, out) in src.chunks(wo).zip(dst.chunks_mut(wp)) {
                    out[..wo].copy_from_slice(row);
                    // Zero, so that the extra columns' products vanish (a shorter last block
                    // puts other images' rows where earlier blocks had them).
                    out[wo..].fill(T::zero());
                }
            } else {
                dst.copy_from_slice(src);
            }
        }
    }
    (&ybuf[..g.c_out * ld], ld)
}

/// The output `[N, C_out, H_out, W_out]` of `x` convolved with `w`, plus `bias`.
pub fn forward<T: HostFloat>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (img_in, img_out) = (g.c_in * g.h * g.w, g.c_out * g.hw_out());
    let mut out = Vec::with_capacity(g.output_len());
    let per_task = images_per_task(g.batch);
    x.par_chunks(per_task * img_in)
        .zip(out.spare_capacity_mut()[..g.output_len()].par_chunks_mut(per_task * img_out))
        .for_each(|(xs, outs)| {
            let mut ws = Workspace::new(g, false);
            let (b, len, direct) = (ws.b, ws.len, ws.direct_output(g));
            let mut ybuf = ws.output_buffer(g);
            for (images, oi) in xs.chunks(b * img_in).zip(outs.chunks_mut(b * img_out)) {
                ws.load(g, images);
                for group in 0..g.groups {
                    let wg = &w[group * g.cout_g() * g.col_rows()..];
                    let (cols, ld) = ws.columns(g, images, group);
                    let dst = if direct {
                        Dst::Uninit(&mut oi[group * g.cout_g() * g.hw_out()..])
                    } else {
                        Dst::Overwrite(&mut ybuf[group * g.cout_g() * ld..])
                    };
                    matmul(
                        (g.cout_g(), ld, g.col_rows()),
                        wg,
                        (g.col_rows(), 1),
                        cols,
                        (ld, 1),
                        dst,
                    );
                }
                if !direct {
                    // Each image's part of each row, cropped to the output's width.
                    let ld = len * images.len() / img_in;
                    let (wo, wp) = (g.w_out(), g.wp());
                    let row_w = if g.layout() == Layout::Padded { wp } else { wo };
                    for (i, oimg) in oi.chunks_mut(img_out).enumerate() {
                        for (co, dst) in oimg.chunks_mut(g.hw_out()).enumerate() {
                            let src = &ybuf[co * ld + i * len..co * ld + (i + 1) * len];
                            for (row, from) in dst.chunks_mut(wo).zip(src.chunks(row_w)) {
                                for (d, &v) in row.iter_mut().zip(from) {
                                    d.write(v);
                                }
                            }
                        }
                    }
                }
            }
        });
    // SAFETY: each image's `img_out` values were written: by the products of every group
    // (`cout_g` channels × all output pixels each), or by the copy of every channel's rows.
    unsafe { out.set_len(g.output_len()) };
    if let Some(b) = bias {
        out.par_chunks_mut(g.hw_out())
            .enumerate()
            .for_each(|(plane, values)| values.iter_mut().for_each(|v| *v += b[plane % g.c_out]));
    }
    out
}

/// Adds the input's gradient into `dx` and returns the gradients of the weight and the bias
/// (zeros unless `with_bias`), given the output's gradient `dy`.
pub fn backward<T: HostFloat>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: &mut [T],
    with_bias: bool,
) -> (Vec<T>, Vec<T>) {
    let (img_in, img_out) = (g.c_in * g.h * g.w, g.c_out * g.hw_out());
    let per_task = images_per_task(g.batch);
    // Each task sums the weight and bias gradients of its images; the sums are added after.
    let partial: Vec<(Vec<T>, Vec<T>)> = x
        .par_chunks(per_task * img_in)
        .zip(dy.par_chunks(per_task * img_out))
        .zip(dx.par_chunks_mut(per_task * img_in))
        .map(|((xs, dys), dxs)| {
            let mut dw = vec![T::zero(); g.weight_len()];
            let mut db = vec![T::zero(); g.c_out];
            let mut ws = Workspace::new(g, true);
            let b = ws.b;
            let mut ybuf = ws.output_buffer(g);
            for ((images, dyb), dxb) in xs
                .chunks(b * img_in)
                .zip(dys.chunks(b * img_out))
                .zip(dxs.chunks_mut(b * img_in))
            {
                if with_bias {
                    for (c, plane) in dyb.chunks(g.hw_out()).enumerate() {
                        db[c % g.c_out] +=
                            T::from(lane_sum(plane, plane, |d, _| d)).unwrap_or_else(T::nan);
                    }
                }
                ws.load(g, images);
                let (dyo, ld) = output_grads(g, &ws, dyb, &mut ybuf);
                for group in 0..g.groups {
                    let dyg = &dyo[group * g.cout_g() * ld..];
                    let wg = &w[group * g.cout_g() * g.col_rows()..];
                    // dW_g += dY_g · colsᵀ
                    let (cols, _) = ws.columns(g, images, group);
                    matmul(
                        (g.cout_g(), g.col_rows(), ld),
                        dyg,
                        (ld, 1),
                        cols,
                        (1, ld),
                        Dst::Add(&mut dw[group * g.cout_g() * g.col_rows()..]),
                    );
                    // dcols = W_gᵀ · dY_g, folded back into dX (added to it directly when
                    // the columns are the image).
                    let direct = ws.direct_columns(g);
                    let plane = g.h * g.w;
                    let target = if direct {
                        Dst::Add(
                            &mut dxb[group * g.cin_g() * plane..(group + 1) * g.cin_g() * plane],
                        )
                    } else {
                        Dst::Overwrite(&mut ws.dcols[..])
                    };
                    matmul(
                        (g.col_rows(), ld, g.cout_g()),
                        wg,
                        (1, g.col_rows()),
                        dyg,
                        (ld, 1),
                        target,
                    );
                    if !direct {
                        ws.fold_columns(g, group, ld, dxb);
                    }
                }
                ws.store_dx(g, dxb);
            }
            (dw, db)
        })
        .collect();
    let mut dw = vec![T::zero(); g.weight_len()];
    let mut db = vec![T::zero(); g.c_out];
    for (pw, pb) in partial {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a += b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a += b);
    }
    (dw, db)
}

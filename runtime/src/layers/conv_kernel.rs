//! The CPU kernel of 2-D convolution: im2col, then one matrix product per image and group on
//! the `gemm` crate (the one dfdx itself uses), images spread over rayon's threads. A 1×1
//! convolution with stride 1 (most of a Bottleneck's) multiplies the image itself, no im2col.
//!
//! Layouts are PyTorch's: input `[N, C_in, H, W]`, weight `[C_out, C_in / groups, K, K]`,
//! output `[N, C_out, H_out, W_out]`, all contiguous, row-major.
//!
//! Why im2col + gemm rather than a direct loop: the column matrix turns the convolution into
//! the one operation CPUs are best at; its cost (K² copies of the input) is small next to the
//! product for the 3×3 and 1×1 convolutions of a ResNet.

use std::mem::MaybeUninit;

use rayon::prelude::*;

use super::host::HostFloat;
use crate::{Error, Result};

/// The shape of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvGeom {
    pub batch: usize,
    pub c_in: usize,
    pub h: usize,
    pub w: usize,
    pub c_out: usize,
    pub k: usize,
    pub stride: usize,
    pub padding: usize,
    pub dilation: usize,
    pub groups: usize,
}

impl ConvGeom {
    /// Refuses impossible geometry, naming what is wrong.
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, why: String| Err(Error::config(format!("Conv2D.{what}"), why));
        if self.stride == 0 || self.dilation == 0 || self.k == 0 {
            return bad(
                "stride",
                "stride, dilation and kernel size must be at least 1".into(),
            );
        }
        if self.groups == 0
            || !self.c_in.is_multiple_of(self.groups)
            || !self.c_out.is_multiple_of(self.groups)
        {
            return bad(
                "groups",
                format!(
                    "{} groups do not divide {} input and {} output channels",
                    self.groups, self.c_in, self.c_out
                ),
            );
        }
        let span = self.dilation * (self.k - 1) + 1;
        if self.h + 2 * self.padding < span || self.w + 2 * self.padding < span {
            return bad(
                "kernel_size",
                format!(
                    "a {}×{} input with padding {} is smaller than the kernel's span of {span}",
                    self.h, self.w, self.padding
                ),
            );
        }
        Ok(())
    }
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.padding - self.dilation * (self.k - 1) - 1) / self.stride + 1
    }
    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.padding - self.dilation * (self.k - 1) - 1) / self.stride + 1
    }
    fn cin_g(&self) -> usize {
        self.c_in / self.groups
    }
    fn cout_g(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of one group's column matrix: `C_in / groups × K × K`.
    fn col_rows(&self) -> usize {
        self.cin_g() * self.k * self.k
    }
    fn hw_out(&self) -> usize {
        self.h_out() * self.w_out()
    }
    pub fn input_len(&self) -> usize {
        self.batch * self.c_in * self.h * self.w
    }
    pub fn weight_len(&self) -> usize {
        self.c_out * self.col_rows()
    }
    pub fn output_len(&self) -> usize {
        self.batch * self.c_out * self.hw_out()
    }
}

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

/// The column matrix of image `x` (`[C_in, H, W]`) for group `g`: `col_rows × hw_out`.
fn im2col<T: HostFloat>(g: &ConvGeom, x: &[T], group: usize, cols: &mut [T]) {
    let (ho, wo) = (g.h_out(), g.w_out());
    let mut row = 0;
    for ci in group * g.cin_g()..(group + 1) * g.cin_g() {
        let plane = &x[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let (lo, hi) = valid_columns(g, kx * g.dilation);
                let out = &mut cols[row * ho * wo..(row + 1) * ho * wo];
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

/// Adds the column matrix `cols` of group `g` back into image gradient `dx` (the transpose
/// of [`im2col`]).
fn col2im<T: HostFloat>(g: &ConvGeom, cols: &[T], group: usize, dx: &mut [T]) {
    let (ho, wo) = (g.h_out(), g.w_out());
    let mut row = 0;
    for ci in group * g.cin_g()..(group + 1) * g.cin_g() {
        let plane = &mut dx[ci * g.h * g.w..(ci + 1) * g.h * g.w];
        for ky in 0..g.k {
            for kx in 0..g.k {
                let (lo, hi) = valid_columns(g, kx * g.dilation);
                let src = &cols[row * ho * wo..(row + 1) * ho * wo];
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
fn images_per_task(n: usize) -> usize {
    n.div_ceil(rayon::current_num_threads().clamp(1, n.max(1)))
        .max(1)
}

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
    /// Length of one row of the column matrix (the product's inner or outer size).
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
}

/// The buffers one task reuses from image to image.
struct Workspace<T> {
    /// The padded image (`Padded`), zero outside the image.
    xpad: Vec<T>,
    /// A column matrix.
    cols: Vec<T>,
    /// The column matrix's gradient.
    dcols: Vec<T>,
    /// The padded image's gradient.
    dxpad: Vec<T>,
}

impl<T: HostFloat> Workspace<T> {
    fn new(g: &ConvGeom, backward: bool) -> Self {
        let layout = g.layout();
        let zeros = |n: usize| vec![T::zero(); n];
        let cols = if layout == Layout::Pointwise {
            0
        } else {
            g.col_rows() * g.col_len()
        };
        let padded = if layout == Layout::Padded {
            g.padded_len()
        } else {
            0
        };
        Workspace {
            xpad: zeros(padded),
            cols: zeros(cols),
            dcols: zeros(if backward { cols } else { 0 }),
            dxpad: zeros(if backward { padded } else { 0 }),
        }
    }

    /// Prepares image `xi` (the padded copy, for `Padded`).
    fn load(&mut self, g: &ConvGeom, xi: &[T]) {
        if g.layout() != Layout::Padded {
            return;
        }
        let (wp, plane, p) = (g.wp(), g.hp() * g.wp(), g.padding);
        for (c, src) in xi.chunks(g.h * g.w).enumerate() {
            for (y, row) in src.chunks(g.w).enumerate() {
                let at = c * plane + (y + p) * wp + p;
                self.xpad[at..at + g.w].copy_from_slice(row);
            }
        }
    }

    /// Group `group`'s column matrix of the loaded image `xi`.
    fn columns<'a>(&'a mut self, g: &ConvGeom, xi: &'a [T], group: usize) -> &'a [T] {
        match g.layout() {
            Layout::Pointwise => {
                let plane = g.h * g.w;
                &xi[group * g.cin_g() * plane..(group + 1) * g.cin_g() * plane]
            }
            Layout::Im2col => {
                im2col(g, xi, group, &mut self.cols);
                &self.cols
            }
            Layout::Padded => {
                let (len, plane) = (g.col_len(), g.hp() * g.wp());
                let mut rows = self.cols.chunks_mut(len);
                for ci in group * g.cin_g()..(group + 1) * g.cin_g() {
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let at = ci * plane + (ky * g.wp() + kx) * g.dilation;
                            if let Some(row) = rows.next() {
                                row.copy_from_slice(&self.xpad[at..at + len]);
                            }
                        }
                    }
                }
                &self.cols
            }
        }
    }

    /// Adds the column gradient of group `group` into the image gradient `dxi` (through the
    /// padded gradient for `Padded`, which [`Workspace::store_dx`] crops).
    fn fold_columns(&mut self, g: &ConvGeom, group: usize, dxi: &mut [T]) {
        match g.layout() {
            Layout::Pointwise => {}
            Layout::Im2col => col2im(g, &self.dcols, group, dxi),
            Layout::Padded => {
                let (len, plane) = (g.col_len(), g.hp() * g.wp());
                let mut rows = self.dcols.chunks(len);
                for ci in group * g.cin_g()..(group + 1) * g.cin_g() {
                    for ky in 0..g.k {
                        for kx in 0..g.k {
                            let at = ci * plane + (ky * g.wp() + kx) * g.dilation;
                            if let Some(row) = rows.next() {
                                for (d, &v) in self.dxpad[at..at + len].iter_mut().zip(row) {
                                    *d += v;
                                }
                            }
                        }
                    }
                }
            }
        }
    }

    /// Adds the padded gradient's image part into `dxi` (`Padded`).
    fn store_dx(&mut self, g: &ConvGeom, dxi: &mut [T]) {
        if g.layout() != Layout::Padded {
            return;
        }
        let (wp, plane, p) = (g.wp(), g.hp() * g.wp(), g.padding);
        for (c, dst) in dxi.chunks_mut(g.h * g.w).enumerate() {
            for (y, row) in dst.chunks_mut(g.w).enumerate() {
                let at = c * plane + (y + p) * wp + p;
                for (d, &v) in row.iter_mut().zip(&self.dxpad[at..at + g.w]) {
                    *d += v;
                }
            }
        }
        self.dxpad.fill(T::zero());
    }
}

/// Copies output gradient `dyi` into the rows of an output `w + 2·padding` wide, whose extra
/// columns stay zero (`Padded`).
fn spread_output<T: HostFloat>(g: &ConvGeom, dyi: &[T], ypad: &mut [T]) {
    let (wo, wp) = (g.w_out(), g.wp());
    for (src, dst) in dyi.chunks(g.hw_out()).zip(ypad.chunks_mut(g.col_len())) {
        for (row, out) in src.chunks(wo).zip(dst.chunks_mut(wp)) {
            out[..wo].copy_from_slice(row);
        }
    }
}

/// A padded output buffer for `Padded`, else none.
fn output_buffer<T: HostFloat>(g: &ConvGeom) -> Vec<T> {
    let len = if g.layout() == Layout::Padded {
        g.c_out * g.col_len()
    } else {
        0
    };
    vec![T::zero(); len]
}

/// The output `[N, C_out, H_out, W_out]` of `x` convolved with `w`, plus `bias`.
pub fn forward<T: HostFloat>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (img_in, img_out) = (g.c_in * g.h * g.w, g.c_out * g.hw_out());
    let mut out = Vec::with_capacity(g.output_len());
    let per_task = images_per_task(g.batch);
    let (len, padded) = (g.col_len(), g.layout() == Layout::Padded);
    x.par_chunks(per_task * img_in)
        .zip(out.spare_capacity_mut()[..g.output_len()].par_chunks_mut(per_task * img_out))
        .for_each(|(xs, outs)| {
            let mut ws = Workspace::new(g, false);
            let mut ypad = output_buffer(g);
            for (xi, oi) in xs.chunks(img_in).zip(outs.chunks_mut(img_out)) {
                ws.load(g, xi);
                for group in 0..g.groups {
                    let wg = &w[group * g.cout_g() * g.col_rows()..];
                    let cols = ws.columns(g, xi, group);
                    let og = if padded {
                        Dst::Overwrite(&mut ypad[group * g.cout_g() * len..])
                    } else {
                        Dst::Uninit(&mut oi[group * g.cout_g() * g.hw_out()..])
                    };
                    matmul(
                        (g.cout_g(), len, g.col_rows()),
                        wg,
                        (g.col_rows(), 1),
                        cols,
                        (len, 1),
                        og,
                    );
                }
                if padded {
                    // Crop the extra columns.
                    let (wo, wp) = (g.w_out(), g.wp());
                    for (dst, src) in oi.chunks_mut(g.hw_out()).zip(ypad.chunks(len)) {
                        for (row, from) in dst.chunks_mut(wo).zip(src.chunks(wp)) {
                            for (d, &v) in row.iter_mut().zip(from) {
                                d.write(v);
                            }
                        }
                    }
                }
            }
        });
    // SAFETY: each image's `img_out` values were written: by the products of every group
    // (`cout_g` channels × all output pixels each), or by the crop of every channel's rows.
    unsafe { out.set_len(g.output_len()) };
    if let Some(b) = bias {
        out.par_chunks_mut(g.hw_out())
            .enumerate()
            .for_each(|(plane, values)| values.iter_mut().for_each(|v| *v += b[plane % g.c_out]));
    }
    out
}

/// Adds the input's gradient into `dx` and returns the gradients of the weight and the bias,
/// given the output's gradient `dy`.
pub fn backward<T: HostFloat>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    dy: &[T],
    dx: &mut [T],
) -> (Vec<T>, Vec<T>) {
    let (img_in, img_out) = (g.c_in * g.h * g.w, g.c_out * g.hw_out());
    let per_task = images_per_task(g.batch);
    let len = g.col_len();
    let pointwise = g.layout() == Layout::Pointwise;
    // Each task sums the weight and bias gradients of its images; the sums are added after.
    let partial: Vec<(Vec<T>, Vec<T>)> = x
        .par_chunks(per_task * img_in)
        .zip(dy.par_chunks(per_task * img_out))
        .zip(dx.par_chunks_mut(per_task * img_in))
        .map(|((xs, dys), dxs)| {
            let mut dw = vec![T::zero(); g.weight_len()];
            let mut db = vec![T::zero(); g.c_out];
            let mut ws = Workspace::new(g, true);
            let mut dypad = output_buffer(g);
            for ((xi, dyi), dxi) in xs
                .chunks(img_in)
                .zip(dys.chunks(img_out))
                .zip(dxs.chunks_mut(img_in))
            {
                for (c, plane) in dyi.chunks(g.hw_out()).enumerate() {
                    db[c] = plane.iter().fold(db[c], |a, &v| a + v);
                }
                ws.load(g, xi);
                let dyo: &[T] = if g.layout() == Layout::Padded {
                    spread_output(g, dyi, &mut dypad);
                    &dypad
                } else {
                    dyi
                };
                for group in 0..g.groups {
                    let dyg = &dyo[group * g.cout_g() * len..];
                    let wg = &w[group * g.cout_g() * g.col_rows()..];
                    // dW_g += dY_g · colsᵀ
                    let cols = ws.columns(g, xi, group);
                    matmul(
                        (g.cout_g(), g.col_rows(), len),
                        dyg,
                        (len, 1),
                        cols,
                        (1, len),
                        Dst::Add(&mut dw[group * g.cout_g() * g.col_rows()..]),
                    );
                    // dcols = W_gᵀ · dY_g, folded back into dX (added to it directly when
                    // the columns are the image).
                    let plane = g.h * g.w;
                    let target = if pointwise {
                        Dst::Add(
                            &mut dxi[group * g.cin_g() * plane..(group + 1) * g.cin_g() * plane],
                        )
                    } else {
                        Dst::Overwrite(&mut ws.dcols[..])
                    };
                    matmul(
                        (g.col_rows(), len, g.cout_g()),
                        wg,
                        (1, g.col_rows()),
                        dyg,
                        (len, 1),
                        target,
                    );
                    ws.fold_columns(g, group, dxi);
                }
                ws.store_dx(g, dxi);
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

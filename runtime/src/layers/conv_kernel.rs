//! The CPU kernel of 2-D convolution: im2col, then one matrix product per image and group on
//! the `gemm` crate (the one dfdx itself uses), images spread over threads.
//!
//! Layouts are PyTorch's: input `[N, C_in, H, W]`, weight `[C_out, C_in / groups, K, K]`,
//! output `[N, C_out, H_out, W_out]`, all contiguous, row-major.
//!
//! Why im2col + gemm rather than a direct loop: the column matrix turns the convolution into
//! the one operation CPUs are best at; its cost (K² copies of the input) is small next to the
//! product for the 3×3 and 1×1 convolutions of a ResNet.

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

/// A dtype the kernel multiplies with `gemm`.
pub trait ConvDtype: Copy + Send + Sync + 'static + num_traits::Float {}
impl ConvDtype for f32 {}
impl ConvDtype for f64 {}

/// `c (m×n) = a (m×k) · b (k×n)`, plus `c` when `accumulate`; each operand is given by its row
/// and column strides, so that a transpose costs nothing.
#[allow(clippy::too_many_arguments)]
fn matmul<T: ConvDtype>(
    (m, n, k): (usize, usize, usize),
    a: &[T],
    (a_rs, a_cs): (usize, usize),
    b: &[T],
    (b_rs, b_cs): (usize, usize),
    c: &mut [T],
    accumulate: bool,
) {
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
    assert!(last(m, n, n, 1) < c.len(), "dst out of bounds");
    if k == 0 {
        if !accumulate {
            c[..m * n].iter_mut().for_each(|v| *v = T::zero());
        }
        return;
    }
    // SAFETY: the asserts above bound every element gemm reads (a, b) or writes (c) inside the
    // slices, which are valid for the call; `c` is borrowed mutably, so nothing aliases it.
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            c.as_mut_ptr(),
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
fn im2col<T: ConvDtype>(g: &ConvGeom, x: &[T], group: usize, cols: &mut [T]) {
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
fn col2im<T: ConvDtype>(g: &ConvGeom, cols: &[T], group: usize, dx: &mut [T]) {
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
                            *d = *d + v;
                        }
                    } else {
                        for (d, &v) in line[first..].iter_mut().step_by(g.stride).zip(from) {
                            *d = *d + v;
                        }
                    }
                }
                row += 1;
            }
        }
    }
}

/// Threads for `n` images: the machine's parallelism, at most one per image.
fn threads(n: usize) -> usize {
    std::thread::available_parallelism()
        .map_or(1, |p| p.get())
        .min(n)
        .max(1)
}

/// The output `[N, C_out, H_out, W_out]` of `x` convolved with `w`, plus `bias`.
pub fn forward<T: ConvDtype>(g: &ConvGeom, x: &[T], w: &[T], bias: Option<&[T]>) -> Vec<T> {
    let (img_in, img_out) = (g.c_in * g.h * g.w, g.c_out * g.hw_out());
    let mut out = vec![T::zero(); g.output_len()];
    let per_thread = g.batch.div_ceil(threads(g.batch));
    std::thread::scope(|s| {
        for (xs, outs) in x
            .chunks(per_thread * img_in)
            .zip(out.chunks_mut(per_thread * img_out))
        {
            s.spawn(move || {
                let mut cols = vec![T::zero(); g.col_rows() * g.hw_out()];
                for (xi, oi) in xs.chunks(img_in).zip(outs.chunks_mut(img_out)) {
                    for group in 0..g.groups {
                        im2col(g, xi, group, &mut cols);
                        let wg = &w[group * g.cout_g() * g.col_rows()..];
                        let og = &mut oi[group * g.cout_g() * g.hw_out()..];
                        matmul(
                            (g.cout_g(), g.hw_out(), g.col_rows()),
                            wg,
                            (g.col_rows(), 1),
                            &cols,
                            (g.hw_out(), 1),
                            og,
                            false,
                        );
                    }
                    if let Some(b) = bias {
                        for (plane, &bc) in oi.chunks_mut(g.hw_out()).zip(b) {
                            plane.iter_mut().for_each(|v| *v = *v + bc);
                        }
                    }
                }
            });
        }
    });
    out
}

/// Gradients of the input, the weight and the bias, given the output's gradient `dy`.
pub fn backward<T: ConvDtype>(
    g: &ConvGeom,
    x: &[T],
    w: &[T],
    dy: &[T],
) -> (Vec<T>, Vec<T>, Vec<T>) {
    let (img_in, img_out) = (g.c_in * g.h * g.w, g.c_out * g.hw_out());
    let mut dx = vec![T::zero(); g.input_len()];
    let per_thread = g.batch.div_ceil(threads(g.batch));
    // Each thread sums the weight and bias gradients of its images; the sums are added after.
    let partial: Vec<(Vec<T>, Vec<T>)> = std::thread::scope(|s| {
        let handles: Vec<_> = x
            .chunks(per_thread * img_in)
            .zip(dy.chunks(per_thread * img_out))
            .zip(dx.chunks_mut(per_thread * img_in))
            .map(|((xs, dys), dxs)| {
                s.spawn(move || {
                    let mut dw = vec![T::zero(); g.weight_len()];
                    let mut db = vec![T::zero(); g.c_out];
                    let mut cols = vec![T::zero(); g.col_rows() * g.hw_out()];
                    let mut dcols = vec![T::zero(); g.col_rows() * g.hw_out()];
                    for ((xi, dyi), dxi) in xs
                        .chunks(img_in)
                        .zip(dys.chunks(img_out))
                        .zip(dxs.chunks_mut(img_in))
                    {
                        for (c, plane) in dyi.chunks(g.hw_out()).enumerate() {
                            db[c] = plane.iter().fold(db[c], |a, &v| a + v);
                        }
                        for group in 0..g.groups {
                            let dyg = &dyi[group * g.cout_g() * g.hw_out()..];
                            let wg = &w[group * g.cout_g() * g.col_rows()..];
                            // dW_g += dY_g · colsᵀ
                            im2col(g, xi, group, &mut cols);
                            matmul(
                                (g.cout_g(), g.col_rows(), g.hw_out()),
                                dyg,
                                (g.hw_out(), 1),
                                &cols,
                                (1, g.hw_out()),
                                &mut dw[group * g.cout_g() * g.col_rows()..],
                                true,
                            );
                            // dcols = W_gᵀ · dY_g, folded back into dX
                            matmul(
                                (g.col_rows(), g.hw_out(), g.cout_g()),
                                wg,
                                (1, g.col_rows()),
                                dyg,
                                (g.hw_out(), 1),
                                &mut dcols,
                                false,
                            );
                            col2im(g, &dcols, group, dxi);
                        }
                    }
                    (dw, db)
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect()
    });
    let mut dw = vec![T::zero(); g.weight_len()];
    let mut db = vec![T::zero(); g.c_out];
    for (pw, pb) in partial {
        dw.iter_mut().zip(pw).for_each(|(a, b)| *a = *a + b);
        db.iter_mut().zip(pb).for_each(|(a, b)| *a = *a + b);
    }
    (dx, dw, db)
}

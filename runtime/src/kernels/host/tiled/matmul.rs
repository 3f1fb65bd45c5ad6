//! A plain matrix product on the convolutions' tile ([`tile`]): a dense layer's forward and
//! both of its gradients. Either operand may be read transposed ([`Mat`]): the left one is
//! read in place on AVX2 ([`Left::in_place`]) and packed a pass at a time on AVX-512, and the
//! right one is copied, a strip at a time, into a panel that every block of rows then reads
//! (as [`gathered`] does for images).
//!
//! Why: dfdx multiplies through the `gemm` crate, whose AVX-512 kernels are for nightly Rust
//! only; on stable its AVX2 kernel took 78% of an MLP's training step (784→256→10, batch 512).

use super::*;

/// A matrix read in place: element `(r, c)` at `data[r·rs + c·cs]`.
#[derive(Debug, Clone, Copy)]
pub struct Mat<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl Mat<'_> {
    /// Row-major, `cols` wide.
    pub fn rows(data: &[f32], cols: usize) -> Mat<'_> {
        Mat {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major matrix `cols` wide.
    pub fn transposed(data: &[f32], cols: usize) -> Mat<'_> {
        Mat {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// Multiply-adds below which a product stays on the calling thread.
const PARALLEL_FROM: usize = 1 << 18;

/// Values of a right operand up to which a product on several threads packs it whole first,
/// each thread a share ([`Panels`]), rather than each packing all of it for its own rows.
const PACK_WHOLE_UP_TO: usize = 1 << 22;

/// `c[i·ldc + j] (+)= Σ_kk a(i, kk) · b(kk, j)` for `i < m`, `j < n`, `kk < k`: `a` is
/// `m × k`, `b` is `k × n`. Blocks of rows go to rayon's threads; each output is summed in the
/// same order whatever the number of threads.
pub fn matmul(
    (m, k, n): (usize, usize, usize),
    a: Mat<'_>,
    b: Mat<'_>,
    c: &mut [f32],
    ldc: usize,
    add: bool,
) {
    assert!(
        m == 0 || n == 0 || k == 0 || (k - 1) * b.rs + (n - 1) * b.cs < b.data.len(),
        "operands out of bounds"
    );
    let tasks = tasks(m, k, n);
    if tasks > 1 && k * n <= PACK_WHOLE_UP_TO {
        let b = Panels::pack(&b, k, n);
        return split_rows((m, k, n), a, &b, (c, ldc, add), tasks);
    }
    split_rows((m, k, n), a, &b, (c, ldc, add), tasks)
}

/// [`matmul()`] with its right operand packed already.
pub fn matmul_packed(
    (m, k, n): (usize, usize, usize),
    a: Mat<'_>,
    b: &Panels,
    c: &mut [f32],
    ldc: usize,
    add: bool,
) {
    assert!(b.shape() == (k, n), "a packed operand of another shape");
    split_rows((m, k, n), a, b, (c, ldc, add), tasks(m, k, n));
}

/// The tasks a product's rows are split into.
fn tasks(m: usize, k: usize, n: usize) -> usize {
    if m * n * k < PARALLEL_FROM {
        1
    } else {
        rayon::current_num_threads()
    }
}

/// The product, its rows split into `tasks` blocks across rayon's threads.
fn split_rows(
    (m, k, n): (usize, usize, usize),
    a: Mat<'_>,
    b: &(impl Strips + Sync),
    (c, ldc, add): (&mut [f32], usize, bool),
    tasks: usize,
) {
    if m == 0 || n == 0 {
        return;
    }
    assert!(
        n <= ldc && (m - 1) * ldc + n <= c.len(),
        "dst out of bounds"
    );
    if k == 0 {
        if !add {
            c.chunks_mut(ldc).take(m).for_each(|row| row[..n].fill(0.0));
        }
        return;
    }
    assert!(
        (m - 1) * a.rs + (k - 1) * a.cs < a.data.len(),
        "operands out of bounds"
    );
    assert!(available(), "tiled kernels on a CPU without AVX2");
    let rows = m.div_ceil(tasks).next_multiple_of(MR);
    let task = |(t, c): (usize, &mut [f32])| {
        let r0 = t * rows;
        let lhs = Lhs::Rows {
            a,
            r0,
            m: rows.min(m - r0),
            k,
        };
        block_rows(lhs, b, n, c, ldc, add);
    };
    // One task runs here: handing it to the pool costs two context switches per product.
    let c = &mut c[..(m - 1) * ldc + n];
    if tasks == 1 {
        task((0, c));
    } else {
        c.par_chunks_mut(rows * ldc).enumerate().for_each(task);
    }
}

/// A right operand, `k × n`, that packs a strip at a time into a [`Panel`].
pub(super) trait Rhs {
    /// Rows `k0..k0 + kc` and columns `j0..j0 + width` into `panel` (its pass `kc` deep).
    fn pack(&self, rows: (usize, usize), columns: (usize, usize), panel: &mut Panel);
}

/// A right operand as [`block_rows`] reads it: the panel of a pass's rows and a strip's
/// columns, packed into `scratch` as it goes ([`Rhs`]) or packed already ([`Panels`]).
pub(super) trait Strips {
    fn strip<'s>(
        &'s self,
        rows: (usize, usize),
        columns: (usize, usize),
        scratch: &'s mut Panel,
    ) -> &'s Panel;
}

impl<R: Rhs> Strips for R {
    fn strip<'s>(
        &'s self,
        rows: (usize, usize),
        columns: (usize, usize),
        scratch: &'s mut Panel,
    ) -> &'s Panel {
        scratch.rows(rows.1);
        self.pack(rows, columns, scratch);
        scratch
    }
}

impl Strips for Panels {
    fn strip<'s>(
        &'s self,
        (k0, kc): (usize, usize),
        (j0, _): (usize, usize),
        _: &'s mut Panel,
    ) -> &'s Panel {
        let panel = self.at(k0, j0);
        assert!(
            panel.pass_rows() == kc,
            "a pass the operand was not packed in"
        );
        panel
    }
}

/// The left operand of [`block_rows`], `m × k`.
#[derive(Clone, Copy)]
pub(super) enum Lhs<'a> {
    /// Packed whole.
    Packed(&'a Packed),
    /// Rows `r0..r0 + m` of a matrix: on AVX2 read in place, on AVX-512 packed a pass's
    /// columns at a time into one buffer, which stays in L2 while every strip passes over it.
    /// (Packed whole, a dense layer's input, 256 × 784, was 800 KB, written past L2 and read
    /// back for each strip, and its packing took 6% of the layer's inference.)
    Rows {
        a: Mat<'a>,
        r0: usize,
        m: usize,
        k: usize,
    },
}

/// `c (+)= a · b` for one task's rows (`b` is `k × n`): pass by pass of the reduction, strip by
/// strip of `NB` columns, each strip of `b` copied into a contiguous panel. Every output sums
/// its passes in order, however its left operand is read.
pub(super) fn block_rows(
    lhs: Lhs<'_>,
    b: &impl Strips,
    n: usize,
    c: &mut [f32],
    ldc: usize,
    add: bool,
) {
    let k = match lhs {
        Lhs::Packed(a) => a.k,
        Lhs::Rows { k, .. } => k,
    };
    let mut panel = Panel::new(k, n);
    let mut buffer = Packed {
        m: 0,
        k: 0,
        data: Vec::new(),
    };
    for (k0, kc) in isa::passes(k) {
        let (a, at) = match lhs {
            Lhs::Packed(a) => (a.left(), k0),
            Lhs::Rows { a, r0, m, k } if isa() == Some(Isa::Avx2) => {
                (Left::in_place(a, r0, m, k), k0)
            }
            Lhs::Rows { a, r0, m, .. } => {
                pack_rows_into(a, r0, m, (k0, kc), &mut buffer);
                (buffer.left(), 0)
            }
        };
        for j0 in (0..n).step_by(NB) {
            let width = NB.min(n - j0);
            let strip = b.strip((k0, kc), (j0, width), &mut panel);
            strip.pass(a, at, width, &mut c[j0..], ldc, add || k0 > 0);
        }
    }
}

/// Values below which [`pack_rows`] packs on the calling thread.
const PACK_PARALLEL_FROM: usize = 1 << 16;

/// Rows `r0..r0 + m` of `a` (`k` columns), packed for [`tile`]: blocks of `MR` rows, each `k`
/// columns of `MR` values (rows past `m` zero); large ones across rayon's threads.
pub(super) fn pack_rows(a: Mat<'_>, r0: usize, m: usize, k: usize) -> Packed {
    let mut packed = Packed {
        m: 0,
        k: 0,
        data: Vec::new(),
    };
    pack_rows_into(a, r0, m, (0, k), &mut packed);
    packed
}

/// Columns `k0..k0 + kc` of rows `r0..r0 + m` of `a`, packed into `into` as [`pack_rows`] packs
/// (its buffer reused, grown only).
fn pack_rows_into(a: Mat<'_>, r0: usize, m: usize, (k0, kc): (usize, usize), into: &mut Packed) {
    let len = m.div_ceil(MR) * MR * kc;
    if into.data.len() < len {
        into.data.resize(len, 0.0);
    }
    (into.m, into.k) = (m, kc);
    if m == 0 || kc == 0 {
        return;
    }
    let block = |(blk, block): (usize, &mut [f32])| {
        let rows = MR.min(m - blk * MR);
        let first = (r0 + blk * MR) * a.rs + k0 * a.cs;
        let last = first + (rows - 1) * a.rs + (kc - 1) * a.cs;
        let src = &a.data[first..=last];
        // A whole block of rows laid along memory: 8 × 8 values at a time, transposed.
        let whole = if a.cs == 1 && rows == MR {
            kc / 8 * 8
        } else {
            0
        };
        for kk in (0..whole).step_by(8) {
            let runs = std::array::from_fn(|i| &src[i * a.rs + kk..][..8]);
            transpose8(runs, &mut block[kk * MR..], MR);
        }
        for (kk, lanes) in block.chunks_exact_mut(MR).enumerate().skip(whole) {
            for (i, lane) in lanes.iter_mut().enumerate() {
                *lane = if i < rows {
                    src[i * a.rs + kk * a.cs]
                } else {
                    0.0
                };
            }
        }
    };
    let data = &mut into.data[..len];
    if len < PACK_PARALLEL_FROM || rayon::current_num_threads() == 1 {
        data.chunks_mut(MR * kc).enumerate().for_each(block);
    } else {
        data.par_chunks_mut(MR * kc).enumerate().for_each(block);
    }
}

impl Rhs for Mat<'_> {
    fn pack(&self, (k0, kc): (usize, usize), (j0, width): (usize, usize), panel: &mut Panel) {
        let b = self;
        if b.cs == 1 {
            for kk in 0..kc {
                let from = (k0 + kk) * b.rs + j0;
                panel.put(kk, 0, &b.data[from..from + width]);
            }
        } else {
            // Down each column of `b` (a row of the matrix it transposes, when `rs` is 1: 8 × 8
            // blocks of them transposed), into the panel's slice of that column, whose lines
            // stay in L1 while its columns are written.
            let column = |j: usize| &b.data[(j0 + j) * b.cs + k0 * b.rs..];
            let (whole_j, whole_k) = match b.rs {
                1 => (width / 8 * 8, kc / 8 * 8),
                _ => (0, 0),
            };
            for j in (0..whole_j).step_by(8) {
                for kk in (0..whole_k).step_by(8) {
                    panel.put_block(kk, j, std::array::from_fn(|c| &column(j + c)[kk..][..8]));
                }
            }
            for j in 0..width {
                let from = if j < whole_j { whole_k } else { 0 };
                if from < kc {
                    let values = column(j).iter().step_by(b.rs).take(kc).skip(from);
                    panel.put_column(from, j, values.copied());
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(m: Mat<'_>, r: usize, c: usize) -> f64 {
        f64::from(m.data[r * m.rs + c * m.cs])
    }

    fn reference(
        (m, k, n): (usize, usize, usize),
        a: Mat<'_>,
        b: Mat<'_>,
        c: &mut [f32],
        ldc: usize,
    ) {
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k).map(|kk| at(a, i, kk) * at(b, kk, j)).sum();
                c[i * ldc + j] += s as f32;
            }
        }
    }

    /// A pass's columns packed alone (AVX-512's left operands, one pass at a time into one
    /// buffer) are that pass's part of the whole packing, pad rows zero, whatever the buffer
    /// held before.
    #[test]
    fn a_pass_packed_alone_is_its_part_of_the_whole() {
        if !available() {
            return;
        }
        let (rows, k) = (21, 70);
        let values: Vec<f32> = (0..rows * k).map(|i| i as f32 + 1.0).collect();
        for a in [Mat::rows(&values, k), Mat::transposed(&values, rows)] {
            for (r0, m) in [(0, 21), (3, 13), (5, 8)] {
                let whole = pack_rows(a, r0, m, k);
                let mut buffer = Packed {
                    m: 0,
                    k: 0,
                    data: vec![f32::NAN; 4096],
                };
                for (k0, kc) in [(0, 70), (17, 33), (64, 6), (8, 16)] {
                    pack_rows_into(a, r0, m, (k0, kc), &mut buffer);
                    assert_eq!((buffer.m, buffer.k), (m, kc));
                    for blk in 0..m.div_ceil(MR) {
                        for kk in 0..kc {
                            let got = &buffer.data[blk * MR * kc + kk * MR..][..MR];
                            let want = &whole.data[blk * MR * k + (k0 + kk) * MR..][..MR];
                            assert_eq!(got, want, "rows {r0}+{m}, pass {k0}+{kc}");
                        }
                    }
                }
            }
        }
    }

    #[test]
    fn products_of_every_layout_match_the_sums() {
        if !available() {
            return;
        }
        let values = |len: usize, seed: usize| -> Vec<f32> {
            (0..len)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        // Edges of every block: rows past MR, columns past a tile and a strip, depth past KC.
        for (m, k, n) in [
            (1, 1, 1),
            (9, 3, 50),
            (17, 600, 200),
            (130, 40, 10),
            (64, 1030, 49),
            // Passes of whole 8 × 8 blocks into a panel's last slice (AVX2's depth, AVX-512's).
            (9, 256, 192),
            (9, 512, 192),
        ] {
            let (av, bv) = (values(m * k, 1), values(k * n, 2));
            for (ta, tb) in [(false, false), (true, false), (false, true), (true, true)] {
                let a = if ta {
                    Mat::transposed(&av, m)
                } else {
                    Mat::rows(&av, k)
                };
                let b = if tb {
                    Mat::transposed(&bv, k)
                } else {
                    Mat::rows(&bv, n)
                };
                let ldc = n + 3;
                let start = values(m * ldc, 3);
                let (mut got, mut want) = (start.clone(), start.clone());
                matmul((m, k, n), a, b, &mut got, ldc, true);
                reference((m, k, n), a, b, &mut want, ldc);
                // The same bits on one thread and on three (packed by tasks, shared panels).
                for threads in [1, 3] {
                    let pool = rayon::ThreadPoolBuilder::new()
                        .num_threads(threads)
                        .build()
                        .expect("a pool");
                    let mut again = start.clone();
                    pool.install(|| matmul((m, k, n), a, b, &mut again, ldc, true));
                    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
                    assert_eq!(bits(&again), bits(&got), "{m}×{k}×{n} on {threads} threads");
                    // Its right operand packed whole beforehand, as kept weights are.
                    let panels = Panels::of(b, k, n);
                    let mut packed = start.clone();
                    pool.install(|| matmul_packed((m, k, n), a, &panels, &mut packed, ldc, true));
                    assert_eq!(bits(&packed), bits(&got), "{m}×{k}×{n} packed whole");
                }
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let tol = 1e-5 * (k as f32).sqrt() * 4.0;
                    assert!(
                        (g - w).abs() <= tol,
                        "{m}×{k}×{n} {ta} {tb} at {i}: {g} vs {w}"
                    );
                }
                let mut fresh = start.clone();
                matmul((m, k, n), a, b, &mut fresh, ldc, false);
                for i in 0..m {
                    for j in 0..n {
                        let at = i * ldc + j;
                        let w = want[at] - start[at];
                        assert!(
                            (fresh[at] - w).abs() <= 1e-4 * (1.0 + w.abs()),
                            "{m}×{k}×{n} {ta} {tb} overwritten at {at}: {} vs {w}",
                            fresh[at]
                        );
                    }
                    // Columns past n are not outputs: untouched.
                    assert_eq!(
                        fresh[i * ldc + n..i * ldc + ldc],
                        start[i * ldc + n..i * ldc + ldc]
                    );
                }
            }
        }
    }
}

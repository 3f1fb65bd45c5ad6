//! The products of a convolution's forward and input gradient: weights packed ([`Packed`],
//! by [`pack_rows`])
//! times the image read through a table of row offsets ([`product`], one `MR × 48` tile at a
//! time, [`tile`]), all of a block's images at once ([`multiply`], with strips packed into one
//! panel by [`gathered`]).

use super::*;

/// A left operand, `m × k`, packed for [`product`] (by [`pack_rows`]): blocks of `MR` rows,
/// each `k` columns of `MR` values (rows past `m` are zero).
pub(super) struct Packed {
    pub(super) m: usize,
    pub(super) k: usize,
    pub(super) data: Vec<f32>,
}

impl Packed {
    /// As the tiles read it.
    pub(super) fn left(&self) -> Left<'_> {
        Left {
            data: &self.data,
            m: self.m,
            k: self.k,
            block: MR * self.k,
            rs: 1,
            cs: MR,
        }
    }
}

/// A left operand, `m × k`, as the tiles read it: row `i` (in block `i / MR`), reduction row
/// `kk` at `data[(i / MR)·block + (i % MR)·rs + kk·cs]`. Packed ([`Packed::left`]) or a
/// matrix's rows read in place ([`Left::in_place`]).
#[derive(Debug, Clone, Copy)]
pub(super) struct Left<'a> {
    data: &'a [f32],
    pub(super) m: usize,
    pub(super) k: usize,
    block: usize,
    pub(super) rs: usize,
    pub(super) cs: usize,
}

impl<'a> Left<'a> {
    /// Rows `r0..r0 + m` of `a` (`k` columns), read where they are.
    pub(super) fn in_place(a: Mat<'a>, r0: usize, m: usize, k: usize) -> Left<'a> {
        assert!(
            m == 0 || k == 0 || (r0 + m - 1) * a.rs + (k - 1) * a.cs < a.data.len(),
            "rows out of bounds"
        );
        Left {
            data: &a.data[(r0 * a.rs).min(a.data.len())..],
            m,
            k,
            block: MR * a.rs,
            rs: a.rs,
            cs: a.cs,
        }
    }

    /// The address of block `blk`'s first row at reduction row `k0`.
    pub(super) fn at(&self, blk: usize, k0: usize) -> *const f32 {
        assert!(blk * MR < self.m && k0 < self.k, "outside the operand");
        self.data[blk * self.block + k0 * self.cs..].as_ptr()
    }
}

/// `c[i·ldc + j] (+)= Σ_kk a[i, kk] · b[offs[kk] + j]` for `i < a.m`, `j < n`.
pub(super) fn product(
    a: &Packed,
    b: &[f32],
    offs: &[usize],
    n: usize,
    c: &mut [f32],
    ldc: usize,
    add: bool,
) {
    assert_eq!(offs.len(), a.k, "one offset per reduction row");
    if n == 0 || a.m == 0 {
        return;
    }
    let reach = offs.iter().max().map_or(0, |&o| o + n);
    assert!(reach <= b.len(), "rhs rows out of bounds");
    assert!((a.m - 1) * ldc + n <= c.len(), "dst out of bounds");
    assert!(available(), "tiled kernels on a CPU without AVX2");
    let blocks = a.m.div_ceil(MR);
    // A pass's strip of columns (`KC × NB` of `b`) stays in L2 while every block of rows
    // passes over it, and a block's packed weights (`MR × KC`) in L1 across the strip.
    for (k0, kc) in isa::passes(a.k) {
        for jb in (0..n).step_by(NB) {
            for blk in 0..blocks {
                let rows = MR.min(a.m - blk * MR);
                for j0 in (jb..n.min(jb + NB)).step_by(16 * NV) {
                    // SAFETY: the tiles run here (asserted). Tile reads: packed values
                    // `blk·MR·k + (k0..k0+kc)·MR + i` < data.len(); rhs lanes `offs[kk] + j`
                    // with j < n (masked) < reach <= b.len(); dst lanes
                    // `(blk·MR + i)·ldc + j`, i < rows, j < n, within c (asserted).
                    let live = (n - j0).min(16 * NV);
                    unsafe {
                        tile(Tile {
                            a: a.data.as_ptr().add(blk * MR * a.k + k0 * MR),
                            a_rs: 1,
                            a_cs: MR,
                            b: b.as_ptr().add(j0),
                            offs: &offs[k0..k0 + kc],
                            c: c.as_mut_ptr().add(blk * MR * ldc + j0),
                            ldc,
                            rows,
                            live,
                            readable: live,
                            add: add || k0 > 0,
                        });
                    }
                }
            }
        }
    }
}

/// Rows of output that [`multiply`] computes at least to pack its operand: below, the
/// panel's copy costs about what it saves.
pub(super) const GATHER_ROWS: usize = 64;

/// One image's part of a [`multiply`]: `rows` output rows of `w` columns, whose reduction
/// row `kk` starts at `b[from + offs[kk]]` with rows `ws` apart (`ws ≥ w`: the extra columns
/// are not outputs), into `c[to + i·ldc]` for output row (channel) `i`, rows `w` apart.
#[derive(Debug, Clone, Copy)]
pub(super) struct Image {
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) rows: usize,
    pub(super) w: usize,
    pub(super) ws: usize,
}

/// `c (+)= a · b` over the columns of `images` (see [`Image`]): one packed product over all
/// of them ([`gathered`]) when `a` has enough rows, else a [`product`] per image, through
/// `ws`-wide rows cropped to `w`.
pub(super) fn multiply(
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
pub(super) fn whole_images(count: usize, from: usize, to: usize, len: usize) -> Vec<Image> {
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
pub(super) struct Run {
    pub(super) from: usize,
    pub(super) to: usize,
    pub(super) len: usize,
}

/// `c[run.to + i·ldc + j] (+)= Σ_kk a[i, kk] · b[run.from + offs[kk] + j]` for every run,
/// `i < a.m`, `j < run.len`: one product over the columns of many runs (the output rows of
/// several images, say), each strip of them first copied ("packed") into a contiguous panel.
///
/// Why: a product per image leaves most of each 48-wide tile masked off when images are small
/// (a 4×4 output has 16 columns), and rows `offs` apart at a power of two (a 32×32 image's
/// channels) fight over the same cache sets. The panel's copy is made once per strip and read
/// by every block of rows.
pub(super) fn gathered(
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
    let mut panel = Panel::new(a.k, NB);
    let mut out = Lines::zeros(a.m.div_ceil(MR) * MR * NB);
    // The runs, cut into strips of NB columns: (run, first column in it, columns).
    let mut cursor = (0, 0);
    let mut pieces = cut(runs, &mut cursor, NB);
    while !pieces.is_empty() {
        let width: usize = pieces.iter().map(|p| p.2).sum();
        let next = cut(runs, &mut cursor, NB);
        for (k0, kc) in isa::passes(a.k) {
            panel.rows(kc);
            let mut col = 0;
            for &(r, at, take) in &pieces {
                panel.put_rows(col, take, b, runs[r].from + at, &offs[k0..k0 + kc]);
                col += take;
            }
            panel.pass(a.left(), k0, width, &mut out, NB, k0 > 0);
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
pub(super) fn cut(
    runs: &[Run],
    cursor: &mut (usize, usize),
    width: usize,
) -> Vec<(usize, usize, usize)> {
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

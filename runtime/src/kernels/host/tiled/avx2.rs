//! The tiles on AVX2 with FMA ([`isa`](super::isa) has their contracts). With 16 registers of
//! 8 lanes, a product tile's `MR × 48` outputs are computed a quarter at a time, `4 × 24`
//! (12 accumulators, 3 vectors of the right operand, 1 broadcast), and a weight tile's
//! `WR × WC` sums two rows at a time (12 accumulators).

use super::*;

/// Rows × vectors of a product tile's quarter.
const QR: usize = 4;
const QV: usize = 3;

/// The lanes before `left` (all 8 from 8 on).
#[inline]
#[target_feature(enable = "avx2,fma")]
fn mask(left: usize) -> __m256i {
    let left = left.min(8) as i32;
    _mm256_cmpgt_epi32(
        _mm256_set1_epi32(left),
        _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7),
    )
}

/// The 8 values at `p`, of which those from `left` on are zero and not read.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn load(p: *const f32, left: usize) -> __m256 {
    if left >= 8 {
        _mm256_loadu_ps(p)
    } else {
        _mm256_maskload_ps(p, mask(left))
    }
}

/// `v`'s lanes before `left` to `p`; the rest of `p` untouched.
#[inline]
#[target_feature(enable = "avx2,fma")]
unsafe fn store(p: *mut f32, v: __m256, left: usize) {
    if left >= 8 {
        _mm256_storeu_ps(p, v);
    } else if left > 0 {
        _mm256_maskstore_ps(p, mask(left), v);
    }
}

/// See [`isa::tile`](super::isa::tile).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn tile(t: Tile<'_>) {
    // `wrapping_add`: a quarter past `rows` or `live` is skipped, so its address is never used.
    for j0 in (0..t.live).step_by(8 * QV) {
        for r0 in (0..t.rows).step_by(QR) {
            let q = Tile {
                a: t.a.add(r0 * t.a_rs),
                b: t.b.wrapping_add(j0),
                c: t.c.wrapping_add(r0 * t.ldc + j0),
                rows: (t.rows - r0).min(QR),
                live: (t.live - j0).min(8 * QV),
                readable: t.readable - j0,
                ..t
            };
            if q.readable >= 8 * QV {
                quarter::<true>(q);
            } else {
                quarter::<false>(q);
            }
        }
    }
}

/// `QR × 8·QV` outputs of a [`tile`] (`a` at the quarter's first row); `WHOLE` when all
/// `8·QV` columns of `b` are readable, so that its loads need no mask (the outputs' loads and
/// stores are masked at `live` either way).
#[target_feature(enable = "avx2,fma")]
unsafe fn quarter<const WHOLE: bool>(t: Tile<'_>) {
    let Tile {
        a,
        a_rs,
        a_cs,
        b,
        offs,
        c,
        ldc,
        rows,
        live,
        add,
        ..
    } = t;
    // Each row's distance from the first; rows past `rows` read the last one's values.
    let row: [usize; QR] = std::array::from_fn(|i| i.min(rows - 1) * a_rs);
    if WHOLE && rows == QR && live == 8 * QV {
        // The loop reads and writes the outputs themselves.
        product_loop(
            offs.len(),
            (a, row, a_cs),
            b,
            offs.as_ptr(),
            (c, ldc * 4, add),
        );
        return;
    }
    // At most two vectors of outputs: the loop of two (16 columns of `b` readable), whose 8
    // accumulators keep the FMAs as busy as 12 do, where three would compute a third for
    // nothing (a 256-wide layer's last 16 columns; a 10-wide one).
    let narrow = live <= 16 && t.readable >= 16;
    if narrow && rows == QR && live == 16 {
        narrow_loop(
            offs.len(),
            (a, row, a_cs),
            b,
            offs.as_ptr(),
            (c, ldc * 4, add),
        );
        return;
    }
    let left: [usize; QV] = std::array::from_fn(|v| live.saturating_sub(8 * v));
    let mut acc = [[_mm256_setzero_ps(); QV]; QR];
    if add {
        for (i, row) in acc.iter_mut().enumerate().take(rows) {
            for (v, lane) in row.iter_mut().enumerate() {
                *lane = load(c.wrapping_add(i * ldc + 8 * v), left[v]);
            }
        }
    }
    if narrow {
        let out = (acc.as_mut_ptr().cast::<f32>(), 4 * 8 * QV, true);
        narrow_loop(offs.len(), (a, row, a_cs), b, offs.as_ptr(), out);
    } else if WHOLE {
        let out = (acc.as_mut_ptr().cast::<f32>(), 4 * 8 * QV, true);
        product_loop(offs.len(), (a, row, a_cs), b, offs.as_ptr(), out);
    } else {
        for (kk, &off) in offs.iter().enumerate() {
            let src = b.wrapping_add(off);
            let mut bv = [_mm256_setzero_ps(); QV];
            #[allow(clippy::needless_range_loop)]
            for v in 0..QV {
                bv[v] = load(src.wrapping_add(8 * v), left[v]);
            }
            let ak = a.add(kk * a_cs);
            #[allow(clippy::needless_range_loop)]
            for i in 0..QR {
                let ai = _mm256_broadcast_ss(&*ak.add(row[i]));
                for v in 0..QV {
                    acc[i][v] = _mm256_fmadd_ps(ai, bv[v], acc[i][v]);
                }
            }
        }
    }
    for (i, row) in acc.iter().enumerate().take(rows) {
        for (v, &lane) in row.iter().enumerate() {
            store(c.wrapping_add(i * ldc + 8 * v), lane, left[v]);
        }
    }
}

/// `out[i][v] = (out[i][v] if load) + Σ_{kk < kc} a[row[i] + kk·cs] · b[offs[kk] + 8v ..][..8]`
/// for the quarter's 4 rows of 3 vectors of outputs, row `i` at `out + i·ld` bytes: a
/// quarter's reduction with every column readable, written out in assembly because it needs
/// all 16 registers (12 accumulators, 3 vectors of `b`, 1 broadcast) and LLVM, given the same
/// loop in intrinsics, spilled two accumulators to the stack in every iteration (at half the
/// speed). `out` is the outputs themselves when the quarter is whole, else a copy on the stack.
///
/// # Safety
/// AVX2 and FMA; `a[row[i] + kk·cs]` is in bounds for `i < QR`, `kk < kc` (`row[0]` is 0),
/// `offs` holds `kc` offsets, `b[offs[kk]..][..24]` is in bounds for each, and each output
/// row's 24 values.
#[target_feature(enable = "avx2,fma")]
unsafe fn product_loop(
    kc: usize,
    (a, row, cs): (*const f32, [usize; QR], usize),
    b: *const f32,
    offs: *const usize,
    (out, ld, load): (*mut f32, usize, bool),
) {
    // SAFETY: the caller's bounds; every register the loop writes is declared clobbered.
    std::arch::asm!(
        // The accumulators: the outputs' rows, or zeros.
        "test {load}, {load}",
        "jz 5f",
        "mov {off}, {out}",
        "vmovups ymm4, [{off}]",
        "vmovups ymm5, [{off} + 32]",
        "vmovups ymm6, [{off} + 64]",
        "add {off}, {ld}",
        "vmovups ymm7, [{off}]",
        "vmovups ymm8, [{off} + 32]",
        "vmovups ymm9, [{off} + 64]",
        "add {off}, {ld}",
        "vmovups ymm10, [{off}]",
        "vmovups ymm11, [{off} + 32]",
        "vmovups ymm12, [{off} + 64]",
        "add {off}, {ld}",
        "vmovups ymm13, [{off}]",
        "vmovups ymm14, [{off} + 32]",
        "vmovups ymm15, [{off} + 64]",
        "jmp 6f",
        "5:",
        "vxorps ymm4, ymm4, ymm4",
        "vxorps ymm5, ymm5, ymm5",
        "vxorps ymm6, ymm6, ymm6",
        "vxorps ymm7, ymm7, ymm7",
        "vxorps ymm8, ymm8, ymm8",
        "vxorps ymm9, ymm9, ymm9",
        "vxorps ymm10, ymm10, ymm10",
        "vxorps ymm11, ymm11, ymm11",
        "vxorps ymm12, ymm12, ymm12",
        "vxorps ymm13, ymm13, ymm13",
        "vxorps ymm14, ymm14, ymm14",
        "vxorps ymm15, ymm15, ymm15",
        "6:",
        "test {kc}, {kc}",
        "jz 3f",
        "2:",
        "mov {off}, [{offs}]",
        "vmovups ymm0, [{b} + {off} * 4]",
        "vmovups ymm1, [{b} + {off} * 4 + 32]",
        "vmovups ymm2, [{b} + {off} * 4 + 64]",
        "vbroadcastss ymm3, dword ptr [{a}]",
        "vfmadd231ps ymm4, ymm3, ymm0",
        "vfmadd231ps ymm5, ymm3, ymm1",
        "vfmadd231ps ymm6, ymm3, ymm2",
        "vbroadcastss ymm3, dword ptr [{a} + {r1}]",
        "vfmadd231ps ymm7, ymm3, ymm0",
        "vfmadd231ps ymm8, ymm3, ymm1",
        "vfmadd231ps ymm9, ymm3, ymm2",
        "vbroadcastss ymm3, dword ptr [{a} + {r2}]",
        "vfmadd231ps ymm10, ymm3, ymm0",
        "vfmadd231ps ymm11, ymm3, ymm1",
        "vfmadd231ps ymm12, ymm3, ymm2",
        "vbroadcastss ymm3, dword ptr [{a} + {r3}]",
        "vfmadd231ps ymm13, ymm3, ymm0",
        "vfmadd231ps ymm14, ymm3, ymm1",
        "vfmadd231ps ymm15, ymm3, ymm2",
        "add {a}, {step}",
        "add {offs}, 8",
        "dec {kc}",
        "jnz 2b",
        "3:",
        "mov {off}, {out}",
        "vmovups [{off}], ymm4",
        "vmovups [{off} + 32], ymm5",
        "vmovups [{off} + 64], ymm6",
        "add {off}, {ld}",
        "vmovups [{off}], ymm7",
        "vmovups [{off} + 32], ymm8",
        "vmovups [{off} + 64], ymm9",
        "add {off}, {ld}",
        "vmovups [{off}], ymm10",
        "vmovups [{off} + 32], ymm11",
        "vmovups [{off} + 64], ymm12",
        "add {off}, {ld}",
        "vmovups [{off}], ymm13",
        "vmovups [{off} + 32], ymm14",
        "vmovups [{off} + 64], ymm15",
        out = in(reg) out,
        ld = in(reg) ld,
        load = in(reg) usize::from(load),
        a = inout(reg) a => _,
        b = in(reg) b,
        offs = inout(reg) offs => _,
        kc = inout(reg) kc => _,
        off = out(reg) _,
        r1 = in(reg) row[1] * 4,
        r2 = in(reg) row[2] * 4,
        r3 = in(reg) row[3] * 4,
        step = in(reg) cs * 4,
        out("ymm0") _, out("ymm1") _, out("ymm2") _, out("ymm3") _,
        out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
        out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
        out("ymm12") _, out("ymm13") _, out("ymm14") _, out("ymm15") _,
        options(nostack),
    );
}

/// [`product_loop`] for 2 vectors of outputs per row (16 columns of `b` read; 8
/// accumulators).
///
/// # Safety
/// As [`product_loop`]'s, with 16 values of `b` and of each output row.
#[target_feature(enable = "avx2,fma")]
unsafe fn narrow_loop(
    kc: usize,
    (a, row, cs): (*const f32, [usize; QR], usize),
    b: *const f32,
    offs: *const usize,
    (out, ld, load): (*mut f32, usize, bool),
) {
    // SAFETY: the caller's bounds; every register the loop writes is declared clobbered.
    std::arch::asm!(
        "test {load}, {load}",
        "jz 5f",
        "mov {off}, {out}",
        "vmovups ymm4, [{off}]",
        "vmovups ymm5, [{off} + 32]",
        "add {off}, {ld}",
        "vmovups ymm6, [{off}]",
        "vmovups ymm7, [{off} + 32]",
        "add {off}, {ld}",
        "vmovups ymm8, [{off}]",
        "vmovups ymm9, [{off} + 32]",
        "add {off}, {ld}",
        "vmovups ymm10, [{off}]",
        "vmovups ymm11, [{off} + 32]",
        "jmp 6f",
        "5:",
        "vxorps ymm4, ymm4, ymm4",
        "vxorps ymm5, ymm5, ymm5",
        "vxorps ymm6, ymm6, ymm6",
        "vxorps ymm7, ymm7, ymm7",
        "vxorps ymm8, ymm8, ymm8",
        "vxorps ymm9, ymm9, ymm9",
        "vxorps ymm10, ymm10, ymm10",
        "vxorps ymm11, ymm11, ymm11",
        "6:",
        "test {kc}, {kc}",
        "jz 3f",
        "2:",
        "mov {off}, [{offs}]",
        "vmovups ymm0, [{b} + {off} * 4]",
        "vmovups ymm1, [{b} + {off} * 4 + 32]",
        "vbroadcastss ymm3, dword ptr [{a}]",
        "vfmadd231ps ymm4, ymm3, ymm0",
        "vfmadd231ps ymm5, ymm3, ymm1",
        "vbroadcastss ymm3, dword ptr [{a} + {r1}]",
        "vfmadd231ps ymm6, ymm3, ymm0",
        "vfmadd231ps ymm7, ymm3, ymm1",
        "vbroadcastss ymm3, dword ptr [{a} + {r2}]",
        "vfmadd231ps ymm8, ymm3, ymm0",
        "vfmadd231ps ymm9, ymm3, ymm1",
        "vbroadcastss ymm3, dword ptr [{a} + {r3}]",
        "vfmadd231ps ymm10, ymm3, ymm0",
        "vfmadd231ps ymm11, ymm3, ymm1",
        "add {a}, {step}",
        "add {offs}, 8",
        "dec {kc}",
        "jnz 2b",
        "3:",
        "mov {off}, {out}",
        "vmovups [{off}], ymm4",
        "vmovups [{off} + 32], ymm5",
        "add {off}, {ld}",
        "vmovups [{off}], ymm6",
        "vmovups [{off} + 32], ymm7",
        "add {off}, {ld}",
        "vmovups [{off}], ymm8",
        "vmovups [{off} + 32], ymm9",
        "add {off}, {ld}",
        "vmovups [{off}], ymm10",
        "vmovups [{off} + 32], ymm11",
        out = in(reg) out,
        ld = in(reg) ld,
        load = in(reg) usize::from(load),
        a = inout(reg) a => _,
        b = in(reg) b,
        offs = inout(reg) offs => _,
        kc = inout(reg) kc => _,
        off = out(reg) _,
        r1 = in(reg) row[1] * 4,
        r2 = in(reg) row[2] * 4,
        r3 = in(reg) row[3] * 4,
        step = in(reg) cs * 4,
        out("ymm0") _, out("ymm1") _, out("ymm3") _,
        out("ymm4") _, out("ymm5") _, out("ymm6") _, out("ymm7") _,
        out("ymm8") _, out("ymm9") _, out("ymm10") _, out("ymm11") _,
        options(nostack),
    );
}

/// See [`isa::weight_tile`](super::isa::weight_tile).
#[target_feature(enable = "avx2,fma")]
pub(super) unsafe fn weight_tile(
    images: &[(&[f32], &[f32])],
    dy_rows: &[usize; WR],
    x_rows: &[usize; WC],
    n: usize,
) -> [[f32; WC]; WR] {
    let mut sums = [[0f32; WC]; WR];
    for (pair, out) in sums.chunks_exact_mut(2).enumerate() {
        let mut acc = [[_mm256_setzero_ps(); WC]; 2];
        for (dy, x) in images {
            let (dy, x) = (dy.as_ptr(), x.as_ptr());
            let dy_at = [dy.add(dy_rows[2 * pair]), dy.add(dy_rows[2 * pair + 1])];
            let x_at: [*const f32; WC] = std::array::from_fn(|r| x.add(x_rows[r]));
            for j in (0..n).step_by(8) {
                let left = n - j;
                let d = [load(dy_at[0].add(j), left), load(dy_at[1].add(j), left)];
                #[allow(clippy::needless_range_loop)]
                for r in 0..WC {
                    let xv = load(x_at[r].add(j), left);
                    acc[0][r] = _mm256_fmadd_ps(d[0], xv, acc[0][r]);
                    acc[1][r] = _mm256_fmadd_ps(d[1], xv, acc[1][r]);
                }
            }
        }
        for (sum, row) in out.iter_mut().zip(&acc) {
            for (s, &v) in sum.iter_mut().zip(row) {
                *s = lane_total(v);
            }
        }
    }
    sums
}

/// The sum of `v`'s 8 lanes.
#[inline]
#[target_feature(enable = "avx2,fma")]
fn lane_total(v: __m256) -> f32 {
    let half = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v));
    let pair = _mm_add_ps(half, _mm_movehl_ps(half, half));
    _mm_cvtss_f32(_mm_add_ss(pair, _mm_movehdup_ps(pair)))
}

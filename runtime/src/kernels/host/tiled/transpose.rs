//! An 8 × 8 block of values transposed in registers ([`transpose8`]): how the packings turn
//! rows of memory into the columns the tiles read (a dense layer's input into blocks of `MR`
//! rows, a transposed right operand or a convolution's taps into a panel).
//!
//! Why: copied one value at a time, with a strided write (or read) per value, these packings
//! took a sixth of a dense layer's forward (784→256, batch 256); eight loads, 24 shuffles and
//! eight stores move 64 values.

use super::*;

/// `dst[c·ds + r] = src[r][c]` for `r, c < 8`: eight runs of eight values in, eight out.
pub(super) fn transpose8(src: [&[f32]; 8], dst: &mut [f32], ds: usize) {
    assert!(
        src.iter().all(|run| run.len() >= 8) && ds >= 8 && 7 * ds + 8 <= dst.len(),
        "an 8 × 8 block out of bounds"
    );
    assert!(available(), "tiled kernels on a CPU without AVX2");
    // SAFETY: every CPU the tiles run on has AVX (asserted); each run holds 8 values and
    // `dst` the 8 rows of 8 at `c·ds` (asserted).
    unsafe { block(src.map(<[f32]>::as_ptr), dst.as_mut_ptr(), ds) }
}

/// See [`transpose8`]: pairs of rows interleaved, then pairs of pairs, then the 128-bit
/// halves swapped across the two groups of four rows.
#[target_feature(enable = "avx")]
unsafe fn block(src: [*const f32; 8], dst: *mut f32, ds: usize) {
    // Written out, not in closures: a closure does not inherit the target feature.
    let mut r = [_mm256_setzero_ps(); 8];
    for (i, row) in r.iter_mut().enumerate() {
        *row = _mm256_loadu_ps(src[i]);
    }
    // Within each 128-bit half: (r0 c0, r1 c0, r0 c1, r1 c1) and so on.
    let t = [
        _mm256_unpacklo_ps(r[0], r[1]),
        _mm256_unpackhi_ps(r[0], r[1]),
        _mm256_unpacklo_ps(r[2], r[3]),
        _mm256_unpackhi_ps(r[2], r[3]),
        _mm256_unpacklo_ps(r[4], r[5]),
        _mm256_unpackhi_ps(r[4], r[5]),
        _mm256_unpacklo_ps(r[6], r[7]),
        _mm256_unpackhi_ps(r[6], r[7]),
    ];
    // Columns (c, c + 4) of four rows each: s[0] holds columns 0 and 4 of rows 0..4.
    let s = [
        _mm256_shuffle_ps::<0x44>(t[0], t[2]),
        _mm256_shuffle_ps::<0xEE>(t[0], t[2]),
        _mm256_shuffle_ps::<0x44>(t[1], t[3]),
        _mm256_shuffle_ps::<0xEE>(t[1], t[3]),
        _mm256_shuffle_ps::<0x44>(t[4], t[6]),
        _mm256_shuffle_ps::<0xEE>(t[4], t[6]),
        _mm256_shuffle_ps::<0x44>(t[5], t[7]),
        _mm256_shuffle_ps::<0xEE>(t[5], t[7]),
    ];
    for c in 0..4 {
        _mm256_storeu_ps(
            dst.add(c * ds),
            _mm256_permute2f128_ps::<0x20>(s[c], s[c + 4]),
        );
        _mm256_storeu_ps(
            dst.add((c + 4) * ds),
            _mm256_permute2f128_ps::<0x31>(s[c], s[c + 4]),
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_transposed_between_strides() {
        if !available() {
            return;
        }
        let rows: Vec<Vec<f32>> = (0..8)
            .map(|r| (0..11).map(|c| (r * 100 + c) as f32).collect())
            .collect();
        let src: [&[f32]; 8] = std::array::from_fn(|r| &rows[r][2..]);
        let ds = 13;
        let mut dst = vec![-1f32; 7 * ds + 8 + 3];
        transpose8(src, &mut dst, ds);
        for (i, &v) in dst.iter().enumerate() {
            let (c, r) = (i / ds, i % ds);
            let want = if c < 8 && r < 8 {
                (r * 100 + c + 2) as f32
            } else {
                -1.0
            };
            assert_eq!(v, want, "at row {c}, column {r}");
        }
    }
}

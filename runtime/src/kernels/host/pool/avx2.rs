//! Max pooling's 2×2 windows of stride 2 eight outputs at a time, on AVX2: a branch per
//! candidate mispredicted on most outputs (a max pool over random activations), where a
//! compare and a blend per candidate do not.

use std::any::TypeId;
use std::arch::x86_64::*;

use super::HostFloat;

/// The first outputs of a row of windows, eight at a time (as [`max_plane`](super::max_plane)
/// picks: the first maximum of `top[2i], top[2i + 1], bottom[2i], bottom[2i + 1]`, or the
/// last NaN), with where in the plane each lies (`base` is the top row's first index, the
/// bottom row `top.len()` further): how many it did, none unless `T` is f32 and the CPU has
/// AVX2.
pub(super) fn max_pairs<T: HostFloat>(
    top: &[T],
    bottom: &[T],
    (out, argmax): (&mut [T], &mut [u32]),
    base: u32,
) -> usize {
    if TypeId::of::<T>() != TypeId::of::<f32>() || !std::arch::is_x86_feature_detected!("avx2") {
        return 0;
    }
    let f32s = |v: &[T]| {
        // SAFETY: `T` is f32 (checked above).
        unsafe { std::slice::from_raw_parts(v.as_ptr().cast::<f32>(), v.len()) }
    };
    // SAFETY: as above, and `out` is borrowed mutably once, through this view alone.
    let out = unsafe { std::slice::from_raw_parts_mut(out.as_mut_ptr().cast::<f32>(), out.len()) };
    // SAFETY: AVX2 is here (checked above).
    unsafe { max_pairs_f32(f32s(top), f32s(bottom), (out, argmax), base) }
}

#[target_feature(enable = "avx2")]
fn max_pairs_f32(
    top: &[f32],
    bottom: &[f32],
    (out, argmax): (&mut [f32], &mut [u32]),
    base: u32,
) -> usize {
    let w = top.len();
    let whole = (w / 2)
        .min(bottom.len() / 2)
        .min(out.len())
        .min(argmax.len())
        / 8
        * 8;
    // Lanes 0–7 of the even and odd values of 16 in a row.
    let split = |p: &[f32]| {
        let (lo, hi) = (&p[..8], &p[8..16]);
        // SAFETY: 8 values at each (sliced above).
        let (lo, hi) = unsafe { (_mm256_loadu_ps(lo.as_ptr()), _mm256_loadu_ps(hi.as_ptr())) };
        let order = |v: __m256| {
            _mm256_castpd_ps(_mm256_permute4x64_pd::<0b11_01_10_00>(_mm256_castps_pd(v)))
        };
        (
            order(_mm256_shuffle_ps::<0b10_00_10_00>(lo, hi)),
            order(_mm256_shuffle_ps::<0b11_01_11_01>(lo, hi)),
        )
    };
    let lanes = _mm256_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14);
    for o in (0..whole).step_by(8) {
        let (a, b) = split(&top[2 * o..]);
        let (c, d) = split(&bottom[2 * o..]);
        let (mut value, mut at) = (a, _mm256_setzero_si256());
        for (x, off) in [(b, 1), (c, w as i32), (d, w as i32 + 1)] {
            let take = _mm256_or_ps(
                _mm256_cmp_ps::<_CMP_GT_OQ>(x, value),
                _mm256_cmp_ps::<_CMP_UNORD_Q>(x, x),
            );
            value = _mm256_blendv_ps(value, x, take);
            at = _mm256_blendv_epi8(at, _mm256_set1_epi32(off), _mm256_castps_si256(take));
        }
        let first = _mm256_set1_epi32((base + 2 * o as u32) as i32);
        let at = _mm256_add_epi32(_mm256_add_epi32(first, lanes), at);
        // SAFETY: `o + 8 ≤ whole ≤` each output's length.
        unsafe {
            _mm256_storeu_ps(out[o..o + 8].as_mut_ptr(), value);
            _mm256_storeu_si256(argmax[o..o + 8].as_mut_ptr().cast(), at);
        }
    }
    whole
}

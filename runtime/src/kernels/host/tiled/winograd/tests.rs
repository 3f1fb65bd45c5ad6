//! Winograd's products against the direct sums, in f64.

use super::*;

/// The direct convolution, in f64.
fn direct(s: Images, x: &[f32], w: &[f32], n: usize) -> Vec<f64> {
    let Images {
        c_in,
        c_out,
        h,
        w: wd,
    } = s;
    let mut out = vec![0f64; n * c_out * h * wd];
    for img in 0..n {
        for co in 0..c_out {
            for y in 0..h {
                for xo in 0..wd {
                    let mut sum = 0f64;
                    for ci in 0..c_in {
                        for t in 0..9 {
                            let wv = w[(co * c_in + ci) * 9 + t];
                            sum += tap(s, x, (img, ci), (y, xo), t) * f64::from(wv);
                        }
                    }
                    out[((img * c_out + co) * h + y) * wd + xo] = sum;
                }
            }
        }
    }
    out
}

/// The input value tap `t` (row-major in the 3×3 kernel) of output `(y, x)` reads, in f64:
/// zero in the padding.
fn tap(s: Images, x: &[f32], (img, ci): (usize, usize), (y, xo): (usize, usize), t: usize) -> f64 {
    let (iy, ix) = ((y + t / 3).checked_sub(1), (xo + t % 3).checked_sub(1));
    match (iy.filter(|&iy| iy < s.h), ix.filter(|&ix| ix < s.w)) {
        (Some(iy), Some(ix)) => f64::from(x[((img * s.c_in + ci) * s.h + iy) * s.w + ix]),
        _ => 0.0,
    }
}

fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
        .collect()
}

/// Odd and even sizes, images narrower than a tile, channels past a pass and a block of
/// rows, several strips per image and several images per strip: the direct sums, within
/// rounding; the same bits on 1 and 3 threads; `add` adds.
#[test]
fn winograd_convolutions_are_the_direct_sums() {
    if !available() {
        return;
    }
    for (n, c_in, c_out, h, w) in [
        (1, 1, 1, 1, 1),
        (2, 3, 5, 5, 7),
        (3, 16, 9, 4, 4),
        (2, 300, 20, 6, 3),
        (1, 8, 130, 33, 32),
        (5, 4, 8, 2, 2),
    ] {
        let s = Images { c_in, c_out, h, w };
        let x = values(n * c_in * h * w, 1);
        let wt = values(c_out * c_in * 9, 2);
        let bias = values(c_out, 3);
        let want = direct(s, &x, &wt, n);
        let u = transformed(&wt, c_out, c_in, false);
        let mut got = vec![f32::NAN; n * c_out * h * w];
        convolve(s, &x, &u, Some(&bias), &mut got, false);
        let plane = h * w;
        for (i, (&g, &d)) in got.iter().zip(&want).enumerate() {
            let d = d + f64::from(bias[i / plane % c_out]);
            let tol = 2e-6 * (c_in as f64 * 9.0).sqrt() * 4.0;
            assert!(
                (f64::from(g) - d).abs() <= tol,
                "{n}×{c_in}→{c_out} {h}×{w} at {i}: {g} vs {d}"
            );
        }
        for threads in [1, 3] {
            let pool = rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .expect("a pool");
            let mut again = vec![0f32; got.len()];
            pool.install(|| convolve(s, &x, &u, Some(&bias), &mut again, false));
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&again), bits(&got), "on {threads} threads");
        }
        let mut twice = got.clone();
        convolve(s, &x, &u, None, &mut twice, true);
        for (i, (&t, &g)) in twice.iter().zip(&got).enumerate() {
            let want = 2.0 * g - bias[i / plane % c_out];
            assert!(
                (t - want).abs() <= 1e-4 * (1.0 + want.abs()),
                "added at {i}"
            );
        }
    }
}

/// The weights' gradient is the direct sums' over every image and pixel, within rounding,
/// for sizes with strips of several chunks, odd edges and narrow images.
#[test]
fn weight_gradients_are_the_direct_sums() {
    if !available() {
        return;
    }
    for (n, c_in, c_out, h, w) in [
        (1, 1, 1, 1, 1),
        (2, 3, 5, 5, 7),
        (3, 16, 9, 4, 4),
        (2, 10, 20, 33, 40),
        (5, 9, 3, 2, 3),
    ] {
        let s = Images { c_in, c_out, h, w };
        let x = values(n * c_in * h * w, 5);
        let dy = values(n * c_out * h * w, 6);
        let got = weight_gradient(s, &x, &dy);
        for co in 0..c_out {
            for ci in 0..c_in {
                for t in 0..9 {
                    let mut sum = 0f64;
                    for img in 0..n {
                        for y in 0..h {
                            for xo in 0..w {
                                let d = dy[((img * c_out + co) * h + y) * w + xo];
                                sum += tap(s, &x, (img, ci), (y, xo), t) * f64::from(d);
                            }
                        }
                    }
                    let g = got[(co * c_in + ci) * 9 + t];
                    let tol = 4e-6 * ((n * h * w) as f64).sqrt() * 4.0;
                    assert!(
                        (f64::from(g) - sum).abs() <= tol,
                        "{n}×{c_in}→{c_out} {h}×{w} at {co},{ci},{t}: {g} vs {sum}"
                    );
                }
            }
        }
    }
}

/// The dual weights convolve as the flipped, transposed kernels do.
#[test]
fn dual_weights_are_flipped_and_transposed() {
    if !available() {
        return;
    }
    let (c_out, c_in) = (5, 3);
    let wt = values(c_out * c_in * 9, 4);
    let mut flipped = vec![0f32; wt.len()];
    for co in 0..c_out {
        for ci in 0..c_in {
            for t in 0..9 {
                flipped[(ci * c_out + co) * 9 + t] = wt[(co * c_in + ci) * 9 + 8 - t];
            }
        }
    }
    let (dual, plain) = (
        transformed(&wt, c_out, c_in, true),
        transformed(&flipped, c_in, c_out, false),
    );
    for (d, p) in dual.iter().zip(&plain) {
        assert_eq!((d.m, d.k), (p.m, p.k));
        assert_eq!(d.data, p.data);
    }
}

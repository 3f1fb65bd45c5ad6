//! Convolution throughput: `conv2d` forward and backward GFLOP/s at ResNet-50's layer shapes
//! (224×224 input, batch 4, and the CIFAR stem's 32×32, batch 32), against the machine's
//! matrix-multiply rate measured in the same run: the `gemm` crate (what the kernels call) on a
//! 2048² product over all threads. Whole models beside PyTorch: `cargo bench --bench models`.
//!
//! `cargo bench --bench conv`

use std::time::Instant;

use fulmen::prelude::*;

/// GFLOP/s of a 2048×2048×2048 f32 product on all threads (best of 3).
fn gemm_gflops() -> f64 {
    let n = 2048;
    let a = vec![1.0f32; n * n];
    let b = vec![0.5f32; n * n];
    let mut c = vec![0.0f32; n * n];
    let threads = std::thread::available_parallelism().map_or(1, |t| t.get());
    let best = (0..3)
        .map(|_| {
            let start = Instant::now();
            // SAFETY: a, b and c are n×n, row-major, and c is borrowed mutably alone.
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    n,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    n as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0,
                    1.0,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                );
            }
            start.elapsed().as_secs_f64()
        })
        .fold(f64::INFINITY, f64::min);
    assert_eq!(c[0], n as f32 * 0.5, "the product is right");
    2.0 * (n * n * n) as f64 / best / 1e9
}

/// (name, c_in, c_out, kernel, stride, padding, input size): ResNet-50's distinct convolutions.
const RESNET50_LAYERS: [(&str, usize, usize, usize, usize, usize, usize); 10] = [
    ("stem 7x7/2 3->64", 3, 64, 7, 2, 3, 224),
    ("l1 1x1 64->64", 64, 64, 1, 1, 0, 56),
    ("l1 3x3 64->64", 64, 64, 3, 1, 1, 56),
    ("l1 1x1 64->256", 64, 256, 1, 1, 0, 56),
    ("l2 3x3/2 128->128", 128, 128, 3, 2, 1, 56),
    ("l2 3x3 128->128", 128, 128, 3, 1, 1, 28),
    ("l3 1x1 1024->256", 1024, 256, 1, 1, 0, 14),
    ("l3 3x3 256->256", 256, 256, 3, 1, 1, 14),
    ("l4 3x3 512->512", 512, 512, 3, 1, 1, 7),
    ("l4 1x1/2 1024->2048", 1024, 2048, 1, 2, 0, 14),
];

/// The convolutions of the tutorial's CIFAR ResNet-50: each stage's 3×3 and its
/// Bottlenecks' first 1×1, at 32, 16, 8 and 4 pixels square.
const CIFAR_RESNET50_LAYERS: [(&str, usize, usize, usize, usize, usize, usize); 8] = [
    ("l1 3x3 64->64", 64, 64, 3, 1, 1, 32),
    ("l1 1x1 256->64", 256, 64, 1, 1, 0, 32),
    ("l2 3x3 128->128", 128, 128, 3, 1, 1, 16),
    ("l2 1x1 512->128", 512, 128, 1, 1, 0, 16),
    ("l3 3x3 256->256", 256, 256, 3, 1, 1, 8),
    ("l3 1x1 1024->256", 1024, 256, 1, 1, 0, 8),
    ("l4 3x3 512->512", 512, 512, 3, 1, 1, 4),
    ("l4 1x1 2048->512", 2048, 512, 1, 1, 0, 4),
];

/// Forward and backward GFLOP/s of one layer shape (best of 3 after a warm-up).
fn conv_gflops(
    batch: usize,
    (c_in, c_out, k, stride, padding, size): (usize, usize, usize, usize, usize, usize),
) -> (f64, f64) {
    use fulmen::layers::{conv2d, ConvOptions, Dyn4};
    let dev = Cpu::seed_from_u64(0);
    let x: Dyn4<f32> = dev.sample_normal_like(&(batch, c_in, size, size));
    let w: Dyn4<f32> = dev.sample_normal_like(&(c_out, c_in, k, k));
    let opts = ConvOptions {
        stride,
        padding,
        ..Default::default()
    };
    let out = (size + 2 * padding - k) / stride + 1;
    let flops = 2.0 * (batch * c_out * c_in * k * k * out * out) as f64;
    let (mut fwd, mut bwd) = (f64::INFINITY, f64::INFINITY);
    for _ in 0..4 {
        let start = Instant::now();
        let y = conv2d(x.clone().traced(Gradients::leaky()), &w, None, opts).expect("valid");
        let mid = Instant::now();
        let grads = y.sum().backward();
        let end = Instant::now();
        assert!(grads.get(&w).as_vec()[0].is_finite());
        fwd = fwd.min((mid - start).as_secs_f64());
        bwd = bwd.min((end - mid).as_secs_f64());
    }
    (flops / fwd / 1e9, 2.0 * flops / bwd / 1e9)
}

fn main() {
    layers(std::thread::available_parallelism().map_or(1, |n| n.get()));
}

fn layers(threads: usize) {
    let peak = gemm_gflops();
    for (title, batch, shapes) in [
        (
            "ResNet-50 shapes (224x224 input), batch 4",
            4,
            &RESNET50_LAYERS[..],
        ),
        (
            "CIFAR ResNet-50 shapes (32x32 input), batch 32",
            32,
            &CIFAR_RESNET50_LAYERS[..],
        ),
    ] {
        println!("\nconv2d at {title}, {threads} threads, f32; gemm 2048^3: {peak:.1} GFLOP/s");
        println!(
            "  {:<22} {:>9} {:>7} {:>9} {:>7}",
            "layer", "fwd GF/s", "/gemm", "bwd GF/s", "/gemm"
        );
        for &(name, c_in, c_out, k, s, p, size) in shapes {
            let (f, b) = conv_gflops(batch, (c_in, c_out, k, s, p, size));
            println!(
                "  {name:<22} {f:>9.1} {:>7.2} {b:>9.1} {:>7.2}",
                f / peak,
                b / peak
            );
        }
    }
}

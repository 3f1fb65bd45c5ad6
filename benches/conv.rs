//! Convolution throughput: the reference's small ResNet (shared/reference/lightning-baseline/
//! cnn_bench.py: 3×3 stem to 16 channels, BasicBlocks 16, 32 (stride 2), 64 (stride 2), global
//! pool, linear 10; 78 k parameters) on random 3×32×32 images in batches of 64, SGD with
//! momentum, 50 steps of which the last 40 are timed.
//!
//! The baseline is plain PyTorch on the same machine in the same run, when FULMEN_TORCH_PYTHON
//! names a Python with torch (threads: as many as fulmen uses).
//!
//! Then `conv2d` forward and backward GFLOP/s at ResNet-50's layer shapes (224×224 input,
//! batch 4), against the machine's matrix-multiply rate measured in the same run: the `gemm`
//! crate (what the kernels call) on a 2048² product over all threads.
//!
//! `FULMEN_TORCH_PYTHON=/path/to/python cargo bench --bench conv` (`-- resnet` for the small
//! ResNet alone, `-- layers` for the layer shapes alone).

use std::time::Instant;

use fulmen::models::resnet::{BasicBlock, BasicBlockDown};
use fulmen::optim::Optimizer;
use fulmen::prelude::*;

#[module]
struct SmallResNet {
    stem: fulmen::layers::Fused<(
        fulmen::layers::Conv2DNoBias<3, 16, 3, 1, 1>,
        BatchNorm2D<16>,
        ReLU,
    )>,
    blocks: fulmen::layers::Fused<(
        BasicBlock<16>,
        BasicBlockDown<16, 32, 2>,
        BasicBlockDown<32, 64, 2>,
    )>,
    head: (AvgPoolGlobal, Linear<64, 10>),
}

const STEPS: usize = 50;
const WARMUP: usize = 10;
const BATCH: usize = 64;

fn fulmen_img_per_s() -> (f64, usize) {
    // What the Trainer does when it is built (this loop is written by hand).
    fulmen::alloc::keep_freed_memory();
    let dev = Cpu::seed_from_u64(0);
    let mut model: SmallResNet = BuildModule::build(&dev);
    let params = model.num_trainable_params();
    let mut opt = Optimizer::<f32>::new(Optim::sgd(0.1).momentum(0.9)).expect("valid settings");
    let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
        dev.sample_normal_like(&(BATCH, Const, 32, 32));
    let labels: Vec<usize> = (0..BATCH).map(|i| i % 10).collect();
    let y = Labels::<10, Cpu>::new(labels, dev.clone());
    let mut grads = model.alloc_grads();
    let mut stamps = Vec::new();
    for _ in 0..STEPS {
        let h = model.stem.forward_mut(x.clone().traced(grads));
        let logits = model.head.forward_mut(model.blocks.forward_mut(h));
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        grads = loss.backward();
        opt.step(&mut model, &mut grads).expect("a step");
        model.zero_grads(&mut grads);
        stamps.push(Instant::now());
    }
    let steady = stamps[STEPS - 1] - stamps[WARMUP - 1];
    (
        ((STEPS - WARMUP) * BATCH) as f64 / steady.as_secs_f64(),
        params,
    )
}

const TORCH: &str = r#"
import sys, time, torch, torch.nn as nn, torch.nn.functional as F
torch.set_num_threads(int(sys.argv[1])); torch.manual_seed(0)
class B(nn.Module):
    def __init__(s, i, o, st):
        super().__init__()
        s.c1 = nn.Conv2d(i, o, 3, st, 1, bias=False); s.b1 = nn.BatchNorm2d(o)
        s.c2 = nn.Conv2d(o, o, 3, 1, 1, bias=False); s.b2 = nn.BatchNorm2d(o)
        s.s = None if st == 1 and i == o else nn.Sequential(nn.Conv2d(i, o, 1, st, bias=False), nn.BatchNorm2d(o))
    def forward(s, x):
        o = s.b2(s.c2(F.relu(s.b1(s.c1(x)))))
        return F.relu(o + (x if s.s is None else s.s(x)))
m = nn.Sequential(nn.Conv2d(3, 16, 3, 1, 1, bias=False), nn.BatchNorm2d(16), nn.ReLU(),
                  B(16, 16, 1), B(16, 32, 2), B(32, 64, 2), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(64, 10))
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
x = torch.randn(64, 3, 32, 32); y = torch.arange(64) % 10
t = []
for _ in range(50):
    opt.zero_grad(); F.cross_entropy(m(x), y).backward(); opt.step(); t.append(time.perf_counter())
print(40 * 64 / (t[-1] - t[9]))
"#;

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

/// Forward and backward GFLOP/s of one layer shape (best of 3 after a warm-up).
fn conv_gflops(
    (c_in, c_out, k, stride, padding, size): (usize, usize, usize, usize, usize, usize),
) -> (f64, f64) {
    use fulmen::layers::{conv2d, ConvOptions, Dyn4};
    let batch = 4;
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
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `cargo bench` passes `--bench`; a bare word picks one half.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| only.is_empty() || only.iter().any(|a| a == part);
    if wants("resnet") {
        small_resnet(threads);
    }
    if wants("layers") {
        layers(threads);
    }
}

/// Rounds of the side-by-side measurement: the two alternate, so that a slow spell of a
/// shared machine falls on both, and the median round's ratio is reported.
const ROUNDS: usize = 3;

/// PyTorch's images/s on the same model and loop, or why it could not be measured.
fn torch_img_per_s(python: &str, threads: usize) -> Result<f64, String> {
    let out = std::process::Command::new(python)
        .args(["-c", TORCH, &threads.to_string()])
        .output()
        .map_err(|e| format!("could not start {python}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    text.trim().parse::<f64>().map_err(|_| {
        format!(
            "{python} printed no rate (has it torch?): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )
    })
}

fn small_resnet(threads: usize) {
    let python = std::env::var("FULMEN_TORCH_PYTHON").ok();
    let rounds = if python.is_some() { ROUNDS } else { 1 };
    println!("small ResNet, batch {BATCH}, {threads} threads, steady state, images/s:");
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let (ours, params) = fulmen_img_per_s();
        print!("  round {round}: fulmen {ours:>6.0} ({params} params)");
        match python.as_deref().map(|p| torch_img_per_s(p, threads)) {
            Some(Ok(torch)) => {
                println!(", PyTorch {torch:>6.0}, ratio {:.2}", ours / torch);
                ratios.push(ours / torch);
            }
            Some(Err(why)) => {
                println!("\n  PyTorch: {why}");
                return;
            }
            None => println!("\n  (set FULMEN_TORCH_PYTHON to measure PyTorch beside it)"),
        }
    }
    if !ratios.is_empty() {
        ratios.sort_by(f64::total_cmp);
        println!(
            "  ratio fulmen/PyTorch, median of {}: {:.2}",
            ratios.len(),
            ratios[ratios.len() / 2]
        );
    }
}

fn layers(threads: usize) {
    let peak = gemm_gflops();
    println!("\nconv2d at ResNet-50 shapes, batch 4, {threads} threads, f32; gemm 2048^3: {peak:.1} GFLOP/s");
    println!(
        "  {:<22} {:>9} {:>7} {:>9} {:>7}",
        "layer", "fwd GF/s", "/gemm", "bwd GF/s", "/gemm"
    );
    for (name, c_in, c_out, k, s, p, size) in RESNET50_LAYERS {
        let (f, b) = conv_gflops((c_in, c_out, k, s, p, size));
        println!(
            "  {name:<22} {f:>9.1} {:>7.2} {b:>9.1} {:>7.2}",
            f / peak,
            b / peak
        );
    }
}

//! Convolution throughput: the reference's small ResNet (shared/reference/lightning-baseline/
//! cnn_bench.py: 3×3 stem to 16 channels, BasicBlocks 16, 32 (stride 2), 64 (stride 2), global
//! pool, linear 10; 78 k parameters) on random 3×32×32 images in batches of 64, SGD with
//! momentum, 50 steps of which the last 40 are timed.
//!
//! The baseline is plain PyTorch on the same machine in the same run, when FULMEN_TORCH_PYTHON
//! names a Python with torch (threads: as many as fulmen uses).
//!
//! Then the tutorial's exercise model, ResNet-50 with the CIFAR stem, at batch 32 beside
//! PyTorch's the same way.
//!
//! Then `conv2d` forward and backward GFLOP/s at ResNet-50's layer shapes (224×224 input,
//! batch 4), against the machine's matrix-multiply rate measured in the same run: the `gemm`
//! crate (what the kernels call) on a 2048² product over all threads.
//!
//! `FULMEN_TORCH_PYTHON=/path/to/python cargo bench --bench conv` (`-- resnet` for the small
//! ResNet alone, `-- resnet50` for ResNet-50 alone, `-- layers` for the layer shapes alone).

use std::time::Instant;

use fulmen::models::resnet::{CifarResNet50, SmallResNet};
use fulmen::optim::Optimizer;
use fulmen::prelude::*;

#[module]
struct Small {
    net: SmallResNet<10>,
}

/// The tutorial's exercise model: ResNet-50 with the CIFAR stem (23.5 M parameters).
#[module]
struct R50 {
    net: CifarResNet50<10>,
}

/// A model measured side by side: its name for PyTorch's script, batch size, steps, and how
/// many of the first steps are not timed.
struct Case {
    name: &'static str,
    batch: usize,
    steps: usize,
    warmup: usize,
}

const SMALL: Case = Case {
    name: "small",
    batch: 64,
    steps: 50,
    warmup: 10,
};
const RESNET50: Case = Case {
    name: "resnet50",
    batch: 32,
    steps: 8,
    warmup: 2,
};

/// Steady-state images/s and parameter count of `$model` trained on random 3×32×32 images
/// with SGD and momentum, as the Trainer would (the loop is written out by hand).
macro_rules! fulmen_img_per_s {
    ($model:ty, $case:expr) => {{
        let case: &Case = $case;
        fulmen::alloc::keep_freed_memory();
        let dev = Cpu::seed_from_u64(0);
        let mut model: $model = BuildModule::build(&dev);
        let params = model.num_trainable_params();
        let mut opt = Optimizer::<f32>::new(Optim::sgd(0.1).momentum(0.9)).expect("valid settings");
        let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
            dev.sample_normal_like(&(case.batch, Const, 32, 32));
        let labels: Vec<usize> = (0..case.batch).map(|i| i % 10).collect();
        let y = Labels::<10, Cpu>::new(labels, dev.clone());
        let mut grads = model.alloc_grads();
        let mut stamps = Vec::new();
        for _ in 0..case.steps {
            let logits = model.net.forward_mut(x.clone().traced(grads));
            let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
            grads = loss.backward();
            opt.step(&mut model, &mut grads).expect("a step");
            model.zero_grads(&mut grads);
            stamps.push(Instant::now());
        }
        let steady = stamps[case.steps - 1] - stamps[case.warmup - 1];
        let rate = ((case.steps - case.warmup) * case.batch) as f64 / steady.as_secs_f64();
        (rate, params)
    }};
}

/// PyTorch's twin of each case, in plain PyTorch (no torchvision): argv is threads, model,
/// batch, steps, warmup; it prints images/s and the parameter count.
const TORCH: &str = r#"
import sys, time, torch, torch.nn as nn, torch.nn.functional as F
threads, name, batch, steps, warmup = int(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:6])
torch.set_num_threads(threads); torch.manual_seed(0)
def cbn(i, o, k, st):
    return [nn.Conv2d(i, o, k, st, k // 2, bias=False), nn.BatchNorm2d(o)]
class Block(nn.Module):
    def __init__(s, i, o, st, mid=None):
        super().__init__()
        if mid is None:  # BasicBlock
            s.f = nn.Sequential(*cbn(i, o, 3, st), nn.ReLU(), *cbn(o, o, 3, 1))
        else:  # Bottleneck, stride on the 3x3
            s.f = nn.Sequential(*cbn(i, mid, 1, 1), nn.ReLU(), *cbn(mid, mid, 3, st), nn.ReLU(), *cbn(mid, o, 1, 1))
        s.s = nn.Identity() if st == 1 and i == o else nn.Sequential(*cbn(i, o, 1, st))
    def forward(s, x):
        return F.relu(s.f(x) + s.s(x))
if name == "small":
    body, width = [Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2)], 16
else:
    body, width, i = [], 64, 64
    for mid, n, st in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
        for j in range(n):
            body.append(Block(i, 4 * mid, st if j == 0 else 1, mid)); i = 4 * mid
m = nn.Sequential(*cbn(3, width, 3, 1), nn.ReLU(), *body, nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                  nn.Linear(64 if name == "small" else 2048, 10))
opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
x = torch.randn(batch, 3, 32, 32); y = torch.arange(batch) % 10
t = []
for _ in range(steps):
    opt.zero_grad(); F.cross_entropy(m(x), y).backward(); opt.step(); t.append(time.perf_counter())
print((steps - warmup) * batch / (t[-1] - t[warmup - 1]), sum(p.numel() for p in m.parameters()))
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
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    // `cargo bench` passes `--bench`; a bare word picks one half.
    let only: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wants = |part: &str| only.is_empty() || only.iter().any(|a| a == part);
    if wants("resnet") {
        side_by_side(threads, &SMALL, || fulmen_img_per_s!(Small, &SMALL));
    }
    if wants("resnet50") {
        side_by_side(threads, &RESNET50, || fulmen_img_per_s!(R50, &RESNET50));
    }
    if wants("layers") {
        layers(threads);
    }
}

/// Rounds of the side-by-side measurement: the two alternate, so that a slow spell of a
/// shared machine falls on both, and the median round's ratio is reported.
const ROUNDS: usize = 3;

/// PyTorch's images/s and parameter count on the same model and loop, or why it could not
/// be measured.
fn torch_img_per_s(python: &str, threads: usize, case: &Case) -> Result<(f64, usize), String> {
    let args = [threads, case.batch, case.steps, case.warmup].map(|n| n.to_string());
    let out = std::process::Command::new(python)
        .args([
            "-c", TORCH, &args[0], case.name, &args[1], &args[2], &args[3],
        ])
        .output()
        .map_err(|e| format!("could not start {python}: {e}"))?;
    let text = String::from_utf8_lossy(&out.stdout);
    let mut words = text.split_whitespace();
    match (
        words.next().and_then(|w| w.parse().ok()),
        words.next().and_then(|w| w.parse().ok()),
    ) {
        (Some(rate), Some(params)) => Ok((rate, params)),
        _ => Err(format!(
            "{python} printed no rate (has it torch?): {}",
            String::from_utf8_lossy(&out.stderr)
                .lines()
                .last()
                .unwrap_or("")
        )),
    }
}

/// Rounds of fulmen (`ours`) and PyTorch on `case`, alternating, with the median ratio.
fn side_by_side(threads: usize, case: &Case, mut ours: impl FnMut() -> (f64, usize)) {
    let python = std::env::var("FULMEN_TORCH_PYTHON").ok();
    let rounds = if python.is_some() { ROUNDS } else { 1 };
    println!(
        "{}, batch {}, {threads} threads, steady state, images/s:",
        case.name, case.batch
    );
    let mut ratios = Vec::new();
    for round in 1..=rounds {
        let (rate, params) = ours();
        print!("  round {round}: fulmen {rate:>6.1} ({params} params)");
        match python.as_deref().map(|p| torch_img_per_s(p, threads, case)) {
            Some(Ok((torch, torch_params))) => {
                assert_eq!(params, torch_params, "the same model on both sides");
                println!(", PyTorch {torch:>6.1}, ratio {:.2}", rate / torch);
                ratios.push(rate / torch);
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

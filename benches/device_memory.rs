//! The memory of a training step on the device path (the layers as dfdx's ops,
//! `fulmen::kernels::Composed`: what CUDA runs), measured on the CPU, where every tensor is a
//! heap allocation: a global allocator counts the bytes alive.
//!
//! Three ResNet-50 bottlenecks of layer 1's shape (256 → 64 → 64 → 256 channels, 3×3 in the
//! middle, batch norm after each convolution) on 8 images of 32×32, forward then backward. The
//! baseline is measured in the same run: the bytes the forward keeps for the backward. The
//! backward's peak and what it leaves behind are printed as multiples of it, and everything in
//! block outputs (one `[8, 256, 32, 32]` tensor: 8.4 MB in f32).
//!
//! Then a whole training step of ResNet-50 (CIFAR stem, 10 classes; the GPU benchmark's model)
//! at batch 16, forward, backward and an SGD step with momentum, through the device's ops
//! (`fulmen::kernels::cpu_runs::<Composed>()`) and, as the baseline in the same run, through the
//! host kernels: the peak bytes per image, and the allocations the step makes (on the device
//! path about one per dfdx op: on CUDA each is also a kernel launch).
//!
//!     cargo bench --bench device_memory            # `-- blocks` or `-- resnet50` alone

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use fulmen::kernels::{cpu_runs, Composed, Conv, Elementwise, Norm};
use fulmen::layers::ConvGeom;
use fulmen::prelude::*;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);
static CALLS: AtomicUsize = AtomicUsize::new(0);

// SAFETY: every call is passed on to the system allocator unchanged; the counters only watch.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        CALLS.fetch_add(1, Relaxed);
        let live = LIVE.fetch_add(l.size(), Relaxed) + l.size();
        PEAK.fetch_max(live, Relaxed);
        System.alloc(l)
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size(), Relaxed);
        System.dealloc(p, l)
    }
}

#[global_allocator]
static COUNTING: Counting = Counting;

type Dyn = Tensor<(usize, usize, usize, usize), f32, Cpu>;
type Taped = Tensor<(usize, usize, usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>;

const N: usize = 8;
const SIDE: usize = 32;

fn conv(x: Taped, w: &Dyn) -> Taped {
    let (c_out, c_in, k, _) = *w.shape();
    let g = ConvGeom {
        batch: N,
        c_in,
        h: SIDE,
        w: SIDE,
        c_out,
        k,
        stride: 1,
        padding: k / 2,
        dilation: 1,
        groups: 1,
    };
    Composed::conv2d(x, w, None, &g).expect("a valid convolution")
}

fn batch_norm<const C: usize>(x: Taped, dev: &Cpu) -> Taped {
    let x = x
        .try_realize::<(usize, Const<C>, usize, usize)>()
        .expect("C channels");
    let (weight, bias): (Tensor<Rank1<C>, f32, Cpu>, _) = (dev.ones(), dev.zeros());
    let (y, _, _) = Composed::batch_norm_train(x, &weight, &bias, 1e-5).expect("a batch");
    y.try_realize().expect("run-time shape")
}

fn main() {
    let only = std::env::args().skip(1).find(|a| !a.starts_with('-'));
    if only.as_deref().unwrap_or("blocks") == "blocks" {
        blocks();
    }
    if only.as_deref().unwrap_or("resnet50") == "resnet50" {
        let host = resnet50_step(false);
        let device = resnet50_step(true);
        for (path, (peak, calls)) in [("host kernels", host), ("device ops", device)] {
            println!(
                "DEVICE-MEMORY resnet50 step, batch {BATCH}, f32, {path}: peak {:.0} MB/image \
                 ({:.2}x the host kernels'), {calls} allocations ({:.2}x)",
                peak / BATCH as f64 / 1e6,
                peak / host.0,
                calls as f64 / host.1 as f64,
            );
        }
    }
}

#[module]
struct R50 {
    net: fulmen::models::resnet::CifarResNet50<10>,
}

const BATCH: usize = 16;

/// One training step of ResNet-50 at batch [`BATCH`] after a first, unmeasured one (what a
/// step leaves allocated for the next, as the optimizer's buffers): its peak bytes and how
/// many allocations it makes.
fn resnet50_step(device_ops: bool) -> (f64, usize) {
    let _guard = device_ops.then(cpu_runs::<Composed>);
    let dev = Cpu::seed_from_u64(0);
    let mut m: R50<f32, Cpu> = BuildModule::build(&dev);
    let mut opt = fulmen::optim::Optimizer::<f32, Cpu>::new(Optim::sgd(0.1).momentum(0.9))
        .expect("valid settings");
    let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
        dev.sample_normal_like(&(BATCH, Const, 32, 32));
    let mut measured = (0.0, 0);
    for _ in 0..2 {
        let (before, calls) = (LIVE.load(Relaxed), CALLS.load(Relaxed));
        PEAK.store(before, Relaxed);
        let y = m.net.forward_mut(x.clone().traced(m.alloc_grads()));
        let mut grads = y.square().mean().backward();
        opt.step(&mut m.net, &mut grads).expect("a step");
        drop(grads);
        let peak = (PEAK.load(Relaxed) - before) as f64;
        measured = (peak, CALLS.load(Relaxed) - calls);
    }
    measured
}

/// Three bottlenecks, layer by layer (the first part of the module's documentation).
fn blocks() {
    let dev = Cpu::seed_from_u64(0);
    let x: Dyn = dev.sample_normal_like(&(N, 256, SIDE, SIDE));
    let weights: Vec<[Dyn; 3]> = (0..3)
        .map(|_| {
            [
                dev.sample_normal_like(&(64, 256, 1, 1)),
                dev.sample_normal_like(&(64, 64, 3, 3)),
                dev.sample_normal_like(&(256, 64, 1, 1)),
            ]
        })
        .collect();
    let block = (N * 256 * SIDE * SIDE * 4) as f64;

    // The first step allocates what lives on after it (the matrix multiply's per-thread
    // buffers); the second is measured.
    let mut measured = (0.0, 0.0, 0.0);
    for _ in 0..2 {
        let before = LIVE.load(Relaxed);
        PEAK.store(before, Relaxed);
        let mut h = x.clone().traced(Gradients::leaky());
        for [w1, w2, w3] in &weights {
            let skip = h.with_empty_tape();
            let a = batch_norm::<64>(conv(h, w1), &dev).relu();
            let b = batch_norm::<64>(conv(a, w2), &dev).relu();
            let c = batch_norm::<256>(conv(b, w3), &dev);
            h = Composed::add_relu(c, skip).expect("same shapes");
        }
        let kept = (LIVE.load(Relaxed) - before) as f64;
        let grads = h.sum().backward();
        let peak = (PEAK.load(Relaxed) - before) as f64;
        let left = (LIVE.load(Relaxed) - before) as f64;
        drop(grads);
        measured = (kept, peak, left);
    }
    let (kept, peak, left) = measured;

    println!(
        "DEVICE-MEMORY 3 bottlenecks 256-64-256, {N}x{SIDE}x{SIDE}, f32: the forward keeps {:.0} MB \
         ({:.1} block outputs); backward peak {:.2}x that ({:.1} block outputs); left after the \
         backward {:.2}x ({:.1} block outputs: the gradients of the input, the weights and what \
         single ops made)",
        kept / 1e6,
        kept / block,
        peak / kept,
        peak / block,
        left / kept,
        left / block,
    );
}

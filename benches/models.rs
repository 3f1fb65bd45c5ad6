//! fulmen beside PyTorch on the common models, in one table (issue 26): training images/s
//! (steady state: the first steps are not timed), inference images/s (`predict`), and the peak
//! resident memory of each side. Every measurement runs in a process of its own (this bench
//! starts itself again, and PyTorch's twin in plain PyTorch), fulmen and PyTorch alternating
//! over rounds so that a slow spell of a shared machine falls on both; the median round's
//! ratio is reported. Both sides get the same number of threads (rayon's pool; PyTorch's
//! `set_num_threads`), 1 and then every core.
//!
//! Rows: an MLP 784→256→10 (Adam, batch 64 and 512), a MNIST-shaped net (conv 1→16, BN, ReLU,
//! max pool; conv 16→32, BN, ReLU, max pool; linear 1568→10; Adam, batch 64 and 256), the small
//! CIFAR ResNet (SGD with momentum, batch 64), ResNet-18 and ResNet-50 with the CIFAR stem
//! (batch 32); inference of the MLP and ResNet-18 at batch 256.
//!
//! `FULMEN_TORCH_PYTHON=/path/to/python cargo bench --bench models` (a Python with torch;
//! without it, fulmen's side alone). `-- mlp mnist` measures the rows whose names start so;
//! `FULMEN_MODELS_ROUNDS` sets the rounds (3). `FULMEN_NO_AVX512=1` measures both sides as on a
//! CPU without AVX-512: fulmen's tiles on AVX2, and PyTorch limited to AVX2
//! (`ATEN_CPU_CAPABILITY`, oneDNN's `ONEDNN_MAX_CPU_ISA`, MKL's `MKL_ENABLE_INSTRUCTIONS`).

use std::process::Command;
use std::time::Instant;

use fulmen::inputs::Recording;
use fulmen::layers::{Conv2D, Flatten, MaxPool2D};
use fulmen::models::resnet::{CifarResNet18, CifarResNet50, SmallResNet};
use fulmen::optim::Optimizer;
use fulmen::prelude::*;

type Mlp = (Linear<784, 256>, ReLU, Linear<256, 10>);
type Mnist = (
    (
        Conv2D<1, 16, 3, 1, 1>,
        BatchNorm2D<16>,
        ReLU,
        MaxPool2D<2, 2>,
    ),
    (
        Conv2D<16, 32, 3, 1, 1>,
        BatchNorm2D<32>,
        ReLU,
        MaxPool2D<2, 2>,
    ),
    (Flatten<1568>, Linear<1568, 10>),
);

#[module]
struct MlpNet {
    net: Mlp,
}
#[module]
struct MnistNet {
    net: Mnist,
}
#[module]
struct Small {
    net: SmallResNet<10>,
}
#[module]
struct R18 {
    net: CifarResNet18<10>,
}
#[module]
struct R50 {
    net: CifarResNet50<10>,
}

/// One row: its name (PyTorch's twin is chosen by it), what it runs, batch, steps and the
/// first steps not timed.
#[derive(Debug, Clone, Copy)]
struct Row {
    name: &'static str,
    model: &'static str,
    train: bool,
    batch: usize,
    steps: usize,
    warmup: usize,
}

const fn row(name: &'static str, model: &'static str, train: bool, batch: usize) -> Row {
    // Enough steps for a steady rate in a few seconds a side (an MLP's step takes about a
    // millisecond: with 60, a neighbour's burst on a shared machine moved its ratio by a third).
    let (steps, warmup) = match (model.as_bytes(), train) {
        ([b'm', b'l', ..], _) => (400, 50),
        ([b'm', ..], _) => (20, 5),
        (_, true) => (10, 3),
        (_, false) => (6, 2),
    };
    Row {
        name,
        model,
        train,
        batch,
        steps,
        warmup,
    }
}

const ROWS: [Row; 9] = [
    row("mlp, batch 64", "mlp", true, 64),
    row("mlp, batch 512", "mlp", true, 512),
    row("mnist net, batch 64", "mnist", true, 64),
    row("mnist net, batch 256", "mnist", true, 256),
    row("small resnet, batch 64", "small", true, 64),
    row("resnet18 cifar, batch 32", "resnet18", true, 32),
    row("resnet50 cifar, batch 32", "resnet50", true, 32),
    row("predict mlp, batch 256", "mlp", false, 256),
    row("predict resnet18, batch 256", "resnet18", false, 256),
];

/// What one measurement printed: images/s, peak resident KiB, parameters.
struct Measured {
    rate: f64,
    peak_kib: f64,
    params: usize,
}

impl Measured {
    fn line(&self) -> String {
        format!("MEASURED {} {} {}", self.rate, self.peak_kib, self.params)
    }
    fn parse(text: &str) -> Option<Measured> {
        let line = text.lines().find(|l| l.starts_with("MEASURED "))?;
        let mut w = line.split_whitespace().skip(1);
        Some(Measured {
            rate: w.next()?.parse().ok()?,
            peak_kib: w.next()?.parse().ok()?,
            params: w.next()?.parse().ok()?,
        })
    }
}

/// This process's peak resident memory in KiB (Linux's `VmHWM`; NaN elsewhere).
fn peak_kib() -> f64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let line = status.lines().find(|l| l.starts_with("VmHWM:"));
    let kib = line.and_then(|l| l.split_whitespace().nth(1)?.parse().ok());
    kib.unwrap_or(f64::NAN)
}

/// Trains `model` on `x` against `labels` as the trainer's loop does, written out: the
/// steady-state images/s.
macro_rules! train {
    ($model:ident, $opt:expr, $x:expr, $labels:expr, $row:expr) => {{
        let row: &Row = $row;
        let mut opt = Optimizer::<f32>::new($opt).expect("valid settings");
        let y = Labels::<10, Cpu>::new($labels, Cpu::default());
        let mut grads = $model.alloc_grads();
        let mut stamps = Vec::new();
        for _ in 0..row.steps {
            // The batch is the step's input, as `ctx.trace` records it: no gradient of its own.
            let step = Recording::start(&$model, $x.device()).expect("the model's tensors");
            let logits = $model.net.forward_mut(step.trace($x.clone(), grads));
            let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
            grads = loss.backward();
            drop(step);
            opt.step(&mut $model, &mut grads).expect("a step");
            $model.zero_grads(&mut grads);
            stamps.push(Instant::now());
        }
        let steady = stamps[row.steps - 1] - stamps[row.warmup - 1];
        ((row.steps - row.warmup) * row.batch) as f64 / steady.as_secs_f64()
    }};
}

/// Runs `model` forward (inference) on `x`, as the trainer's prediction loop does: the
/// steady-state images/s.
macro_rules! predict {
    ($model:ident, $x:expr, $row:expr) => {{
        let row: &Row = $row;
        let mut stamps = Vec::new();
        // As the trainer's prediction loop does: the weights stay as they are.
        let _kept = fulmen::kernels::keep_packed_weights();
        for _ in 0..row.steps {
            let out = $model.net.forward($x.clone());
            std::hint::black_box(out.as_vec());
            stamps.push(Instant::now());
        }
        let steady = stamps[row.steps - 1] - stamps[row.warmup - 1];
        ((row.steps - row.warmup) * row.batch) as f64 / steady.as_secs_f64()
    }};
}

/// fulmen's side of `row`, in this process (a child of the bench).
fn fulmen_row(row: &Row) -> Measured {
    fulmen::alloc::keep_freed_memory();
    fulmen::threads::compute_here();
    let dev = Cpu::seed_from_u64(0);
    let labels: Vec<usize> = (0..row.batch).map(|i| i % 10).collect();
    let images = || -> Tensor<(usize, Const<3>, usize, usize), f32, Cpu> {
        dev.sample_normal_like(&(row.batch, Const, 32, 32))
    };
    let (rate, params) = match (row.model, row.train) {
        ("mlp", train) => {
            let mut m: MlpNet<f32, Cpu> = BuildModule::build(&dev);
            let x: Tensor<(usize, Const<784>), f32, Cpu> =
                dev.sample_normal_like(&(row.batch, Const));
            let rate = match train {
                true => train!(m, Optim::adam(1e-3), x, labels, row),
                false => predict!(m, x, row),
            };
            (rate, m.num_trainable_params())
        }
        ("mnist", _) => {
            let mut m: MnistNet<f32, Cpu> = BuildModule::build(&dev);
            let x: Tensor<(usize, Const<1>, usize, usize), f32, Cpu> =
                dev.sample_normal_like(&(row.batch, Const, 28, 28));
            let rate = train!(m, Optim::adam(1e-3), x, labels, row);
            (rate, m.num_trainable_params())
        }
        ("small", _) => {
            let mut m: Small<f32, Cpu> = BuildModule::build(&dev);
            let x = images();
            let rate = train!(m, Optim::sgd(0.1).momentum(0.9), x, labels, row);
            (rate, m.num_trainable_params())
        }
        ("resnet18", train) => {
            let mut m: R18<f32, Cpu> = BuildModule::build(&dev);
            let x = images();
            let rate = match train {
                true => train!(m, Optim::sgd(0.1).momentum(0.9), x, labels, row),
                false => predict!(m, x, row),
            };
            (rate, m.num_trainable_params())
        }
        ("resnet50", _) => {
            let mut m: R50<f32, Cpu> = BuildModule::build(&dev);
            let x = images();
            let rate = train!(m, Optim::sgd(0.1).momentum(0.9), x, labels, row);
            (rate, m.num_trainable_params())
        }
        (other, _) => panic!("no model {other}"),
    };
    Measured {
        rate,
        peak_kib: peak_kib(),
        params,
    }
}

/// PyTorch's twins, in plain PyTorch: argv is threads, model, train (0/1), batch, steps,
/// warmup; prints `MEASURED` images/s, peak resident KiB and the parameter count.
const TORCH: &str = r#"
import resource, sys, time, torch, torch.nn as nn, torch.nn.functional as F
threads, name, train, batch, steps, warmup = int(sys.argv[1]), sys.argv[2], *map(int, sys.argv[3:7])
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
def resnet(blocks, width, out):
    return nn.Sequential(*cbn(3, width, 3, 1), nn.ReLU(), *blocks, nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(out, 10))
if name == "mlp":
    m, x = nn.Sequential(nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 10)), torch.randn(batch, 784)
elif name == "mnist":
    m = nn.Sequential(nn.Conv2d(1, 16, 3, 1, 1), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Conv2d(16, 32, 3, 1, 1), nn.BatchNorm2d(32), nn.ReLU(), nn.MaxPool2d(2),
                      nn.Flatten(), nn.Linear(1568, 10))
    x = torch.randn(batch, 1, 28, 28)
else:
    x = torch.randn(batch, 3, 32, 32)
    if name == "small":
        m = resnet([Block(16, 16, 1), Block(16, 32, 2), Block(32, 64, 2)], 16, 64)
    elif name == "resnet18":
        body, i = [], 64
        for o, st in [(64, 1), (128, 2), (256, 2), (512, 2)]:
            body += [Block(i, o, st), Block(o, o, 1)]; i = o
        m = resnet(body, 64, 512)
    else:
        body, i = [], 64
        for mid, n, st in [(64, 3, 1), (128, 4, 2), (256, 6, 2), (512, 3, 2)]:
            for j in range(n):
                body.append(Block(i, 4 * mid, st if j == 0 else 1, mid)); i = 4 * mid
        m = resnet(body, 64, 2048)
y = torch.arange(batch) % 10
if name in ("mlp", "mnist"):
    opt = torch.optim.Adam(m.parameters(), lr=1e-3)
else:
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
t = []
if train:
    for _ in range(steps):
        opt.zero_grad(); F.cross_entropy(m(x), y).backward(); opt.step(); t.append(time.perf_counter())
else:
    m.eval()
    with torch.no_grad():
        for _ in range(steps):
            m(x); t.append(time.perf_counter())
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print("MEASURED", (steps - warmup) * batch / (t[-1] - t[warmup - 1]), peak, sum(p.numel() for p in m.parameters()))
"#;

/// The environment variable that makes a child of this bench measure one row:
/// `index,threads`.
const CHILD: &str = "FULMEN_MODELS_CHILD";

/// fulmen's side of row `index` on `threads`, in a process of its own.
fn fulmen_side(index: usize, threads: usize) -> Result<Measured, String> {
    let exe = std::env::current_exe().map_err(|e| e.to_string())?;
    let out = Command::new(exe)
        .env(CHILD, format!("{index},{threads}"))
        .env("RAYON_NUM_THREADS", threads.to_string())
        .output()
        .map_err(|e| e.to_string())?;
    Measured::parse(&String::from_utf8_lossy(&out.stdout))
        .ok_or_else(|| String::from_utf8_lossy(&out.stderr).into_owned())
}

/// PyTorch's side of `row` on `threads`.
fn torch_side(python: &str, row: &Row, threads: usize) -> Result<Measured, String> {
    let args = [
        threads,
        usize::from(row.train),
        row.batch,
        row.steps,
        row.warmup,
    ]
    .map(|n| n.to_string());
    let mut cmd = Command::new(python);
    if std::env::var_os("FULMEN_NO_AVX512").is_some() {
        cmd.env("ATEN_CPU_CAPABILITY", "avx2")
            .env("ONEDNN_MAX_CPU_ISA", "AVX2")
            .env("MKL_ENABLE_INSTRUCTIONS", "AVX2");
    }
    let out = cmd
        .args([
            "-c", TORCH, &args[0], row.model, &args[1], &args[2], &args[3], &args[4],
        ])
        .output()
        .map_err(|e| format!("could not start {python}: {e}"))?;
    Measured::parse(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        let err = String::from_utf8_lossy(&out.stderr);
        format!("{python}: {}", err.lines().last().unwrap_or("no output"))
    })
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}

fn main() {
    if let Ok(child) = std::env::var(CHILD) {
        let mut parts = child
            .split(',')
            .map(|p| p.parse::<usize>().expect("index,threads"));
        let index = parts.next().expect("a row");
        println!("{}", fulmen_row(&ROWS[index]).line());
        return;
    }
    let python = std::env::var("FULMEN_TORCH_PYTHON").ok();
    let rounds: usize = std::env::var("FULMEN_MODELS_ROUNDS")
        .ok()
        .and_then(|r| r.parse().ok())
        .unwrap_or(3);
    let picked: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!(
        "fulmen beside PyTorch, images/s (median of {rounds} alternating rounds), peak resident MiB; \
         fulmen's tiles and PyTorch on {}",
        fulmen::kernels::instruction_set().unwrap_or("what they choose (fulmen: gemm and dfdx)")
    );
    for threads in [1, cores] {
        println!(
            "\n{threads} thread(s)\n  {:<29} {:>10} {:>10} {:>6} {:>9} {:>9}",
            "row", "fulmen", "PyTorch", "ratio", "fulmen MiB", "torch MiB"
        );
        for (index, row) in ROWS.iter().enumerate() {
            if !picked.is_empty() && !picked.iter().any(|p| row.model.starts_with(p.as_str())) {
                continue;
            }
            let (mut ours, mut theirs, mut ratios) = (Vec::new(), Vec::new(), Vec::new());
            let (mut our_mem, mut their_mem) = (f64::NAN, f64::NAN);
            let mut failed = None;
            for _ in 0..rounds {
                match fulmen_side(index, threads) {
                    Ok(m) => {
                        ours.push(m.rate);
                        our_mem = m.peak_kib / 1024.0;
                        if let Some(p) = python.as_deref() {
                            match torch_side(p, row, threads) {
                                Ok(t) => {
                                    assert_eq!(m.params, t.params, "{}: the same model", row.name);
                                    theirs.push(t.rate);
                                    their_mem = t.peak_kib / 1024.0;
                                    ratios.push(m.rate / t.rate);
                                }
                                Err(e) => failed = Some(e),
                            }
                        }
                    }
                    Err(e) => failed = Some(e),
                }
                if failed.is_some() {
                    break;
                }
            }
            if let Some(why) = failed {
                println!("  {:<29} failed: {why}", row.name);
                continue;
            }
            println!(
                "  {:<29} {:>10.1} {:>10.1} {:>6.2} {:>9.0} {:>9.0}",
                row.name,
                median(ours),
                median(theirs),
                median(ratios),
                our_mem,
                their_mem
            );
        }
        if cores == 1 {
            break;
        }
    }
}

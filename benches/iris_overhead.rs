//! The Foundation's numbers, each against a baseline measured in the same run:
//!
//! 1. Trainer overhead: one Iris epoch (120 training rows in batches of 16, 30 validation rows,
//!    Adam 0.01) through `Trainer::fit` against a hand-written dfdx loop over the same model,
//!    the same batch order and dfdx's own Adam. Reported as the ratio of median epoch times.
//! 2. The release `iris` example end to end: wall time and peak RSS of the whole process
//!    (reference: Lightning 2.6.6 runs the tutorial's program in 5.6 s and 1195 MiB).
//!
//! `cargo bench --bench iris_overhead`

use std::time::{Duration, Instant};

use fulmen::data::{iris, stratified_split};
use fulmen::prelude::*;

#[path = "../examples/common/mod.rs"]
mod common;

type Sample = iris::Sample;

fn split() -> (Vec<Sample>, Vec<Sample>) {
    let samples = iris::bundled();
    let labels: Vec<usize> = samples.iter().map(|(_, y)| y.index()).collect();
    stratified_split(samples, &labels, 0.2, 42).expect("the bundled data splits")
}

/// Median time of one epoch through the trainer (no logger, no progress bar).
fn trainer_epochs(train: &DataLoader<Sample>, val: &DataLoader<Sample>, epochs: usize) -> Duration {
    let stamps = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    struct Shared(std::rc::Rc<std::cell::RefCell<Vec<Instant>>>);
    impl Callback for Shared {
        fn on_train_epoch_start(&mut self, _t: &mut TrainerView) {
            self.0.borrow_mut().push(Instant::now());
        }
        fn on_train_end(&mut self, _t: &mut TrainerView) {
            self.0.borrow_mut().push(Instant::now());
        }
    }
    let mut model = common::IrisClassifier::new(0.01);
    let mut trainer = Trainer::builder()
        .max_epochs(epochs)
        .num_sanity_val_steps(0)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .callback(Shared(stamps.clone()))
        .build()
        .expect("valid settings");
    trainer
        .fit_loaders(&mut model, train.clone(), Some(val.clone()))
        .expect("training runs");
    let stamps = stamps.borrow();
    median(stamps.windows(2).map(|w| w[1] - w[0]).collect())
}

/// Median time of one epoch of a hand-written dfdx loop: same data order, collation, model,
/// dfdx's Adam, and the same validation pass.
fn hand_epochs(train: &DataLoader<Sample>, val: &DataLoader<Sample>, epochs: usize) -> Duration {
    use fulmen::dfdx::optim::{Adam, AdamConfig};
    let dev = Cpu::default();
    let mut model = dev.build_module::<(Linear<4, 16>, ReLU, Linear<16, 3>), f32>();
    let mut opt = Adam::new(
        &model,
        AdamConfig {
            lr: 0.01,
            ..Default::default()
        },
    );
    let mut grads = model.alloc_grads();
    let mut times = Vec::new();
    for epoch in 0..epochs {
        let start = Instant::now();
        for samples in train.epoch(epoch) {
            let (x, y): ClassBatch<4, 3, f32, Cpu> = Collate::collate(samples, &dev);
            let loss =
                cross_entropy_with_logits_loss(model.forward_mut(x.traced(grads)), y.one_hot());
            std::hint::black_box(loss.array());
            grads = loss.backward();
            opt.update(&mut model, &grads).expect("all parameters used");
            model.zero_grads(&mut grads);
        }
        for samples in val.epoch(0) {
            let (x, y): ClassBatch<4, 3, f32, Cpu> = Collate::collate(samples, &dev);
            let logits = model.forward(x);
            std::hint::black_box(accuracy(&logits, &y));
            std::hint::black_box(cross_entropy_with_logits_loss(logits, y.one_hot()).array());
        }
        times.push(start.elapsed());
    }
    median(times)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Wall time and peak RSS (MiB) of one child process (`wait4` reports that child alone).
fn run_process(program: &std::path::Path, args: &[&str]) -> Option<(Duration, f64)> {
    let start = Instant::now();
    let child = std::process::Command::new(program)
        .args(args)
        .stdout(std::process::Stdio::null())
        .spawn()
        .ok()?;
    let pid = child.id() as libc::pid_t;
    // SAFETY: wait4 on our own child's pid, writing into locals we own; `child` is not waited
    // on again (dropping a std Child does not wait).
    let (status, rss_kib) = unsafe {
        let mut status = 0;
        let mut usage: libc::rusage = std::mem::zeroed();
        if libc::wait4(pid, &mut status, 0, &mut usage) != pid {
            return None;
        }
        (status, usage.ru_maxrss as f64)
    };
    let wall = start.elapsed();
    drop(child);
    (libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0).then_some((wall, rss_kib / 1024.0))
}

fn main() {
    let (train, val) = split();
    let train = DataLoader::new(InMemoryDataset::new(train), 16)
        .shuffle(true)
        .seed(0);
    let val = DataLoader::new(InMemoryDataset::new(val), 16);
    let epochs = 400;
    // Warm up both, then alternate rounds so that machine noise hits both alike.
    trainer_epochs(&train, &val, 20);
    hand_epochs(&train, &val, 20);
    let mut ratios = Vec::new();
    let (mut t_best, mut h_best) = (Duration::MAX, Duration::MAX);
    for _ in 0..5 {
        let t = trainer_epochs(&train, &val, epochs);
        let h = hand_epochs(&train, &val, epochs);
        t_best = t_best.min(t);
        h_best = h_best.min(h);
        ratios.push(t.as_secs_f64() / h.as_secs_f64());
    }
    ratios.sort_by(f64::total_cmp);
    println!("iris epoch (8 train batches + 2 val batches), median of {epochs} epochs, 5 rounds:");
    println!(
        "  hand-written dfdx loop : {:>8.1} us",
        h_best.as_secs_f64() * 1e6
    );
    println!(
        "  fulmen Trainer         : {:>8.1} us",
        t_best.as_secs_f64() * 1e6
    );
    println!(
        "  ratio trainer/hand     : {:.3} (median round; target <= 1.10)",
        ratios[2]
    );

    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let example = root.join("target/release/examples/iris");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let built = std::process::Command::new(cargo)
        .args(["build", "--release", "--quiet", "--example", "iris"])
        .current_dir(root)
        .status()
        .is_ok_and(|s| s.success());
    let logs = tempfile::tempdir().expect("a temporary directory");
    let logs_arg = logs.path().to_string_lossy().to_string();
    let data_arg = root.join("data").to_string_lossy().to_string();
    match built
        .then(|| {
            run_process(
                &example,
                &["--data-dir", &data_arg, "--default-root-dir", &logs_arg],
            )
        })
        .flatten()
    {
        Some((wall, rss)) => {
            println!("release `iris` example, 10 epochs, whole process:");
            println!("  wall {:.1} ms (target < 100; Lightning 5600), peak RSS {rss:.1} MiB (target < 30; Lightning 1195)", wall.as_secs_f64() * 1e3);
        }
        None => println!("release `iris` example: could not be built or run"),
    }
}

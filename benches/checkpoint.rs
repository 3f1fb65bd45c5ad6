//! Issue 4's numbers, each against a baseline measured in the same run:
//!
//! 1. One checkpoint save (atomic: temporary file, fsync, rename) and one load (read, CRC,
//!    copy into the module) of the Iris module and of a ~25 M-parameter module, in MB/s
//!    against the disk's plain write speed (`write` + `fsync` of as many bytes).
//! 2. The per-batch cost of gradient clipping and of gradient accumulation against a plain
//!    step, on an MLP (784 → 256 → 10, batch 64), through the same Trainer.
//!
//! `cargo bench --bench checkpoint`

use std::io::Write;
use std::time::{Duration, Instant};

use fulmen::checkpoint::Checkpoint;
use fulmen::prelude::*;

#[path = "../examples/common/mod.rs"]
mod common;

/// 6 × 2048² weights + biases: 25.2 M parameters.
#[lightning_module]
struct Big {
    l1: Linear<2048, 2048>,
    l2: Linear<2048, 2048>,
    l3: Linear<2048, 2048>,
    l4: Linear<2048, 2048>,
    l5: Linear<2048, 2048>,
    l6: Linear<2048, 2048>,
}

#[lightning_module]
impl Big {
    fn training_step(
        &mut self,
        (x, _): RegressionBatch<2048, 2048, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        self.l1.forward(ctx.trace(x)).sum()
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

#[lightning_module]
struct Mlp {
    l1: Linear<784, 256>,
    l2: Linear<256, 10>,
}

#[lightning_module]
impl Mlp {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<784, 10, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let logits = self.l2.forward(self.l1.forward(ctx.trace(x)).relu());
        cross_entropy_with_logits_loss(logits, y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.01).momentum(0.9)
    }
}

/// A way to build the trainer a timing round uses.
type Setup = fn() -> fulmen::TrainerBuilder;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// Median over `n` runs of `f`.
fn time(n: usize, mut f: impl FnMut()) -> Duration {
    median(
        (0..n)
            .map(|_| {
                let t = Instant::now();
                f();
                t.elapsed()
            })
            .collect(),
    )
}

fn mb_per_s(bytes: u64, t: Duration) -> f64 {
    bytes as f64 / 1e6 / t.as_secs_f64()
}

/// Save and load of `ckpt` into `module`, next to a plain write of as many bytes.
fn measure<M: TensorCollection<f32, Cpu>>(
    name: &str,
    ckpt: &Checkpoint,
    module: &mut M,
    runs: usize,
) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("bench.ckpt");
    ckpt.write(&path).expect("the checkpoint saves");
    let bytes = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
    let blob = vec![7u8; bytes as usize];
    let plain = time(runs, || {
        let mut f = std::fs::File::create(dir.path().join("plain.bin")).expect("a file");
        f.write_all(&blob).expect("written");
        f.sync_all().expect("synced");
    });
    let save = time(runs, || ckpt.write(&path).expect("the checkpoint saves"));
    let load = time(runs, || {
        Checkpoint::read(&path)
            .and_then(|c| c.load_weights(module))
            .expect("the checkpoint loads")
    });
    println!(
        "{name}: {:.2} MB; plain write+fsync {:.1} ms ({:.0} MB/s); save {:.1} ms ({:.0} MB/s, {:.2}x plain); load {:.1} ms ({:.0} MB/s)",
        bytes as f64 / 1e6,
        plain.as_secs_f64() * 1e3,
        mb_per_s(bytes, plain),
        save.as_secs_f64() * 1e3,
        mb_per_s(bytes, save),
        save.as_secs_f64() / plain.as_secs_f64(),
        load.as_secs_f64() * 1e3,
        mb_per_s(bytes, load),
    );
}

/// Median time per training batch of the MLP over 3 epochs of 32 batches.
fn per_batch(b: fulmen::TrainerBuilder) -> Duration {
    seed_everything(0);
    let data: Vec<([f32; 784], Class<10>)> = (0..2048)
        .map(|i| {
            let mut x = [0f32; 784];
            x[i % 784] = 1.0;
            x[(i * 7) % 784] = 0.5;
            (x, Class::new(i % 10).expect("a class below 10"))
        })
        .collect();
    let loader = DataLoader::new(InMemoryDataset::new(data), 64).shuffle(true);
    let stamps = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let s = stamps.clone();
    let mut model = Mlp::new();
    b.max_epochs(3)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .callback(
            fulmen::callbacks::LambdaCallback::new()
                .on_train_batch_start(move |_, _| s.borrow_mut().push(Instant::now())),
        )
        .build()
        .expect("valid settings")
        .fit_loaders(&mut model, loader, None)
        .expect("training runs");
    let stamps = stamps.borrow();
    median(stamps.windows(2).map(|w| w[1] - w[0]).collect())
}

fn main() {
    let mut iris = common::IrisClassifier::new(0.01);
    let ckpt = Checkpoint::of_module(&iris, "IrisClassifier").expect("a checkpoint");
    measure("Iris module (131 params)", &ckpt, &mut iris, 51);
    let mut big = Big::new();
    let ckpt = Checkpoint::of_module(&big, "Big").expect("a checkpoint");
    measure("25.2 M-parameter module", &ckpt, &mut big, 5);

    // Rounds alternate the four setups, so that machine noise hits all alike.
    let setups: [(&str, Setup); 4] = [
        ("plain step", Trainer::builder),
        ("clip by norm 1.0", || {
            Trainer::builder().gradient_clip_val(1.0)
        }),
        ("accumulate 4", || {
            Trainer::builder().accumulate_grad_batches(4)
        }),
        ("clip + accumulate 4", || {
            Trainer::builder()
                .gradient_clip_val(1.0)
                .accumulate_grad_batches(4)
        }),
    ];
    let mut times = vec![Vec::new(); setups.len()];
    for _ in 0..5 {
        for (i, (_, make)) in setups.iter().enumerate() {
            times[i].push(per_batch(make()));
        }
    }
    let medians: Vec<Duration> = times.into_iter().map(median).collect();
    let plain = medians[0];
    let us = |d: Duration| d.as_secs_f64() * 1e6;
    println!("MLP 784-256-10, batch 64, per training batch (median of 5 rounds):");
    println!("  plain step               : {:>8.1} us", us(plain));
    for ((name, _), t) in setups.iter().zip(&medians).skip(1) {
        println!(
            "  {name:<25}: {:>8.1} us ({:.3}x plain)",
            us(*t),
            t.as_secs_f64() / plain.as_secs_f64()
        );
    }
}

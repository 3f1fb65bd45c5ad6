//! What metrics cost a training step (issue 25's budget: < 5%): updating `Accuracy`,
//! `F1Score` and a binned `Auroc` (100 thresholds) on a batch of 1024 × 1000-class logits,
//! against the baseline measured in the same run: one training step of a small MLP
//! (1000 → 256 → 1000, Adam) on that batch. Prints each median (each metric alone, and the
//! three as one `MetricCollection`, which reads the logits once) and the ratio.
//!
//! `cargo bench --bench metrics`

use std::time::{Duration, Instant};

use fulmen::metrics::{Accuracy, Auroc, F1Score, MetricCollection};
use fulmen::prelude::*;

const N: usize = 1024;
const C: usize = 1000;

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn main() {
    let dev = Cpu::seed_from_u64(0);
    let x: Tensor<(usize, Const<C>), f32, Cpu> = dev.sample_normal_like(&(N, Const));
    let labels: Vec<usize> = (0..N).map(|i| (i * 7919) % C).collect();
    let y = fulmen::data::Labels::<C, Cpu>::new(labels.clone(), dev.clone());

    // The baseline: one MLP step on the batch.
    type Mlp = (Linear<C, 256>, ReLU, Linear<256, C>);
    let mut mlp = dev.build_module::<Mlp, f32>();
    let mut grads = mlp.alloc_grads();
    let mut opt = fulmen::dfdx::optim::Adam::new(&mlp, Default::default());
    let mut steps = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        let logits = mlp.forward(x.clone().traced(grads));
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        grads = loss.backward();
        fulmen::dfdx::optim::Optimizer::update(&mut opt, &mut mlp, &grads).expect("steps");
        mlp.zero_grads(&mut grads);
        steps.push(start.elapsed());
    }
    let step = median(steps);
    let logits = mlp.forward(x.clone());

    let mut acc = Accuracy::multiclass(C);
    let mut f1 = F1Score::multiclass(C);
    let mut auroc = Auroc::multiclass(C).thresholds(100);
    let mut updates = Vec::new();
    for _ in 0..7 {
        let start = Instant::now();
        acc.update(&logits, &y).expect("fits");
        f1.update(&logits, &y).expect("fits");
        auroc.update(&logits, &y).expect("fits");
        updates.push(start.elapsed());
    }
    let update = median(updates);
    let each = |f: &mut dyn FnMut()| {
        let mut t = Vec::new();
        for _ in 0..5 {
            let start = Instant::now();
            f();
            t.push(start.elapsed());
        }
        median(t).as_secs_f64() * 1e3
    };
    let (a, b, c) = (
        each(&mut || acc.update(&logits, &y).expect("fits")),
        each(&mut || f1.update(&logits, &y).expect("fits")),
        each(&mut || auroc.update(&logits, &y).expect("fits")),
    );
    // The same three as one collection: the logits come to the host once.
    let mut together = MetricCollection::new("")
        .with("acc", Accuracy::multiclass(C))
        .with("f1", F1Score::multiclass(C))
        .with("auroc", Auroc::multiclass(C).thresholds(100));
    let collected = each(&mut || together.update(&logits, &y).expect("fits"));
    println!(
        "MLP step (1024 x 1000, 1000-256-1000, Adam): {:>9.3} ms",
        step.as_secs_f64() * 1e3
    );
    println!(
        "Accuracy + F1 + binned AUROC update:         {:>9.3} ms",
        update.as_secs_f64() * 1e3
    );
    println!("  of which Accuracy {a:.3} ms, F1 {b:.3} ms, binned AUROC {c:.3} ms");
    println!("  the three as one MetricCollection:         {collected:>9.3} ms");
    println!(
        "ratio: {:.3} of a step, {:.3} as a collection (budget 0.05)",
        update.as_secs_f64() / step.as_secs_f64(),
        collected / (step.as_secs_f64() * 1e3)
    );
}

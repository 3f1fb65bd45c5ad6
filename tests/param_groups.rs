//! Parameter groups (`Optim::group`, PyTorch's `param_groups`): each group's learning rate,
//! weight decay and momentum, worked out by hand; one schedule per group, which
//! `LearningRateMonitor` logs as `lr-SGD/pg1`, `lr-SGD/pg2`; an exact resume.

#[path = "support/metrics_csv.rs"]
mod metrics_csv;
#[path = "support/quiet.rs"]
mod quiet;
#[path = "support/serial.rs"]
mod serial;

use fulmen::optim::{Group, Optimizer, StepLR};
use fulmen::prelude::*;

#[module]
struct One {
    layer: Linear<2, 1>,
}

/// Steps `config` twice on `loss = w · x + b` (gradients: `x` for the weight, 1 for the
/// bias) from the weight `[1, -2]` and the bias 0.5; returns the weight and bias after each.
fn run(config: Optim) -> Vec<(Vec<f32>, f32)> {
    let dev = Cpu::default();
    let mut m: One<f32, Cpu> = BuildModule::build(&dev);
    m.layer.weight = dev.tensor([[1.0, -2.0]]);
    m.layer.bias = dev.tensor([0.5]);
    let mut opt = Optimizer::<f32>::new(config).unwrap();
    let x = dev.tensor([[0.5f32, -1.0]]);
    (0..2)
        .map(|_| {
            let g = m.alloc_grads();
            let loss = m.layer.forward(x.clone().traced(g)).sum();
            let mut g = loss.backward();
            opt.step(&mut m, &mut g).unwrap();
            (m.layer.weight.as_vec(), m.layer.bias.as_vec()[0])
        })
        .collect()
}

fn close(a: f32, b: f64) {
    assert!(((a as f64) - b).abs() < 1e-6, "{a} vs {b}");
}

#[test]
fn each_group_steps_by_its_own_rate_decay_and_momentum() {
    let _one = serial::one_at_a_time();
    // The bias in a group of its own: rate 1.0, weight decay 0.5, momentum 0.9; the weight
    // by the optimizer's settings (rate 0.1, no decay, no momentum).
    let bias = Group::of(["*.bias"])
        .lr(1.0)
        .weight_decay(0.5)
        .momentum(0.9);
    let got = run(Optim::sgd(0.1).group(bias));
    let (mut w, mut b, mut buf) = ([1.0f64, -2.0], 0.5f64, 0.0f64);
    let x = [0.5, -1.0];
    for (t, (gw, gb)) in got.iter().enumerate() {
        w[0] -= 0.1 * x[0];
        w[1] -= 0.1 * x[1];
        let d = 1.0 + 0.5 * b;
        buf = if t == 0 { d } else { 0.9 * buf + d };
        b -= 1.0 * buf;
        close(gw[0], w[0]);
        close(gw[1], w[1]);
        close(*gb, b);
    }
}

type Sample = ([f32; 2], [f32; 1]);

#[lightning_module]
struct Net {
    body: Linear<2, 4>,
    head: Linear<4, 1>,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        mse_loss(self.head.forward(self.body.forward(ctx.trace(x)).tanh()), y)
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
            .momentum(0.5)
            .group(Group::of(["head"]).lr(1.0))
            .scheduler(StepLR::new(1, 0.5))
    }
}

fn loader() -> DataLoader<Sample> {
    let samples = (0..16)
        .map(|i| {
            let x = [(i as f32 * 0.4).sin(), (i as f32 * 0.9).cos()];
            (x, [x[0] - x[1]])
        })
        .collect();
    DataLoader::new(InMemoryDataset::new(samples), 4).shuffle(true)
}

fn weights(net: &Net<f32, Cpu>) -> Vec<f32> {
    [
        net.body.weight.as_vec(),
        net.body.bias.as_vec(),
        net.head.weight.as_vec(),
        net.head.bias.as_vec(),
    ]
    .concat()
}

#[test]
fn each_group_follows_its_own_schedule_and_resumes_exactly() {
    let _one = serial::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let fit = |net: &mut Net<f32, Cpu>, epochs: usize, from: Option<&std::path::Path>| {
        seed_everything(2);
        let mut trainer = quiet::trainer()
            .max_epochs(epochs)
            .enable_checkpointing(true)
            .default_root_dir(dir.path())
            .logger(fulmen::loggers::CsvLogger::new(dir.path(), "lightning_logs").unwrap())
            .callback(fulmen::callbacks::LearningRateMonitor::new())
            .build()
            .unwrap();
        let mut loaders = fulmen::datamodule::Loaders {
            train: Some(loader()),
            ..Default::default()
        };
        trainer.fit_from(net, &mut loaders, from).unwrap();
    };
    seed_everything(1);
    let mut whole = Net::new();
    fit(&mut whole, 3, None);

    // The monitor's columns: each group's rate halves every epoch from its own start.
    let version = dir.path().join("lightning_logs/version_0");
    let column = |name: &str| metrics_csv::column(&version, name);
    assert_eq!(column("lr-SGD/pg1"), [0.1, 0.05, 0.025]);
    assert_eq!(column("lr-SGD/pg2"), [1.0, 0.5, 0.25]);

    // Stopped after one epoch and resumed: the same weights, bit for bit.
    seed_everything(1);
    let mut resumed = Net::new();
    fit(&mut resumed, 1, None);
    let ckpt = std::fs::read_dir(dir.path().join("lightning_logs/version_1/checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|p| p.to_string_lossy().contains("epoch=0"))
        .unwrap();
    fit(&mut resumed, 3, Some(&ckpt));
    assert_eq!(weights(&whole), weights(&resumed));
}

#[test]
fn group_mistakes_are_named() {
    let _one = serial::one_at_a_time();
    // Settings the optimizer refuses, in a group.
    let e = Optimizer::<f32>::new(Optim::adam(1e-3).group(Group::of(["layer"]).momentum(1.0)))
        .unwrap_err()
        .to_string();
    assert!(e.contains("group 1") && e.contains("betas.0"), "{e}");
    // A group's own rate under OneCycleLR, which would ignore it.
    let one_cycle = Optim::sgd(0.1)
        .group(Group::of(["head"]).lr(1.0))
        .scheduler(fulmen::optim::OneCycleLR::new(0.5, 100));
    let e = one_cycle.validate().unwrap_err().to_string();
    assert!(e.contains("OneCycleLR"), "{e}");

    // A group that covers nothing, named when the fit starts.
    #[lightning_module]
    struct Typo {
        head: Linear<2, 1>,
    }
    #[lightning_module]
    impl Typo {
        fn training_step(
            &mut self,
            (x, y): RegressionBatch<2, 1, E, D>,
            ctx: &mut StepContext<E, D>,
        ) -> Loss<E, D> {
            mse_loss(self.head.forward(ctx.trace(x)), y)
        }
        fn configure_optimizers(&self) -> Optim {
            Optim::sgd(0.1).group(Group::of(["*.bais"]).weight_decay(0.0))
        }
    }
    let mut loaders = fulmen::datamodule::Loaders {
        train: Some(loader()),
        ..Default::default()
    };
    let e = quiet::trainer()
        .max_epochs(1)
        .build()
        .unwrap()
        .fit(&mut Typo::new(), &mut loaders)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("group 1") && e.contains("*.bais") && e.contains("Typo"),
        "{e}"
    );
}

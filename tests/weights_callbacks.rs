//! Callbacks that see the module's weights (`Callback::with_weights`): `WeightAveraging`'s
//! average is the EMA formula applied by hand to the weights after each step, and validation
//! runs with it, checkpoints hold it and a resumed run continues it exactly;
//! `GradientNormMonitor` logs the gradient norms dfdx's own backward gives.

#[path = "support/metrics_csv.rs"]
mod metrics_csv;
#[path = "support/quiet.rs"]
mod quiet;
#[path = "support/serial.rs"]
mod serial;

use std::cell::RefCell;
use std::rc::Rc;

use fulmen::callbacks::{GradientNormMonitor, WeightAveraging};
use fulmen::prelude::*;
use fulmen::weights::{At, Weights};

type Sample = ([f32; 2], [f32; 1]);

fn samples(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let x = [(i as f32 * 0.7).sin(), (i as f32 * 0.3).cos()];
            (x, [2.0 * x[0] - x[1] + 0.5])
        })
        .collect()
}

#[lightning_module]
struct Net {
    layer: Linear<2, 1>,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        mse_loss(self.layer.forward(ctx.trace(x)), y)
    }
    fn validation_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) {
        ctx.log("val_loss", mse_loss(self.layer.forward(x), y));
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.2)
    }
}

/// The weights after every optimizer step, as a callback sees them.
struct Recorder(Rc<RefCell<Vec<Vec<f32>>>>);

impl Callback for Recorder {
    fn with_weights(&mut self, trainer: &mut TrainerView, at: At, weights: &mut dyn Weights) {
        if at == At::TrainBatchEnd {
            let w = [weights.values("layer.weight"), weights.values("layer.bias")];
            match w {
                [Ok(w), Ok(b)] => self.0.borrow_mut().push([w, b].concat()),
                [Err(e), _] | [_, Err(e)] => trainer.fail(e),
            }
        }
    }
}

fn weights_of(net: &Net<f32, Cpu>) -> Vec<f32> {
    [net.layer.weight.as_vec(), net.layer.bias.as_vec()].concat()
}

#[test]
fn weight_averaging_validates_with_and_returns_the_ema_of_the_weights() {
    let decay = 0.8;
    let _one = serial::one_at_a_time();
    let seen = Rc::new(RefCell::new(Vec::new()));
    seed_everything(4);
    let mut net = Net::new();
    let mut trainer = quiet::trainer()
        .max_epochs(3)
        .callback(Recorder(seen.clone()))
        .callback(WeightAveraging::ema(decay))
        .build()
        .unwrap();
    let train = DataLoader::new(InMemoryDataset::new(samples(8)), 4);
    let val = DataLoader::new(InMemoryDataset::new(samples(6)), 3);
    trainer
        .fit_loaders(&mut net, train, Some(val.clone()))
        .unwrap();

    // The average by hand: the first step's weights, then blended at every step.
    let seen = seen.borrow();
    assert_eq!(seen.len(), 6);
    let mut average: Vec<f64> = seen[0].iter().map(|&v| f64::from(v)).collect();
    for w in &seen[1..] {
        for (a, &v) in average.iter_mut().zip(w) {
            *a = decay * *a + (1.0 - decay) * f64::from(v);
        }
    }
    let got = weights_of(&net);
    for (g, a) in got.iter().zip(&average) {
        assert!((f64::from(*g) - a).abs() < 1e-6, "{got:?} vs {average:?}");
    }
    // Not the last step's weights: the average moved the module.
    assert_ne!(got, seen[5]);

    // The last validation ran with the average (the module's weights now).
    let mut by_hand = 0.0;
    for (x, y) in samples(6) {
        let p = x[0] * got[0] + x[1] * got[1] + got[2];
        by_hand += f64::from((p - y[0]) * (p - y[0])) / 6.0;
    }
    let logged = trainer.callback_metrics()["val_loss"];
    assert!((logged - by_hand).abs() < 1e-6, "{logged} vs {by_hand}");
}

#[test]
fn the_gradient_norm_monitor_logs_the_norms_of_the_backward() {
    let dir = tempfile::tempdir().unwrap();
    let _one = serial::one_at_a_time();
    seed_everything(9);
    let mut net = Net::new();
    let (w, b) = (net.layer.weight.clone(), net.layer.bias.clone());
    let mut trainer = quiet::trainer()
        .max_steps(1)
        .logger(fulmen::loggers::CsvLogger::new(dir.path(), "lightning_logs").unwrap())
        .callback(GradientNormMonitor::new(2.0))
        .build()
        .unwrap();
    let batch = samples(4);
    let train = DataLoader::new(InMemoryDataset::new(batch.clone()), 4);
    trainer.fit_loaders(&mut net, train, None).unwrap();

    // dfdx's own gradients of the first batch's loss.
    let dev = Cpu::default();
    let x: Vec<f32> = batch.iter().flat_map(|(x, _)| *x).collect();
    let y: Vec<f32> = batch.iter().map(|(_, y)| y[0]).collect();
    let x: Tensor<(usize, Const<2>), f32, Cpu> = dev.tensor_from_vec(x, (4, Const));
    let y: Tensor<(usize, Const<1>), f32, Cpu> = dev.tensor_from_vec(y, (4, Const));
    let norm = |v: Vec<f32>| v.iter().map(|g| f64::from(g * g)).sum::<f64>().sqrt();
    // The loss through a module of the same weights, and its gradients.
    let mut same: fulmen::layers::linear::modules::Linear<2, 1, f32, Cpu> =
        BuildModule::build(&dev);
    same.weight = w;
    same.bias = b;
    let g = same.alloc_grads();
    let loss = mse_loss(same.forward(x.traced(g)), y);
    let g = loss.backward();
    let (gw, gb) = (
        norm(g.get(&same.weight).as_vec()),
        norm(g.get(&same.bias).as_vec()),
    );

    // The one step's norms, logged once.
    let version = dir.path().join("lightning_logs/version_0");
    let get = |name: &str| match metrics_csv::column(&version, name)[..] {
        [v] => v,
        ref other => panic!("{name}: {other:?}"),
    };
    let close = |a: f64, b: f64| (a - b).abs() <= 1e-6 * b.abs().max(1.0);
    assert!(close(get("grad_2.0_norm/layer.weight"), gw));
    assert!(close(get("grad_2.0_norm/layer.bias"), gb));
    assert!(close(
        get("grad_2.0_norm_total"),
        (gw * gw + gb * gb).sqrt()
    ));
}

/// Fits `net` to `epochs` with the EMA and a `last.ckpt` in `dir` after every epoch, from
/// `resume` if given.
fn fit_ema(net: &mut Net<f32, Cpu>, dir: &std::path::Path, epochs: usize, resume: Option<&str>) {
    let checkpoints = fulmen::callbacks::ModelCheckpoint::new()
        .dirpath(dir)
        .save_top_k(0)
        .save_last(true);
    let mut trainer = quiet::trainer()
        .enable_checkpointing(true)
        .max_epochs(epochs)
        .callback(WeightAveraging::ema(0.7))
        .callback(checkpoints)
        .build()
        .unwrap();
    let mut loaders = fulmen::datamodule::Loaders {
        train: Some(DataLoader::new(InMemoryDataset::new(samples(8)), 4).shuffle(true)),
        val: Some(DataLoader::new(InMemoryDataset::new(samples(6)), 3)),
        ..Default::default()
    };
    trainer.fit_from(net, &mut loaders, resume).unwrap();
}

#[test]
fn checkpoints_hold_the_average_and_a_resumed_run_continues_it_exactly() {
    let _one = serial::one_at_a_time();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    seed_everything(6);
    let mut whole = Net::new();
    let start = weights_of(&whole);
    fit_ema(&mut whole, a.path(), 4, None);

    seed_everything(6);
    let mut split = Net::new();
    assert_eq!(weights_of(&split), start);
    fit_ema(&mut split, b.path(), 2, None);
    let last = b.path().join("last.ckpt");
    let mut resumed = Net::new();
    fit_ema(&mut resumed, b.path(), 4, Some(last.to_str().unwrap()));
    assert_eq!(weights_of(&resumed), weights_of(&whole), "the same average");

    // The checkpoint's weights are the average (what fit returned), the training weights
    // beside them.
    let ckpt = fulmen::checkpoint::Checkpoint::read(a.path().join("last.ckpt")).unwrap();
    let stored: Vec<f32> = ["layer.weight", "layer.bias"]
        .iter()
        .flat_map(|n| ckpt.tensor(n).unwrap())
        .map(|v| v as f32)
        .collect();
    assert_eq!(stored, weights_of(&whole));
    let current = ckpt
        .tensor("weight_averaging/current/layer.weight")
        .unwrap();
    assert_ne!(current, ckpt.tensor("layer.weight").unwrap());
}

//! `StochasticWeightAveraging`: the module ends with the equal average of the weights at the
//! end of the averaged epochs, the rate anneals to `swa_lr` as PyTorch's `SWALR`, the batch
//! norm's statistics are recomputed over the training data, and a run resumed in the middle
//! of averaging ends exactly where an uninterrupted one does.

#[path = "support/quiet.rs"]
mod quiet;
#[path = "support/serial.rs"]
mod serial;

use std::cell::RefCell;
use std::rc::Rc;

use fulmen::callbacks::{ModelCheckpoint, StochasticWeightAveraging};
use fulmen::checkpoint::Checkpoint;
use fulmen::data::{Image, ImageBatch};
use fulmen::layers::Conv2DNoBias;
use fulmen::prelude::*;
use fulmen::trainer::Precision;
use fulmen::weights::{At, Weights};

type Sample = (Image<1>, Class<2>);

fn samples() -> Vec<Sample> {
    (0..16)
        .map(|i| {
            let pixels: Vec<f32> = (0..16)
                .map(|p| ((i * 5 + p * 3) as f32 * 0.41).sin() + 0.3)
                .collect();
            let class = usize::from(pixels[6] > 0.3);
            (
                Image::new(pixels, 4, 4).unwrap(),
                Class::new(class).unwrap(),
            )
        })
        .collect()
}

#[lightning_module]
struct Net {
    bn: BatchNorm2D<1>,
    conv: Conv2DNoBias<1, 2, 3, 1, 1>,
    head: (AvgPoolGlobal, Linear<2, 2>),
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): ImageBatch<1, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let x = self.bn.forward_mut(ctx.trace(x));
        let logits = self.head.forward(self.conv.forward(x).relu());
        cross_entropy_with_logits_loss(logits, y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

const TRAINED: [&str; 4] = ["bn.weight", "conv.weight", "head.1.weight", "head.1.bias"];

/// Per epoch, the trained tensors at its end and its rate.
#[derive(Default)]
struct Seen {
    weights: Vec<Vec<f32>>,
    lr: Vec<f64>,
}

struct Recorder(Rc<RefCell<Seen>>);

impl Callback for Recorder {
    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        self.0.borrow_mut().lr.push(trainer.lr());
    }
    fn with_weights(&mut self, trainer: &mut TrainerView, at: At, weights: &mut dyn Weights) {
        if at == At::TrainEpochEnd {
            let mut all = Vec::new();
            for name in TRAINED {
                match weights.values(name) {
                    Ok(v) => all.extend(v),
                    Err(e) => return trainer.fail(e),
                }
            }
            self.0.borrow_mut().weights.push(all);
        }
    }
}

fn swa() -> StochasticWeightAveraging {
    StochasticWeightAveraging::new(0.01)
        .start_epoch(4)
        .annealing_epochs(2)
}

fn fit(
    net: &mut Net<f32, Cpu>,
    dir: &std::path::Path,
    epochs: usize,
    resume: Option<&str>,
) -> Seen {
    fit_in(Precision::F32, net, dir, epochs, resume)
}

fn fit_in(
    precision: Precision,
    net: &mut Net<f32, Cpu>,
    dir: &std::path::Path,
    epochs: usize,
    resume: Option<&str>,
) -> Seen {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let checkpoints = ModelCheckpoint::new()
        .dirpath(dir)
        .save_top_k(0)
        .save_last(true);
    let mut trainer = quiet::trainer()
        .enable_checkpointing(true)
        .max_epochs(epochs)
        .precision(precision)
        .callback(Recorder(seen.clone()))
        .callback(swa())
        .callback(checkpoints)
        .build()
        .unwrap();
    let mut loaders = fulmen::datamodule::Loaders {
        train: Some(DataLoader::new(InMemoryDataset::new(samples()), 4)),
        ..Default::default()
    };
    trainer.fit_from(net, &mut loaders, resume).unwrap();
    let seen = std::mem::take(&mut *seen.borrow_mut());
    seen
}

fn trained(net: &Net<f32, Cpu>) -> Vec<f32> {
    [
        net.bn.weight.as_vec(),
        net.conv.weight.as_vec(),
        net.head.1.weight.as_vec(),
        net.head.1.bias.as_vec(),
    ]
    .concat()
}

#[test]
fn the_module_ends_with_the_average_and_batch_norm_statistics_of_the_data() {
    let _one = serial::one_at_a_time();
    // In 16-mixed too: the steps on the half copy, the average and statistics in f32.
    for precision in [Precision::F32, Precision::Mixed16] {
        let dir = tempfile::tempdir().unwrap();
        seed_everything(2);
        let mut net = Net::new();
        let seen = fit_in(precision, &mut net, dir.path(), 6, None);

        // The equal average of the weights at the end of the 4th, 5th and 6th epochs (1-based, as
        // Lightning counts swa_epoch_start).
        let got = trained(&net);
        for (i, g) in got.iter().enumerate() {
            let mean = (3..6).map(|e| seen.weights[e][i]).sum::<f32>() / 3.0;
            assert!((g - mean).abs() < 1e-6, "{i}: {g} vs {mean}");
        }
        assert_ne!(got, seen.weights[5]);

        // SWALR: the rate at the start, then half-way by the cosine, then swa_lr.
        for (got, want) in seen.lr.iter().zip([0.1, 0.1, 0.1, 0.1, 0.055, 0.01]) {
            assert!((got - want).abs() < 1e-12, "{:?}", seen.lr);
        }

        // The input's batch norm: the mean of the four batches' means and unbiased variances.
        let pixels: Vec<Vec<f32>> = samples()
            .into_iter()
            .map(|(im, _)| im.pixels().to_vec())
            .collect();
        let (mut mean, mut var) = (0.0f64, 0.0f64);
        for batch in pixels.chunks(4) {
            let values: Vec<f64> = batch.iter().flatten().map(|&v| f64::from(v)).collect();
            let m = values.iter().sum::<f64>() / values.len() as f64;
            let v =
                values.iter().map(|x| (x - m) * (x - m)).sum::<f64>() / (values.len() - 1) as f64;
            mean += m / 4.0;
            var += v / 4.0;
        }
        let (rm, rv) = (
            net.bn.running_mean.as_vec()[0],
            net.bn.running_var.as_vec()[0],
        );
        assert!((f64::from(rm) - mean).abs() < 1e-5, "{rm} vs {mean}");
        assert!((f64::from(rv) - var).abs() < 1e-5, "{rv} vs {var}");
        assert_eq!(net.bn.momentum, 0.1, "the momentum is restored");
    }
}

#[test]
fn a_run_resumed_while_averaging_ends_where_an_uninterrupted_one_does() {
    let _one = serial::one_at_a_time();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    seed_everything(8);
    let mut whole = Net::new();
    fit(&mut whole, a.path(), 6, None);

    seed_everything(8);
    let mut split = Net::new();
    fit(&mut split, b.path(), 5, None);
    let last = b.path().join("last.ckpt");
    let mut resumed = Net::new();
    fit(&mut resumed, b.path(), 6, Some(last.to_str().unwrap()));

    let (x, y) = (
        Checkpoint::of_module(&whole, "Net").unwrap(),
        Checkpoint::of_module(&resumed, "Net").unwrap(),
    );
    for name in x.tensor_names() {
        assert_eq!(x.tensor(name).unwrap(), y.tensor(name).unwrap(), "{name}");
    }
}

#[test]
fn a_start_past_the_last_epoch_is_refused_before_training() {
    let _one = serial::one_at_a_time();
    let mut net = Net::new();
    let mut trainer = quiet::trainer()
        .max_epochs(6)
        .callback(StochasticWeightAveraging::new(0.01).start_epoch(7))
        .build()
        .unwrap();
    let mut loaders = fulmen::datamodule::Loaders {
        train: Some(DataLoader::new(InMemoryDataset::new(samples()), 4)),
        ..Default::default()
    };
    let err = trainer.fit(&mut net, &mut loaders).unwrap_err().to_string();
    assert!(err.contains("start at epoch 7 of 6"), "{err}");
    assert_eq!(trainer.global_step(), 0, "refused before the first step");
}

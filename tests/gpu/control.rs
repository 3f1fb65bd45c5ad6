//! The GPU suite's part for full control of optimization: predictions, manual optimization
//! with two toggled optimizers, freezing (a frozen batch norm in a fused body) and an EMA of
//! the weights (device snapshots) on the GPU, each against the same run on the CPU. A
//! `GPU-CHECK` line each.

use std::sync::{Arc, Mutex};

use fulmen::callbacks::WeightAveraging;
use fulmen::data::{Image, ImageBatch};
use fulmen::layers::{Conv2DNoBias, Fused};
use fulmen::prelude::*;
use fulmen::Manual;

use super::runs::max_abs_diff;
use super::{gpu, iris, quiet};

/// The module `iris` trains on the CPU, and a trainer on `accelerator` in `precision` to
/// evaluate it with.
fn trained_cpu_and_trainer(accelerator: &str, precision: &str) -> (super::Iris, Trainer) {
    let (_, model) = iris("cpu", "32-true", None);
    let trainer = quiet::trainer()
        .accelerator(accelerator)
        .precision(precision.parse().expect("a precision"))
        .build()
        .expect("valid settings");
    (model, trainer)
}

/// The flowers' class probabilities from the module `iris` trains on the CPU, predicted on
/// `accelerator` in `precision`.
fn predictions(accelerator: &str, precision: &str) -> Vec<f32> {
    let (mut model, mut trainer) = trained_cpu_and_trainer(accelerator, precision);
    let rows: Vec<[f32; 4]> = fulmen::data::iris::bundled()
        .into_iter()
        .map(|(x, _)| x)
        .collect();
    let loader = DataLoader::new(InMemoryDataset::new(rows), 32);
    let predicted = trainer
        .predict_loader(&mut model, loader)
        .expect("predicts");
    predicted.into_iter().flatten().flatten().collect()
}

#[test]
fn predictions_on_the_gpu_match_the_cpu_in_every_precision() {
    let on_cpu = predictions("cpu", "32-true");
    assert_eq!(on_cpu.len(), 150 * 3);
    let mut line = String::from("GPU-CHECK predict");
    for (precision, tolerance) in [("32-true", 1e-5), ("16-mixed", 1e-5), ("16-true", 1e-2)] {
        let on_gpu = predictions(gpu(), precision);
        let err = max_abs_diff(&on_cpu, &on_gpu);
        line += &format!(" {precision}={err:.2e}");
        assert!(err < tolerance, "{precision}: the GPU's differ by {err}");
    }
    println!("{line}");
}

type Sample = ([f32; 2], [f32; 1]);

/// Two optimizers, one per layer, each stepped on its own toggled backward.
#[lightning_module]
struct Two {
    a: Linear<2, 8>,
    b: Linear<8, 1>,
}

#[lightning_module(manual_optimization)]
impl Two {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D, Manual>,
    ) -> fulmen::Result<()> {
        let [opt_a, opt_b] = ctx.optimizers()?;
        for opt in [opt_a, opt_b] {
            ctx.toggle_optimizer(opt);
            let loss = mse_loss(
                self.b.forward(self.a.forward(ctx.trace(x.clone())).tanh()),
                y.clone(),
            );
            ctx.log("loss", &loss);
            ctx.manual_backward(loss, self)?;
            ctx.clip_gradients(opt, self, 1.0, fulmen::optim::ClipAlgorithm::Norm)?;
            ctx.step(opt, self)?;
            ctx.zero_grad(opt, self)?;
            ctx.untoggle_optimizer(opt);
        }
        Ok(())
    }
    fn configure_optimizers(&self) -> [Optim; 2] {
        [
            Optim::adam(0.01).params(["a"]),
            Optim::sgd(0.05).momentum(0.9).params(["b"]),
        ]
    }
}

fn manual_run(accelerator: &str, precision: &str) -> Vec<f32> {
    seed_everything(8);
    let mut model = Two::new();
    let samples: Vec<Sample> = (0..64)
        .map(|i| {
            let x = [(i as f32 * 0.37).sin(), (i as f32 * 0.11).cos()];
            (x, [0.5 * x[0] - 2.0 * x[1] + 0.25])
        })
        .collect();
    let loader = DataLoader::new(InMemoryDataset::new(samples), 16).shuffle(true);
    let mut trainer = quiet::trainer()
        .max_epochs(4)
        .accelerator(accelerator)
        .precision(precision.parse().expect("a precision"))
        .build()
        .expect("valid settings");
    trainer.fit_loaders(&mut model, loader, None).expect("fit");
    assert_eq!(trainer.global_step(), 32, "two steps a batch");
    [
        model.a.weight.as_vec(),
        model.a.bias.as_vec(),
        model.b.weight.as_vec(),
        model.b.bias.as_vec(),
    ]
    .concat()
}

#[test]
fn manual_optimization_on_the_gpu_follows_the_cpu() {
    let mut line = String::from("GPU-CHECK manual_two_optimizers");
    for (precision, tolerance) in [("32-true", 1e-4), ("16-mixed", 2e-2)] {
        let cpu = manual_run("cpu", precision);
        let gpu = manual_run(gpu(), precision);
        let err = max_abs_diff(&cpu, &gpu);
        line += &format!(" {precision}={err:.2e}");
        assert!(
            err < tolerance,
            "{precision}: the GPU's weights differ by {err}"
        );
    }
    println!("{line}");
}

/// A fused body (conv, batch norm, ReLU) and a head.
#[lightning_module]
struct Frozen {
    body: Fused<(Conv2DNoBias<1, 4, 3, 1, 1>, BatchNorm2D<4>, ReLU)>,
    head: (AvgPoolGlobal, Linear<4, 2>),
}

#[lightning_module]
impl Frozen {
    fn training_step(
        &mut self,
        (x, y): ImageBatch<1, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let features = self.body.forward_mut(ctx.trace(x));
        cross_entropy_with_logits_loss(self.head.forward(features), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1).momentum(0.9)
    }
}

/// Freezes the body's batch norm for the first two epochs.
struct FreezeNorm;
impl Callback for FreezeNorm {
    fn on_train_epoch_start(&mut self, trainer: &mut TrainerView) {
        match trainer.current_epoch() < 2 {
            true => trainer.freeze("body.1"),
            false => trainer.unfreeze("body.1"),
        }
    }
}

/// The batch norm's running mean after the frozen epochs.
struct NormAfterFreezing(Arc<Mutex<Vec<f32>>>);
impl Callback for NormAfterFreezing {
    fn with_weights(
        &mut self,
        trainer: &mut TrainerView,
        at: fulmen::weights::At,
        weights: &mut dyn fulmen::weights::Weights,
    ) {
        if at == fulmen::weights::At::TrainBatchEnd && trainer.current_epoch() == 1 {
            match weights.values("body.1.running_mean") {
                Ok(v) => *self.0.lock().expect("not poisoned") = v,
                Err(e) => trainer.fail(e),
            }
        }
    }
}

fn frozen_run(accelerator: &str) -> (Vec<f32>, Vec<f32>, Vec<f32>) {
    seed_everything(6);
    let mut model = Frozen::new();
    let initial_mean = model.body.0 .1.running_mean.as_vec();
    let samples: Vec<(Image<1>, Class<2>)> = (0..32)
        .map(|i| {
            let pixels: Vec<f32> = (0..16)
                .map(|p| ((i * 7 + p * 3) % 11) as f32 / 5.0)
                .collect();
            (
                Image::new(pixels, 4, 4).expect("16 pixels"),
                Class::new(i % 2).expect("a class"),
            )
        })
        .collect();
    let loader = DataLoader::new(InMemoryDataset::new(samples), 8);
    let mean = Arc::new(Mutex::new(Vec::new()));
    let mut trainer = quiet::trainer()
        .max_epochs(4)
        .accelerator(accelerator)
        .callback(FreezeNorm)
        .callback(NormAfterFreezing(mean.clone()))
        .callback(WeightAveraging::ema(0.9))
        .build()
        .expect("valid settings");
    trainer.fit_loaders(&mut model, loader, None).expect("fit");
    let frozen_mean = mean.lock().expect("not poisoned").clone();
    assert_eq!(
        frozen_mean, initial_mean,
        "the frozen norm kept its statistics"
    );
    // After the fit the module holds the EMA of the weights.
    let weights = [
        model.body.0 .0.weight.as_vec(),
        model.body.0 .1.weight.as_vec(),
        model.head.1.weight.as_vec(),
    ]
    .concat();
    (weights, model.body.0 .1.running_mean.as_vec(), frozen_mean)
}

#[test]
fn freezing_and_weight_averaging_on_the_gpu_follow_the_cpu() {
    let (cpu, cpu_mean, _) = frozen_run("cpu");
    let (gpu, gpu_mean, _) = frozen_run(gpu());
    let err = max_abs_diff(&cpu, &gpu).max(max_abs_diff(&cpu_mean, &gpu_mean));
    println!("GPU-CHECK freeze_ema max_err={err:.2e}");
    assert!(err < 1e-4, "the GPU's averaged weights differ by {err}");
}

/// The Iris classifier's validation metric objects (`val_acc`, macro `val_f1`: their states
/// read from device logits, synced, computed at the epoch's end) on `accelerator` in
/// `precision`, from the module trained on the CPU.
fn validated(accelerator: &str, precision: &str) -> (f64, f64) {
    let (mut model, mut trainer) = trained_cpu_and_trainer(accelerator, precision);
    let loader = DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 32);
    let m = trainer
        .validate_loader(&mut model, loader)
        .expect("validates");
    (m["val_acc"], m["val_f1"])
}

#[test]
fn validation_metrics_on_the_gpu_match_the_cpu() {
    let on_cpu = validated("cpu", "32-true");
    let mut line = String::from("GPU-CHECK metrics");
    for precision in ["32-true", "16-mixed"] {
        let on_gpu = validated(gpu(), precision);
        let err = (on_gpu.0 - on_cpu.0).abs().max((on_gpu.1 - on_cpu.1).abs());
        line += &format!(" {precision}_err={err:.2e}");
        // At most one flower of 150 on the other side of a near tie.
        assert!(
            err <= 1.0 / 150.0 + 1e-12,
            "{precision}: {on_gpu:?} vs {on_cpu:?}"
        );
    }
    println!("{line}");
}

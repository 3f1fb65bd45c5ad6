//! The device path on the CPU. What CUDA runs (dfdx's ops in place of fulmen's host kernels:
//! the composed layers and their segments, the optimizer steps, the gradient reductions,
//! 16-mixed's unscaling and buffers) runs here under `fulmen::kernels::cpu_runs::<Composed>()`,
//! beside the host kernels, from the same seed. The GPU suite (tests/gpu.rs) checks the GPU
//! against the CPU when a GPU is lent; this checks the same code in every CI run.

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "support/quiet.rs"]
mod quiet;
#[path = "support/runs.rs"]
mod runs;

use std::sync::{Arc, Mutex};

use common::IrisClassifier as Iris;
use fulmen::data::{Class, Image, ImageBatch};
use fulmen::kernels::{cpu_runs, Composed, Host, RunsOnCpu};
use fulmen::layers::{AdaptiveAvgPool2D, Conv2D, Conv2DNoBias, Flatten, MaxPool2D};
use fulmen::models::resnet::{BasicBlock, BasicBlockDown};
use fulmen::prelude::*;
use runs::{iris_weights, max_abs_diff, EpochLosses};

/// The runs draw from the process's generator (the models' initial weights, the shuffling),
/// which each seeds: one at a time.
fn one_at_a_time() -> std::sync::MutexGuard<'static, ()> {
    static RUNS: Mutex<()> = Mutex::new(());
    RUNS.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
}

/// `f` with the CPU running the kernels `K`.
fn on<K: RunsOnCpu, R>(f: impl FnOnce() -> R) -> R {
    let _kernels = cpu_runs::<K>();
    f()
}

/// Fits `model` on `loader` from seed 5 with `settings`: the epoch losses.
fn fit<M, S>(
    model: &mut M,
    (train, val): (DataLoader<S>, Option<DataLoader<S>>),
    settings: impl FnOnce(fulmen::TrainerBuilder) -> fulmen::TrainerBuilder,
) -> Vec<f64>
where
    M: fulmen::module::Precisions,
    S: Send + 'static + Collate<M::Batch, Cpu> + Collate<M::EvalBatch, Cpu>,
{
    let losses = Arc::new(Mutex::new(Vec::new()));
    let builder = quiet::trainer().callback(EpochLosses(losses.clone()));
    let mut trainer = settings(builder).build().expect("valid settings");
    trainer.fit_loaders(model, train, val).expect("fit");
    let losses = losses.lock().expect("not poisoned").clone();
    losses
}

/// Five epochs of Iris from seed 5: the epoch losses and the weights.
fn iris(
    settings: impl FnOnce(fulmen::TrainerBuilder) -> fulmen::TrainerBuilder,
) -> (Vec<f64>, Vec<f32>) {
    seed_everything(5);
    let mut model = Iris::new(0.01);
    let loader = DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 16);
    let losses = fit(&mut model, (loader.shuffle(true), None), |b| {
        settings(b.max_epochs(5))
    });
    (losses, iris_weights(&model))
}

#[test]
fn iris_with_clipping_and_accumulation_runs_as_on_the_host() {
    let _one = one_at_a_time();
    for (what, settings) in [
        (
            "plain",
            (|b| b) as fn(fulmen::TrainerBuilder) -> fulmen::TrainerBuilder,
        ),
        ("clipped by norm, accumulated", |b| {
            b.gradient_clip_val(0.05).accumulate_grad_batches(3)
        }),
        ("16-mixed", |b| {
            b.precision("16-mixed".parse().expect("a precision"))
        }),
    ] {
        let (host_losses, host) = on::<Host, _>(|| iris(settings));
        let (device_losses, device) = on::<Composed, _>(|| iris(settings));
        let err = max_abs_diff(&host, &device);
        assert!(err < 1e-5, "{what}: weights differ by {err}");
        for (h, d) in host_losses.iter().zip(&device_losses) {
            assert!(
                (h - d).abs() < 1e-5,
                "{what}: losses {host_losses:?} vs {device_losses:?}"
            );
        }
    }
}

/// Convolutions (3×3, strided, pointwise with a bias), batch norm, max and adaptive pooling,
/// and residual blocks with and without a projection.
#[lightning_module]
struct Convs {
    stem: (Conv2DNoBias<3, 8, 3, 1, 1>, BatchNorm2D<8>, ReLU),
    pool: MaxPool2D<2, 2>,
    block: BasicBlock<8>,
    down: BasicBlockDown<8, 16, 2>,
    mix: Conv2D<16, 16, 1, 1, 0>,
    head: (AdaptiveAvgPool2D<2>, Flatten<64>, Linear<64, 5>),
}

#[lightning_module]
impl Convs {
    fn training_step(
        &mut self,
        (x, y): ImageBatch<3, 5, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let h = self.pool.forward_mut(self.stem.forward_mut(ctx.trace(x)));
        let h = self
            .mix
            .forward_mut(self.down.forward_mut(self.block.forward_mut(h)));
        let loss = cross_entropy_with_logits_loss(self.head.forward_mut(h), y.one_hot());
        ctx.log("train_loss", &loss);
        loss
    }
    /// Evaluation: batch norm by its running statistics, every layer without a tape.
    fn validation_step(&mut self, (x, y): ImageBatch<3, 5, E, D>, ctx: &mut StepContext<E, D>) {
        let h = self.pool.forward(self.stem.forward(x));
        let h = self.mix.forward(self.down.forward(self.block.forward(h)));
        let loss = cross_entropy_with_logits_loss(self.head.forward(h), y.one_hot());
        ctx.log("val_loss", &loss);
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.05).momentum(0.9)
    }
}

/// Two epochs of 4 batches of 6 images (3×17×15) from seed 5 in `precision`, validated on the
/// same images: the epoch losses (training and validation), the parameters and the batch
/// norms' running statistics.
fn convs(precision: &str) -> (Vec<f64>, Vec<f64>) {
    seed_everything(5);
    let samples: Vec<(Image<3>, Class<5>)> = (0..24)
        .map(|i| {
            let pixels = (0..3 * 17 * 15)
                .map(|p| ((i * 131 + p * 17) % 29) as f32 / 14.0 - 1.0)
                .collect();
            let image = Image::new(pixels, 17, 15).expect("an image");
            (image, Class::new(i % 5).expect("a class"))
        })
        .collect();
    let mut model = Convs::new();
    let loader = || DataLoader::new(InMemoryDataset::new(samples.clone()), 6);
    let precision = precision.parse().expect("a precision");
    let losses = fit(&mut model, (loader(), Some(loader())), |b| {
        // Clipped by norm: its sums run in each precision's way (16-true: half products).
        b.max_epochs(2).precision(precision).gradient_clip_val(0.5)
    });
    let saved = fulmen::checkpoint::Checkpoint::of_module(&model, "convs").expect("a checkpoint");
    let values = saved
        .tensor_names()
        .flat_map(|name| saved.tensor(name).expect("a tensor"))
        .collect();
    (losses, values)
}

#[test]
fn conv_layers_train_as_on_the_host() {
    let _one = one_at_a_time();
    for (precision, tolerance) in [("32-true", 1e-4), ("16-mixed", 3e-2), ("16-true", 2e-2)] {
        let (host_losses, host) = on::<Host, _>(|| convs(precision));
        let (device_losses, device) = on::<Composed, _>(|| convs(precision));
        assert!(
            device_losses.iter().all(|l| l.is_finite()),
            "{device_losses:?}"
        );
        assert_eq!(host_losses.len(), 4, "{precision}: two losses per epoch");
        for (h, d) in host_losses.iter().zip(&device_losses) {
            let close = (h - d).abs() < tolerance * (1.0 + h.abs());
            assert!(
                close,
                "{precision}: losses {host_losses:?} vs {device_losses:?}"
            );
        }
        assert_eq!(host.len(), device.len());
        let err = host
            .iter()
            .zip(&device)
            .map(|(h, d)| (h - d).abs())
            .fold(0.0, f64::max);
        let scale = host.iter().fold(0.0f64, |m, v| m.max(v.abs()));
        assert!(
            err < tolerance * (1.0 + scale),
            "{precision}: parameters or running statistics differ by {err}"
        );
    }
}

#[test]
fn non_finite_gradients_are_named_and_not_applied() {
    let _one = one_at_a_time();
    runs::assert_nan_gradients_named(|settings| {
        on::<Composed, _>(|| runs::stopped_by_nan_gradients(settings))
    });
}

/// A run checkpointed on the device path resumes there, and on the host kernels, as it would
/// have gone on: the optimizer's buffers travel between the two paths.
#[test]
fn a_run_resumes_across_the_two_paths() {
    let _one = one_at_a_time();
    for (saved_on, resumed_on) in [(true, true), (true, false), (false, true)] {
        let kernels = |composed: bool| {
            move || match composed {
                true => cpu_runs::<Composed>(),
                false => cpu_runs::<Host>(),
            }
        };
        let (full, resumed) =
            runs::checkpointed_and_resumed(|b| b, kernels(saved_on), kernels(resumed_on));
        let err = max_abs_diff(&full, &resumed);
        assert!(
            err < 1e-5,
            "saved on device ops: {saved_on}, resumed on them: {resumed_on}: differs by {err}"
        );
    }
}

//! Training runs that tests/gpu.rs (the GPU against the CPU) and tests/device_ops.rs (the
//! device path against the host kernels, on the CPU) both compare: epoch losses, Iris's
//! weights, a run stopped by NaN gradients, a run resumed from its checkpoint. The including
//! file declares `common` (examples/common) and `quiet` (support/quiet.rs).

use std::sync::{Arc, Mutex};

use super::common::IrisClassifier as Iris;
use super::quiet;
use fulmen::prelude::*;
use fulmen::TrainerBuilder;

/// The training loss at the end of every epoch, then the validation loss when there is one.
pub struct EpochLosses(pub Arc<Mutex<Vec<f64>>>);

impl Callback for EpochLosses {
    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        let metrics = trainer.callback_metrics();
        let mut losses = self.0.lock().expect("not poisoned");
        losses.extend(
            ["train_loss", "val_loss"]
                .iter()
                .flat_map(|k| metrics.get(*k)),
        );
    }
}

/// Iris's parameters, in order.
pub fn iris_weights(m: &Iris) -> Vec<f32> {
    [
        m.layer_1.weight.as_vec(),
        m.layer_1.bias.as_vec(),
        m.layer_2.weight.as_vec(),
        m.layer_2.bias.as_vec(),
    ]
    .concat()
}

pub fn max_abs_diff<T: Into<f64> + Copy>(a: &[T], b: &[T]) -> f64 {
    assert_eq!(a.len(), b.len(), "same number of values");
    a.iter()
        .zip(b)
        .map(|(x, y)| ((*x).into() - (*y).into()).abs())
        .map(|d| if d.is_nan() { f64::INFINITY } else { d })
        .fold(0.0, f64::max)
}

/// A module whose loss is finite (zero) and whose gradients are NaN: d√u/du is infinite at 0,
/// times 0.
#[lightning_module]
pub struct NanGrads {
    l1: Linear<4, 3>,
    #[hparam]
    lr: f64,
}

#[lightning_module]
impl NanGrads {
    fn training_step(
        &mut self,
        (x, _): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let zero = E::from_f32(0.0).unwrap_or_default();
        (self.l1.forward(ctx.trace(x)) * zero).sqrt().sum()
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(self.lr)
    }
}

/// The anomaly check and the clipping norm find NaN gradients: `run(settings)` trains
/// [`NanGrads`] for an epoch with `settings` added, returning the error that stopped it
/// ([`stopped_by_nan_gradients`]); the check names the parameter, the norm says it is NaN.
pub fn assert_nan_gradients_named(run: impl Fn(fn(TrainerBuilder) -> TrainerBuilder) -> String) {
    let anomaly = run(|b| b.detect_anomaly(true));
    assert!(
        anomaly.contains("`l1.weight`") && anomaly.contains("NaN"),
        "{anomaly}"
    );
    let norm = run(|b| b.gradient_clip_val(1.0));
    assert!(norm.contains("gradient norm is NaN"), "{norm}");
}

/// One epoch of [`NanGrads`] with `settings`, which must stop the run before any step: the
/// error's text.
pub fn stopped_by_nan_gradients(settings: impl FnOnce(TrainerBuilder) -> TrainerBuilder) -> String {
    let mut model = NanGrads::new(0.1);
    let before = model.l1.weight.as_vec();
    let trainer = settings(quiet::trainer().max_epochs(1));
    let loader = DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 16);
    let err = (trainer.build().expect("valid settings"))
        .fit_loaders(&mut model, loader, None)
        .expect_err("the run stops")
        .to_string();
    assert_eq!(model.l1.weight.as_vec(), before, "no step was taken");
    err
}

/// Iris for 4 epochs from seed 5 with a checkpoint after each, then a run from seed 1000
/// resumed from epoch 1's checkpoint, both with `settings`: the weights at both ends. Each run
/// happens while what `first` or `second` returns lives (a guard, or nothing).
pub fn checkpointed_and_resumed<G1, G2>(
    settings: fn(TrainerBuilder) -> TrainerBuilder,
    first: impl FnOnce() -> G1,
    second: impl FnOnce() -> G2,
) -> (Vec<f32>, Vec<f32>) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let epochs = dir.path().join("epochs");
    let loader = || {
        let data = fulmen::data::iris::bundled();
        DataLoader::new(InMemoryDataset::new(data), 16).shuffle(true)
    };
    let full = {
        let _scope = first();
        seed_everything(5);
        let mut full = Iris::new(0.01);
        let checkpoints = fulmen::callbacks::ModelCheckpoint::new()
            .dirpath(&epochs)
            .save_top_k(-1);
        let builder = quiet::trainer()
            .max_epochs(4)
            .enable_checkpointing(true)
            .callback(checkpoints);
        let mut trainer = settings(builder).build().expect("valid settings");
        trainer.fit_loaders(&mut full, loader(), None).expect("fit");
        iris_weights(&full)
    };
    let ckpt = std::fs::read_dir(&epochs)
        .expect("the checkpoints")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.to_string_lossy().contains("epoch=1-"))
        .expect("the checkpoint of epoch 1");
    let _scope = second();
    seed_everything(1000);
    let mut resumed = Iris::new(0.01);
    let mut trainer = settings(quiet::trainer().max_epochs(4))
        .build()
        .expect("valid settings");
    let mut loaders = fulmen::datamodule::Loaders {
        train: Some(loader()),
        ..Default::default()
    };
    trainer
        .fit_from(&mut resumed, &mut loaders, &ckpt)
        .expect("resumes");
    (full, iris_weights(&resumed))
}

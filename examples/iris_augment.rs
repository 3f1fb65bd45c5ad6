//! A module that serves its own data and prepares its batches on the host, as a Lightning
//! module may: the Iris classifier loads and splits `iris.npz` in its own `setup`, serves its
//! own `train_dataloader` and `val_dataloader` (Lightning's `trainer.fit(model)`, here
//! `trainer.fit(&mut model, &mut FromModule::of(&model))`), and in `on_before_batch_transfer`
//! standardizes every batch by the training split's statistics and, while it trains, adds
//! Gaussian noise drawn from the run's seeded stream (`--noise 0` turns it off).
//!
//! `cargo run --release --example iris_augment -- --noise 0.1` (and the trainer's flags).

mod common;

use std::path::PathBuf;

use clap::Parser;
use common::exit_on_error;
use fulmen::data::{iris, stratified_split};
use fulmen::metrics::Accuracy;
use fulmen::module_data::FromModule;
use fulmen::prelude::*;

#[lightning_module]
pub struct AugmentedIris {
    layer_1: Linear<4, 16>,
    layer_2: Linear<16, 3>,
    #[hparam]
    lr: f64,
    /// The noise's standard deviation, in units of each feature's standard deviation.
    #[hparam]
    noise: f64,
    #[hparam]
    data_dir: PathBuf,
    #[metric(Accuracy::multiclass(3))]
    val_acc: Accuracy,
    /// The 80/20 split, made in `setup`.
    #[skip]
    train: Vec<iris::Sample>,
    #[skip]
    val: Vec<iris::Sample>,
    /// Each feature's mean and standard deviation over the training split.
    #[skip]
    moments: [(f32, f32); 4],
    /// Whether batches are for training (PyTorch's `module.training`), set by the hooks that
    /// Lightning calls around its loops.
    #[skip]
    training: bool,
}

#[lightning_module]
impl AugmentedIris {
    fn forward<T: Tape<E, D>>(
        &self,
        x: Tensor<(usize, Const<4>), E, D, T>,
    ) -> Tensor<(usize, Const<3>), E, D, T> {
        self.layer_2.forward(self.layer_1.forward(x).relu())
    }

    /// Loads and splits the data once per stage; a missing or malformed file ends the stage
    /// with an error that names it.
    fn setup(&mut self, trainer: &mut TrainerView, _stage: Stage) {
        if let Err(e) = self.load() {
            trainer.fail(e);
        }
    }

    fn train_dataloader(&mut self) -> DataLoader<iris::Sample> {
        DataLoader::new(InMemoryDataset::new(self.train.clone()), 16).shuffle(true)
    }

    fn val_dataloader(&mut self) -> DataLoader<iris::Sample> {
        DataLoader::new(InMemoryDataset::new(self.val.clone()), 16)
    }

    /// On the host, before the batch moves to the run's device (and dtype).
    fn on_before_batch_transfer(
        &mut self,
        (x, y): ClassBatch<4, 3, f32, Cpu>,
        _dataloader_idx: usize,
    ) -> ClassBatch<4, 3, f32, Cpu> {
        let shape = *x.shape();
        let mut values = x.as_vec();
        for row in values.chunks_mut(4) {
            for (v, (mean, std)) in row.iter_mut().zip(self.moments) {
                *v = (*v - mean) / std;
            }
        }
        let device = x.device().clone();
        let x = device.tensor_from_vec(values, shape);
        if !self.training || self.noise == 0.0 {
            return (x, y);
        }
        // The run's CPU stream: reseeded by `seed_everything`, resumed with the run.
        let noise = device.sample_normal_like(&shape) * self.noise as f32;
        (x + noise, y)
    }

    fn on_train_epoch_start(&mut self, _trainer: &mut TrainerView) {
        self.training = true;
    }

    fn on_validation_model_eval(&mut self, _trainer: &mut TrainerView) {
        self.training = false;
    }

    fn on_validation_model_train(&mut self, _trainer: &mut TrainerView) {
        self.training = true;
    }

    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let loss = cross_entropy_with_logits_loss(self.forward(ctx.trace(x)), y.one_hot());
        ctx.log("train_loss", &loss);
        loss
    }

    fn validation_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        self.val_acc.update(self.forward(x), &y)?;
        ctx.log("val_acc", &self.val_acc).prog_bar(true);
        Ok(())
    }

    fn configure_optimizers(&self) -> Optim {
        Optim::adam(self.lr)
    }
}

impl<E: FloatDtype, D: TrainDevice<E>> AugmentedIris<E, D> {
    fn load(&mut self) -> fulmen::Result<()> {
        let samples = iris::load(self.data_dir.join("iris.npz"))?;
        let labels: Vec<usize> = samples.iter().map(|(_, y)| y.index()).collect();
        (self.train, self.val) = stratified_split(samples, &labels, 0.2, 42)?;
        for (j, moments) in self.moments.iter_mut().enumerate() {
            let column: Vec<f32> = self.train.iter().map(|(x, _)| x[j]).collect();
            let mean = column.iter().sum::<f32>() / column.len() as f32;
            let var = column.iter().map(|v| (v - mean).powi(2)).sum::<f32>() / column.len() as f32;
            *moments = (mean, var.sqrt().max(f32::EPSILON));
        }
        Ok(())
    }
}

#[derive(Parser)]
struct Cli {
    /// The noise added to the training batches, in standard deviations of each feature.
    #[arg(long, default_value_t = 0.1)]
    noise: f64,
    #[command(flatten)]
    iris: common::Args,
}

fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    exit_on_error(|| {
        let mut trainer = args.iris.trainer(|b| b.max_epochs(30))?;
        let mut model = AugmentedIris::new(0.01, args.noise, args.iris.data_dir.clone());
        let mut own = FromModule::of(&model);
        trainer.fit(&mut model, &mut own)?;
        let results = trainer.validate(&mut model, &mut own)?;
        if let Some(acc) = results.get("val_acc") {
            println!("validation accuracy: {acc:.3}");
        }
        Ok(())
    })
}

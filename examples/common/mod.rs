//! What the tutorial's Iris programs share: the model, the `TrainingLogger` callback, the data
//! module, and the command line.
#![allow(dead_code)] // each example uses part of it

use std::path::PathBuf;

use fulmen::data::{iris, stratified_split};
use fulmen::metrics::{Accuracy, Average, F1Score};
use fulmen::prelude::*;
use fulmen::TrainerBuilder;

/// The tutorial's MLP: 4 features → 16 hidden (ReLU) → 3 classes.
#[lightning_module]
pub struct IrisClassifier {
    // Input: 4 features (sepal/petal measurements); hidden: 16 neurons;
    // output: 3 classes (setosa, versicolour, virginica).
    pub layer_1: Linear<4, 16>,
    pub layer_2: Linear<16, 3>,
    #[hparam]
    pub lr: f64,
    // Validation metrics over the whole epoch (and every rank): computed from the counts of
    // all its batches, not averaged over them.
    #[metric(Accuracy::multiclass(3))]
    pub val_acc: Accuracy,
    #[metric(F1Score::multiclass(3).average(Average::Macro))]
    pub val_f1: F1Score,
}

#[lightning_module]
impl IrisClassifier {
    fn forward<T: Tape<E, D>>(
        &self,
        x: Tensor<(usize, Const<4>), E, D, T>,
    ) -> Tensor<(usize, Const<3>), E, D, T> {
        self.layer_2.forward(self.layer_1.forward(x).relu())
    }

    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let logits = self.forward(ctx.trace(x));
        // CrossEntropyLoss on logits, against the one-hot labels.
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        // Log the loss, so that the callback can see it.
        ctx.log("train_loss", &loss);
        loss
    }

    fn validation_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let logits = self.forward(x);
        self.val_acc.update(&logits, &y)?;
        self.val_f1.update(&logits, &y)?;
        ctx.log("val_acc", &self.val_acc).prog_bar(true);
        ctx.log("val_f1", &self.val_f1);
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        ctx.log("val_loss", &loss);
        Ok(())
    }

    /// The class probabilities of each flower, from its measurements alone (labeled samples'
    /// labels are dropped).
    fn predict_step(
        &mut self,
        x: Tensor<(usize, Const<4>), E, D>,
        _ctx: &mut StepContext<E, D>,
    ) -> Vec<[f32; 3]> {
        let p = self.forward(x).softmax::<Axis<1>>().as_vec();
        let f32s = |r: &[E]| [0, 1, 2].map(|i| r[i].to_f32().unwrap_or(f32::NAN));
        p.chunks(3).map(f32s).collect()
    }

    fn configure_optimizers(&self) -> Optim {
        Optim::adam(self.lr)
    }
}

/// The tutorial's "spy" callback: prints the training loss at the end of every epoch.
pub struct TrainingLogger;

impl Callback for TrainingLogger {
    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        // The logged metrics are reachable through trainer.callback_metrics().
        if let Some(loss) = trainer.callback_metrics().get("train_loss") {
            println!(
                "Spy Report: Epoch {} ended. Loss: {loss:.4}",
                trainer.current_epoch()
            );
        }
    }
}

/// The tutorial's `IrisDataModule`: checks for the file, splits it stratified, serves loaders.
#[data_module]
pub struct IrisDataModule {
    data_dir: PathBuf,
    batch_size: usize,
    #[skip] // save_hyperparameters(ignore=["num_workers"])
    num_workers: usize,
    val_size: f64,
    random_state: u64,
    shuffle: bool,
    #[skip]
    train_ds: Option<InMemoryDataset<iris::Sample>>,
    #[skip]
    val_ds: Option<InMemoryDataset<iris::Sample>>,
}

/// The tutorial's defaults (`IrisDataModule()` in Python).
impl Default for IrisDataModule {
    fn default() -> Self {
        // `new` is generated from the fields that are hyperparameters, in order.
        Self::new(PathBuf::from("./data"), 16, 0.2, 42, true)
    }
}

#[data_module]
impl IrisDataModule {
    fn data_file(&self) -> PathBuf {
        self.data_dir.join("iris.npz")
    }

    fn prepare_data(&mut self) -> fulmen::Result<()> {
        let file = self.data_file();
        if file.exists() {
            return Ok(());
        }
        Err(iris::missing(file))
    }

    fn setup(&mut self, _stage: Stage) -> fulmen::Result<()> {
        let samples = iris::load(self.data_file())?;
        // Train/val split, stratified to keep the class balance.
        let labels: Vec<usize> = samples.iter().map(|(_, y)| y.index()).collect();
        let (train, val) = stratified_split(samples, &labels, self.val_size, self.random_state)?;
        self.train_ds = Some(InMemoryDataset::new(train));
        self.val_ds = Some(InMemoryDataset::new(val));
        Ok(())
    }

    fn train_dataloader(&self) -> Option<DataLoader<iris::Sample>> {
        let ds = self.train_ds.clone()?;
        Some(
            DataLoader::new(ds, self.batch_size)
                .shuffle(self.shuffle)
                .num_workers(self.num_workers),
        )
    }

    fn val_dataloader(&self) -> Option<DataLoader<iris::Sample>> {
        let ds = self.val_ds.clone()?;
        Some(DataLoader::new(ds, self.batch_size).num_workers(self.num_workers))
    }

    /// The validation flowers again, for `predict` (their labels are dropped).
    fn predict_dataloader(&self) -> Option<DataLoader<iris::Sample>> {
        self.val_dataloader()
    }
}

/// The flags every Iris example takes: the trainer's and a seed.
#[derive(clap::Parser)]
pub struct Args {
    /// Where `iris.npz` lives (written by `cargo run --example make_iris`).
    #[arg(long, default_value = "./data")]
    pub data_dir: PathBuf,
    /// Seed every random stream (weights, shuffling) for a reproducible run.
    #[arg(long)]
    pub seed: Option<u64>,
    /// Resume the run saved in this checkpoint: a path, `last` (the newest of an earlier run)
    /// or `best`.
    #[arg(long, value_name = "PATH|last|best")]
    pub ckpt_path: Option<String>,
    #[command(flatten)]
    pub trainer: fulmen::trainer::TrainerArgs,
}

impl Args {
    /// Seeds the run when `--seed` is given and builds the tutorial's trainer: 10 epochs on
    /// the CPU with `TrainingLogger`, plus what `extra` adds; flags given on the command line
    /// override all of it.
    pub fn trainer(
        &self,
        extra: impl FnOnce(TrainerBuilder) -> TrainerBuilder,
    ) -> fulmen::Result<Trainer> {
        if let Some(seed) = self.seed {
            seed_everything(seed);
        }
        let builder = Trainer::builder()
            .max_epochs(10)
            .callback(TrainingLogger)
            .accelerator("cpu");
        extra(builder).args(&self.trainer).build()
    }
}

/// Runs `body`, printing its error and exiting non-zero on failure (130 after Ctrl-C).
pub fn exit_on_error(body: impl FnOnce() -> fulmen::Result<()>) -> std::process::ExitCode {
    match body() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

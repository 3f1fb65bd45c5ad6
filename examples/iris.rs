//! The tutorial's first program: an MLP on Iris, a `TrainingLogger` callback, 10 epochs.
//!
//! Run `cargo run --release --example make_iris` once to write `data/iris.npz`, then
//! `cargo run --release --example iris` (flags: `--max-epochs N`, `--accelerator cpu`, ...).

use clap::Parser;
use fulmen::prelude::*;

#[lightning_module]
pub struct IrisClassifier {
    // Input: 4 features (sepal/petal measurements); hidden: 16 neurons;
    // output: 3 classes (setosa, versicolour, virginica).
    layer_1: Linear<4, 16>,
    layer_2: Linear<16, 3>,
    #[hparam]
    lr: f64,
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
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        // Log the loss, so that the callback can see it.
        ctx.log("train_loss", &loss);
        loss
    }

    fn configure_optimizers(&self) -> Optim {
        Optim::adam(self.lr)
    }
}

/// Prints the training loss at the end of every epoch.
struct TrainingLogger;

impl Callback for TrainingLogger {
    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        if let Some(loss) = trainer.callback_metrics().get("train_loss") {
            println!(
                "Spy Report: Epoch {} ended. Loss: {loss:.4}",
                trainer.current_epoch()
            );
        }
    }
}

#[derive(Parser)]
struct Args {
    /// The tutorial's data file (written by `cargo run --example make_iris`).
    #[arg(long, default_value = "data/iris.npz")]
    data: std::path::PathBuf,
    #[arg(long)]
    seed: Option<u64>,
    #[command(flatten)]
    trainer: fulmen::trainer::TrainerArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    match run(&args) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run(args: &Args) -> fulmen::Result<()> {
    if let Some(seed) = args.seed {
        seed_everything(seed);
    }
    let data = fulmen::data::iris::load(&args.data)?;
    let train_loader = DataLoader::new(InMemoryDataset::new(data), 16).shuffle(true);

    let mut model = IrisClassifier::new(0.01);
    let mut trainer = Trainer::builder()
        .max_epochs(10)
        .callback(TrainingLogger)
        .accelerator("cpu")
        .args(&args.trainer)
        .build()?;
    trainer.fit_loaders(&mut model, train_loader, None)
}

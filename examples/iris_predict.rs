//! Prediction after training (Lightning's `trainer.predict` with a `BasePredictionWriter`):
//! the tutorial's Iris classifier is trained with `IrisDataModule`, then predicts the class
//! probabilities of the validation flowers from their measurements alone, written in dataset
//! order to `predictions.csv` and `predictions.npy` (`np.load`) by `PredictionFiles`, on any
//! accelerator and precision (`--accelerator`, `--precision`), gathered from every rank under
//! DDP.
//!
//! `cargo run --release --example iris_predict -- --out .` (and the trainer's flags).

mod common;

use std::path::PathBuf;

use clap::Parser;
use common::{exit_on_error, IrisClassifier, IrisDataModule};
use fulmen::prediction_writer::PredictionFiles;

#[derive(Parser)]
struct Cli {
    /// Where `predictions.csv` and `predictions.npy` go.
    #[arg(long, default_value = ".")]
    out: PathBuf,
    #[command(flatten)]
    iris: common::Args,
}

fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    exit_on_error(|| {
        let mut trainer = args.iris.trainer(|b| b)?;
        let mut dm = IrisDataModule::new(args.iris.data_dir.clone(), 16, 0.2, 42, true);
        let mut model = IrisClassifier::new(0.01);
        trainer.fit(&mut model, &mut dm)?;
        let probabilities = trainer.predict(&mut model, &mut dm)?;
        for (i, p) in probabilities.iter().flatten().take(3).enumerate() {
            println!(
                "flower {i}: setosa {:.3}, versicolor {:.3}, virginica {:.3}",
                p[0], p[1], p[2]
            );
        }
        for file in ["predictions.csv", "predictions.npy"] {
            let path = args.out.join(file);
            let mut writer = match file.ends_with(".csv") {
                true => PredictionFiles::csv(&path),
                false => PredictionFiles::npy(&path),
            };
            trainer.predict_with(&mut model, &mut dm, &mut writer)?;
            if trainer.global_rank() == 0 {
                println!("wrote {}", path.display());
            }
        }
        Ok(())
    })
}

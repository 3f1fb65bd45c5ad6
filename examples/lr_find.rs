//! The learning-rate range test before training (Lightning's `Tuner(trainer).lr_find(model)`):
//! the tutorial's Iris classifier steps at rates growing from 1e-6 to 1, the loss of each
//! step is recorded, the curve is written to `lr_find.png` with the suggested rate (where the
//! loss falls fastest) marked, and the model then trains at that rate from the weights it had.
//!
//! With `--as-callback` the fit runs the test itself (Lightning's `LearningRateFinder`
//! callback) and trains at the suggestion.
//!
//! `cargo run --release --example lr_find -- --out lr_find.png` (and the trainer's flags).

mod common;

use std::path::PathBuf;

use clap::Parser;
use common::{exit_on_error, IrisClassifier, IrisDataModule};
use fulmen::callbacks::LearningRateFinder;
use fulmen::tuner::{LrFind, Tuner};

#[derive(Parser)]
struct Cli {
    /// Where the plot goes.
    #[arg(long, default_value = "lr_find.png")]
    out: PathBuf,
    /// Run the test as the fit's `LearningRateFinder` callback instead of with the tuner.
    #[arg(long)]
    as_callback: bool,
    #[command(flatten)]
    iris: common::Args,
}

fn main() -> std::process::ExitCode {
    let args = Cli::parse();
    exit_on_error(|| {
        let mut dm = IrisDataModule::new(args.iris.data_dir.clone(), 16, 0.2, 42, true);
        let settings = LrFind::default().min_lr(1e-6).max_lr(1.0);
        // The trainer seeds the run (`--seed`), then the model is made.
        let trainer = if args.as_callback {
            let finder = LearningRateFinder::new(settings).plot_to(&args.out);
            let found = finder.found();
            let mut trainer = args.iris.trainer(|b| b.callback(finder))?;
            let mut model = IrisClassifier::new(0.01);
            trainer.fit(&mut model, &mut dm)?;
            // The fit trained at the suggestion (the module's `lr` is the one it was built with).
            if let Some(found) = found.borrow().as_ref() {
                println!(
                    "range test: {} steps, plot in {}",
                    found.losses.len(),
                    args.out.display()
                );
                if let Some(lr) = found.suggestion() {
                    println!("suggested learning rate: {lr:.3e}");
                }
            }
            trainer
        } else {
            let mut trainer = args.iris.trainer(|b| b)?;
            let mut model = IrisClassifier::new(0.01);
            let found = Tuner::new(&mut trainer).lr_find(&mut model, &mut dm, settings)?;
            found.plot(&args.out)?;
            println!(
                "range test: {} steps, plot in {}",
                found.losses.len(),
                args.out.display()
            );
            if let Some(lr) = found.suggestion() {
                println!("suggested learning rate: {lr:.3e}");
                model.lr = lr;
            }
            trainer.fit(&mut model, &mut dm)?;
            trainer
        };
        if let Some(acc) = trainer.callback_metrics().get("val_acc") {
            println!(
                "val_acc after {} epochs at lr {:.3e}: {acc:.4}",
                trainer.current_epoch(),
                trainer.lr()
            );
        }
        Ok(())
    })
}

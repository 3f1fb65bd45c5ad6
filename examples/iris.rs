//! The tutorial's first program: `IrisClassifier` trained for 10 epochs on the whole Iris
//! set from a bare loader, with the `TrainingLogger` callback (both in `common/mod.rs`).
//!
//! `cargo run --release --example make_iris` writes `data/iris.npz` once; then
//! `cargo run --release --example iris` (flags: `--max-epochs N`, `--seed S`, `--accelerator cpu`,
//! `--ckpt-path last`).

mod common;

use clap::Parser;
use common::{exit_on_error, Args, IrisClassifier};
use fulmen::prelude::*;

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    exit_on_error(|| {
        // Initialize the trainer with the callback: a "spy" in the callbacks list.
        let mut trainer = args.trainer(|b| b)?;
        let data = fulmen::data::iris::load(args.data_dir.join("iris.npz"))?;
        let train_loader = DataLoader::new(InMemoryDataset::new(data), 16).shuffle(true);
        let mut model = IrisClassifier::new(0.01);
        let mut loaders = fulmen::datamodule::Loaders {
            train: Some(train_loader),
            ..Default::default()
        };
        trainer.fit_from(&mut model, &mut loaders, args.ckpt_path.as_deref())
    })
}

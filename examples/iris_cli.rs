//! The Iris tutorial through `LightningCli`: the model and data module of `common/mod.rs`,
//! configured by YAML files and flags, with subcommands.
//!
//! ```sh
//! cargo run --release --example iris_cli -- fit --config examples/iris_cli/run.yaml
//! cargo run --release --example iris_cli -- fit --config examples/iris_cli/run.yaml --model.lr 0.05 --print_config
//! cargo run --release --example iris_cli -- validate --config examples/iris_cli/run.yaml --ckpt_path last
//! ```

mod common;

use common::{IrisClassifier, IrisDataModule, TrainingLogger};
use fulmen::cli::LightningCli;

fn main() -> std::process::ExitCode {
    LightningCli::<IrisClassifier, IrisDataModule>::new()
        .about("The Iris tutorial, configured by YAML files and flags")
        .model_defaults(|| IrisClassifier::new(0.01))
        .data_defaults(IrisDataModule::default)
        .trainer_defaults(|t| t.max_epochs(10).callback(TrainingLogger).accelerator("cpu"))
        .run()
}

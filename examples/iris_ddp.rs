//! The tutorial's Iris classifier trained with DDP, one process per rank, on CPUs over MPI:
//!
//! ```sh
//! cargo build --release --features mpi --example iris_ddp
//! mpirun -n 2 target/release/examples/iris_ddp --strategy ddp --devices 2
//! srun -n 2 --mpi=pmix target/release/examples/iris_ddp --strategy ddp --devices 2
//! ```
//!
//! Every rank starts from rank 0's weights and trains on its half of each epoch (batches of
//! `--batch-size` per rank); the gradients are averaged across ranks before each step. Rank 0
//! alone logs and writes checkpoints; `--ckpt-path last` resumes on any number of ranks, and
//! under SLURM a requeued job resumes by itself.

mod common;

use clap::Parser;
use common::{exit_on_error, IrisClassifier};
use fulmen::prelude::*;
use fulmen::trainer::TrainerArgs;

#[derive(Parser)]
struct Args {
    /// Samples per batch on each rank.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Resume from this checkpoint (one written by any number of ranks): a path, `last` or
    /// `best`.
    #[arg(long, value_name = "PATH|last|best")]
    ckpt_path: Option<String>,
    #[command(flatten)]
    trainer: TrainerArgs,
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    exit_on_error(|| {
        seed_everything(args.seed);
        let mut trainer = Trainer::builder()
            .max_epochs(5)
            .accelerator("cpu")
            .args(&args.trainer)
            .build()?;
        let data = fulmen::data::iris::bundled();
        let loader = DataLoader::new(InMemoryDataset::new(data), args.batch_size).shuffle(true);
        let mut loaders = fulmen::datamodule::Loaders {
            train: Some(loader),
            ..Default::default()
        };
        let mut model = IrisClassifier::new(0.01);
        trainer.fit_from(&mut model, &mut loaders, args.ckpt_path.as_deref())?;
        println!(
            "rank {} of {}: trained {} steps, train_loss {:.4}",
            trainer.global_rank(),
            trainer.world_size(),
            trainer.global_step(),
            trainer
                .callback_metrics()
                .get("train_loss")
                .copied()
                .unwrap_or(f64::NAN)
        );
        Ok(())
    })
}

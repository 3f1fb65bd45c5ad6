//! The tutorial's exercise: a ResNet trained on CIFAR-10, with the tutorial's flags.
//!
//! ```sh
//! # data: https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz extracted into ./data
//! cargo run --release --example cifar10 -- --arch resnet50 --epochs 2 --batch-size 128
//! ```
//!
//! Prints the loss, accuracy, validation macro F1 (metric objects: each over the whole epoch
//! and every rank) and wall time of every epoch. `--gpus`/`--devices`, `--nodes` and
//! `--strategy` take the tutorial's values (`--strategy fsdp` is FSDP's FULL_SHARD: each
//! ResNet block gathers its parameters from every rank only while it runs). Built with `--features cuda`, `--gpus 1` (or
//! `--accelerator gpu`) trains on the GPU. `--strategy ddp` with `--features mpi` trains on
//! several CPU processes started by `mpirun` or `srun` (`examples/cifar10/job.slurm`).

use std::time::Instant;

use clap::Parser;
use fulmen::data::cifar10::Cifar10;
use fulmen::data::ImageBatch;
use fulmen::metrics::{Accuracy, Average, F1Score};
use fulmen::models::resnet::{CifarResNet18, CifarResNet34, CifarResNet50, SmallResNet};
use fulmen::optim::CosineAnnealingLR;
use fulmen::prelude::*;
use fulmen::trainer::TrainerArgs;

#[derive(Parser)]
#[command(about = "ResNet on CIFAR-10, the tutorial's exercise")]
struct Args {
    /// Where cifar-10-batches-bin/ is.
    #[arg(long, default_value = "data")]
    data_dir: std::path::PathBuf,
    /// resnet18, resnet34 or resnet50 (CIFAR stem: 3×3 convolution, no max pool), or small
    /// (the 78 k-parameter ResNet of the throughput benchmark).
    #[arg(long, default_value = "resnet50")]
    arch: String,
    /// Maximum number of epochs, default 2 (the tutorial's name for --max-epochs).
    #[arg(long, conflicts_with = "max_epochs", allow_negative_numbers = true)]
    epochs: Option<usize>,
    #[arg(long, default_value_t = 128)]
    batch_size: usize,
    /// Number of GPUs per node: --devices N on the GPU (the tutorial's name).
    #[arg(long, conflicts_with = "devices")]
    gpus: Option<usize>,
    /// Number of nodes (the tutorial's name for --num-nodes).
    #[arg(long, conflicts_with = "num_nodes")]
    nodes: Option<usize>,
    #[arg(long, default_value_t = 0.1)]
    lr: f64,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    #[arg(long, default_value_t = 2)]
    num_workers: usize,
    /// Resume the run saved in this checkpoint: a path, `last` or `best`.
    #[arg(long, value_name = "PATH|last|best")]
    ckpt_path: Option<String>,
    /// Training images held out for validation.
    #[arg(long, default_value_t = 5000)]
    val_size: usize,
    #[command(flatten)]
    trainer: TrainerArgs,
}

macro_rules! cifar_module {
    ($name:ident, $net:ty) => {
        #[lightning_module]
        struct $name {
            net: $net,
            #[hparam]
            lr: f64,
            #[hparam]
            epochs: usize,
            // Epoch metrics over every sample of every rank (not means of batch values).
            #[metric(Accuracy::multiclass(10))]
            train_acc: Accuracy,
            #[metric(Accuracy::multiclass(10))]
            val_acc: Accuracy,
            #[metric(F1Score::multiclass(10).average(Average::Macro))]
            val_f1: F1Score,
            #[metric(Accuracy::multiclass(10))]
            test_acc: Accuracy,
        }

        #[lightning_module]
        impl $name {
            fn training_step(
                &mut self,
                (x, y): ImageBatch<3, 10, E, D>,
                ctx: &mut StepContext<E, D>,
            ) -> fulmen::Result<Loss<E, D>> {
                let logits = self.net.forward_mut(ctx.trace(x));
                self.train_acc.update(&logits, &y)?;
                ctx.log("train_acc", &self.train_acc).on_epoch(true);
                let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
                ctx.log("train_loss", &loss)
                    .on_epoch(true)
                    .prog_bar(true)
                    .sync_dist(true);
                Ok(loss)
            }
            fn validation_step(
                &mut self,
                (x, y): ImageBatch<3, 10, E, D>,
                ctx: &mut StepContext<E, D>,
            ) -> fulmen::Result<()> {
                let logits = self.net.forward(x);
                self.val_acc.update(&logits, &y)?;
                self.val_f1.update(&logits, &y)?;
                ctx.log("val_acc", &self.val_acc).prog_bar(true);
                ctx.log("val_f1", &self.val_f1);
                ctx.log(
                    "val_loss",
                    &cross_entropy_with_logits_loss(logits, y.one_hot()),
                );
                Ok(())
            }
            fn test_step(
                &mut self,
                (x, y): ImageBatch<3, 10, E, D>,
                ctx: &mut StepContext<E, D>,
            ) -> fulmen::Result<()> {
                let logits = self.net.forward(x);
                self.test_acc.update(&logits, &y)?;
                ctx.log("test_acc", &self.test_acc);
                Ok(())
            }
            fn configure_optimizers(&self) -> Optim {
                Optim::sgd(self.lr)
                    .momentum(0.9)
                    .weight_decay(5e-4)
                    .scheduler(CosineAnnealingLR::new(self.epochs.max(1), 0.0))
            }
        }
    };
}

cifar_module!(Cifar18, CifarResNet18<10>);
cifar_module!(Cifar34, CifarResNet34<10>);
cifar_module!(Cifar50, CifarResNet50<10>);
cifar_module!(CifarSmall, SmallResNet<10>);

/// Loss, accuracy and wall time of every epoch (the tutorial's bonus callback, extended).
struct EpochReport(Option<Instant>);

impl Callback for EpochReport {
    fn on_train_epoch_start(&mut self, _t: &mut TrainerView) {
        self.0 = Some(Instant::now());
    }
    fn on_train_epoch_end(&mut self, t: &mut TrainerView) {
        if !t.is_global_zero() {
            return;
        }
        let secs = self.0.map_or(0.0, |s| s.elapsed().as_secs_f64());
        t.log("epoch_time_sec", secs);
        let m = t.callback_metrics();
        let get = |k: &str| m.get(k).copied().unwrap_or(f64::NAN);
        println!(
            "epoch {}: train_loss {:.4}  train_acc {:.4}  val_loss {:.4}  val_acc {:.4}  val_f1 {:.4}  {secs:.2} s",
            t.current_epoch(),
            get("train_loss_epoch"),
            get("train_acc_epoch"),
            get("val_loss"),
            get("val_acc"),
            get("val_f1"),
        );
    }
}

fn run(args: Args) -> fulmen::Result<()> {
    seed_everything(args.seed);
    let mut dm = Cifar10::new(&args.data_dir, args.batch_size)
        .val_size(args.val_size)
        .seed(args.seed)
        .num_workers(args.num_workers);
    // One value per setting, whichever name gave it (clap refuses both names at once); the
    // cosine schedule's T_max is the epochs trained.
    let epochs = args.epochs.or(args.trainer.max_epochs).unwrap_or(2);
    let mut builder = Trainer::builder()
        .max_epochs(epochs)
        .callback(EpochReport(None))
        .num_nodes(args.nodes.unwrap_or(1))
        .args(&args.trainer);
    if let Some(gpus) = args.gpus {
        builder = builder.devices(gpus).accelerator("gpu");
    }
    let mut trainer = builder.build()?;
    macro_rules! train {
        ($module:ident) => {{
            let mut model = $module::new(args.lr, epochs);
            let start = Instant::now();
            trainer.fit_from(&mut model, &mut dm, args.ckpt_path.as_deref())?;
            if trainer.world_size() > 1 && trainer.global_rank() == 0 {
                let (busy, all) = (trainer.collective_time(), start.elapsed());
                println!(
                    "rank 0 of {}: {:.2} s of {:.2} s in collectives ({:.1}%)",
                    trainer.world_size(),
                    busy.as_secs_f64(),
                    all.as_secs_f64(),
                    100.0 * busy.as_secs_f64() / all.as_secs_f64()
                );
            }
            let test = trainer.test(&mut model, &mut dm)?;
            if trainer.global_rank() == 0 {
                println!(
                    "test_acc {:.4}",
                    test.get("test_acc").copied().unwrap_or(f64::NAN)
                );
            }
        }};
    }
    match args.arch.as_str() {
        "resnet18" => train!(Cifar18),
        "resnet34" => train!(Cifar34),
        "resnet50" => train!(Cifar50),
        "small" => train!(CifarSmall),
        other => {
            return Err(fulmen::Error::config(
                "arch",
                format!("`{other}` is not resnet18, resnet34, resnet50 or small"),
            ))
        }
    }
    Ok(())
}

fn main() {
    match run(Args::parse()) {
        Ok(()) => {}
        // SLURM's requeue signal: the run is saved and the job requeued; this start ends.
        Err(e @ fulmen::Error::Requeued { .. }) => println!("{e}"),
        Err(e) => {
            eprintln!("error: {e}");
            std::process::exit(e.exit_code().into());
        }
    }
}

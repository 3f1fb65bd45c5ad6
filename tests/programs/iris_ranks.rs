//! The distributed tests' program (not an example: it injects faults): `examples/iris_ddp.rs`
//! with what tests/ddp.rs, tests/fsdp.rs and tests/gpu.rs drive it by, built as the example
//! target `iris_ranks`:
//!
//! ```sh
//! cargo build --features mpi --example iris_ranks
//! mpirun -n 2 target/debug/examples/iris_ranks --strategy ddp --devices 2
//! ```
//!
//! Every rank starts from rank 0's weights and trains on its half of each epoch (batches of
//! `--batch-size` per rank); the gradients are averaged across ranks before each step. Rank 0
//! alone logs and writes checkpoints. `--out DIR` writes each rank's final weights to
//! `DIR/rank<R>.weights` (f32, little-endian), which tests/ddp.rs compares across ranks and
//! with one process trained on the same global batches. `--hang-at-step N --hang-rank R`
//! makes rank R stop answering at step N (`--die`: killed), the faults tests/ddp.rs checks
//! end the run in bounded time. `--manual` trains the same model under manual optimization.
//! `--validate` prints the validation metrics of the trained model (one of every kind of
//! state), synced over the ranks. `--fail-prepare-data` trains on a data module whose
//! `prepare_data` fails (on local rank 0, the rank that runs it).

#[path = "../../examples/common/mod.rs"]
mod common;

use std::path::PathBuf;

use clap::Parser;
use common::{exit_on_error, IrisClassifier};
use fulmen::callbacks::MetricPlots;
use fulmen::metrics::{
    Accuracy, Auroc, AveragePrecision, ConfusionMatrix, F1Score, MaxMetric, MeanMetric,
    MetricCollection, PearsonCorrCoef, SpearmanCorrCoef, SumMetric,
};
use fulmen::prelude::*;
use fulmen::trainer::TrainerArgs;

#[derive(Parser)]
struct Args {
    /// Samples per batch on each rank.
    #[arg(long, default_value_t = 16)]
    batch_size: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where each rank writes its final weights.
    #[arg(long)]
    out: Option<PathBuf>,
    #[arg(long)]
    hang_at_step: Option<usize>,
    #[arg(long, default_value_t = 1)]
    hang_rank: usize,
    /// Rank --hang-rank asks to stop at this step (as early stopping on its own values would).
    #[arg(long)]
    stop_at_step: Option<usize>,
    /// Every rank reads the whole of every epoch (Lightning's use_distributed_sampler=False).
    #[arg(long)]
    no_distributed_sampler: bool,
    /// Sleep this long after every step (to leave time for a signal).
    #[arg(long, default_value_t = 0)]
    step_sleep_ms: u64,
    /// At --hang-at-step, kill the rank (SIGKILL) instead of hanging it.
    #[arg(long)]
    die: bool,
    /// Write checkpoints (rank 0, every epoch, under the default root directory).
    #[arg(long)]
    checkpoints: bool,
    /// Resume from this checkpoint (one written by any number of ranks): a path, `last` or
    /// `best`.
    #[arg(long, value_name = "PATH|last|best")]
    ckpt_path: Option<String>,
    /// Train `ManualIris`: the same model stepping two optimizers by hand.
    #[arg(long)]
    manual: bool,
    /// After training, predict every flower's class probabilities into this CSV (each rank
    /// its share, gathered by rank 0).
    #[arg(long)]
    predict_csv: Option<PathBuf>,
    /// After training, validate on all 150 flowers (each rank its share) and print the
    /// epoch's `val_acc` and `val_f1`, metric objects synced over the ranks.
    #[arg(long)]
    validate: bool,
    /// With --validate, draw the confusion matrix into this directory (MetricPlots).
    #[arg(long)]
    plots: Option<PathBuf>,
    /// Fit on `Unprepared`, whose `prepare_data` fails.
    #[arg(long)]
    fail_prepare_data: bool,
    /// Every rank sends itself SLURM's requeue signal (SIGUSR1) after this step.
    #[arg(long)]
    requeue_at_step: Option<usize>,
    #[command(flatten)]
    trainer: TrainerArgs,
}

/// The Iris classifier stepping its optimizers by hand: an Adam per layer (Adam's update is
/// per parameter, so this trains as one Adam over both would); it counts the samples each
/// epoch trains on (`seen`, a metric over every rank).
#[lightning_module]
struct ManualIris {
    layer_1: Linear<4, 16>,
    layer_2: Linear<16, 3>,
    #[hparam]
    lr: f64,
    #[metric]
    seen: SumMetric,
}

#[lightning_module(manual_optimization)]
impl ManualIris {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let [first, second] = ctx.optimizers()?;
        self.seen.update(&[x.shape().0 as f64][..])?;
        ctx.log("seen", &self.seen).on_step(false).on_epoch(true);
        let logits = self
            .layer_2
            .forward(self.layer_1.forward(ctx.trace(x)).relu());
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        ctx.log("train_loss", &loss);
        ctx.manual_backward(loss, self)?;
        for opt in [first, second] {
            ctx.step(opt, self)?;
            ctx.zero_grad(opt, self)?;
        }
        Ok(())
    }
    fn configure_optimizers(&self) -> [Optim; 2] {
        [
            Optim::adam(self.lr).params(["layer_1"]),
            Optim::adam(self.lr).params(["layer_2"]),
        ]
    }
}

/// The Iris classifier's layers with a metric of every kind of state: counts (accuracy, macro
/// F1, binned average precision), every score (exact AUROC, Spearman), extremes (the largest
/// logit), a weighted mean and co-moments (Pearson's): what `--validate` syncs over the ranks;
/// and a confusion matrix, which `--plots` draws.
#[lightning_module]
struct Evaluated {
    layer_1: Linear<4, 16>,
    layer_2: Linear<16, 3>,
    #[metric(MetricCollection::new("val_")
        .with("acc", Accuracy::multiclass(3))
        .with("f1", F1Score::multiclass(3))
        .with("ap", AveragePrecision::multiclass(3).thresholds(50))
        .with("auroc", Auroc::multiclass(3)))]
    counted: MetricCollection,
    #[metric]
    val_spearman: SpearmanCorrCoef,
    #[metric]
    val_pearson: PearsonCorrCoef,
    #[metric(ConfusionMatrix::multiclass(3))]
    val_confusion: ConfusionMatrix,
    #[metric]
    val_max_logit: MaxMetric,
    #[metric]
    val_mean_logit: MeanMetric,
}

#[lightning_module]
impl Evaluated {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let logits = self
            .layer_2
            .forward(self.layer_1.forward(ctx.trace(x)).relu());
        cross_entropy_with_logits_loss(logits, y.one_hot())
    }
    fn validation_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let logits = self.layer_2.forward(self.layer_1.forward(x).relu());
        self.counted.update(&logits, &y)?;
        self.val_confusion.update(&logits, &y)?;
        let first: Vec<f64> = (logits.as_vec().chunks(3))
            .map(|r| r[0].to_f64().unwrap_or(f64::NAN))
            .collect();
        let classes: Vec<f64> = y.indices().iter().map(|&c| c as f64).collect();
        self.val_spearman.update(&first, &classes)?;
        self.val_pearson.update(&first, &classes)?;
        self.val_max_logit.update(&logits)?;
        self.val_mean_logit.update(&logits)?;
        ctx.log_dict(self.counted.iter());
        ctx.log("val_spearman", &self.val_spearman);
        ctx.log("val_pearson", &self.val_pearson);
        ctx.log("val_max_logit", &self.val_max_logit);
        ctx.log("val_mean_logit", &self.val_mean_logit);
        Ok(())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::adam(0.01)
    }
}

/// The flowers, after a `prepare_data` that fails (a download that did not happen).
#[data_module]
struct Unprepared {}

#[data_module]
impl Unprepared {
    fn prepare_data(&mut self) -> fulmen::Result<()> {
        Err(fulmen::Error::msg("the download failed"))
    }
    fn train_dataloader(&self) -> DataLoader<fulmen::data::iris::Sample> {
        DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 16)
    }
}

/// The weights and biases of the two layers, in order.
fn layers(
    l1: &fulmen::layers::linear::modules::Linear<4, 16, f32, Cpu>,
    l2: &fulmen::layers::linear::modules::Linear<16, 3, f32, Cpu>,
) -> Vec<f32> {
    [
        l1.weight.as_vec(),
        l1.bias.as_vec(),
        l2.weight.as_vec(),
        l2.bias.as_vec(),
    ]
    .concat()
}

/// One rank asks to stop.
struct StopOne {
    rank: usize,
    step: usize,
}

impl Callback for StopOne {
    fn on_train_batch_end(&mut self, t: &mut TrainerView, _loss: f64, _batch: usize) {
        if t.global_rank() == self.rank && t.global_step() >= self.step {
            t.request_stop();
        }
    }
}

/// Sends its own process SIGUSR1 after a step, as SLURM does before a preemption.
struct Requeue(usize);

impl Callback for Requeue {
    fn on_train_batch_end(&mut self, t: &mut TrainerView, _loss: f64, _batch: usize) {
        if t.global_step() == self.0 {
            let pid = std::process::id().to_string();
            let _ = std::process::Command::new("/bin/kill")
                .args(["-USR1", &pid])
                .status();
        }
    }
}

/// Sleeps after every step.
struct Slow(u64);

impl Callback for Slow {
    fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, _batch: usize) {
        std::thread::sleep(std::time::Duration::from_millis(self.0));
    }
}

/// Stops answering at a given step, as a rank stuck in a dead filesystem or a deadlock.
struct Hang {
    rank: usize,
    step: usize,
    die: bool,
}

impl Callback for Hang {
    fn on_train_batch_end(&mut self, t: &mut TrainerView, _loss: f64, _batch: usize) {
        if t.global_rank() == self.rank && t.global_step() >= self.step {
            if self.die {
                eprintln!("rank {}: killed at step {}", self.rank, t.global_step());
                let pid = std::process::id().to_string();
                let _ = std::process::Command::new("kill")
                    .args(["-9", &pid])
                    .status();
            }
            eprintln!("rank {}: hanging at step {}", self.rank, t.global_step());
            loop {
                std::thread::sleep(std::time::Duration::from_secs(3600));
            }
        }
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    exit_on_error(|| {
        seed_everything(args.seed);
        let mut builder = Trainer::builder()
            .max_epochs(5)
            .accelerator("cpu")
            .enable_checkpointing(args.checkpoints)
            .use_distributed_sampler(!args.no_distributed_sampler)
            .enable_progress_bar(false);
        if let Some(step) = args.hang_at_step {
            builder = builder.callback(Hang {
                rank: args.hang_rank,
                step,
                die: args.die,
            });
        }
        if let Some(step) = args.stop_at_step {
            builder = builder.callback(StopOne {
                rank: args.hang_rank,
                step,
            });
        }
        if args.step_sleep_ms > 0 {
            builder = builder.callback(Slow(args.step_sleep_ms));
        }
        if let Some(step) = args.requeue_at_step {
            builder = builder.callback(Requeue(step));
        }
        if let Some(dir) = &args.plots {
            builder = builder.callback(MetricPlots::new().dirpath(dir));
        }
        let mut trainer = builder.args(&args.trainer).build()?;
        if args.fail_prepare_data {
            let failed = trainer.fit(&mut IrisClassifier::new(0.01), &mut Unprepared::new());
            if trainer.global_rank() == 0 {
                // mpirun ends the job when a rank exits with an error: rank 0 stays a moment,
                // so that the others say what they learnt.
                std::thread::sleep(std::time::Duration::from_secs(3));
            }
            return failed;
        }
        let data = fulmen::data::iris::bundled();
        let loader = DataLoader::new(InMemoryDataset::new(data), args.batch_size).shuffle(true);
        let mut loaders = fulmen::datamodule::Loaders {
            train: Some(loader),
            ..Default::default()
        };
        let ckpt = args.ckpt_path.as_deref();
        let weights = if args.manual {
            let mut model = ManualIris::new(0.01);
            trainer.fit_from(&mut model, &mut loaders, ckpt)?;
            layers(&model.layer_1, &model.layer_2)
        } else {
            let mut model = IrisClassifier::new(0.01);
            trainer.fit_from(&mut model, &mut loaders, ckpt)?;
            if args.validate {
                let flowers =
                    DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 16);
                let mut evaluated = Evaluated::new();
                evaluated.layer_1 = model.layer_1.clone();
                evaluated.layer_2 = model.layer_2.clone();
                let m = trainer.validate_loader(&mut evaluated, flowers)?;
                let values: Vec<String> = m.iter().map(|(k, v)| format!("{k}={v:.17e}")).collect();
                println!(
                    "rank {} validated: {}",
                    trainer.global_rank(),
                    values.join(" ")
                );
            }
            if let Some(path) = &args.predict_csv {
                let flowers =
                    DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 16);
                let mut files = fulmen::prediction_writer::PredictionFiles::csv(path);
                trainer.predict_loader_with(&mut model, flowers, &mut files)?;
            }
            layers(&model.layer_1, &model.layer_2)
        };
        let logged = |name: &str| {
            let value = trainer.callback_metrics().get(name).copied();
            value.unwrap_or(f64::NAN)
        };
        println!(
            "rank {} of {}: trained {} steps, train_loss {:.4}, seen {}",
            trainer.global_rank(),
            trainer.world_size(),
            trainer.global_step(),
            logged("train_loss"),
            logged("seen"),
        );
        if let Some(dir) = &args.out {
            let bytes: Vec<u8> = weights.iter().flat_map(|v| v.to_le_bytes()).collect();
            let path = dir.join(format!("rank{}.weights", trainer.global_rank()));
            std::fs::write(&path, bytes)
                .map_err(|e| fulmen::Error::msg(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    })
}

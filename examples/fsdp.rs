//! A model sharded over the ranks: FSDP's FULL_SHARD (`--strategy fsdp`) on CPUs over MPI.
//!
//! ```sh
//! cargo build --release --features mpi --example fsdp
//! mpirun -n 4 target/release/examples/fsdp --strategy fsdp --devices 4
//! mpirun -n 4 target/release/examples/fsdp --strategy ddp --devices 4   # everything on every rank
//! ```
//!
//! An MLP of twenty-four `--size large` 2048-wide layers (101 M parameters: 403 MB in f32, and
//! 806 MB more of Adam's state), each layer a `Unit`. Under "fsdp" each of N ranks holds 1/N of
//! the parameters, of their gradients and of Adam's state, and gathers one unit's parameters at
//! a time, while it runs; under "ddp" every rank holds all of them. Every rank prints its peak
//! memory at the end. `--size small` (256 wide) trains the same way in a fraction of the time;
//! `--checkpoints` saves every epoch and `--ckpt-path PATH` continues from a checkpoint, on any
//! number of ranks; `--out DIR` writes each rank's final weights to `DIR/rank<R>.weights`
//! (f32, little-endian), which `tests/fsdp.rs` compares across strategies.

use std::path::PathBuf;

use clap::Parser;
use fulmen::layers::Unit;
use fulmen::prelude::*;
use fulmen::trainer::TrainerArgs;

#[derive(Parser)]
struct Args {
    /// small (256 wide) or large (2048 wide).
    #[arg(long, default_value = "large")]
    size: String,
    /// Samples per batch on each rank.
    #[arg(long, default_value_t = 8)]
    batch_size: usize,
    /// Samples in the synthetic training set.
    #[arg(long, default_value_t = 64)]
    samples: usize,
    #[arg(long, default_value_t = 7)]
    seed: u64,
    /// Where each rank writes its final weights.
    #[arg(long)]
    out: Option<PathBuf>,
    /// Write a checkpoint every epoch (under the default root directory).
    #[arg(long)]
    checkpoints: bool,
    /// Continue the run saved in this checkpoint (written by any number of ranks): a path,
    /// `last` or `best`.
    #[arg(long, value_name = "PATH|last|best")]
    ckpt_path: Option<String>,
    #[command(flatten)]
    trainer: TrainerArgs,
}

/// Twenty-four `W`-wide layers, each one FULL_SHARD unit, and a 10-class head.
macro_rules! wide_mlp {
    ($name:ident, $w:literal) => {
        #[lightning_module]
        struct $name {
            body: Repeated<Unit<(Linear<$w, $w>, ReLU)>, 24>,
            head: Linear<$w, 10>,
            #[hparam]
            lr: f64,
        }

        #[lightning_module]
        impl $name {
            fn training_step(
                &mut self,
                (x, y): ClassBatch<$w, 10, E, D>,
                ctx: &mut StepContext<E, D>,
            ) -> Loss<E, D> {
                let logits = self.head.forward(self.body.forward_mut(ctx.trace(x)));
                let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
                ctx.log("train_loss", &loss).sync_dist(true);
                loss
            }

            fn configure_optimizers(&self) -> Optim {
                Optim::adam(self.lr)
            }
        }

        impl $name {
            /// Every trainable value, in walk order.
            fn weights(&self) -> Vec<f32> {
                let mut all = Vec::new();
                for unit in &self.body.modules {
                    all.extend(unit.0 .0.weight.as_vec());
                    all.extend(unit.0 .0.bias.as_vec());
                }
                all.extend(self.head.weight.as_vec());
                all.extend(self.head.bias.as_vec());
                all
            }
        }
    };
}

wide_mlp!(Small, 256);
wide_mlp!(Large, 2048);

/// `samples` inputs of `W` features drawn from `seed`, each labelled by its largest feature
/// among the first ten.
fn data<const W: usize>(samples: usize, seed: u64) -> Vec<([f32; W], Class<10>)> {
    let mut state = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        (state >> 40) as f32 / (1u64 << 24) as f32 - 0.5
    };
    (0..samples)
        .map(|_| {
            let x: [f32; W] = std::array::from_fn(|_| next());
            let label = (0..10)
                .max_by(|&a, &b| x[a].total_cmp(&x[b]))
                .and_then(Class::new)
                .unwrap_or_else(|| unreachable!("ten classes"));
            (x, label)
        })
        .collect()
}

/// This process's peak resident memory and peak address space, in MiB (Linux).
fn peak_memory() -> (f64, f64) {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    let field = |name: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<f64>().ok())
            .map_or(f64::NAN, |kb| kb / 1024.0)
    };
    (field("VmHWM:"), field("VmPeak:"))
}

macro_rules! train {
    ($trainer:ident, $args:ident, $module:ident, $w:literal) => {{
        let loader = DataLoader::new(
            InMemoryDataset::new(data::<$w>($args.samples, $args.seed)),
            $args.batch_size,
        )
        .shuffle(true);
        let mut model = $module::new(1e-3);
        let mut loaders = fulmen::datamodule::Loaders {
            train: Some(loader),
            ..Default::default()
        };
        $trainer.fit_from(&mut model, &mut loaders, $args.ckpt_path.as_deref())?;
        $args.out.is_some().then(|| model.weights())
    }};
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    let run = || -> fulmen::Result<()> {
        seed_everything(args.seed);
        let mut trainer = Trainer::builder()
            .max_epochs(1)
            .accelerator("cpu")
            .enable_checkpointing(args.checkpoints)
            .enable_progress_bar(false)
            .args(&args.trainer)
            .build()?;
        let weights = match args.size.as_str() {
            "small" => train!(trainer, args, Small, 256),
            "large" => train!(trainer, args, Large, 2048),
            other => {
                return Err(fulmen::Error::config(
                    "size",
                    format!("`{other}` is not small or large"),
                ))
            }
        };
        let (resident, address_space) = peak_memory();
        println!(
            "rank {} of {}: {} steps, train_loss {:.4}, peak resident {resident:.0} MiB, peak address space {address_space:.0} MiB",
            trainer.global_rank(),
            trainer.world_size(),
            trainer.global_step(),
            trainer
                .callback_metrics()
                .get("train_loss")
                .copied()
                .unwrap_or(f64::NAN),
        );
        if let (Some(dir), Some(weights)) = (&args.out, weights) {
            let bytes: Vec<u8> = weights.iter().flat_map(|v| v.to_le_bytes()).collect();
            let path = dir.join(format!("rank{}.weights", trainer.global_rank()));
            std::fs::write(&path, bytes)
                .map_err(|e| fulmen::Error::msg(format!("{}: {e}", path.display())))?;
        }
        Ok(())
    };
    match run() {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

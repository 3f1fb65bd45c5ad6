//! Fine-tuning (Lightning's transfer-learning recipe with `BackboneFinetuning`): a small
//! ResNet is trained on one task, the digits 0–4 of scikit-learn's 8×8 digits, and saved; its
//! backbone is then loaded under a new head for another task, the digits 5–9. The backbone
//! stays frozen while the head learns, then trains too, in a parameter group of its own whose
//! learning rate starts at a tenth of the head's and grows ×1.5 per epoch.
//!
//! ```text
//! cargo run --release --example finetune -- --out finetune_out
//! cargo run --release --example finetune -- --out finetune_out --max-epochs 10 --ckpt-path last
//! ```
//!
//! The first run writes `pretrained.ckpt` (later runs reuse it), the fine-tuning run's
//! checkpoints (`checkpoints/last.ckpt`: resume with `--ckpt-path last`) and
//! `finetuned.ckpt`, its weights.

use std::path::PathBuf;

use clap::Parser;
use fulmen::callbacks::{BackboneFinetuning, ModelCheckpoint};
use fulmen::checkpoint::Checkpoint;
use fulmen::data::{Image, ImageBatch};
use fulmen::datamodule::Loaders;
use fulmen::layers::{Conv2DNoBias, Fused, Unit};
use fulmen::models::resnet::{BasicBlock, BasicBlockDown, Head};
use fulmen::optim::Group;
use fulmen::prelude::*;

#[derive(Parser)]
struct Args {
    /// The digits, as `scripts/make_digits.py` writes them.
    #[arg(long, default_value = "data/digits.npz")]
    data: PathBuf,
    /// Where `pretrained.ckpt`, the logs, the checkpoints and `finetuned.ckpt` go.
    #[arg(long, default_value = "finetune_out")]
    out: PathBuf,
    /// Epochs of training on the first task (when there is no `pretrained.ckpt` yet).
    #[arg(long, default_value_t = 5)]
    pretrain_epochs: usize,
    /// The fine-tuning epoch from which the backbone trains.
    #[arg(long, default_value_t = 3)]
    unfreeze_at: usize,
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The fine-tuning checkpoint to resume from (a path, or `last`).
    #[arg(long)]
    ckpt_path: Option<String>,
    /// The trainer's flags for fine-tuning (`--max-epochs`, default 8; `--accelerator`, ...).
    #[command(flatten)]
    trainer: fulmen::trainer::TrainerArgs,
}

/// The backbone: a 3×3 stem to 16 channels, a BasicBlock, a strided BasicBlock to 32.
type Backbone = (
    Fused<(Conv2DNoBias<1, 16, 3, 1, 1>, BatchNorm2D<16>, ReLU)>,
    Fused<(Unit<BasicBlock<16>>, Unit<BasicBlockDown<16, 32, 2>>)>,
);

/// Five digits at a time: the backbone, then global average pooling and a linear head.
#[lightning_module]
struct DigitNet {
    backbone: Backbone,
    head: Head<32, 5>,
    #[hparam]
    lr: f64,
}

#[lightning_module]
impl DigitNet {
    fn training_step(
        &mut self,
        (x, y): ImageBatch<1, 5, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let logits = self.head.forward(self.backbone.forward_mut(ctx.trace(x)));
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        ctx.log("train_loss", &loss).on_epoch(true);
        loss
    }
    fn validation_step(&mut self, (x, y): ImageBatch<1, 5, E, D>, ctx: &mut StepContext<E, D>) {
        let logits = self.head.forward(self.backbone.forward(x));
        ctx.log("val_acc", accuracy(&logits, &y)).prog_bar(true);
        ctx.log(
            "val_loss",
            cross_entropy_with_logits_loss(logits, y.one_hot()),
        );
    }
    fn configure_optimizers(&self) -> Optim {
        // The backbone in a group of its own: BackboneFinetuning sets its rate.
        Optim::adam(self.lr).group(Group::of(["backbone"]))
    }
}

type Sample = (Image<1>, Class<5>);

/// The digits `first..first + 5` as classes 0–4, pixels in [-1, 1]: every fifth for
/// validation, the rest for training.
fn task(args: &Args, first: usize) -> fulmen::Result<Loaders<Sample>> {
    let digits = fulmen::data::npz::read_classification::<64, 10>(&args.data, "X", "y")?;
    let (mut train, mut val) = (Vec::new(), Vec::new());
    for (i, (x, y)) in digits.into_iter().enumerate() {
        let Some(class) = y.index().checked_sub(first).and_then(Class::new) else {
            continue;
        };
        let image = Image::new(x.iter().map(|v| v / 8.0 - 1.0).collect(), 8, 8)?;
        match i % 5 {
            0 => val.push((image, class)),
            _ => train.push((image, class)),
        }
    }
    let loader = |samples| DataLoader::new(InMemoryDataset::new(samples), args.batch_size);
    Ok(Loaders {
        train: Some(loader(train).shuffle(true)),
        val: Some(loader(val)),
        ..Default::default()
    })
}

/// The first task's model, trained and saved at `path`.
fn pretrain(args: &Args, path: &std::path::Path) -> fulmen::Result<()> {
    let mut model = DigitNet::new(args.lr);
    let mut trainer = Trainer::builder()
        .max_epochs(args.pretrain_epochs)
        .default_root_dir(args.out.join("pretrain"))
        .enable_checkpointing(false)
        .build()?;
    trainer.fit(&mut model, &mut task(args, 0)?)?;
    let acc = trainer.callback_metrics().get("val_acc").copied();
    println!("digits 0-4: val_acc {:.3}", acc.unwrap_or(f64::NAN));
    Checkpoint::of_module(&model, "DigitNet")?.write(path)
}

fn run(args: Args) -> fulmen::Result<()> {
    seed_everything(args.seed);
    std::fs::create_dir_all(&args.out).map_err(|source| fulmen::Error::Io {
        path: args.out.clone(),
        source,
    })?;
    let pretrained = args.out.join("pretrained.ckpt");
    if !pretrained.exists() {
        pretrain(&args, &pretrained)?;
    }
    // The second task: the first one's backbone, a new head.
    seed_everything(args.seed + 1);
    let mut model = DigitNet::new(args.lr);
    Checkpoint::read(&pretrained)?.load_weights_of("backbone", &mut model.backbone)?;
    let checkpoints = ModelCheckpoint::new()
        .dirpath(args.out.join("checkpoints"))
        .save_top_k(0)
        .save_last(true);
    let mut trainer = Trainer::builder()
        .max_epochs(8)
        .default_root_dir(args.out.join("finetune"))
        .callback(BackboneFinetuning::new("backbone", args.unfreeze_at))
        .callback(checkpoints)
        .args(&args.trainer)
        .build()?;
    trainer.fit_from(&mut model, &mut task(&args, 5)?, args.ckpt_path.as_deref())?;
    let acc = trainer.callback_metrics().get("val_acc").copied();
    println!("digits 5-9: val_acc {:.3}", acc.unwrap_or(f64::NAN));
    Checkpoint::of_module(&model, "DigitNet")?.write(args.out.join("finetuned.ckpt"))
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

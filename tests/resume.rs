//! Exact resume: a run continued from any of its checkpoints — saved at an epoch's end or in
//! the middle of an epoch, including after the epoch's last batch but before its validation —
//! ends with weights and metrics bitwise identical to the uninterrupted run. The model uses
//! dropout (the device's random stream), the loader shuffles (its seed), Adam keeps state and
//! the training loss is reduced over each epoch (the running epoch values).
//!
//! One test in this file, so that nothing else draws from the global seed stream meanwhile.

use std::path::{Path, PathBuf};

use fulmen::callbacks::{Mode, ModelCheckpoint};
use fulmen::data::{iris, stratified_split};
use fulmen::optim::ReduceLROnPlateau;
use fulmen::prelude::*;

#[lightning_module]
struct Net {
    l1: Linear<4, 16>,
    drop: Dropout,
    l2: Linear<16, 3>,
    #[hparam]
    lr: f64,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let h = self.drop.forward_mut(self.l1.forward(ctx.trace(x)).relu());
        let loss = cross_entropy_with_logits_loss(self.l2.forward(h), y.one_hot());
        ctx.log("train_loss", &loss).on_epoch(true);
        loss
    }
    fn validation_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) {
        let logits = self.l2.forward(self.l1.forward(x).relu());
        ctx.log(
            "val_loss",
            cross_entropy_with_logits_loss(logits, y.one_hot()),
        );
    }
    fn configure_optimizers(&self) -> Optim {
        // A plateau scheduler keeps the most state (best value, bad epochs, cooldown) and
        // steps after the epoch-end checkpoint; `Max` on a falling loss halves the rate often.
        Optim::adam(self.lr)
            .weight_decay(0.01)
            .scheduler(ReduceLROnPlateau {
                mode: Mode::Max,
                patience: 0,
                factor: 0.5,
                cooldown: 1,
                ..ReduceLROnPlateau::new("val_loss")
            })
    }
}

type Loaders = (DataLoader<iris::Sample>, DataLoader<iris::Sample>);

/// The tutorial's split; the training loader's shuffle seed comes from the global stream.
fn loaders() -> Loaders {
    let samples = iris::bundled();
    let labels: Vec<usize> = samples.iter().map(|(_, y)| y.index()).collect();
    let (train, val) = stratified_split(samples, &labels, 0.2, 42).unwrap();
    (
        DataLoader::new(InMemoryDataset::new(train), 16).shuffle(true),
        DataLoader::new(InMemoryDataset::new(val), 16),
    )
}

fn bits(model: &Net) -> Vec<u32> {
    [
        model.l1.weight.as_vec(),
        model.l1.bias.as_vec(),
        model.l2.weight.as_vec(),
        model.l2.bias.as_vec(),
    ]
    .concat()
    .into_iter()
    .map(f32::to_bits)
    .collect()
}

fn trainer(dir: &Path, callbacks: Vec<ModelCheckpoint>) -> Trainer {
    let mut builder = Trainer::builder()
        .max_epochs(4)
        .no_logger()
        .default_root_dir(dir)
        .enable_progress_bar(false);
    for cb in callbacks {
        builder = builder.callback(cb);
    }
    builder.build().unwrap()
}

fn ckpts(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .collect();
    files.sort();
    files
}

#[test]
fn resuming_from_any_checkpoint_ends_bitwise_identical() {
    let dir = tempfile::tempdir().unwrap();
    let (epochs_dir, steps_dir) = (dir.path().join("epochs"), dir.path().join("steps"));
    seed_everything(3);
    let (train, val) = loaders();
    let mut model = Net::new(0.01);
    let mut full = trainer(
        dir.path(),
        vec![
            ModelCheckpoint::new().dirpath(&epochs_dir).save_top_k(-1),
            ModelCheckpoint::new()
                .dirpath(&steps_dir)
                .every_n_train_steps(4)
                .save_top_k(-1),
        ],
    );
    full.fit_loaders(&mut model, train, Some(val)).unwrap();
    let expected = bits(&model);
    let expected_metrics = full.callback_metrics().clone();
    let expected_lr = full.lr();
    assert!(
        expected_lr < 0.01 / 2.0,
        "the scheduler lowered the rate: {expected_lr}"
    );
    assert_eq!(full.global_step(), 32, "8 batches per epoch");

    let mut resumed_from = Vec::new();
    for ckpt in ckpts(&epochs_dir).into_iter().chain(ckpts(&steps_dir)) {
        // Another global seed: what a resumed run needs must come from the checkpoint.
        seed_everything(1000 + resumed_from.len() as u64);
        let (train, val) = loaders();
        let mut resumed = Net::new(0.01);
        let mut trainer = trainer(&dir.path().join("resumed"), vec![]);
        let mut loaders = fulmen::datamodule::Loaders {
            train: Some(train),
            val: Some(val),
            ..Default::default()
        };
        trainer.fit_from(&mut resumed, &mut loaders, &ckpt).unwrap();
        let name = ckpt.file_name().unwrap().to_string_lossy().to_string();
        assert!(
            bits(&resumed) == expected,
            "weights differ after resuming from {name}"
        );
        assert_eq!(trainer.global_step(), 32, "{name}");
        assert_eq!(trainer.lr(), expected_lr, "{name}");
        for key in ["train_loss_epoch", "val_loss"] {
            assert_eq!(
                trainer.callback_metrics()[key].to_bits(),
                expected_metrics[key].to_bits(),
                "{key} differs after resuming from {name}"
            );
        }
        resumed_from.push(name);
    }
    assert_eq!(
        resumed_from,
        [
            "epoch=0-step=8.ckpt",
            "epoch=1-step=16.ckpt",
            "epoch=2-step=24.ckpt",
            "epoch=3-step=32.ckpt",
            // Saved at on_train_batch_end; steps 8, 16, 24 after an epoch's last batch, before
            // its validation and epoch end.
            "epoch=0-step=4.ckpt",
            "epoch=0-step=8.ckpt",
            "epoch=1-step=12.ckpt",
            "epoch=1-step=16.ckpt",
            "epoch=2-step=20.ckpt",
            "epoch=2-step=24.ckpt",
            "epoch=3-step=28.ckpt",
            "epoch=3-step=32.ckpt",
        ]
    );
}

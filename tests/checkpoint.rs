//! Checkpoints through the public API: what `ModelCheckpoint` keeps, what a checkpoint holds,
//! `load_from_checkpoint`, `fit_from` with a path, "last" and "best", and every way a
//! checkpoint can be bad (corrupt, truncated, another model's, weights only) or a save can fail.

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "support/python.rs"]
mod python;

use std::path::{Path, PathBuf};

use common::{IrisClassifier, IrisDataModule};
use fulmen::callbacks::{Mode, ModelCheckpoint};
use fulmen::checkpoint::Checkpoint;
use fulmen::prelude::*;

fn data() -> IrisDataModule {
    IrisDataModule::new(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data").into(),
        16,
        0.2,
        42,
        true,
    )
}

fn trainer(epochs: usize, dir: &Path, checkpoint: ModelCheckpoint) -> Trainer {
    Trainer::builder()
        .max_epochs(epochs)
        .no_logger()
        .default_root_dir(dir)
        .enable_progress_bar(false)
        .callback(checkpoint)
        .build()
        .unwrap()
}

/// Trains the Iris module for `epochs` with the default checkpointing into `dir`; returns the
/// module and its latest checkpoint.
fn trained(epochs: usize, dir: &Path) -> (IrisClassifier, PathBuf) {
    let mut model = IrisClassifier::new(0.01);
    let mut t = trainer(epochs, dir, ModelCheckpoint::new());
    t.fit(&mut model, &mut data()).unwrap();
    let best = t.checkpoint_paths().and_then(|p| p.best).unwrap();
    (model, best)
}

fn files(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().to_string())
        .collect();
    names.sort();
    names
}

#[test]
fn the_default_callback_keeps_the_latest_checkpoint_with_everything_a_resume_needs() {
    let dir = tempfile::tempdir().unwrap();
    let (model, path) = trained(3, dir.path());
    assert_eq!(path, dir.path().join("checkpoints/epoch=2-step=24.ckpt"));
    assert_eq!(
        files(&dir.path().join("checkpoints")),
        ["epoch=2-step=24.ckpt"]
    );

    let ckpt = Checkpoint::read(&path).unwrap();
    assert_eq!(ckpt.module_name(), "IrisClassifier");
    assert_eq!(ckpt.fulmen_version(), env!("CARGO_PKG_VERSION"));
    assert_eq!((ckpt.epoch(), ckpt.global_step()), (Some(2), Some(24)));
    assert_eq!(ckpt.hparams().get::<f64>("lr").unwrap(), 0.01);
    assert_eq!(
        ckpt.datamodule_hparams()
            .get::<usize>("batch_size")
            .unwrap(),
        16
    );
    assert!(!ckpt.weights_only());
    let names: Vec<&str> = ckpt.tensor_names().collect();
    for name in [
        "layer_1.weight",
        "layer_1.bias",
        "layer_2.weight",
        "layer_2.bias",
        "optimizer/layer_1.weight/exp_avg",
        "optimizer/layer_2.bias/exp_avg_sq",
    ] {
        assert!(names.contains(&name), "{name} missing from {names:?}");
    }

    let loaded = IrisClassifier::load_from_checkpoint(&path).unwrap();
    assert_eq!(loaded.hparams(), model.hparams());
    assert_eq!(
        loaded.layer_1.weight.as_vec(),
        model.layer_1.weight.as_vec()
    );
    assert_eq!(loaded.layer_2.bias.as_vec(), model.layer_2.bias.as_vec());
}

#[test]
fn top_k_keeps_the_best_by_the_monitored_metric_and_names_files_from_metrics() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt_dir = dir.path().join("best");
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    struct Record(std::rc::Rc<std::cell::RefCell<Vec<(usize, f64)>>>);
    impl Callback for Record {
        fn on_train_epoch_end(&mut self, t: &mut TrainerView) {
            let loss = t.callback_metrics()["val_loss"];
            self.0.borrow_mut().push((t.current_epoch(), loss));
        }
    }
    let mut model = IrisClassifier::new(0.05);
    let mut t = Trainer::builder()
        .max_epochs(6)
        .no_logger()
        .enable_progress_bar(false)
        .callback(Record(seen.clone()))
        .callback(
            ModelCheckpoint::new()
                .dirpath(&ckpt_dir)
                .monitor("val_loss")
                .mode(Mode::Min)
                .filename("{epoch}-{val_loss:.3f}")
                .save_top_k(2)
                .save_last(true),
        )
        .build()
        .unwrap();
    t.fit(&mut model, &mut data()).unwrap();

    let mut by_loss = seen.borrow().clone();
    by_loss.sort_by(|a, b| a.1.total_cmp(&b.1));
    let name = |(epoch, loss): (usize, f64)| format!("epoch={epoch}-val_loss={loss:.3}.ckpt");
    let mut expected = vec![name(by_loss[0]), name(by_loss[1]), "last.ckpt".to_string()];
    expected.sort();
    assert_eq!(files(&ckpt_dir), expected);
    let paths = t.checkpoint_paths().unwrap();
    assert_eq!(paths.best, Some(ckpt_dir.join(name(by_loss[0]))));
    assert_eq!(paths.last, Some(ckpt_dir.join("last.ckpt")));
    let last = Checkpoint::read(ckpt_dir.join("last.ckpt")).unwrap();
    assert_eq!(last.epoch(), Some(5));
}

#[test]
fn every_n_epochs_and_save_weights_only() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = IrisClassifier::new(0.01);
    let cb = ModelCheckpoint::new()
        .every_n_epochs(2)
        .save_top_k(-1)
        .save_weights_only(true);
    trainer(5, dir.path(), cb)
        .fit(&mut model, &mut data())
        .unwrap();
    let ckpt_dir = dir.path().join("checkpoints");
    assert_eq!(
        files(&ckpt_dir),
        ["epoch=1-step=16.ckpt", "epoch=3-step=32.ckpt"]
    );
    let path = ckpt_dir.join("epoch=3-step=32.ckpt");
    let ckpt = Checkpoint::read(&path).unwrap();
    assert!(ckpt.weights_only());
    assert!(ckpt.tensor_names().all(|n| !n.starts_with("optimizer/")));
    // Loadable as a model, refused as a run to resume.
    IrisClassifier::load_from_checkpoint(&path).unwrap();
    let err = trainer(6, dir.path(), ModelCheckpoint::new())
        .fit_from(&mut model, &mut data(), &path)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("epoch=3-step=32.ckpt") && err.contains("weights only"),
        "{err}"
    );
}

#[test]
fn a_monitor_or_filename_metric_never_logged_is_an_error_naming_the_logged_ones() {
    let dir = tempfile::tempdir().unwrap();
    for (cb, typo) in [
        (ModelCheckpoint::new().monitor("val_los"), "val_los"),
        (
            ModelCheckpoint::new().filename("{epoch}-{val_acc:.2f}-{vall}"),
            "vall",
        ),
    ] {
        let err = trainer(1, dir.path(), cb)
            .fit(&mut IrisClassifier::new(0.01), &mut data())
            .unwrap_err()
            .to_string();
        assert!(err.contains(typo) && err.contains("val_loss"), "{err}");
    }
    let err = Trainer::builder()
        .callback(ModelCheckpoint::new().filename("{epoch"))
        .no_logger()
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .build()
        .unwrap()
        .fit(&mut IrisClassifier::new(0.01), &mut data())
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("ModelCheckpoint.filename") && err.contains("unclosed"),
        "{err}"
    );
    let err = Trainer::builder()
        .enable_checkpointing(false)
        .callback(ModelCheckpoint::new())
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("enable_checkpointing"), "{err}");
}

#[test]
fn corrupt_truncated_and_foreign_files_are_refused_naming_the_file() {
    let dir = tempfile::tempdir().unwrap();
    let (model, path) = trained(1, dir.path());
    let bytes = std::fs::read(&path).unwrap();
    let bad = dir.path().join("bad.ckpt");
    let refused = |contents: &[u8]| {
        std::fs::write(&bad, contents).unwrap();
        let err = IrisClassifier::load_from_checkpoint(&bad)
            .err()
            .unwrap()
            .to_string();
        assert!(err.contains("bad.ckpt"), "{err}");
        err
    };
    let mut flipped = bytes.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x40;
    assert!(refused(&flipped).contains("checksum"));
    assert!(refused(&bytes[..bytes.len() - 100]).contains("truncated"));
    assert!(refused(&bytes[..5]).contains("truncated"));
    assert!(refused(b"").contains("truncated"));
    assert!(refused(b"not a checkpoint at all").contains("not a readable fulmen checkpoint"));
    // A plain safetensors file (dfdx's own save) holds weights but no fulmen state.
    model.save_safetensors(&bad).unwrap();
    let err = IrisClassifier::load_from_checkpoint(&bad)
        .err()
        .unwrap()
        .to_string();
    assert!(
        err.contains("without fulmen's checkpoint metadata"),
        "{err}"
    );
    let missing = dir.path().join("nowhere.ckpt");
    let err = IrisClassifier::load_from_checkpoint(&missing)
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("nowhere.ckpt"), "{err}");
}

#[lightning_module]
struct Wider {
    layer_1: Linear<4, 8>,
    layer_2: Linear<8, 3>,
    #[hparam]
    lr: f64,
}

#[lightning_module]
struct Deeper {
    layer_1: Linear<4, 16>,
    layer_2: Linear<16, 3>,
    layer_3: Linear<3, 3>,
    #[hparam]
    lr: f64,
}

#[lightning_module]
struct Shallower {
    layer_1: Linear<4, 16>,
    #[hparam]
    lr: f64,
}

#[lightning_module]
struct OtherHParams {
    layer_1: Linear<4, 16>,
    layer_2: Linear<16, 3>,
    #[hparam]
    learning_rate: f64,
}

macro_rules! trainable {
    ($($name:ident),*) => {$(
        #[lightning_module]
        impl $name {
            fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
                let _ = y;
                ctx.trace(x).sum::<Rank0, _>()
            }
            fn configure_optimizers(&self) -> Optim {
                Optim::sgd(0.1)
            }
        }
    )*};
}
trainable!(Wider, Deeper, Shallower, OtherHParams);

#[test]
fn a_checkpoint_of_another_model_is_refused_naming_the_tensor() {
    let dir = tempfile::tempdir().unwrap();
    let (_, path) = trained(1, dir.path());
    let err = |e: Option<fulmen::Error>| {
        let e = e.unwrap().to_string();
        assert!(e.contains("epoch=0-step=8.ckpt"), "{e}");
        e
    };
    let e = err(Wider::load_from_checkpoint(&path).err());
    assert!(
        e.contains("`layer_1.weight` has shape [16, 4] in the checkpoint but [8, 4]"),
        "{e}"
    );
    let e = err(Deeper::load_from_checkpoint(&path).err());
    assert!(e.contains("no tensor `layer_3.weight`"), "{e}");
    let e = err(Shallower::load_from_checkpoint(&path).err());
    assert!(
        e.contains("layer_2.bias") && e.contains("not in the model"),
        "{e}"
    );
    let e = err(OtherHParams::load_from_checkpoint(&path).err());
    assert!(e.contains("learning_rate"), "{e}");
}

/// Makes the save of `epoch` fail: a directory where the checkpoint's temporary file goes
/// (`.NAME.tmp-HOST-PID`, the host's name with `-` and `/` as `_`).
struct BlockSave {
    dir: PathBuf,
    epoch: usize,
}

impl Callback for BlockSave {
    fn on_train_epoch_end(&mut self, t: &mut TrainerView) {
        if t.current_epoch() == self.epoch {
            let name = format!("epoch={}-step={}.ckpt", self.epoch, t.global_step());
            let mut buf = [0u8; 256];
            // SAFETY: the buffer is valid for its length.
            assert_eq!(
                unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) },
                0
            );
            let len = buf.iter().position(|&b| b == 0).unwrap();
            let host = String::from_utf8_lossy(&buf[..len]).replace(['/', '-'], "_");
            let tmp = format!(".{name}.tmp-{host}-{}", std::process::id());
            std::fs::create_dir_all(self.dir.join(tmp).join("blocker")).unwrap();
        }
    }
}

#[test]
fn a_failed_save_names_the_path_and_keeps_the_previous_checkpoint() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt_dir = dir.path().join("checkpoints");
    let mut model = IrisClassifier::new(0.01);
    let err = Trainer::builder()
        .max_epochs(3)
        .no_logger()
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .callback(BlockSave {
            dir: ckpt_dir.clone(),
            epoch: 1,
        })
        .build()
        .unwrap()
        .fit(&mut model, &mut data())
        .unwrap_err()
        .to_string();
    assert!(err.contains("epoch=1-step=16.ckpt"), "{err}");
    // The save of epoch 1 would have replaced epoch 0's: that one is still there, whole.
    let kept = ckpt_dir.join("epoch=0-step=8.ckpt");
    assert_eq!(Checkpoint::read(&kept).unwrap().epoch(), Some(0));
    assert!(!ckpt_dir.join("epoch=1-step=16.ckpt").exists());

    // A directory that cannot be created: the error names it.
    let file = dir.path().join("a-file");
    std::fs::write(&file, "").unwrap();
    let err = trainer(
        1,
        dir.path(),
        ModelCheckpoint::new().dirpath(file.join("ckpts")),
    )
    .fit(&mut IrisClassifier::new(0.01), &mut data())
    .unwrap_err()
    .to_string();
    assert!(err.contains("a-file"), "{err}");
}

/// Epochs counted, and the count restored from a checkpoint, as seen at the last epoch end.
type Seen = std::rc::Rc<std::cell::RefCell<Option<(u64, Option<u64>)>>>;

/// Counts the epochs it saw, across restarts.
#[derive(Default)]
struct Counter {
    epochs: u64,
    restored: Option<u64>,
}

impl Callback for Counter {
    fn on_train_epoch_end(&mut self, _t: &mut TrainerView) {
        self.epochs += 1;
    }
    fn state_dict(&self) -> Option<fulmen::serde_json::Value> {
        Some(fulmen::serde_json::json!({ "epochs": self.epochs }))
    }
    fn load_state_dict(&mut self, state: &fulmen::serde_json::Value) -> fulmen::Result<()> {
        self.epochs = state["epochs"]
            .as_u64()
            .ok_or_else(|| fulmen::Error::msg("Counter: no epochs"))?;
        self.restored = Some(self.epochs);
        Ok(())
    }
    fn on_save_checkpoint(&mut self, _t: &mut TrainerView, ckpt: &mut Checkpoint) {
        ckpt.extra_mut()
            .insert("note".into(), fulmen::serde_json::json!("from a callback"));
    }
}

#[test]
fn fit_from_last_and_best_restores_callback_state() {
    let dir = tempfile::tempdir().unwrap();
    let ckpt_dir = dir.path().join("ckpts");
    let checkpointing = || {
        ModelCheckpoint::new()
            .dirpath(&ckpt_dir)
            .monitor("val_acc")
            .mode(Mode::Max)
            .save_last(true)
    };
    let run = |epochs: usize, from: Option<&str>| {
        let counter = std::rc::Rc::new(std::cell::RefCell::new(None));
        struct Shared(Counter, Seen);
        impl Callback for Shared {
            fn on_train_epoch_end(&mut self, t: &mut TrainerView) {
                self.0.on_train_epoch_end(t);
                *self.1.borrow_mut() = Some((self.0.epochs, self.0.restored));
            }
            fn state_key(&self) -> String {
                "Counter".into()
            }
            fn state_dict(&self) -> Option<fulmen::serde_json::Value> {
                self.0.state_dict()
            }
            fn load_state_dict(&mut self, s: &fulmen::serde_json::Value) -> fulmen::Result<()> {
                self.0.load_state_dict(s)
            }
            fn on_save_checkpoint(&mut self, t: &mut TrainerView, c: &mut Checkpoint) {
                self.0.on_save_checkpoint(t, c)
            }
        }
        let mut t = Trainer::builder()
            .max_epochs(epochs)
            .no_logger()
            .enable_progress_bar(false)
            .callback(Shared(Counter::default(), counter.clone()))
            .callback(checkpointing())
            .build()
            .unwrap();
        let mut model = IrisClassifier::new(0.01);
        match from {
            Some(which) => t.fit_from(&mut model, &mut data(), which).unwrap(),
            None => t.fit(&mut model, &mut data()).unwrap(),
        }
        let seen = *counter.borrow();
        (t, seen)
    };
    let (mut first, seen) = run(2, None);
    assert_eq!(seen, Some((2, None)));
    let last = Checkpoint::read(ckpt_dir.join("last.ckpt")).unwrap();
    assert_eq!(last.extra()["note"], "from a callback");
    assert_eq!(last.callback_state("Counter").unwrap()["epochs"], 2);

    // "best" is the one the first trainer ranked best; its weights load for testing, and
    // resuming it continues that run.
    let best = first.checkpoint_paths().unwrap().best.unwrap();
    let mut tested = IrisClassifier::new(0.01);
    assert_eq!(first.load_weights(&mut tested, "best").unwrap(), best);
    let reference = IrisClassifier::load_from_checkpoint(&best).unwrap();
    assert_eq!(
        tested.layer_1.weight.as_vec(),
        reference.layer_1.weight.as_vec()
    );
    let epoch = Checkpoint::read(&best).unwrap().epoch().unwrap();
    first
        .fit_from(&mut IrisClassifier::new(0.01), &mut data(), "best")
        .unwrap();
    assert_eq!(first.current_epoch(), 2);
    assert!(epoch <= 1);

    // A new trainer finds `last.ckpt` in the callback's directory.
    let (t, seen) = run(4, Some("last"));
    assert_eq!(seen, Some((4, Some(2))), "2 restored, 2 more counted");
    assert_eq!(t.global_step(), 32);

    // "best" on a trainer that never saved one is an error; "last" with nothing to find
    // starts from scratch.
    let empty = tempfile::tempdir().unwrap();
    let mut fresh = trainer(
        1,
        empty.path(),
        ModelCheckpoint::new().dirpath(empty.path()),
    );
    let err = fresh
        .fit_from(&mut IrisClassifier::new(0.01), &mut data(), "best")
        .unwrap_err()
        .to_string();
    assert!(err.contains("best"), "{err}");
    fresh
        .fit_from(&mut IrisClassifier::new(0.01), &mut data(), "last")
        .unwrap();
    assert_eq!(fresh.global_step(), 8);
}

/// What `.ci/run` installs: PyTorch's users open the file with the `safetensors` package.
#[test]
fn python_safetensors_reads_the_weights() {
    let Some(python) = python::with_module("safetensors.numpy") else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let (model, path) = trained(1, dir.path());
    let script = "import sys\n\
        from safetensors.numpy import load_file\n\
        from safetensors import safe_open\n\
        w = load_file(sys.argv[1])\n\
        print(w['layer_1.weight'].shape, w['layer_1.weight'].dtype)\n\
        print(' '.join(repr(float(v)) for v in w['layer_2.bias']))\n\
        print(safe_open(sys.argv[1], 'np').metadata()['format'])\n";
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let out = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(lines[0], "(16, 4) float32");
    let bias: Vec<f32> = lines[1].split(' ').map(|v| v.parse().unwrap()).collect();
    assert_eq!(bias, model.layer_2.bias.as_vec());
    assert_eq!(lines[2], "pt");
}

/// A data module with state of its own (say, a curriculum level) that checkpoints keep.
#[data_module]
struct Curriculum {
    #[skip]
    level: u64,
}

#[data_module]
impl Curriculum {
    fn train_dataloader(&self) -> DataLoader<fulmen::data::iris::Sample> {
        DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 50)
    }
    fn state_dict(&self) -> fulmen::serde_json::Value {
        fulmen::serde_json::json!({ "level": self.level })
    }
    fn load_state_dict(&mut self, state: &fulmen::serde_json::Value) -> fulmen::Result<()> {
        self.level = state["level"]
            .as_u64()
            .ok_or_else(|| fulmen::Error::msg("Curriculum: no level"))?;
        Ok(())
    }
}

#[test]
fn a_data_modules_state_is_saved_and_restored() {
    let dir = tempfile::tempdir().unwrap();
    let mut dm = Curriculum { level: 3 };
    let (_, path) = {
        let mut model = IrisClassifier::new(0.01);
        let mut t = trainer(1, dir.path(), ModelCheckpoint::new());
        t.fit(&mut model, &mut dm).unwrap();
        (model, t.checkpoint_paths().and_then(|p| p.best).unwrap())
    };
    let ckpt = Checkpoint::read(&path).unwrap();
    assert_eq!(ckpt.datamodule_state().unwrap()["level"], 3);
    let mut fresh = Curriculum { level: 0 };
    trainer(2, dir.path(), ModelCheckpoint::new())
        .fit_from(&mut IrisClassifier::new(0.01), &mut fresh, &path)
        .unwrap();
    assert_eq!(fresh.level, 3);
}

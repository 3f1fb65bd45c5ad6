//! Resuming into a model whose fields changed since the checkpoint was written: the module's
//! `on_load_checkpoint` runs before anything loads, with the checkpoint to change (Lightning's
//! way), and what loads is the result; a tensor that still does not fit fails the resume by
//! its name.

use fulmen::checkpoint::Checkpoint;
use fulmen::datamodule::Loaders;
use fulmen::prelude::*;

type Sample = ([f32; 2], Class<2>);

fn loader() -> DataLoader<Sample> {
    let each = (0..4).map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()));
    DataLoader::new(InMemoryDataset::new(each.collect()), 2)
}

fn data() -> Loaders<Sample> {
    Loaders {
        train: Some(loader()),
        ..Loaders::default()
    }
}

/// The model as it was: one layer named `layer`.
#[lightning_module]
struct Before {
    layer: Linear<2, 2>,
}

#[lightning_module]
impl Before {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

/// The model now: the layer renamed `encoder`, and a scale that did not exist then. Its
/// `on_load_checkpoint` carries the old names over (`rename`), adds the new tensor, and drops
/// a tensor the model no longer has (`drop`).
#[lightning_module]
struct After {
    encoder: Linear<2, 2>,
    scale: Linear<2, 2>,
    #[skip]
    rename: bool,
    #[skip]
    drop: Option<String>,
}

#[lightning_module]
impl After {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let h = self.encoder.forward(ctx.trace(x));
        cross_entropy_with_logits_loss(self.scale.forward(h), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
    fn on_load_checkpoint(&mut self, trainer: &mut TrainerView, checkpoint: &mut Checkpoint) {
        if !self.rename {
            return;
        }
        let mut changed = || -> fulmen::Result<()> {
            // The layer's weights with the optimizer's buffers of them
            // (`optimizer/layer.weight/momentum_buffer`).
            checkpoint.rename_field("layer", "encoder")?;
            let identity = [1.0, 0.0, 0.0, 1.0];
            checkpoint.set_tensor("scale.weight", vec![2, 2], &identity)?;
            checkpoint.set_tensor("optimizer/scale.weight/momentum_buffer", vec![4], &[0.0; 4])?;
            checkpoint.set_tensor("optimizer/scale.bias/momentum_buffer", vec![2], &[0.0; 2])?;
            match &self.drop {
                Some(name) => drop(checkpoint.remove_tensor(name)?),
                None => checkpoint.set_tensor("scale.bias", vec![2], &[0.0, 0.0])?,
            }
            Ok(())
        };
        if let Err(e) = changed() {
            trainer.fail(e);
        }
    }
}

fn trainer(dir: &std::path::Path, epochs: usize) -> Trainer {
    Trainer::builder()
        .max_epochs(epochs)
        .no_logger()
        .default_root_dir(dir)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()
        .unwrap()
}

/// A checkpoint of `Before` after one epoch, and its layer's weights.
fn written(dir: &std::path::Path) -> (std::path::PathBuf, Vec<f32>) {
    let mut before = Before::<f32, Cpu>::new();
    trainer(dir, 1)
        .fit_loaders(&mut before, loader(), None)
        .unwrap();
    let ckpt = dir.join("checkpoints/epoch=0-step=2.ckpt");
    assert!(ckpt.exists());
    (ckpt, before.layer.weight.as_vec())
}

#[test]
fn on_load_checkpoint_renames_and_adds_tensors_before_the_weights_load() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, trained) = written(dir.path());
    let mut after = After::<f32, Cpu>::new();
    after.rename = true;
    // The checkpoint's epoch is the last: the weights load and nothing trains.
    trainer(dir.path(), 1)
        .fit_from(&mut after, &mut data(), &ckpt)
        .unwrap();
    assert_eq!(after.encoder.weight.as_vec(), trained, "the renamed layer");
    assert_eq!(
        after.scale.weight.as_vec(),
        [1.0, 0.0, 0.0, 1.0],
        "the added tensor"
    );
    let file = Checkpoint::read(&ckpt).unwrap();
    assert!(
        file.tensor_names().any(|n| n == "layer.weight"),
        "the file on disk is as it was"
    );
}

#[test]
fn a_tensor_that_still_does_not_fit_fails_the_resume_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _) = written(dir.path());
    let mut after = After::<f32, Cpu>::new();
    let err = trainer(dir.path(), 2)
        .fit_from(&mut after, &mut data(), &ckpt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("encoder.weight"), "{err}");

    let mut after = After::<f32, Cpu>::new();
    (after.rename, after.drop) = (true, Some("encoder.bias".into()));
    let err = trainer(dir.path(), 2)
        .fit_from(&mut after, &mut data(), &ckpt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("encoder.bias"), "{err}");
}

#[test]
fn an_error_inside_on_load_checkpoint_ends_the_resume_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _) = written(dir.path());
    let mut after = After::<f32, Cpu>::new();
    (after.rename, after.drop) = (true, Some("no.such.tensor".into()));
    let err = trainer(dir.path(), 2)
        .fit_from(&mut after, &mut data(), &ckpt)
        .unwrap_err()
        .to_string();
    assert!(err.contains("no.such.tensor"), "{err}");
}

#[test]
fn renaming_a_field_the_checkpoint_does_not_hold_is_an_error_naming_it() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, _) = written(dir.path());
    let mut file = Checkpoint::read(&ckpt).unwrap();
    let err = file
        .rename_field("decoder", "head")
        .unwrap_err()
        .to_string();
    assert!(err.contains("`decoder`"), "{err}");
    file.rename_field("layer", "encoder").unwrap();
    let names: Vec<&str> = file.tensor_names().collect();
    assert!(names.contains(&"encoder.weight") && !names.contains(&"layer.weight"));
    assert!(
        names.contains(&"optimizer/encoder.weight/momentum_buffer"),
        "{names:?}"
    );
}

/// The model now, loaded rather than resumed: its `on_load_checkpoint` renames the old layer.
#[lightning_module]
struct Renamed {
    encoder: Linear<2, 2>,
}

#[lightning_module]
impl Renamed {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.encoder.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
    fn on_load_checkpoint(&mut self, trainer: &mut TrainerView, checkpoint: &mut Checkpoint) {
        if let Err(e) = checkpoint.rename_field("layer", "encoder") {
            trainer.fail(e);
        }
    }
}

#[test]
fn load_from_checkpoint_calls_on_load_checkpoint_before_the_weights_load() {
    let dir = tempfile::tempdir().unwrap();
    let (ckpt, trained) = written(dir.path());
    let loaded = Renamed::<f32, Cpu>::load_from_checkpoint(&ckpt).unwrap();
    assert_eq!(loaded.encoder.weight.as_vec(), trained, "the renamed layer");

    // A checkpoint the hook cannot change fails the load, naming the file.
    let mut file = Checkpoint::read(&ckpt).unwrap();
    file.rename_field("layer", "other").unwrap();
    let other = dir.path().join("other.ckpt");
    file.write(&other).unwrap();
    let Err(err) = Renamed::<f32, Cpu>::load_from_checkpoint(&other) else {
        panic!("the load went on");
    };
    let text = err.to_string();
    assert!(
        text.contains("layer") && text.contains("other.ckpt"),
        "{text}"
    );
}

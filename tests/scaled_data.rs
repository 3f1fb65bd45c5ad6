//! A data module that scales its features with a `Scaler` fitted on the training split,
//! applies it to every split, and keeps it in its state: a checkpoint carries it, and a data
//! module that loads that state scales new data as training did.

use fulmen::data::{iris, stratified_split, Scaler};
use fulmen::prelude::*;
use fulmen::serde_json;

#[lightning_module]
pub struct Linear4 {
    layer: Linear<4, 3>,
}

#[lightning_module]
impl Linear4 {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

#[data_module]
pub struct ScaledIris {
    batch_size: usize,
    #[skip]
    scaler: Option<Scaler<4>>,
    #[skip]
    train: Vec<iris::Sample>,
    #[skip]
    val: Vec<iris::Sample>,
}

#[data_module]
impl ScaledIris {
    fn setup(&mut self, _stage: Stage) -> fulmen::Result<()> {
        let samples = iris::bundled();
        let labels: Vec<usize> = samples.iter().map(|(_, y)| y.index()).collect();
        let (mut train, mut val) = stratified_split(samples, &labels, 0.2, 42)?;
        let features: Vec<[f32; 4]> = train.iter().map(|(x, _)| *x).collect();
        let scaler = match &self.scaler {
            Some(restored) => restored.clone(),
            None => Scaler::standardize(&features)?,
        };
        scaler.apply_all(&mut train);
        scaler.apply_all(&mut val);
        (self.scaler, self.train, self.val) = (Some(scaler), train, val);
        Ok(())
    }
    fn train_dataloader(&self) -> DataLoader<iris::Sample> {
        DataLoader::new(InMemoryDataset::new(self.train.clone()), self.batch_size)
    }
    fn state_dict(&self) -> Option<serde_json::Value> {
        Some(serde_json::json!({ "scaler": self.scaler }))
    }
    fn load_state_dict(&mut self, state: &serde_json::Value) -> fulmen::Result<()> {
        self.scaler = serde_json::from_value(state["scaler"].clone())
            .map_err(|e| fulmen::Error::msg(format!("the saved scaler: {e}")))?;
        Ok(())
    }
}

#[test]
fn the_training_splits_scaler_scales_every_split_and_travels_in_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let mut dm = ScaledIris::new(16);
    let mut trainer = Trainer::builder()
        .max_epochs(1)
        .no_logger()
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()
        .unwrap();
    trainer.fit(&mut Linear4::new(), &mut dm).unwrap();
    let scaler = dm.scaler.clone().expect("fitted in setup");
    // The training split is standardized; the validation split by the same numbers.
    let mean0 = dm.train.iter().map(|(x, _)| x[0]).sum::<f32>() / dm.train.len() as f32;
    assert!(mean0.abs() < 1e-5, "{mean0}");
    let val_mean0 = dm.val.iter().map(|(x, _)| x[0]).sum::<f32>() / dm.val.len() as f32;
    assert!(
        val_mean0.abs() > 1e-4,
        "the validation split is not refitted: {val_mean0}"
    );
    // The checkpoint holds it, and a new data module takes it back.
    let ckpt = dir.path().join("checkpoints/epoch=0-step=8.ckpt");
    let saved = fulmen::checkpoint::Checkpoint::read(&ckpt).unwrap();
    let mut restored = ScaledIris::new(16);
    restored
        .load_state_dict(saved.datamodule_state().expect("the data module's state"))
        .unwrap();
    assert_eq!(restored.scaler, Some(scaler));
}

/// A resource without a `Default`.
pub struct Handle(std::time::Instant);

/// `no_new`: no generated `new` or `FromHParams`, so a skipped field needs no `Default` and
/// the data module keeps its own constructor.
#[data_module(no_new)]
pub struct WithHandle {
    batch_size: usize,
    #[skip]
    handle: Handle,
}

#[data_module]
impl WithHandle {
    fn train_dataloader(&self) -> DataLoader<iris::Sample> {
        DataLoader::new(InMemoryDataset::new(iris::bundled()), self.batch_size)
    }
}

impl WithHandle {
    pub fn new(batch_size: usize) -> Self {
        Self {
            batch_size,
            handle: Handle(std::time::Instant::now()),
        }
    }
}

#[test]
fn no_new_keeps_a_data_modules_own_constructor_and_fields_without_default() {
    let dm = WithHandle::new(8);
    let names: Vec<String> = dm.hparams().names().map(String::from).collect();
    assert_eq!(names, ["batch_size"]);
    assert_eq!(dm.train_dataloader().len(), 19);
    assert!(
        dm.handle.0.elapsed().as_secs() < 3600,
        "the handle it was built with"
    );
}

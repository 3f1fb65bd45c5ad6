//! A module that serves its own loaders (Lightning's `*_dataloader` on the `LightningModule`;
//! their order among the hooks is `tests/hook_order.rs`'s): every stage runs on them, in every
//! precision, from the data the module keeps beside its tensors.

use fulmen::module_data::FromModule;
use fulmen::prelude::*;

#[path = "support/quiet.rs"]
mod quiet;

type Sample = ([f32; 2], Class<2>);

/// Keeps its samples in a `#[skip]` field and serves them; counts its `prepare_data` calls.
#[lightning_module]
struct Served {
    layer: Linear<2, 2>,
    #[skip]
    samples: Vec<Sample>,
    #[skip]
    prepared: usize,
}

#[lightning_module]
impl Served {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let loss = cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot());
        ctx.log("train_loss", &loss);
        loss
    }
    fn validation_step(&mut self, (x, y): ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        let loss = cross_entropy_with_logits_loss(self.layer.forward(x), y.one_hot());
        ctx.log("val_loss", &loss);
    }
    fn test_step(&mut self, (x, y): ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        let loss = cross_entropy_with_logits_loss(self.layer.forward(x), y.one_hot());
        ctx.log("test_loss", &loss);
    }
    fn predict_step(&mut self, (x, _): ClassBatch<2, 2, E, D>, _: &mut StepContext<E, D>) -> usize {
        x.shape().0
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
    fn prepare_data(&mut self, _trainer: &mut TrainerView) {
        self.prepared += 1;
    }
    fn train_dataloader(&self) -> DataLoader<Sample> {
        DataLoader::new(InMemoryDataset::new(self.samples.clone()), 2)
    }
    fn val_dataloader(&self) -> DataLoader<Sample> {
        DataLoader::new(InMemoryDataset::new(self.samples[..2].to_vec()), 2)
    }
    fn test_dataloader(&self) -> DataLoader<Sample> {
        DataLoader::new(InMemoryDataset::new(self.samples[..3].to_vec()), 2)
    }
    fn predict_dataloader(&self) -> fulmen::Result<Option<DataLoader<Sample>>> {
        Ok(Some(DataLoader::new(
            InMemoryDataset::new(self.samples.clone()),
            3,
        )))
    }
}

fn trainer(dir: &std::path::Path, precision: &str) -> Trainer {
    let builder = quiet::trainer().precision(precision.parse().unwrap());
    builder.max_epochs(2).default_root_dir(dir).build().unwrap()
}

fn served() -> Served<f32, Cpu> {
    let mut model = Served::new();
    model.samples = (0..4)
        .map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()))
        .collect();
    model
}

#[test]
fn every_stage_runs_on_the_modules_own_loaders_in_every_precision() {
    for precision in ["32-true", "64-true"] {
        let dir = tempfile::tempdir().unwrap();
        let mut model = served();
        let mut own = FromModule::of(&model);
        let mut trainer = trainer(dir.path(), precision);
        trainer.fit(&mut model, &mut own).unwrap();
        let metrics = trainer.callback_metrics();
        assert!(metrics.contains_key("train_loss") && metrics.contains_key("val_loss"));
        assert_eq!(
            trainer.global_step(),
            4,
            "{precision}: 2 epochs of 2 batches"
        );
        trainer.validate(&mut model, &mut own).unwrap();
        let tested = trainer.test(&mut model, &mut own).unwrap();
        assert!(tested.contains_key("test_loss"), "{precision}");
        let predictions = trainer.predict(&mut model, &mut own).unwrap();
        assert_eq!(predictions, [3, 1], "{precision}: batches of 3");
        // Once per stage, on the module the stage ran: its count came back from each copy.
        assert_eq!(model.prepared, 4, "{precision}");
    }
}

/// Serves validation data alone.
#[lightning_module]
struct ValidatesOnly {
    layer: Linear<2, 2>,
}

#[lightning_module]
impl ValidatesOnly {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn validation_step(&mut self, _batch: ClassBatch<2, 2, E, D>, _ctx: &mut StepContext<E, D>) {}
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
    fn val_dataloader(&self) -> DataLoader<Sample> {
        let each = (0..2).map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()));
        DataLoader::new(InMemoryDataset::new(each.collect()), 2)
    }
}

#[test]
fn a_stage_whose_loader_the_module_does_not_serve_is_refused_by_its_name() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = ValidatesOnly::<f32, Cpu>::new();
    let mut own = FromModule::of(&model);
    let mut trainer = trainer(dir.path(), "32-true");
    trainer.validate(&mut model, &mut own).unwrap();
    let err = trainer.fit(&mut model, &mut own).unwrap_err().to_string();
    assert!(err.contains("the module's `train_dataloader`"), "{err}");
}

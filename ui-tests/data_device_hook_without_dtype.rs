use fulmen::prelude::*;

#[lightning_module]
pub struct Net {
    layer: Linear<4, 3>,
}

#[lightning_module]
impl Net {
    fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

#[data_module]
pub struct Data {}

#[data_module]
impl Data {
    fn train_dataloader(&self) -> DataLoader<([f32; 4], Class<3>)> {
        DataLoader::new(InMemoryDataset::new(Vec::new()), 1)
    }
    // Labels alone on the device: nothing fixes the run's dtype `E`.
    fn on_after_batch_transfer(&mut self, batch: Labels<3, D>, _dataloader_idx: usize) -> Labels<3, D> {
        batch
    }
}

fn main() {
    let mut trainer = Trainer::builder().build().unwrap();
    let _ = trainer.fit(&mut Net::new(), &mut Data::new());
}

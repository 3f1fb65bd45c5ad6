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
    // The logits stay tensors of the run's dtype and device: `predict` cannot hand them back.
    fn predict_step(&mut self, x: Tensor<(usize, Const<4>), E, D>, _ctx: &mut StepContext<E, D>) -> Tensor<(usize, Const<3>), E, D> {
        self.layer.forward(x)
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

fn main() -> fulmen::Result<()> {
    let mut model = Net::new();
    let rows = DataLoader::new(InMemoryDataset::new(vec![[0.0f32; 4]]), 1);
    Trainer::builder().build()?.predict_loader(&mut model, rows)?;
    Ok(())
}

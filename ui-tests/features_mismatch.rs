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
pub struct Flowers {
    batch_size: usize,
}

#[data_module]
impl Flowers {
    fn train_dataloader(&self) -> DataLoader<([f32; 5], Class<3>)> {
        DataLoader::new(InMemoryDataset::new(vec![([0.0; 5], Class::new(0).unwrap())]), self.batch_size)
    }
}

fn main() -> fulmen::Result<()> {
    let mut model = Net::new();
    let mut dm = Flowers { batch_size: 4 };
    Trainer::builder().build()?.fit(&mut model, &mut dm)
}

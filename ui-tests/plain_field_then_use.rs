// One mistake in the struct (a plain value marked as nothing), then the module's impl and its
// use as any other: the only error is the macro's.
use fulmen::prelude::*;

#[lightning_module]
pub struct Net {
    layer: Linear<4, 3>,
    lr: f64,
}

#[lightning_module]
impl Net {
    fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(self.lr)
    }
}

fn main() -> fulmen::Result<()> {
    let data = vec![([0.0f32; 4], Class::<3>::new(1).expect("a class")); 8];
    let loader = DataLoader::new(InMemoryDataset::new(data), 4);
    let mut model = Net::new();
    Trainer::builder().max_epochs(1).build()?.fit_loaders(&mut model, loader, None)
}

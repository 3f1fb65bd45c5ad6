use fulmen::metrics::ConfusionMatrix;
use fulmen::prelude::*;

#[lightning_module]
pub struct Net {
    layer: Linear<4, 3>,
    #[metric(ConfusionMatrix::multiclass(3))]
    confusion: ConfusionMatrix,
}

#[lightning_module]
impl Net {
    fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn validation_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> fulmen::Result<()> {
        self.confusion.update(&self.layer.forward(x), &y)?;
        ctx.log("confusion", &self.confusion);
        Ok(())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

fn main() {}

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
    fn validation_step(&mut self, (x, _y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) {
        ctx.log("val_mean", self.layer.forward(x).mean());
    }
    // The evaluation loaders give both steps one batch type.
    fn test_step(&mut self, x: Tensor<(usize, Const<4>), E, D>, ctx: &mut StepContext<E, D>) {
        ctx.log("test_mean", self.layer.forward(x).mean());
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

fn main() {}

use fulmen::prelude::*;

#[lightning_module]
pub struct Net {
    layer: Linear<4, 3>,
}

#[lightning_module]
impl Net {
    // Without `#[lightning_module(manual_optimization)]` the trainer does the backward.
    fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
        let loss = cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot());
        let again = loss.retaped::<OwnedTape<E, D>>();
        ctx.manual_backward(loss, self).ok();
        again
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

fn main() {}

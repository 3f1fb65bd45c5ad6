use fulmen::prelude::*;

#[lightning_module]
pub struct Net {
    layer: Linear<4, 3>,
}

#[lightning_module]
impl Net {
    // Automatic optimization differentiates the loss the step returns: a number will not do.
    fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> f64 {
        let loss = cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot());
        loss.log_value()
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

fn main() {}

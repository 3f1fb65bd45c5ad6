use fulmen::prelude::*;

#[lightning_module]
pub struct Deep {
    body: (
        Linear<4, 16>,
        ReLU,
        Linear<16, 16>,
        ReLU,
        Linear<16, 16>,
        ReLU,
        Linear<16, 3>,
    ),
}

#[lightning_module]
impl Deep {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.body.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

fn main() {
    let _ = Deep::new();
}

use fulmen::prelude::*;

// The Iris example's `forward` (`&self`, any tape) on a model that holds batch norm.
#[lightning_module]
pub struct Net {
    conv: fulmen::layers::Conv2DNoBias<3, 8, 3, 1, 1>,
    bn: BatchNorm2D<8>,
    pool: fulmen::layers::AdaptiveAvgPool2D<1, 1>,
    head: (fulmen::layers::Flatten<8>, Linear<8, 10>),
}

#[lightning_module]
impl Net {
    fn forward<T: Tape<E, D>>(
        &self,
        x: Tensor<(usize, Const<3>, usize, usize), E, D, T>,
    ) -> Tensor<(usize, Const<10>), E, D, T> {
        self.head.forward(self.pool.forward(self.bn.forward(self.conv.forward(x))))
    }
    fn training_step(
        &mut self,
        (x, y): fulmen::data::ImageBatch<3, 10, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

fn main() {}

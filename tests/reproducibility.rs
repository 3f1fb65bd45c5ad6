//! With `seed_everything`, two runs give bitwise-identical weights (this file holds one test,
//! so no other test draws from the global seed stream meanwhile).

use fulmen::prelude::*;

#[lightning_module]
struct Net {
    l1: Linear<4, 8>,
    l2: Linear<8, 3>,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let logits = self.l2.forward(self.l1.forward(ctx.trace(x)).relu());
        cross_entropy_with_logits_loss(logits, y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.05).momentum(0.9)
    }
}

fn train(seed: u64) -> Vec<f32> {
    seed_everything(seed);
    let mut model = Net::new();
    let loader = DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 16)
        .shuffle(true)
        .num_workers(2);
    let mut trainer = Trainer::builder()
        .max_epochs(3)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .build()
        .unwrap();
    trainer.fit_loaders(&mut model, loader, None).unwrap();
    [
        model.l1.weight.as_vec(),
        model.l1.bias.as_vec(),
        model.l2.weight.as_vec(),
        model.l2.bias.as_vec(),
    ]
    .concat()
}

#[test]
fn same_seed_same_weights_other_seed_other_weights() {
    let a = train(7);
    let b = train(7);
    assert_eq!(
        a.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        b.iter().map(|v| v.to_bits()).collect::<Vec<_>>()
    );
    let c = train(8);
    assert_ne!(a, c);
}

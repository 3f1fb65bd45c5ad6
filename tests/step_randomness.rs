//! Every training step draws its random numbers (dropout, augmentation on the batch's device)
//! from a stream of its own, seeded from the run's seed and the step: in every precision the
//! draws differ from step to step, and a run from the same seed draws them again. (This file
//! holds one test: nothing else draws from the global seed stream meanwhile.)

use std::sync::Mutex;

use fulmen::prelude::*;

/// What each training step drew from its batch's device.
static DRAWS: Mutex<Vec<u64>> = Mutex::new(Vec::new());

#[lightning_module]
struct Net {
    l1: Linear<4, 3>,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let draw = fulmen::dfdx::tensor::RandomU64::random_u64(x.device());
        DRAWS.lock().unwrap_or_else(|p| p.into_inner()).push(draw);
        cross_entropy_with_logits_loss(self.l1.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.05)
    }
}

/// The draws of a run of 2 epochs of 4 batches from `seed`, in `precision`.
fn draws(seed: u64, precision: &str) -> Vec<u64> {
    DRAWS.lock().unwrap_or_else(|p| p.into_inner()).clear();
    seed_everything(seed);
    let mut model = Net::new();
    let data = fulmen::data::iris::bundled().into_iter().take(64).collect();
    let loader = DataLoader::new(InMemoryDataset::new(data), 16).shuffle(true);
    let mut trainer = Trainer::builder()
        .max_epochs(2)
        .precision(precision.parse().expect("a precision"))
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()
        .expect("valid settings");
    trainer.fit_loaders(&mut model, loader, None).expect("fit");
    let drawn = DRAWS.lock().unwrap_or_else(|p| p.into_inner()).clone();
    drawn
}

#[test]
fn each_step_draws_its_own_numbers_and_a_rerun_draws_them_again() {
    for precision in ["32-true", "64-true", "16-mixed", "16-true"] {
        let first = draws(3, precision);
        assert_eq!(first.len(), 8, "{precision}: one draw per step");
        let mut distinct = first.clone();
        distinct.sort();
        distinct.dedup();
        assert_eq!(distinct.len(), 8, "{precision}: the steps drew {first:?}");
        assert_eq!(
            first,
            draws(3, precision),
            "{precision}: a rerun from the same seed"
        );
    }
}

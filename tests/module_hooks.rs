//! What the module's own hooks do (their order is `tests/hook_order.rs`'s): `configure_model`
//! prepares the layers of each stage, and the evaluation-mode hooks swap the weights a loop
//! evaluates with and back.

use fulmen::prelude::*;

type Sample = ([f32; 2], Class<2>);

fn loader(n: usize) -> DataLoader<Sample> {
    let each = (0..n).map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()));
    DataLoader::new(InMemoryDataset::new(each.collect()), 2)
}

fn trainer(dir: &std::path::Path) -> Trainer {
    Trainer::builder()
        .max_epochs(2)
        .no_logger()
        .default_root_dir(dir)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .enable_checkpointing(false)
        .build()
        .unwrap()
}

/// Evaluates with its weights zeroed (as a module evaluating an average swaps it in), and
/// starts every stage from a bias of 1 the first time (`configure_model`).
#[lightning_module]
struct Swapping {
    layer: Linear<2, 2>,
    /// The training weights while a loop evaluates.
    #[skip]
    kept: Option<Vec<f32>>,
    /// The sum of the weights each validation batch saw.
    #[skip]
    seen: Vec<f32>,
    #[skip]
    configured: usize,
}

#[lightning_module]
impl Swapping {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn validation_step(&mut self, _batch: ClassBatch<2, 2, E, D>, _ctx: &mut StepContext<E, D>) {
        let sum = self
            .layer
            .weight
            .as_vec()
            .iter()
            .map(|v| v.to_f32().unwrap_or(f32::NAN))
            .sum();
        self.seen.push(sum);
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.5)
    }
    fn configure_model(&mut self, _trainer: &mut TrainerView) {
        if self.configured == 0 {
            let ones = vec![E::one(); 2];
            self.layer.bias.copy_from(&ones);
        }
        self.configured += 1;
    }
    fn on_validation_model_eval(&mut self, _trainer: &mut TrainerView) {
        let weights: Vec<E> = self.layer.weight.as_vec();
        self.kept = Some(
            weights
                .iter()
                .map(|v| v.to_f32().unwrap_or(f32::NAN))
                .collect(),
        );
        self.layer.weight.copy_from(&[E::zero(); 4]);
    }
    fn on_validation_model_train(&mut self, _trainer: &mut TrainerView) {
        if let Some(kept) = self.kept.take() {
            let back: Vec<E> = kept.iter().map(|&v| E::from_f32(v).unwrap()).collect();
            self.layer.weight.copy_from(&back);
        }
    }
}

#[test]
fn validation_sees_the_weights_its_hooks_swap_in_and_training_goes_on_with_its_own() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Swapping::<f32, Cpu>::new();
    let before = model.layer.weight.as_vec();
    let mut trainer = trainer(dir.path());
    trainer
        .fit_loaders(&mut model, loader(4), Some(loader(2)))
        .unwrap();
    // The sanity check and two epochs' validation: each saw the zeroed weights.
    assert_eq!(model.seen, [0.0; 3]);
    assert_ne!(
        model.layer.weight.as_vec(),
        before,
        "training went on with its own"
    );
    assert!(model.kept.is_none(), "each swap was undone");
    assert_eq!(model.configured, 1, "fit configured the model once");
    trainer.validate_loader(&mut model, loader(2)).unwrap();
    assert_eq!(model.configured, 2, "and validate once more");
}

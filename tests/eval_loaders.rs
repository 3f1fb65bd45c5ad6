//! Several validation and test loaders (Lightning's list of `val_dataloader`s): each step
//! knows its loader (`ctx.dataloader_idx()`), and each loader's values are reduced apart,
//! under names ending in `/dataloader_idx_N`; one loader keeps the plain names. The
//! evaluation loaders may yield samples of their own type, into a batch of their own.

#[path = "support/quiet.rs"]
mod quiet;

use std::cell::RefCell;
use std::rc::Rc;

use fulmen::prelude::*;

type Sample = ([f32; 1], [f32; 1]);

/// `n` samples whose target is `value`.
fn constant(n: usize, value: f32) -> DataLoader<Sample> {
    DataLoader::new(InMemoryDataset::new(vec![([0.0], [value]); n]), 2)
}

#[data_module]
struct Two {
    several: bool,
}

#[data_module]
impl Two {
    fn train_dataloader(&self) -> DataLoader<Sample> {
        constant(4, 0.0)
    }
    fn val_dataloader(&self) -> Vec<DataLoader<Sample>> {
        match self.several {
            true => vec![constant(4, 1.0), constant(6, 3.0)],
            false => vec![constant(4, 1.0)],
        }
    }
    fn test_dataloader(&self) -> [DataLoader<Sample>; 2] {
        [constant(2, 2.0), constant(2, 5.0)]
    }
}

#[lightning_module]
struct Net {
    layer: Linear<1, 1>,
    /// The loader index of every evaluation step.
    #[skip]
    seen: Rc<RefCell<Vec<usize>>>,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<1, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        mse_loss(self.layer.forward(ctx.trace(x)), y)
    }
    fn validation_step(
        &mut self,
        (_, y): RegressionBatch<1, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) {
        self.seen.borrow_mut().push(ctx.dataloader_idx());
        ctx.log("target", y.mean());
    }
    fn test_step(&mut self, (_, y): RegressionBatch<1, 1, E, D>, ctx: &mut StepContext<E, D>) {
        self.seen.borrow_mut().push(ctx.dataloader_idx());
        ctx.log("target", y.mean());
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.0)
    }
}

#[test]
fn each_loader_is_reduced_apart_under_its_index() {
    let mut net = Net::new();
    let mut trainer = quiet::trainer().max_epochs(1).build().unwrap();
    let metrics = trainer.validate(&mut net, &mut Two::new(true)).unwrap();
    assert_eq!(metrics.get("target/dataloader_idx_0"), Some(&1.0));
    assert_eq!(metrics.get("target/dataloader_idx_1"), Some(&3.0));
    assert!(!metrics.contains_key("target"));
    // 2 batches of the first, then 3 of the second.
    assert_eq!(*net.seen.borrow(), [0, 0, 1, 1, 1]);

    net.seen.borrow_mut().clear();
    let metrics = trainer.test(&mut net, &mut Two::new(true)).unwrap();
    assert_eq!(metrics.get("target/dataloader_idx_1"), Some(&5.0));
    assert_eq!(*net.seen.borrow(), [0, 1]);

    // In fit, each epoch's validation covers both, and callbacks see both.
    trainer.fit(&mut net, &mut Two::new(true)).unwrap();
    let seen = trainer.callback_metrics();
    assert_eq!(seen.get("target/dataloader_idx_1"), Some(&3.0));

    // One loader: the plain name.
    let metrics = trainer.validate(&mut net, &mut Two::new(false)).unwrap();
    assert_eq!(metrics.get("target"), Some(&1.0));
}

#[lightning_module]
struct Forked {
    layer: Linear<1, 1>,
}

#[lightning_module]
impl Forked {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<1, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        mse_loss(self.layer.forward(ctx.trace(x)), y)
    }
    fn validation_step(
        &mut self,
        (_, y): RegressionBatch<1, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) {
        ctx.log("target", y.mean()).on_step(true).on_epoch(true);
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.0)
    }
}

#[test]
fn a_value_logged_per_step_and_epoch_keeps_the_loader_suffix_last() {
    let mut trainer = quiet::trainer().max_epochs(1).build().unwrap();
    let metrics = trainer
        .validate(&mut Forked::new(), &mut Two::new(true))
        .unwrap();
    // Lightning's forked name: `target_epoch/dataloader_idx_1`.
    assert_eq!(
        metrics.get("target_epoch/dataloader_idx_1"),
        Some(&3.0),
        "{metrics:?}"
    );
}

/// The batch and loader of every validation batch's hook.
struct Seen(Rc<RefCell<Vec<(usize, usize)>>>);

impl Callback for Seen {
    fn on_validation_batch_start(&mut self, trainer: &mut TrainerView, batch_idx: usize) {
        self.0
            .borrow_mut()
            .push((batch_idx, trainer.dataloader_idx()));
    }
}

#[test]
fn the_batch_hooks_know_the_loader() {
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut trainer = quiet::trainer()
        .callback(Seen(seen.clone()))
        .build()
        .unwrap();
    trainer
        .validate(&mut Net::new(), &mut Two::new(true))
        .unwrap();
    // Each loader's batches count from 0.
    assert_eq!(*seen.borrow(), [(0, 0), (1, 0), (0, 1), (1, 1), (2, 1)]);
}

/// Trains on class labels, evaluates on rows whose labels arrive as plain indices (another
/// sample type, another batch type).
#[lightning_module]
struct Classes {
    layer: Linear<2, 2>,
}

#[lightning_module]
impl Classes {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn validation_step(
        &mut self,
        (x, y): (Tensor<(usize, Const<2>), E, D>, Vec<usize>),
        ctx: &mut StepContext<E, D>,
    ) {
        ctx.log("val_right", self.right(x, &y));
    }
    fn test_step(
        &mut self,
        (x, y): (Tensor<(usize, Const<2>), E, D>, Vec<usize>),
        ctx: &mut StepContext<E, D>,
    ) {
        ctx.log("test_right", self.right(x, &y));
    }
    /// The share of rows whose larger logit is their class.
    fn right(&self, x: Tensor<(usize, Const<2>), E, D>, y: &[usize]) -> f64 {
        let logits = self.layer.forward(x).as_vec();
        let right = logits
            .chunks(2)
            .zip(y)
            .filter(|(l, &c)| usize::from(l[1] > l[0]) == c)
            .count();
        right as f64 / y.len() as f64
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.5)
    }
}

fn point(i: usize) -> ([f32; 2], usize) {
    let x = [(i as f32 * 0.9).sin(), (i as f32 * 0.4).cos()];
    (x, usize::from(x[0] > x[1]))
}

#[data_module]
struct Split {}

#[data_module]
impl Split {
    fn train_dataloader(&self) -> DataLoader<([f32; 2], Class<2>)> {
        let rows = (0..40)
            .map(point)
            .map(|(x, c)| (x, Class::new(c).unwrap()))
            .collect();
        DataLoader::new(InMemoryDataset::new(rows), 8)
    }
    fn val_dataloader(&self) -> DataLoader<([f32; 2], usize)> {
        DataLoader::new(InMemoryDataset::new((40..60).map(point).collect()), 5)
    }
    fn test_dataloader(&self) -> DataLoader<([f32; 2], usize)> {
        DataLoader::new(InMemoryDataset::new((60..67).map(point).collect()), 5)
    }
}

#[test]
fn evaluation_loaders_yield_samples_of_their_own_type() {
    let mut net = Classes::new();
    let mut trainer = quiet::trainer().max_epochs(20).build().unwrap();
    trainer.fit(&mut net, &mut Split::new()).unwrap();
    let right = trainer.callback_metrics()["val_right"];
    assert!(right >= 0.8, "the classes are learned: {right}");
    let validated = trainer.validate(&mut net, &mut Split::new()).unwrap();
    assert_eq!(
        validated["val_right"], right,
        "the same weights, the same rows"
    );
    let tested = trainer.test(&mut net, &mut Split::new()).unwrap();
    assert!(tested["test_right"] >= 0.7, "{tested:?}");
}

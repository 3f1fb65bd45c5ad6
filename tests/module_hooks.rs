//! What the module's own hooks do (their order is `tests/hook_order.rs`'s): `configure_model`
//! prepares the layers of each stage, and the evaluation-mode hooks swap the weights a loop
//! evaluates with and back.

use fulmen::prelude::*;

type Sample = ([f32; 2], Class<2>);

/// Weights every run of a comparison starts from.
const START: [f32; 4] = [0.3, -0.2, 0.1, 0.4];

fn loader(n: usize) -> DataLoader<Sample> {
    let each = (0..n).map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()));
    DataLoader::new(InMemoryDataset::new(each.collect()), 2)
}

fn trainer(dir: &std::path::Path) -> Trainer {
    in_precision(dir, "32-true")
}

fn in_precision(dir: &std::path::Path, precision: &str) -> Trainer {
    Trainer::builder()
        .precision(precision.parse().unwrap())
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

/// What `Stepping`'s optimization hooks do.
#[derive(Default, Clone, Copy, PartialEq)]
enum Plan {
    /// The defaults.
    #[default]
    Defaults,
    /// After each step, the next step's rate: 0.01 × steps done.
    WarmUp,
    /// This step's rate 0 (the weights stay, the steps count).
    RateZero,
    /// No step.
    Skip,
    /// Clipped to 0 by value (the weights stay).
    ClipToZero,
    /// Clipped at NaN.
    ClipAtNan,
    /// The scheduler held back for the first two steps.
    HoldScheduler,
    /// Gradients never zeroed: each step's add to all before.
    NeverZero,
}

#[lightning_module]
struct Stepping {
    layer: Linear<2, 2>,
    #[skip]
    plan: Plan,
    /// The first optimizer's rate at each training batch's start.
    #[skip]
    rates: Vec<f64>,
}

#[lightning_module]
impl Stepping {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        let sgd = Optim::sgd(0.1);
        match self.plan {
            Plan::HoldScheduler => sgd.scheduler(
                fulmen::optim::LrScheduler::from(fulmen::optim::StepLR::new(1, 0.5))
                    .interval(fulmen::optim::Interval::Step),
            ),
            _ => sgd,
        }
    }
    fn on_train_batch_start(&mut self, trainer: &mut TrainerView, _batch_idx: usize) {
        self.rates.push(trainer.optimizers()[0].groups[0].0);
    }
    fn optimizer_step(
        &mut self,
        trainer: &mut TrainerView,
        _epoch: usize,
        _batch_idx: usize,
        optimizer: &mut fulmen::optim::OptimizerStep,
    ) {
        match self.plan {
            Plan::Skip => {}
            Plan::RateZero => {
                optimizer.set_lr(0.0);
                optimizer.step();
            }
            Plan::WarmUp => {
                optimizer.step();
                optimizer.set_lr(0.01 * (trainer.global_step() + 1) as f64);
            }
            _ => optimizer.step(),
        }
    }
    fn optimizer_zero_grad(
        &mut self,
        _trainer: &mut TrainerView,
        _epoch: usize,
        _batch_idx: usize,
        optimizer: &mut fulmen::optim::ZeroGrad,
    ) {
        if self.plan != Plan::NeverZero {
            optimizer.zero_grad();
        }
    }
    fn configure_gradient_clipping(
        &mut self,
        _trainer: &mut TrainerView,
        clipping: &mut fulmen::optim::GradientClipping,
    ) {
        match self.plan {
            Plan::ClipToZero => clipping.clip_gradients(0.0, fulmen::optim::ClipAlgorithm::Value),
            Plan::ClipAtNan => {
                clipping.clip_gradients(f64::NAN, fulmen::optim::ClipAlgorithm::Norm)
            }
            _ => {}
        }
    }
    fn lr_scheduler_step(
        &mut self,
        trainer: &mut TrainerView,
        scheduler: &mut fulmen::optim::SchedulerStep,
    ) {
        if self.plan != Plan::HoldScheduler || trainer.global_step() > 2 {
            scheduler.step();
        }
    }
}

/// `plan` fitted for 2 epochs of 2 batches: the rates at each batch's start, whether the
/// weights changed, and the steps counted (or the error).
fn stepped(plan: Plan) -> fulmen::Result<(Vec<f64>, bool, usize)> {
    let (rates, before, after, steps) = fitted(plan)?;
    Ok((rates, before != after, steps))
}

/// A fit's rates at each batch's start, weights before and after, and steps.
type Fitted = (Vec<f64>, Vec<f32>, Vec<f32>, usize);

/// `plan` fitted as [`stepped`] does, from weights of seed 0.
fn fitted(plan: Plan) -> fulmen::Result<Fitted> {
    fitted_in(plan, "32-true")
}

fn fitted_in(plan: Plan, precision: &str) -> fulmen::Result<Fitted> {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Stepping::<f32, Cpu>::new();
    model.plan = plan;
    // The same start in every run (the global seed is shared with the tests beside it).
    model.layer.weight.copy_from(&START);
    model.layer.bias.copy_from(&[0.0, 0.0]);
    let before = model.layer.weight.as_vec();
    let mut trainer = in_precision(dir.path(), precision);
    trainer.fit_loaders(&mut model, loader(4), None)?;
    let after = model.layer.weight.as_vec();
    Ok((model.rates, before, after, trainer.global_step()))
}

#[test]
fn optimizer_step_sets_the_rates_of_this_step_or_the_next_and_may_skip_it() {
    let (rates, changed, steps) = stepped(Plan::Defaults).unwrap();
    assert_eq!((rates, changed, steps), (vec![0.1; 4], true, 4));
    let (rates, changed, steps) = stepped(Plan::WarmUp).unwrap();
    assert_eq!(
        rates,
        [0.1, 0.01, 0.02, 0.03],
        "set after the step: the next's"
    );
    assert_eq!((changed, steps), (true, 4));
    let (_, changed, steps) = stepped(Plan::RateZero).unwrap();
    assert_eq!((changed, steps), (false, 4), "set before the step: its own");
    let (_, changed, steps) = stepped(Plan::Skip).unwrap();
    assert_eq!((changed, steps), (false, 0), "no step, none counted");
}

#[test]
fn configure_gradient_clipping_chooses_the_clipping_and_refuses_a_bad_value() {
    let (_, changed, steps) = stepped(Plan::ClipToZero).unwrap();
    assert_eq!((changed, steps), (false, 4));
    let err = stepped(Plan::ClipAtNan).unwrap_err().to_string();
    assert!(
        err.contains("configure_gradient_clipping") && err.contains("NaN"),
        "{err}"
    );
}

#[test]
fn lr_scheduler_step_may_hold_a_scheduler_back() {
    let (rates, _, _) = stepped(Plan::HoldScheduler).unwrap();
    assert_eq!(rates, [0.1, 0.1, 0.1, 0.05]);
}

#[test]
fn optimizer_zero_grad_may_keep_the_last_windows_gradients() {
    for precision in ["32-true", "16-mixed"] {
        let (_, start, zeroed, _) = fitted_in(Plan::Defaults, precision).unwrap();
        let (_, same_start, kept, steps) = fitted_in(Plan::NeverZero, precision).unwrap();
        assert_eq!(start, same_start, "one seed, one start");
        assert_eq!(steps, 4);
        assert_ne!(
            kept, zeroed,
            "{precision}: each step added every gradient before it"
        );
    }
}

/// Skips the first step (its `optimizer_step` does not call `step()`), or makes its loss zero.
#[lightning_module]
struct SkipsFirst {
    layer: Linear<2, 2>,
    #[skip]
    zero_loss_instead: bool,
}

#[lightning_module]
impl SkipsFirst {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let first = ctx.batch_idx() == 0 && ctx.current_epoch() == 0;
        let loss = cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot());
        match first && self.zero_loss_instead {
            true => loss * E::zero(),
            false => loss,
        }
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
    fn optimizer_step(
        &mut self,
        _trainer: &mut TrainerView,
        epoch: usize,
        batch_idx: usize,
        optimizer: &mut fulmen::optim::OptimizerStep,
    ) {
        if self.zero_loss_instead || epoch > 0 || batch_idx > 0 {
            optimizer.step();
        }
    }
}

#[test]
fn a_skipped_step_drops_its_gradients() {
    let fit = |zero_loss_instead: bool| {
        let dir = tempfile::tempdir().unwrap();
        let mut model = SkipsFirst::<f32, Cpu>::new();
        model.layer.weight.copy_from(&START);
        model.layer.bias.copy_from(&[0.0, 0.0]);
        model.zero_loss_instead = zero_loss_instead;
        let mut trainer = trainer(dir.path());
        trainer.fit_loaders(&mut model, loader(4), None).unwrap();
        (model.layer.weight.as_vec(), trainer.global_step())
    };
    let (skipped, steps) = fit(false);
    let (zero_step, zero_steps) = fit(true);
    assert_eq!((steps, zero_steps), (3, 4));
    // SGD without momentum or decay: a step of zero gradients moves nothing.
    assert_eq!(
        skipped, zero_step,
        "the skipped batch's gradients reached no later step"
    );
}

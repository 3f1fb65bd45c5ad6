//! Manual optimization (`#[lightning_module(manual_optimization)]`) and several optimizers,
//! each over its own fields, through the public API: a manual step that does what the trainer
//! does trains to the same weights; toggling keeps one optimizer's backward off the other's
//! parameters; a fit with two optimizers and a scheduler resumes exactly; mistakes are named.

#[path = "support/metrics_csv.rs"]
mod metrics_csv;
#[path = "support/quiet.rs"]
mod quiet;
#[path = "support/serial.rs"]
mod serial;

use fulmen::layers::linear::modules::Linear as L;
use std::cell::RefCell;
use std::path::Path;
use std::rc::Rc;

use fulmen::prelude::*;
use fulmen::trainer::Precision;
use fulmen::Manual;

type Sample = ([f32; 2], [f32; 1]);

#[data_module]
struct Data {
    n: usize,
}

#[data_module]
impl Data {
    fn train_dataloader(&self) -> DataLoader<Sample> {
        let samples = (0..self.n)
            .map(|i| {
                let x = [(i as f32 * 0.37).sin(), (i as f32 * 0.11).cos()];
                ([x[0], x[1]], [0.5 * x[0] - 2.0 * x[1] + 0.25])
            })
            .collect();
        DataLoader::new(InMemoryDataset::new(samples), 4).shuffle(true)
    }
}

/// Trained by the trainer.
#[lightning_module]
struct Auto {
    a: Linear<2, 3>,
    b: Linear<3, 1>,
}

#[lightning_module]
impl Auto {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        mse_loss(self.b.forward(self.a.forward(ctx.trace(x)).tanh()), y)
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1).momentum(0.9)
    }
}

/// The same model, stepping its optimizer itself as the trainer would.
#[lightning_module]
struct ByHand {
    a: Linear<2, 3>,
    b: Linear<3, 1>,
}

#[lightning_module(manual_optimization)]
impl ByHand {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<Tensor<Rank0, E, D>> {
        let [opt] = ctx.optimizers()?;
        let loss = mse_loss(self.b.forward(self.a.forward(ctx.trace(x)).tanh()), y);
        let logged = loss.retaped::<NoneTape>();
        ctx.manual_backward(loss, self)?;
        ctx.step(opt, self)?;
        ctx.zero_grad(opt, self)?;
        Ok(logged)
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1).momentum(0.9)
    }
}

fn weights<E: FloatDtype, D: TrainDevice<E>>(a: &L<2, 3, E, D>, b: &L<3, 1, E, D>) -> Vec<E> {
    [
        a.weight.as_vec(),
        a.bias.as_vec(),
        b.weight.as_vec(),
        b.bias.as_vec(),
    ]
    .concat()
}

#[test]
fn a_manual_step_that_does_what_the_trainer_does_trains_the_same_weights() {
    let _one = serial::one_at_a_time();
    seed_everything(7);
    let mut auto = Auto::new();
    seed_everything(7);
    let mut by_hand = ByHand::new();
    let initial = weights(&auto.a, &auto.b);
    assert_eq!(initial, weights(&by_hand.a, &by_hand.b));
    for model in [0, 1] {
        seed_everything(11);
        let mut trainer = quiet::trainer().max_epochs(3).build().unwrap();
        let mut dm = Data::new(24);
        match model {
            0 => trainer.fit(&mut auto, &mut dm).unwrap(),
            _ => trainer.fit(&mut by_hand, &mut dm).unwrap(),
        }
        // 6 batches an epoch, one optimizer step each.
        assert_eq!(trainer.global_step(), 18);
    }
    let (got, want) = (weights(&by_hand.a, &by_hand.b), weights(&auto.a, &auto.b));
    // Trained: not the weights it started from.
    assert_ne!(got, initial);
    assert_eq!(got, want);
}

/// `Auto`'s loss times `factor`, stepped by hand: a large factor overflows f16 once scaled.
#[lightning_module]
struct Scaled {
    a: Linear<2, 3>,
    b: Linear<3, 1>,
    #[hparam]
    factor: f64,
}

#[lightning_module(manual_optimization)]
impl Scaled {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let [opt] = ctx.optimizers()?;
        let loss = mse_loss(self.b.forward(self.a.forward(ctx.trace(x)).tanh()), y);
        ctx.manual_backward(loss * E::from_f64(self.factor).unwrap(), self)?;
        ctx.step(opt, self)?;
        ctx.zero_grad(opt, self)
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1 / self.factor).momentum(0.9)
    }
}

/// The same, stepped by the trainer.
#[lightning_module]
struct ScaledAuto {
    a: Linear<2, 3>,
    b: Linear<3, 1>,
    #[hparam]
    factor: f64,
}

#[lightning_module]
impl ScaledAuto {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        mse_loss(self.b.forward(self.a.forward(ctx.trace(x)).tanh()), y)
            * E::from_f64(self.factor).unwrap()
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1 / self.factor).momentum(0.9)
    }
}

/// The loss scale after each batch.
struct Scales(Rc<RefCell<Vec<f64>>>);
impl Callback for Scales {
    fn on_train_batch_end(&mut self, t: &mut TrainerView, _loss: f64, _batch: usize) {
        self.0.borrow_mut().extend(t.loss_scale());
    }
}

#[test]
fn in_16_mixed_a_manual_step_scales_skips_and_trains_as_the_trainer_does() {
    let _one = serial::one_at_a_time();
    // ×1 trains at (about) the initial scale; ×300 overflows f16 once scaled, so steps are
    // skipped and the scale backs off until the scaled loss fits.
    for factor in [1.0, 300.0] {
        let mut runs = Vec::new();
        for by_hand in [false, true] {
            seed_everything(7);
            let mut auto = ScaledAuto::new(factor);
            seed_everything(7);
            let mut manual = Scaled::new(factor);
            seed_everything(11);
            let scales = Rc::new(RefCell::new(Vec::new()));
            let mut trainer = quiet::trainer()
                .max_epochs(3)
                .precision(Precision::Mixed16)
                .callback(Scales(scales.clone()))
                .build()
                .unwrap();
            let got = match by_hand {
                false => {
                    trainer.fit(&mut auto, &mut Data::new(24)).unwrap();
                    weights(&auto.a, &auto.b)
                }
                true => {
                    trainer.fit(&mut manual, &mut Data::new(24)).unwrap();
                    weights(&manual.a, &manual.b)
                }
            };
            // Skipped steps count.
            assert_eq!(trainer.global_step(), 18);
            assert!(got.iter().all(|v| v.is_finite()));
            let scales = scales.borrow().clone();
            runs.push((got, scales));
        }
        assert_eq!(
            runs[0], runs[1],
            "factor {factor}: the same weights and scales"
        );
        let scales = &runs[1].1;
        assert_eq!(scales.len(), 18);
        match factor {
            1.0 => assert!(scales[17] >= 16384.0, "{scales:?}"),
            _ => assert!(scales[17] < 1024.0, "{scales:?}"),
        }
    }
}

/// Two optimizers, one per field; `toggle` says whether the first's backward is toggled.
#[lightning_module]
struct Two {
    a: Linear<2, 3>,
    b: Linear<3, 1>,
    #[hparam]
    toggle: bool,
}

#[lightning_module(manual_optimization)]
impl Two {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D, Manual>,
    ) -> fulmen::Result<()> {
        let [opt_a, opt_b] = ctx.optimizers()?;
        if self.toggle {
            ctx.toggle_optimizer(opt_a);
        }
        let loss = mse_loss(self.b.forward(self.a.forward(ctx.trace(x)).tanh()), y);
        ctx.log("a_loss", &loss);
        ctx.manual_backward(loss, self)?;
        ctx.step(opt_a, self)?;
        ctx.zero_grad(opt_a, self)?;
        ctx.untoggle_optimizer(opt_a);
        // `b` steps on what the first backward left it: nothing, when toggled.
        ctx.step(opt_b, self)
    }
    fn configure_optimizers(&self) -> [Optim; 2] {
        [Optim::sgd(0.1).params(["a"]), Optim::sgd(0.1).params(["b"])]
    }
}

fn train_two(toggle: bool, precision: Precision) -> (Two<f32, Cpu>, Two<f32, Cpu>) {
    seed_everything(3);
    let before = Two::new(toggle);
    seed_everything(3);
    let mut model = Two::new(toggle);
    let mut trainer = quiet::trainer()
        .max_epochs(1)
        .precision(precision)
        .build()
        .unwrap();
    trainer.fit(&mut model, &mut Data::new(8)).unwrap();
    // Two optimizer steps a batch, each counted.
    assert_eq!(trainer.global_step(), 4);
    (before, model)
}

#[test]
fn a_toggled_optimizers_backward_leaves_the_other_optimizers_parameters_alone() {
    let _one = serial::one_at_a_time();
    for precision in [Precision::F32, Precision::Mixed16] {
        let (before, after) = train_two(true, precision);
        assert_ne!(before.a.weight.as_vec(), after.a.weight.as_vec());
        assert_eq!(before.b.weight.as_vec(), after.b.weight.as_vec());
        assert_eq!(before.b.bias.as_vec(), after.b.bias.as_vec());
        // Untoggled, the same backward reaches `b` (so the test above can fail).
        let (before, after) = train_two(false, precision);
        assert_ne!(before.b.weight.as_vec(), after.b.weight.as_vec());
    }
}

/// Two Adams, one with a step-interval scheduler, stepped on alternate batches with
/// gradients summed in between (manual accumulation).
#[lightning_module]
struct Resumable {
    a: Linear<2, 3>,
    b: Linear<3, 1>,
}

#[lightning_module(manual_optimization)]
impl Resumable {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let [opt_a, opt_b] = ctx.optimizers()?;
        let loss = mse_loss(self.b.forward(self.a.forward(ctx.trace(x)).tanh()), y);
        ctx.manual_backward(loss, self)?;
        if ctx.batch_idx() % 2 == 1 {
            ctx.clip_gradients(opt_a, self, 0.5, fulmen::optim::ClipAlgorithm::Norm)?;
            ctx.step(opt_a, self)?;
            ctx.step(opt_b, self)?;
            ctx.zero_grad(opt_a, self)?;
            ctx.zero_grad(opt_b, self)?;
        }
        Ok(())
    }
    fn configure_optimizers(&self) -> Vec<Optim> {
        vec![
            Optim::adam(0.05).params(["a"]).scheduler(
                fulmen::optim::LrScheduler::from(fulmen::optim::StepLR::new(2, 0.5))
                    .interval(fulmen::optim::Interval::Step),
            ),
            Optim::adamw(0.02).params(["b"]),
        ]
    }
}

#[test]
fn two_optimizers_with_a_scheduler_resume_exactly_inside_an_accumulation() {
    let _one = serial::one_at_a_time();
    for precision in [Precision::F32, Precision::Mixed16] {
        let dir = tempfile::tempdir().unwrap();
        // 5 batches an epoch: each epoch ends with one batch's gradients not yet stepped on.
        let fit = |model: &mut Resumable<f32, Cpu>, epochs: usize, from: Option<&Path>| {
            seed_everything(5);
            let mut trainer = quiet::trainer()
                .max_epochs(epochs)
                .precision(precision)
                .enable_checkpointing(true)
                .default_root_dir(dir.path())
                .build()
                .unwrap();
            trainer.fit_from(model, &mut Data::new(20), from).unwrap();
        };
        seed_everything(1);
        let mut whole = Resumable::new();
        seed_everything(1);
        let mut resumed = Resumable::new();
        let initial = weights(&whole.a, &whole.b);
        fit(&mut whole, 2, None);
        fit(&mut resumed, 1, None);
        let ckpt = std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("epoch=0"))
            .unwrap();
        fit(&mut resumed, 2, Some(&ckpt));
        assert_ne!(weights(&whole.a, &whole.b), initial, "{precision:?}");
        assert_eq!(
            weights(&whole.a, &whole.b),
            weights(&resumed.a, &resumed.b),
            "{precision:?}"
        );
    }
}

#[test]
fn mistakes_with_optimizers_are_named() {
    let _one = serial::one_at_a_time();
    #[lightning_module]
    struct TwoAuto {
        a: Linear<2, 1>,
    }
    #[lightning_module]
    impl TwoAuto {
        fn training_step(
            &mut self,
            (x, y): RegressionBatch<2, 1, E, D>,
            ctx: &mut StepContext<E, D>,
        ) -> Loss<E, D> {
            mse_loss(self.a.forward(ctx.trace(x)), y)
        }
        fn configure_optimizers(&self) -> [Optim; 2] {
            [Optim::sgd(0.1), Optim::sgd(0.1)]
        }
    }
    let fit_err = |m: &mut dyn FnMut(&mut Trainer) -> fulmen::Result<()>| {
        let mut trainer = quiet::trainer().max_epochs(1).build().unwrap();
        m(&mut trainer).unwrap_err().to_string()
    };
    let e = fit_err(&mut |t| t.fit(&mut TwoAuto::new(), &mut Data::new(8)));
    assert!(
        e.contains("returns 2 optimizers") && e.contains("manual_optimization"),
        "{e}"
    );

    #[lightning_module]
    struct Typo {
        a: Linear<2, 1>,
    }
    #[lightning_module]
    impl Typo {
        fn training_step(
            &mut self,
            (x, y): RegressionBatch<2, 1, E, D>,
            ctx: &mut StepContext<E, D>,
        ) -> Loss<E, D> {
            mse_loss(self.a.forward(ctx.trace(x)), y)
        }
        fn configure_optimizers(&self) -> Optim {
            Optim::sgd(0.1).params(["alpha"])
        }
    }
    let e = fit_err(&mut |t| t.fit(&mut Typo::new(), &mut Data::new(8)));
    assert!(
        e.contains("`alpha` is no field of Typo") && e.contains("its fields are a"),
        "{e}"
    );

    // Asking for three of two.
    #[lightning_module]
    struct Greedy {
        a: Linear<2, 1>,
    }
    #[lightning_module(manual_optimization)]
    impl Greedy {
        fn training_step(
            &mut self,
            _batch: RegressionBatch<2, 1, E, D>,
            ctx: &mut StepContext<E, D>,
        ) -> fulmen::Result<()> {
            let [_, _, _] = ctx.optimizers()?;
            Ok(())
        }
        fn configure_optimizers(&self) -> [Optim; 2] {
            [
                Optim::sgd(0.1).params(["a.weight"]),
                Optim::sgd(0.1).params(["a.bias"]),
            ]
        }
    }
    let e = fit_err(&mut |t| t.fit(&mut Greedy::new(), &mut Data::new(8)));
    assert!(
        e.contains("asks for 3 optimizers") && e.contains("returns 2"),
        "{e}"
    );
    let e = {
        let mut trainer = quiet::trainer()
            .max_epochs(1)
            .accumulate_grad_batches(2)
            .build()
            .unwrap();
        trainer
            .fit(&mut Resumable::new(), &mut Data::new(8))
            .unwrap_err()
            .to_string()
    };
    assert!(e.contains("accumulate_grad_batches"), "{e}");
    let e = {
        let mut trainer = quiet::trainer()
            .max_epochs(1)
            .gradient_clip_val(1.0)
            .build()
            .unwrap();
        trainer
            .fit(&mut Resumable::new(), &mut Data::new(8))
            .unwrap_err()
            .to_string()
    };
    assert!(e.contains("clip_gradients"), "{e}");
}

#[test]
fn the_learning_rate_monitor_logs_every_optimizers_rate() {
    let _one = serial::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let mut trainer = quiet::trainer()
        .max_epochs(1)
        .logger(fulmen::loggers::CsvLogger::new(dir.path(), "lightning_logs").unwrap())
        .callback(fulmen::callbacks::LearningRateMonitor::new())
        .build()
        .unwrap();
    trainer
        .fit(&mut Resumable::new(), &mut Data::new(20))
        .unwrap();
    // Adam's scheduler halves its rate every 2 of its steps (after batches 1 and 3); the
    // monitor logs before each of the 5 batches.
    assert_eq!(
        metrics_csv::column(&dir.path().join("lightning_logs/version_0"), "lr-Adam"),
        [0.05, 0.05, 0.05, 0.05, 0.025]
    );
    assert_eq!(
        metrics_csv::column(&dir.path().join("lightning_logs/version_0"), "lr-AdamW"),
        [0.02; 5]
    );

    // Two of one class: the second is counted.
    let dir = tempfile::tempdir().unwrap();
    quiet::trainer()
        .max_epochs(1)
        .logger(fulmen::loggers::CsvLogger::new(dir.path(), "lightning_logs").unwrap())
        .callback(fulmen::callbacks::LearningRateMonitor::new())
        .build()
        .unwrap()
        .fit(&mut Two::new(true), &mut Data::new(8))
        .unwrap();
    assert_eq!(
        metrics_csv::column(&dir.path().join("lightning_logs/version_0"), "lr-SGD"),
        [0.1]
    );
    assert_eq!(
        metrics_csv::column(&dir.path().join("lightning_logs/version_0"), "lr-SGD-1"),
        [0.1]
    );
}

#[test]
fn a_manual_step_logs_every_n_batches_however_many_steps_it_takes() {
    let _one = serial::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    quiet::trainer()
        .max_epochs(1)
        .log_every_n_steps(2)
        .logger(fulmen::loggers::CsvLogger::new(dir.path(), "lightning_logs").unwrap())
        .build()
        .unwrap()
        .fit(&mut Two::new(true), &mut Data::new(32))
        .unwrap();
    // 8 batches of two optimizer steps each: logged after every second batch (as Lightning
    // counts `_batches_that_stepped`), not every second optimizer step.
    assert_eq!(
        metrics_csv::column(&dir.path().join("lightning_logs/version_0"), "a_loss").len(),
        4
    );
}

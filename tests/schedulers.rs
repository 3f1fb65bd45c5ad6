//! Learning-rate schedulers against PyTorch: `tests/fixtures/schedulers.json` holds the rates
//! (and OneCycleLR's momentum) that torch 2.15's schedulers produce (`schedulers.py` there made
//! it), and the trainer steps a scheduler on its interval and frequency.

use fulmen::callbacks::Mode;
use fulmen::optim::*;
use fulmen::prelude::*;
use fulmen::serde_json::Value;

fn case(name: &str) -> Value {
    let all: Value =
        fulmen::serde_json::from_str(include_str!("fixtures/schedulers.json")).unwrap();
    all.as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .unwrap_or_else(|| panic!("no case {name}"))
        .clone()
}

fn floats(v: &Value) -> Vec<f64> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_f64().unwrap())
        .collect()
}

fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-12 + 1e-9 * w.abs(),
            "{what}[{i}]: {g} vs PyTorch's {w}\n{got:?}"
        );
    }
}

/// Runs `config` as PyTorch's loop does: the rate after construction, then after each step.
fn check(name: &str, config: impl Into<LrScheduler>, base_lr: f64) {
    let case = case(name);
    let want = floats(&case["lr"]);
    let metrics = case.get("metrics").map(floats);
    let (mut s, first) = Scheduler::new(config.into(), base_lr).unwrap();
    let (mut lrs, mut moms) = (vec![first.lr], vec![first.momentum]);
    for i in 1..want.len() {
        let rates = s.step(metrics.as_ref().map(|m| m[i - 1])).unwrap();
        lrs.push(rates.lr);
        moms.push(rates.momentum);
    }
    close(&lrs, &want, name);
    if let Some(m) = case.get("momentum") {
        let got: Vec<f64> = moms.iter().map(|m| m.unwrap()).collect();
        close(&got, &floats(m), &format!("{name} momentum"));
    }
}

#[test]
fn closed_form_schedules_match_pytorch() {
    check("step", StepLR::new(3, 0.5), 0.1);
    check("multistep", MultiStepLR::new(vec![2, 5, 9], 0.1), 0.1);
    check("exponential", ExponentialLR::new(0.9), 0.1);
    check("cosine", CosineAnnealingLR::new(10, 0.001), 0.1);
    check("linear", LinearLR::new(0.25, 1.0, 4), 0.1);
    check(
        "sequential",
        LrScheduler::sequential(
            vec![
                LinearLR::new(0.1, 1.0, 3).into(),
                CosineAnnealingLR::new(7, 0.0).into(),
            ],
            vec![3],
        ),
        0.1,
    );
}

#[test]
fn one_cycle_matches_pytorch_with_its_momentum() {
    check("onecycle_sgd", OneCycleLR::new(0.1, 20), 0.1);
    check(
        "onecycle_adam_three_phase_linear",
        OneCycleLR {
            three_phase: true,
            anneal_strategy: Anneal::Linear,
            ..OneCycleLR::new(0.05, 15)
        },
        0.1,
    );
    let (mut s, _) = Scheduler::new(OneCycleLR::new(0.1, 3).into(), 0.1).unwrap();
    s.step(None).unwrap();
    s.step(None).unwrap();
    let err = s.step(None).unwrap_err().to_string();
    assert!(err.contains("total_steps"), "{err}");
}

#[test]
fn reduce_on_plateau_matches_pytorch() {
    check(
        "plateau_min_rel",
        ReduceLROnPlateau {
            factor: 0.5,
            patience: 2,
            cooldown: 1,
            min_lr: 0.001,
            ..ReduceLROnPlateau::new("val_loss")
        },
        0.1,
    );
    check(
        "plateau_max_abs",
        ReduceLROnPlateau {
            mode: Mode::Max,
            factor: 0.1,
            patience: 1,
            threshold: 0.05,
            threshold_mode: ThresholdMode::Abs,
            ..ReduceLROnPlateau::new("val_acc")
        },
        0.1,
    );
}

#[test]
fn bad_settings_are_refused_naming_them() {
    let err = |s: LrScheduler| {
        Optim::sgd(0.1)
            .scheduler(s)
            .validate()
            .unwrap_err()
            .to_string()
    };
    assert!(err(StepLR::new(0, 0.1).into()).contains("StepLR.step_size"));
    assert!(err(LrScheduler::from(StepLR::new(1, 0.1)).frequency(0)).contains("frequency"));
    assert!(err(LrScheduler::sequential(
        vec![StepLR::new(1, 0.1).into()],
        vec![3]
    ))
    .contains("milestones"));
    assert!(err(ReduceLROnPlateau {
        factor: 1.5,
        ..ReduceLROnPlateau::new("x")
    }
    .into())
    .contains("factor"));
}

#[lightning_module]
struct Tiny {
    layer: Linear<2, 2>,
    #[skip]
    schedule: Option<LrScheduler>,
}

#[lightning_module]
impl Tiny {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn validation_step(&mut self, (x, y): ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        ctx.log(
            "val_loss",
            cross_entropy_with_logits_loss(self.layer.forward(x), y.one_hot()),
        );
    }
    fn configure_optimizers(&self) -> Optim {
        let optim = Optim::sgd(1.0);
        match &self.schedule {
            Some(s) => optim.scheduler(s.clone()),
            None => optim,
        }
    }
}

/// The learning rate seen at the start of every training batch of a 3-epoch run with 4
/// batches per epoch.
fn rates(schedule: LrScheduler) -> fulmen::Result<Vec<f64>> {
    struct Spy(std::rc::Rc<std::cell::RefCell<Vec<f64>>>);
    impl Callback for Spy {
        fn on_train_batch_start(&mut self, t: &mut TrainerView, _i: usize) {
            self.0.borrow_mut().push(t.lr());
        }
    }
    let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
    let data: Vec<([f32; 2], Class<2>)> = (0..8)
        .map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()))
        .collect();
    let mut model = Tiny::new();
    model.schedule = Some(schedule);
    Trainer::builder()
        .max_epochs(3)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .callback(Spy(seen.clone()))
        .build()?
        .fit_loaders(
            &mut model,
            DataLoader::new(InMemoryDataset::new(data.clone()), 2),
            Some(DataLoader::new(InMemoryDataset::new(data), 4)),
        )?;
    let seen = seen.borrow().clone();
    Ok(seen)
}

#[test]
fn the_trainer_steps_the_scheduler_on_its_interval_and_frequency() {
    let halve = || StepLR::new(1, 0.5);
    let per_epoch = [1.0; 4].into_iter().chain([0.5; 4]).chain([0.25; 4]);
    assert_eq!(
        rates(halve().into()).unwrap(),
        per_epoch.collect::<Vec<_>>()
    );
    let every_2 = [1.0; 8].into_iter().chain([0.5; 4]);
    assert_eq!(
        rates(LrScheduler::from(halve()).frequency(2)).unwrap(),
        every_2.collect::<Vec<_>>()
    );
    let per_step: Vec<f64> = (0..12).map(|i| 0.5f64.powi(i)).collect();
    assert_eq!(
        rates(LrScheduler::from(halve()).interval(Interval::Step)).unwrap(),
        per_step
    );
    let per_3_steps: Vec<f64> = (0..12).map(|i| 0.5f64.powi(i / 3)).collect();
    assert_eq!(
        rates(
            LrScheduler::from(halve())
                .interval(Interval::Step)
                .frequency(3)
        )
        .unwrap(),
        per_3_steps
    );
    // A plateau scheduler needs its metric; a typo is an error naming the logged ones.
    let err = rates(ReduceLROnPlateau::new("val_los").into())
        .unwrap_err()
        .to_string();
    assert!(err.contains("val_los") && err.contains("val_loss"), "{err}");
    // A scheduler for a manual step to step has none under automatic optimization.
    let err = rates(LrScheduler::from(halve()).interval(Interval::Manual))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Interval::Manual") && err.contains("ctx.lr_scheduler_step"),
        "{err}"
    );
}

/// Two optimizers: the first's scheduler stepped by hand after every second batch, the
/// second's on its epoch interval; `wrong` steps the second's by hand too.
#[lightning_module]
struct ManualSchedules {
    layer: Linear<2, 2>,
    #[hparam]
    wrong: bool,
}

#[lightning_module(manual_optimization)]
impl ManualSchedules {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D, fulmen::Manual>,
    ) -> fulmen::Result<()> {
        let [first, second] = ctx.optimizers()?;
        let loss = cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot());
        ctx.manual_backward(loss, self)?;
        for opt in [first, second] {
            ctx.step(opt, self)?;
            ctx.zero_grad(opt, self)?;
        }
        if ctx.batch_idx() % 2 == 1 {
            ctx.lr_scheduler_step(first)?;
        }
        if self.wrong {
            ctx.lr_scheduler_step(second)?;
        }
        Ok(())
    }
    fn configure_optimizers(&self) -> [Optim; 2] {
        [
            Optim::sgd(1.0)
                .params(["layer.weight"])
                .scheduler(LrScheduler::from(StepLR::new(1, 0.5)).interval(Interval::Manual)),
            Optim::sgd(1.0)
                .params(["layer.bias"])
                .scheduler(StepLR::new(1, 0.1)),
        ]
    }
}

#[test]
fn a_manual_step_steps_its_manual_schedulers_and_no_others() {
    struct Spy(std::rc::Rc<std::cell::RefCell<Vec<(f64, f64)>>>);
    impl Callback for Spy {
        fn on_train_batch_start(&mut self, t: &mut TrainerView, _i: usize) {
            let lr = |o: usize| t.optimizers()[o].lr();
            let rates = (lr(0), lr(1));
            self.0.borrow_mut().push(rates);
        }
    }
    let run = |wrong: bool| {
        let seen = std::rc::Rc::new(std::cell::RefCell::new(Vec::new()));
        let data: Vec<([f32; 2], Class<2>)> = (0..8)
            .map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()))
            .collect();
        let fitted = Trainer::builder()
            .max_epochs(2)
            .no_logger()
            .enable_checkpointing(false)
            .enable_progress_bar(false)
            .callback(Spy(seen.clone()))
            .build()
            .unwrap()
            .fit_loaders(
                &mut ManualSchedules::new(wrong),
                DataLoader::new(InMemoryDataset::new(data), 2),
                None,
            );
        let seen = seen.borrow().clone();
        (fitted, seen)
    };
    let (fitted, seen) = run(false);
    fitted.unwrap();
    // 4 batches an epoch: the first halves after batches 1 and 3 of each epoch, the second
    // decays at each epoch's end.
    let first = [1.0, 1.0, 0.5, 0.5, 0.25, 0.25, 0.125, 0.125];
    let second = [1.0, 1.0, 1.0, 1.0, 0.1, 0.1, 0.1, 0.1];
    let want: Vec<(f64, f64)> = first.into_iter().zip(second).collect();
    assert_eq!(seen.len(), 8);
    for (got, want) in seen.iter().zip(&want) {
        assert!(
            (got.0 - want.0).abs() < 1e-12 && (got.1 - want.1).abs() < 1e-12,
            "{seen:?}"
        );
    }
    let err = run(true).0.unwrap_err().to_string();
    assert!(
        err.contains("optimizer 1") && err.contains("Interval::Manual"),
        "{err}"
    );
}

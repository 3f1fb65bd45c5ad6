//! The order of every hook, data module method and step call in a full fit, validate, test
//! and predict, against DESIGN.md's list (Lightning's own hook-order test).

use std::cell::RefCell;
use std::rc::Rc;

use fulmen::prelude::*;

type Log = Rc<RefCell<Vec<String>>>;

#[lightning_module]
struct Recorded {
    layer: Linear<2, 2>,
    #[skip]
    log: Log,
}

fn rec(log: &Log, who: &str, what: &str) {
    log.borrow_mut().push(format!("{who}:{what}"));
}

#[lightning_module]
impl Recorded {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        rec(
            &self.log,
            "module",
            &format!("training_step({})", ctx.batch_idx()),
        );
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn validation_step(&mut self, _batch: ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        rec(
            &self.log,
            "module",
            &format!("validation_step({})", ctx.batch_idx()),
        );
    }
    fn test_step(&mut self, _batch: ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        rec(
            &self.log,
            "module",
            &format!("test_step({})", ctx.batch_idx()),
        );
    }
    fn predict_step(
        &mut self,
        (x, _): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> usize {
        rec(
            &self.log,
            "module",
            &format!("predict_step({})", ctx.batch_idx()),
        );
        x.shape().0
    }
    fn configure_optimizers(&self) -> Optim {
        rec(&self.log, "module", "configure_optimizers");
        Optim::sgd(0.1)
    }
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        rec(&self.log, "module", "configure_callbacks");
        Vec::new()
    }
    fn setup(&mut self, _t: &mut TrainerView, stage: Stage) {
        rec(&self.log, "module", &format!("setup({stage})"))
    }
    fn teardown(&mut self, _t: &mut TrainerView, stage: Stage) {
        rec(&self.log, "module", &format!("teardown({stage})"))
    }
    fn on_fit_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_fit_start")
    }
    fn on_fit_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_fit_end")
    }
    fn on_sanity_check_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_sanity_check_start")
    }
    fn on_sanity_check_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_sanity_check_end")
    }
    fn on_train_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_train_start")
    }
    fn on_train_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_train_end")
    }
    fn on_train_epoch_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_train_epoch_start")
    }
    fn on_train_epoch_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_train_epoch_end")
    }
    fn on_train_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
        rec(&self.log, "module", &format!("on_train_batch_start({i})"))
    }
    fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, i: usize) {
        rec(&self.log, "module", &format!("on_train_batch_end({i})"))
    }
    fn on_before_zero_grad(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_before_zero_grad")
    }
    fn on_before_backward(&mut self, _t: &mut TrainerView, _loss: f64) {
        rec(&self.log, "module", "on_before_backward")
    }
    fn on_after_backward(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_after_backward")
    }
    fn on_before_optimizer_step(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_before_optimizer_step")
    }
    fn on_validation_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_validation_start")
    }
    fn on_validation_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_validation_end")
    }
    fn on_validation_epoch_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_validation_epoch_start")
    }
    fn on_validation_epoch_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_validation_epoch_end")
    }
    fn on_validation_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
        rec(
            &self.log,
            "module",
            &format!("on_validation_batch_start({i})"),
        )
    }
    fn on_validation_batch_end(&mut self, _t: &mut TrainerView, i: usize) {
        rec(
            &self.log,
            "module",
            &format!("on_validation_batch_end({i})"),
        )
    }
    fn on_test_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_test_start")
    }
    fn on_test_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_test_end")
    }
    fn on_test_epoch_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_test_epoch_start")
    }
    fn on_test_epoch_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_test_epoch_end")
    }
    fn on_test_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
        rec(&self.log, "module", &format!("on_test_batch_start({i})"))
    }
    fn on_test_batch_end(&mut self, _t: &mut TrainerView, i: usize) {
        rec(&self.log, "module", &format!("on_test_batch_end({i})"))
    }
    fn on_predict_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_predict_start")
    }
    fn on_predict_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_predict_end")
    }
    fn on_predict_epoch_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_predict_epoch_start")
    }
    fn on_predict_epoch_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_predict_epoch_end")
    }
    fn on_predict_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
        rec(&self.log, "module", &format!("on_predict_batch_start({i})"))
    }
    fn on_predict_batch_end(&mut self, _t: &mut TrainerView, i: usize) {
        rec(&self.log, "module", &format!("on_predict_batch_end({i})"))
    }
    fn on_save_checkpoint(
        &mut self,
        _t: &mut TrainerView,
        _c: &mut fulmen::checkpoint::Checkpoint,
    ) {
        rec(&self.log, "module", "on_save_checkpoint")
    }
    fn on_exception(&mut self, _t: &mut TrainerView, error: &fulmen::Error) {
        rec(&self.log, "module", &format!("on_exception({error})"))
    }
    fn on_load_checkpoint(&mut self, _t: &mut TrainerView, _c: &fulmen::checkpoint::Checkpoint) {
        rec(&self.log, "module", "on_load_checkpoint")
    }
}

struct Spy(Log);

macro_rules! spy_hooks {
    ($($name:ident),*) => {$(
        fn $name(&mut self, _t: &mut TrainerView) { rec(&self.0, "callback", stringify!($name)) }
    )*};
}
macro_rules! spy_batch_hooks {
    ($($name:ident),*) => {$(
        fn $name(&mut self, _t: &mut TrainerView, i: usize) { rec(&self.0, "callback", &format!("{}({i})", stringify!($name))) }
    )*};
}

impl Callback for Spy {
    fn setup(&mut self, _t: &mut TrainerView, stage: Stage) {
        rec(&self.0, "callback", &format!("setup({stage})"))
    }
    fn teardown(&mut self, _t: &mut TrainerView, stage: Stage) {
        rec(&self.0, "callback", &format!("teardown({stage})"))
    }
    fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, i: usize) {
        rec(&self.0, "callback", &format!("on_train_batch_end({i})"))
    }
    fn on_before_backward(&mut self, _t: &mut TrainerView, _loss: f64) {
        rec(&self.0, "callback", "on_before_backward")
    }
    fn on_save_checkpoint(
        &mut self,
        _t: &mut TrainerView,
        _c: &mut fulmen::checkpoint::Checkpoint,
    ) {
        rec(&self.0, "callback", "on_save_checkpoint")
    }
    fn on_load_checkpoint(&mut self, _t: &mut TrainerView, _c: &fulmen::checkpoint::Checkpoint) {
        rec(&self.0, "callback", "on_load_checkpoint")
    }
    fn on_exception(&mut self, _t: &mut TrainerView, error: &fulmen::Error) {
        rec(&self.0, "callback", &format!("on_exception({error})"))
    }
    spy_hooks!(
        on_fit_start,
        on_fit_end,
        on_sanity_check_start,
        on_sanity_check_end,
        on_train_start,
        on_train_end,
        on_train_epoch_start,
        on_train_epoch_end,
        on_before_zero_grad,
        on_after_backward,
        on_before_optimizer_step,
        on_validation_start,
        on_validation_end,
        on_validation_epoch_start,
        on_validation_epoch_end,
        on_test_start,
        on_test_end,
        on_test_epoch_start,
        on_test_epoch_end,
        on_predict_start,
        on_predict_end,
        on_predict_epoch_start,
        on_predict_epoch_end
    );
    spy_batch_hooks!(
        on_train_batch_start,
        on_validation_batch_start,
        on_validation_batch_end,
        on_test_batch_start,
        on_test_batch_end,
        on_predict_batch_start,
        on_predict_batch_end
    );
}

type Sample = ([f32; 2], Class<2>);

#[data_module]
struct Data {
    #[skip]
    log: Log,
}

#[data_module]
impl Data {
    fn samples(n: usize) -> InMemoryDataset<Sample> {
        InMemoryDataset::new(
            (0..n)
                .map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()))
                .collect(),
        )
    }
    fn prepare_data(&mut self) {
        rec(&self.log, "datamodule", "prepare_data")
    }
    fn setup(&mut self, stage: Stage) {
        rec(&self.log, "datamodule", &format!("setup({stage})"))
    }
    fn teardown(&mut self, stage: Stage) {
        rec(&self.log, "datamodule", &format!("teardown({stage})"))
    }
    fn train_dataloader(&self) -> DataLoader<Sample> {
        DataLoader::new(Self::samples(4), 2)
    }
    fn val_dataloader(&self) -> DataLoader<Sample> {
        DataLoader::new(Self::samples(2), 2)
    }
    fn test_dataloader(&self) -> DataLoader<Sample> {
        DataLoader::new(Self::samples(3), 2)
    }
    fn predict_dataloader(&self) -> DataLoader<Sample> {
        DataLoader::new(Self::samples(3), 2)
    }
}

/// `name` on the callbacks, then on the module.
fn both(out: &mut Vec<String>, name: &str) {
    out.push(format!("callback:{name}"));
    out.push(format!("module:{name}"));
}

fn eval_loop(out: &mut Vec<String>, kind: &str, step: &str, batches: usize) {
    both(out, &format!("on_{kind}_start"));
    both(out, &format!("on_{kind}_epoch_start"));
    for i in 0..batches {
        both(out, &format!("on_{kind}_batch_start({i})"));
        out.push(format!("module:{step}({i})"));
        both(out, &format!("on_{kind}_batch_end({i})"));
    }
    both(out, &format!("on_{kind}_epoch_end"));
    both(out, &format!("on_{kind}_end"));
}

fn stage_start(out: &mut Vec<String>, stage: &str) {
    out.push("module:configure_callbacks".into());
    out.push("datamodule:prepare_data".into());
    out.push(format!("datamodule:setup({stage})"));
    both(out, &format!("setup({stage})"));
}

fn stage_end(out: &mut Vec<String>, stage: &str) {
    out.push(format!("datamodule:teardown({stage})"));
    both(out, &format!("teardown({stage})"));
}

/// One training epoch: its batches, validation, the epoch end and the checkpoint saved there.
fn train_epoch(out: &mut Vec<String>) {
    both(out, "on_train_epoch_start");
    for i in 0..2 {
        both(out, &format!("on_train_batch_start({i})"));
        out.push(format!("module:training_step({i})"));
        for hook in [
            "on_before_zero_grad",
            "on_before_backward",
            "on_after_backward",
            "on_before_optimizer_step",
        ] {
            both(out, hook);
        }
        both(out, &format!("on_train_batch_end({i})"));
    }
    eval_loop(out, "validation", "validation_step", 1);
    both(out, "on_train_epoch_end");
    both(out, "on_save_checkpoint");
}

fn assert_calls(log: &Log, expected: &[String]) {
    let got = log.borrow().clone();
    for (i, (g, e)) in got.iter().zip(expected).enumerate() {
        assert_eq!(g, e, "call {i} differs; calls so far: {:#?}", &got[..i]);
    }
    assert_eq!(got.len(), expected.len(), "calls: {got:#?}");
}

fn trainer(log: &Log, dir: &std::path::Path, epochs: usize) -> Trainer {
    Trainer::builder()
        .max_epochs(epochs)
        .callback(Spy(log.clone()))
        .no_logger()
        .default_root_dir(dir)
        .enable_progress_bar(false)
        .build()
        .unwrap()
}

#[test]
fn a_resumed_fit_loads_the_checkpoint_before_configure_optimizers() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = Recorded::new();
    model.log = log.clone();
    let mut dm = Data { log: log.clone() };
    trainer(&log, dir.path(), 1)
        .fit(&mut model, &mut dm)
        .unwrap();
    let ckpt = dir.path().join("checkpoints/epoch=0-step=2.ckpt");
    assert!(ckpt.exists());
    log.borrow_mut().clear();

    trainer(&log, dir.path(), 2)
        .fit_from(&mut model, &mut dm, &ckpt)
        .unwrap();
    let mut expected = Vec::new();
    stage_start(&mut expected, "fit");
    both(&mut expected, "on_load_checkpoint");
    expected.push("module:configure_optimizers".into());
    both(&mut expected, "on_fit_start");
    both(&mut expected, "on_sanity_check_start");
    eval_loop(&mut expected, "validation", "validation_step", 1);
    both(&mut expected, "on_sanity_check_end");
    both(&mut expected, "on_train_start");
    train_epoch(&mut expected);
    both(&mut expected, "on_train_end");
    both(&mut expected, "on_fit_end");
    stage_end(&mut expected, "fit");
    assert_calls(&log, &expected);
}

#[test]
fn fit_validate_test_predict_call_every_hook_in_lightnings_order() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = Recorded::new();
    model.log = log.clone();
    let mut dm = Data { log: log.clone() };
    let mut trainer = trainer(&log, dir.path(), 2);
    trainer.fit(&mut model, &mut dm).unwrap();
    trainer.validate(&mut model, &mut dm).unwrap();
    trainer.test(&mut model, &mut dm).unwrap();
    let predictions = trainer.predict(&mut model, &mut dm).unwrap();
    assert_eq!(
        predictions,
        vec![2, 1],
        "one prediction per batch, in order"
    );

    let mut expected = Vec::new();
    stage_start(&mut expected, "fit");
    expected.push("module:configure_optimizers".into());
    both(&mut expected, "on_fit_start");
    both(&mut expected, "on_sanity_check_start");
    eval_loop(&mut expected, "validation", "validation_step", 1);
    both(&mut expected, "on_sanity_check_end");
    both(&mut expected, "on_train_start");
    for _epoch in 0..2 {
        train_epoch(&mut expected);
    }
    both(&mut expected, "on_train_end");
    both(&mut expected, "on_fit_end");
    stage_end(&mut expected, "fit");

    stage_start(&mut expected, "validate");
    eval_loop(&mut expected, "validation", "validation_step", 1);
    stage_end(&mut expected, "validate");

    stage_start(&mut expected, "test");
    eval_loop(&mut expected, "test", "test_step", 2);
    stage_end(&mut expected, "test");

    stage_start(&mut expected, "predict");
    eval_loop(&mut expected, "predict", "predict_step", 2);
    stage_end(&mut expected, "predict");
    assert_calls(&log, &expected);
}

/// Fails the run in its first training batch.
struct Fails;

impl Callback for Fails {
    fn on_train_batch_start(&mut self, t: &mut TrainerView, _batch_idx: usize) {
        t.fail(fulmen::Error::msg("the disk is gone"));
    }
}

#[test]
fn an_error_reaches_on_exception_of_the_callbacks_then_the_module_and_ends_the_run() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = Recorded::new();
    model.log = log.clone();
    let mut dm = Data { log: log.clone() };
    let mut trainer = Trainer::builder()
        .max_epochs(1)
        .callback(Fails)
        .callback(Spy(log.clone()))
        .no_logger()
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .num_sanity_val_steps(0)
        .build()
        .unwrap();
    let err = trainer.fit(&mut model, &mut dm).unwrap_err();
    assert_eq!(err.to_string(), "the disk is gone");
    let log = log.borrow();
    let tail: Vec<&str> = log.iter().rev().take(3).rev().map(String::as_str).collect();
    assert_eq!(
        tail,
        [
            "module:on_train_batch_start(0)",
            "callback:on_exception(the disk is gone)",
            "module:on_exception(the disk is gone)",
        ]
    );
}

/// A module that steps its optimizer itself, recording the hooks of a training batch.
#[lightning_module]
struct ManualRecorded {
    layer: Linear<2, 2>,
    #[skip]
    log: Log,
}

#[lightning_module(manual_optimization)]
impl ManualRecorded {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let i = ctx.batch_idx();
        rec(&self.log, "module", &format!("training_step({i})"));
        let [opt] = ctx.optimizers()?;
        let loss = cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot());
        ctx.manual_backward(loss, self)?;
        ctx.step(opt, self)?;
        ctx.zero_grad(opt, self)?;
        rec(&self.log, "module", &format!("training_step({i}) returns"));
        Ok(())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
    fn on_train_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
        rec(&self.log, "module", &format!("on_train_batch_start({i})"))
    }
    fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, i: usize) {
        rec(&self.log, "module", &format!("on_train_batch_end({i})"))
    }
    fn on_before_zero_grad(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_before_zero_grad")
    }
    fn on_before_backward(&mut self, _t: &mut TrainerView, _loss: f64) {
        rec(&self.log, "module", "on_before_backward")
    }
    fn on_after_backward(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_after_backward")
    }
    fn on_before_optimizer_step(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "module", "on_before_optimizer_step")
    }
}

#[test]
fn a_manual_step_runs_the_backward_and_step_hooks_where_its_calls_are_as_lightning() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = ManualRecorded::new();
    model.log = log.clone();
    let mut dm = Data { log: log.clone() };
    trainer(&log, dir.path(), 1)
        .fit(&mut model, &mut dm)
        .unwrap();
    // The training batches, as Lightning's `_manual_train_batch` lists them: no
    // `on_before_zero_grad`; `manual_backward` runs the backward hooks, `step` the step's.
    let got = log.borrow().clone();
    let first = got
        .iter()
        .position(|c| c == "callback:on_train_batch_start(0)");
    let last = got
        .iter()
        .rposition(|c| c == "module:on_train_batch_end(1)");
    let (Some(first), Some(last)) = (first, last) else {
        panic!("no training batches in {got:#?}")
    };
    let mut expected = Vec::new();
    for i in 0..2 {
        both(&mut expected, &format!("on_train_batch_start({i})"));
        expected.push(format!("module:training_step({i})"));
        for hook in [
            "on_before_backward",
            "on_after_backward",
            "on_before_optimizer_step",
        ] {
            both(&mut expected, hook);
        }
        expected.push(format!("module:training_step({i}) returns"));
        both(&mut expected, &format!("on_train_batch_end({i})"));
    }
    assert_eq!(got[first..=last], expected[..]);
}

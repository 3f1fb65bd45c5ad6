//! The order of every hook of the module, the data module and a callback, against the order
//! Lightning itself calls them in: `tests/fixtures/hook_order.json`, recorded from Lightning
//! 2.6.6 by `tests/fixtures/hook_order.py` on the same scenarios with the same data.
//!
//! Each scenario's calls are compared on the hook kinds both have. The kinds Lightning has
//! and fulmen does not are listed below, each with its reason; the test fails when the list
//! is out of date either way.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use fulmen::optim::{Interval, LrScheduler, StepLR};
use fulmen::prelude::*;
use fulmen::serde_json::{self, Value};
use fulmen::TrainerBuilder;

/// Lightning's hooks that fulmen does not have, by `who:hook`, and why.
const NOT_IN_FULMEN: &[(&str, &str)] = &[
    ("module:backward", "not built yet (issue 27)"),
    (
        "module:configure_gradient_clipping",
        "not built yet (issue 27)",
    ),
    ("module:configure_model", "not built yet (issue 27)"),
    ("module:lr_scheduler_step", "not built yet (issue 27)"),
    ("module:optimizer_step", "not built yet (issue 27)"),
    ("module:optimizer_zero_grad", "not built yet (issue 27)"),
    (
        "module:on_before_batch_transfer",
        "not built yet (issue 27)",
    ),
    (
        "module:transfer_batch_to_device",
        "not built yet (issue 27)",
    ),
    ("module:on_after_batch_transfer", "not built yet (issue 27)"),
    (
        "module:on_validation_model_eval",
        "not built yet (issue 27)",
    ),
    (
        "module:on_validation_model_train",
        "not built yet (issue 27)",
    ),
    (
        "module:on_validation_model_zero_grad",
        "not built yet (issue 27)",
    ),
    ("module:on_test_model_eval", "not built yet (issue 27)"),
    ("module:on_test_model_train", "not built yet (issue 27)"),
    ("module:on_predict_model_eval", "not built yet (issue 27)"),
    ("module:prepare_data", "not built yet (issue 27)"),
    ("module:train_dataloader", "not built yet (issue 27)"),
    ("module:val_dataloader", "not built yet (issue 27)"),
    ("module:test_dataloader", "not built yet (issue 27)"),
    ("module:predict_dataloader", "not built yet (issue 27)"),
    (
        "datamodule:on_before_batch_transfer",
        "not built yet (issue 27)",
    ),
    (
        "datamodule:transfer_batch_to_device",
        "not built yet (issue 27)",
    ),
    (
        "datamodule:on_after_batch_transfer",
        "not built yet (issue 27)",
    ),
];

type Log = Rc<RefCell<Vec<String>>>;

fn rec(log: &Log, who: &str, what: impl AsRef<str>) {
    log.borrow_mut().push(format!("{who}:{}", what.as_ref()));
}

/// Lightning's recording: the hooks it knows, and each scenario's calls.
struct Fixture {
    hooks: BTreeSet<String>,
    scenarios: serde_json::Map<String, Value>,
}

fn fixture() -> Fixture {
    let json: Value = serde_json::from_str(include_str!("fixtures/hook_order.json")).unwrap();
    assert_eq!(json["lightning"], "2.6.6", "the version README.md names");
    let mut hooks = BTreeSet::new();
    for (who, names) in json["hooks"].as_object().unwrap() {
        for name in names.as_array().unwrap() {
            hooks.insert(format!("{who}:{}", name.as_str().unwrap()));
        }
    }
    let scenarios = json["scenarios"].as_object().unwrap().clone();
    Fixture { hooks, scenarios }
}

/// `who:hook` of a recorded call (`module:training_step(0)` → `module:training_step`).
fn kind(call: &str) -> &str {
    call.split('(').next().unwrap_or(call)
}

/// Every hook kind fulmen has: what its traits declare, written out (a new hook is added
/// here and to the recording below together).
fn fulmen_hooks() -> BTreeSet<String> {
    let lifecycle = [
        "setup",
        "teardown",
        "on_fit_start",
        "on_fit_end",
        "on_train_start",
        "on_train_end",
        "on_train_epoch_start",
        "on_train_epoch_end",
        "on_train_batch_start",
        "on_train_batch_end",
        "on_before_zero_grad",
        "on_before_backward",
        "on_after_backward",
        "on_before_optimizer_step",
        "on_validation_start",
        "on_validation_end",
        "on_validation_epoch_start",
        "on_validation_epoch_end",
        "on_validation_batch_start",
        "on_validation_batch_end",
        "on_test_start",
        "on_test_end",
        "on_test_epoch_start",
        "on_test_epoch_end",
        "on_test_batch_start",
        "on_test_batch_end",
        "on_predict_start",
        "on_predict_end",
        "on_predict_epoch_start",
        "on_predict_epoch_end",
        "on_predict_batch_start",
        "on_predict_batch_end",
        "on_save_checkpoint",
        "on_load_checkpoint",
    ];
    let module = [
        "configure_callbacks",
        "configure_optimizers",
        "training_step",
        "validation_step",
        "test_step",
        "predict_step",
    ];
    let callback = [
        "on_sanity_check_start",
        "on_sanity_check_end",
        "on_exception",
        "state_dict",
        "load_state_dict",
    ];
    let datamodule = [
        "prepare_data",
        "setup",
        "teardown",
        "train_dataloader",
        "val_dataloader",
        "test_dataloader",
        "predict_dataloader",
        "state_dict",
        "load_state_dict",
        "on_exception",
    ];
    let mut all = BTreeSet::new();
    for name in lifecycle.iter().chain(&module) {
        all.insert(format!("module:{name}"));
    }
    for name in lifecycle.iter().chain(&callback) {
        all.insert(format!("callback:{name}"));
    }
    for name in datamodule {
        all.insert(format!("datamodule:{name}"));
    }
    all
}

#[lightning_module]
struct Recorded {
    layer: Linear<2, 2>,
    #[skip]
    log: Log,
    /// `training_step` fails at this batch.
    #[skip]
    fail_at: Option<usize>,
    /// A scheduler stepped every optimizer step.
    #[skip]
    scheduler: bool,
}

/// `impl` with `body` and every hook the module and the callback share, each recording its
/// call as `who` (written out here, not by inner macros: `#[lightning_module]` must see them).
macro_rules! with_hooks {
    ($who:literal, $(#[$($attr:tt)*])? [$($head:tt)*] { $($body:tt)* }) => {
        $(#[$($attr)*])?
        $($head)* {
            $($body)*
            fn setup(&mut self, _t: &mut TrainerView, stage: Stage) {
                rec(&self.log, $who, format!("setup({stage})"))
            }
            fn teardown(&mut self, _t: &mut TrainerView, stage: Stage) {
                rec(&self.log, $who, format!("teardown({stage})"))
            }
            fn on_fit_start(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_fit_start") }
            fn on_fit_end(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_fit_end") }
            fn on_train_start(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_train_start") }
            fn on_train_end(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_train_end") }
            fn on_train_epoch_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_train_epoch_start")
            }
            fn on_train_epoch_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_train_epoch_end")
            }
            fn on_train_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_train_batch_start({i})"))
            }
            fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, i: usize) {
                rec(&self.log, $who, format!("on_train_batch_end({i})"))
            }
            fn on_before_zero_grad(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_before_zero_grad")
            }
            fn on_before_backward(&mut self, _t: &mut TrainerView, _loss: f64) {
                rec(&self.log, $who, "on_before_backward")
            }
            fn on_after_backward(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_after_backward")
            }
            fn on_before_optimizer_step(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_before_optimizer_step")
            }
            fn on_validation_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_validation_start")
            }
            fn on_validation_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_validation_end")
            }
            fn on_validation_epoch_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_validation_epoch_start")
            }
            fn on_validation_epoch_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_validation_epoch_end")
            }
            fn on_validation_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_validation_batch_start({i})"))
            }
            fn on_validation_batch_end(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_validation_batch_end({i})"))
            }
            fn on_test_start(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_test_start") }
            fn on_test_end(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_test_end") }
            fn on_test_epoch_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_test_epoch_start")
            }
            fn on_test_epoch_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_test_epoch_end")
            }
            fn on_test_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_test_batch_start({i})"))
            }
            fn on_test_batch_end(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_test_batch_end({i})"))
            }
            fn on_predict_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_predict_start")
            }
            fn on_predict_end(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_predict_end") }
            fn on_predict_epoch_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_predict_epoch_start")
            }
            fn on_predict_epoch_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_predict_epoch_end")
            }
            fn on_predict_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_predict_batch_start({i})"))
            }
            fn on_predict_batch_end(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_predict_batch_end({i})"))
            }
            fn on_save_checkpoint(
                &mut self,
                _t: &mut TrainerView,
                _c: &mut fulmen::checkpoint::Checkpoint,
            ) {
                rec(&self.log, $who, "on_save_checkpoint")
            }
        }
    };
}

fn recorded(log: &Log) -> Recorded<f32, Cpu> {
    let mut model = Recorded::new();
    model.log = log.clone();
    model
}

with_hooks!("module", #[lightning_module] [impl Recorded] {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<Loss<E, D>> {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("training_step({i})"));
        if self.fail_at == Some(i) {
            return Err(fulmen::Error::msg("the disk is gone"));
        }
        let logits = self.layer.forward(ctx.trace(x));
        Ok(cross_entropy_with_logits_loss(logits, y.one_hot()))
    }
    fn validation_step(&mut self, _batch: ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("validation_step({i})"));
    }
    fn test_step(&mut self, _batch: ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("test_step({i})"));
    }
    fn predict_step(
        &mut self,
        (x, _): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> usize {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("predict_step({i})"));
        x.shape().0
    }
    fn configure_optimizers(&self) -> Optim {
        rec(&self.log, "module", "configure_optimizers");
        match self.scheduler {
            true => Optim::sgd(0.1)
                .scheduler(LrScheduler::from(StepLR::new(1, 0.5)).interval(Interval::Step)),
            false => Optim::sgd(0.1),
        }
    }
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        rec(&self.log, "module", "configure_callbacks");
        Vec::new()
    }
    fn on_load_checkpoint(
        &mut self,
        _t: &mut TrainerView,
        _c: &mut fulmen::checkpoint::Checkpoint,
    ) {
        rec(&self.log, "module", "on_load_checkpoint")
    }
});

/// A module that steps its optimizer itself.
#[lightning_module]
struct ManualRecorded {
    layer: Linear<2, 2>,
    #[skip]
    log: Log,
}

with_hooks!("module", #[lightning_module(manual_optimization)] [impl ManualRecorded] {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("training_step({i})"));
        let [opt] = ctx.optimizers()?;
        let loss = cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot());
        ctx.manual_backward(loss, self)?;
        ctx.step(opt, self)?;
        ctx.zero_grad(opt, self)?;
        rec(&self.log, "module", format!("training_step({i}) returns"));
        Ok(())
    }
    fn validation_step(&mut self, _batch: ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("validation_step({i})"));
    }
    fn configure_optimizers(&self) -> Optim {
        rec(&self.log, "module", "configure_optimizers");
        Optim::sgd(0.1)
    }
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        rec(&self.log, "module", "configure_callbacks");
        Vec::new()
    }
});

/// A stateful callback recording every hook.
struct Spy {
    log: Log,
}

with_hooks!("callback", [impl Callback for Spy] {
    fn on_load_checkpoint(&mut self, _t: &mut TrainerView, _c: &fulmen::checkpoint::Checkpoint) {
        rec(&self.log, "callback", "on_load_checkpoint")
    }
    fn on_exception(&mut self, _t: &mut TrainerView, error: &fulmen::Error) {
        rec(&self.log, "callback", format!("on_exception({error})"))
    }
    fn state_dict(&self) -> Option<Value> {
        rec(&self.log, "callback", "state_dict");
        Some(serde_json::json!({ "seen": 1 }))
    }
    fn load_state_dict(&mut self, _state: &Value) -> fulmen::Result<()> {
        rec(&self.log, "callback", "load_state_dict");
        Ok(())
    }
    fn on_sanity_check_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "callback", "on_sanity_check_start")
    }
    fn on_sanity_check_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "callback", "on_sanity_check_end")
    }
});

type Sample = ([f32; 2], Class<2>);

fn samples(n: usize) -> InMemoryDataset<Sample> {
    let each = (0..n).map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()));
    InMemoryDataset::new(each.collect())
}

/// The fixture's data module: its state (a curriculum stage) goes into checkpoints.
#[data_module]
struct Data {
    #[skip]
    log: Log,
    #[skip]
    stage: u64,
}

#[data_module]
impl Data {
    fn prepare_data(&mut self) {
        rec(&self.log, "datamodule", "prepare_data")
    }
    fn setup(&mut self, stage: Stage) {
        rec(&self.log, "datamodule", format!("setup({stage})"))
    }
    fn teardown(&mut self, stage: Stage) {
        rec(&self.log, "datamodule", format!("teardown({stage})"))
    }
    fn train_dataloader(&mut self) -> DataLoader<Sample> {
        rec(&self.log, "datamodule", "train_dataloader");
        DataLoader::new(samples(4), 2)
    }
    fn val_dataloader(&mut self) -> DataLoader<Sample> {
        rec(&self.log, "datamodule", "val_dataloader");
        DataLoader::new(samples(2), 2)
    }
    fn test_dataloader(&mut self) -> DataLoader<Sample> {
        rec(&self.log, "datamodule", "test_dataloader");
        DataLoader::new(samples(3), 2)
    }
    fn predict_dataloader(&mut self) -> DataLoader<Sample> {
        rec(&self.log, "datamodule", "predict_dataloader");
        DataLoader::new(samples(3), 2)
    }
    fn state_dict(&self) -> Value {
        rec(&self.log, "datamodule", "state_dict");
        serde_json::json!({ "stage": self.stage })
    }
    fn load_state_dict(&mut self, state: &Value) {
        rec(&self.log, "datamodule", "load_state_dict");
        self.stage = state["stage"].as_u64().unwrap_or_default();
    }
    fn on_exception(&mut self, error: &fulmen::Error) {
        rec(&self.log, "datamodule", format!("on_exception({error})"))
    }
}

fn data(log: &Log) -> Data {
    Data {
        log: log.clone(),
        stage: 0,
    }
}

fn trainer(log: &Log, dir: &std::path::Path, epochs: usize) -> TrainerBuilder {
    Trainer::builder()
        .max_epochs(epochs)
        .callback(Spy { log: log.clone() })
        .no_logger()
        .default_root_dir(dir)
        .enable_progress_bar(false)
}

/// fulmen's calls of `scenario` against Lightning's, on the hook kinds both have.
fn assert_as_lightning(scenario: &str, log: &Log) {
    let fixture = fixture();
    let ours = fulmen_hooks();
    let theirs: Vec<String> = fixture.scenarios[scenario]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .filter(|c| ours.contains(kind(c)) || c.ends_with(" returns"))
        .collect();
    let got: Vec<String> = (log.borrow().iter())
        .filter(|c| fixture.hooks.contains(kind(c)) || c.ends_with(" returns"))
        .cloned()
        .collect();
    assert!(
        theirs.len() > 30,
        "{scenario}: {} calls of Lightning's",
        theirs.len()
    );
    if let Some(i) = (0..got.len().max(theirs.len())).find(|&i| got.get(i) != theirs.get(i)) {
        let from = i.saturating_sub(8);
        panic!(
            "{scenario}: call {i} differs from Lightning's\n  fulmen:    {:?}\n  Lightning: {:?}\ncalls before it: {:#?}",
            got.get(i),
            theirs.get(i),
            &theirs[from..i.min(theirs.len())]
        );
    }
}

#[test]
fn the_list_of_lightnings_hooks_fulmen_lacks_is_exact() {
    let fixture = fixture();
    let ours = fulmen_hooks();
    let missing: BTreeSet<&str> = (fixture.hooks.iter())
        .filter(|h| !ours.contains(*h))
        .map(String::as_str)
        .collect();
    let listed: BTreeSet<&str> = NOT_IN_FULMEN.iter().map(|(h, _)| *h).collect();
    assert_eq!(missing, listed, "Lightning's hooks that fulmen lacks");
    let extra: Vec<&String> = ours.difference(&fixture.hooks).collect();
    assert!(extra.is_empty(), "hooks Lightning does not have: {extra:?}");
}

#[test]
fn fit_validate_test_predict_call_every_hook_in_lightnings_order() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    let mut dm = data(&log);
    let mut trainer = trainer(&log, dir.path(), 2).build().unwrap();
    trainer.fit(&mut model, &mut dm).unwrap();
    trainer.validate(&mut model, &mut dm).unwrap();
    trainer.test(&mut model, &mut dm).unwrap();
    let predictions = trainer.predict(&mut model, &mut dm).unwrap();
    assert_eq!(
        predictions,
        vec![2, 1],
        "one prediction per batch, in order"
    );
    assert_as_lightning("fit_validate_test_predict", &log);
}

#[test]
fn a_resumed_fit_restores_the_module_then_its_data_then_the_callbacks_before_any_loader() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let (mut model, mut dm) = (recorded(&log), data(&log));
    dm.stage = 3;
    let mut first = trainer(&log, dir.path(), 1).build().unwrap();
    first.fit(&mut model, &mut dm).unwrap();
    let ckpt = dir.path().join("checkpoints/epoch=0-step=2.ckpt");
    log.borrow_mut().clear();

    let (mut model, mut dm) = (recorded(&log), data(&log));
    let mut second = trainer(&log, dir.path(), 2).build().unwrap();
    second.fit_from(&mut model, &mut dm, &ckpt).unwrap();
    assert_eq!(dm.stage, 3, "the data module's state came back");
    assert_as_lightning("resumed_fit", &log);
}

#[test]
fn an_error_in_a_step_reaches_on_exception_of_the_callbacks_then_the_data_module() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    model.fail_at = Some(0);
    let mut trainer = trainer(&log, dir.path(), 1).build().unwrap();
    let err = trainer.fit(&mut model, &mut data(&log)).unwrap_err();
    assert!(err.to_string().contains("the disk is gone"), "{err}");
    assert_as_lightning("exception_in_training_step", &log);
}

#[test]
fn accumulated_gradients_run_the_step_hooks_once_per_window_as_lightning() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    let builder = trainer(&log, dir.path(), 1).accumulate_grad_batches(2);
    let mut trainer = builder.num_sanity_val_steps(0).build().unwrap();
    trainer.fit(&mut model, &mut data(&log)).unwrap();
    assert_as_lightning("accumulated_gradients", &log);
}

#[test]
fn a_manual_step_runs_the_backward_and_step_hooks_where_its_calls_are_as_lightning() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = ManualRecorded::new();
    model.log = log.clone();
    let builder = trainer(&log, dir.path(), 1).num_sanity_val_steps(0);
    builder
        .build()
        .unwrap()
        .fit(&mut model, &mut data(&log))
        .unwrap();
    assert_as_lightning("manual_optimization", &log);
}

#[test]
fn a_step_scheduler_keeps_the_hooks_in_lightnings_order() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    model.scheduler = true;
    let builder = trainer(&log, dir.path(), 1).num_sanity_val_steps(0);
    builder
        .build()
        .unwrap()
        .fit(&mut model, &mut data(&log))
        .unwrap();
    assert_as_lightning("step_scheduler", &log);
}

#[test]
fn loaders_without_a_data_module_keep_the_hooks_in_lightnings_order() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    let mut trainer = trainer(&log, dir.path(), 1).build().unwrap();
    let (train, val) = (
        DataLoader::new(samples(4), 2),
        DataLoader::new(samples(2), 2),
    );
    trainer.fit_loaders(&mut model, train, Some(val)).unwrap();
    assert_as_lightning("module_loaders", &log);
}

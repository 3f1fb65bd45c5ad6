//! The order of every hook of the module, the data module and a callback, against the order
//! Lightning itself calls them in: `tests/fixtures/hook_order.json`, recorded from Lightning
//! 2.6.6 by `tests/fixtures/hook_order.py` on the same scenarios with the same data.
//!
//! Each scenario's calls are compared on the hook kinds both have. The kinds Lightning has
//! and fulmen does not are listed below, each with its reason; the test fails when the list
//! is out of date either way.

use std::collections::BTreeSet;
use std::rc::Rc;

use fulmen::prelude::*;
use fulmen::serde_json::{self, Value};
use fulmen::TrainerBuilder;

#[path = "support/hook_recording.rs"]
mod recording;
use fulmen::data::Collate;
use fulmen::module::Precisions;
use fulmen::module_data::FromModule;
use recording::{data, recorded, samples, Log, ManualRecorded, Sample, Spy};

/// Lightning's hooks that fulmen does not have, by `who:hook`, and why.
const NOT_IN_FULMEN: &[(&str, &str)] = &[("module:backward", BACKWARD)];

/// Why `backward` is not a module's hook.
const BACKWARD: &str = "dfdx's backward consumes the loss's tape; the trainer runs it where it \
    divides by the accumulation window, unscales 16-mixed's gradients and reduce-scatters \
    FULL_SHARD's, and what a module could change there (the loss) is training_step's to \
    return. A module that differentiates its own way writes a manual step \
    (ctx.manual_backward).";
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
    let transfer = [
        "on_before_batch_transfer",
        "transfer_batch_to_device",
        "on_after_batch_transfer",
    ];
    let module = [
        "prepare_data",
        "train_dataloader",
        "val_dataloader",
        "test_dataloader",
        "predict_dataloader",
        "configure_model",
        "on_validation_model_eval",
        "on_validation_model_train",
        "on_validation_model_zero_grad",
        "on_test_model_eval",
        "on_test_model_train",
        "on_predict_model_eval",
        "optimizer_step",
        "optimizer_zero_grad",
        "configure_gradient_clipping",
        "lr_scheduler_step",
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
    for name in lifecycle.iter().chain(&module).chain(&transfer) {
        all.insert(format!("module:{name}"));
    }
    for name in lifecycle.iter().chain(&callback) {
        all.insert(format!("callback:{name}"));
    }
    for name in datamodule.iter().chain(&transfer) {
        all.insert(format!("datamodule:{name}"));
    }
    all
}

fn trainer(log: &Log, dir: &std::path::Path, epochs: usize) -> TrainerBuilder {
    Trainer::builder()
        .max_epochs(epochs)
        .callback(Spy { log: log.clone() })
        .no_logger()
        .default_root_dir(dir)
        .enable_progress_bar(false)
}

/// Lightning's calls with `optimizer_step` where fulmen calls it. Lightning calls it before the
/// window's last `training_step`, which its closure argument runs inside it; fulmen calls it
/// where that closure would return, before `on_before_optimizer_step` (the step itself is in
/// the same place in both). A closure over the step would need the module while the hook
/// holds it: Rust lends it once.
fn relocated(calls: impl Iterator<Item = String>) -> Vec<String> {
    let mut out = Vec::new();
    let mut waiting = None;
    for call in calls {
        if call.starts_with("module:optimizer_step(") {
            waiting = Some(call);
            continue;
        }
        if call == "callback:on_before_optimizer_step" {
            out.extend(waiting.take());
        }
        out.push(call);
    }
    out
}

/// fulmen's calls of `scenario` against Lightning's, on the hook kinds both have.
fn assert_as_lightning(scenario: &str, log: &Log) {
    assert_as_lightning_but(scenario, log, &[]);
}

/// [`assert_as_lightning`] with Lightning's calls of the kinds `but` left out (what the run
/// compared has no place for).
fn assert_as_lightning_but(scenario: &str, log: &Log, but: &[&str]) {
    let fixture = fixture();
    let ours = fulmen_hooks();
    let recorded = fixture.scenarios[scenario].as_array().unwrap().iter();
    let theirs: Vec<String> = relocated(recorded.map(|c| c.as_str().unwrap().to_string()))
        .into_iter()
        .filter(|c| ours.contains(kind(c)) || c.ends_with(" returns"))
        .filter(|c| !but.contains(&kind(c)))
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

/// One epoch without a sanity check (as the fixture's scenario) of `model`, whose calls go to
/// `log`, on a trainer `settings` finishes; then compared with Lightning's `scenario`.
fn one_epoch_as_lightning<M>(
    scenario: &str,
    log: &Log,
    model: &mut M,
    settings: impl FnOnce(TrainerBuilder) -> TrainerBuilder,
) where
    M: Precisions,
    Sample: Collate<M::Batch, Cpu> + Collate<M::EvalBatch, Cpu>,
    recording::Data: fulmen::stage_data::DataFor<M>,
{
    let dir = tempfile::tempdir().unwrap();
    let builder = trainer(log, dir.path(), 1).num_sanity_val_steps(0);
    let mut trainer = settings(builder).build().unwrap();
    trainer.fit(model, &mut data(log)).unwrap();
    assert_as_lightning(scenario, log);
}

#[test]
fn accumulated_gradients_run_the_step_hooks_once_per_window_as_lightning() {
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    one_epoch_as_lightning("accumulated_gradients", &log, &mut model, |b| {
        b.accumulate_grad_batches(2)
    });
}

#[test]
fn a_manual_step_runs_the_backward_and_step_hooks_where_its_calls_are_as_lightning() {
    let log: Log = Rc::default();
    let mut model = ManualRecorded::new();
    model.log = log.clone();
    one_epoch_as_lightning("manual_optimization", &log, &mut model, |b| b);
}

#[test]
fn a_step_scheduler_keeps_the_hooks_in_lightnings_order() {
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    model.scheduler = true;
    one_epoch_as_lightning("step_scheduler", &log, &mut model, |b| b);
}

#[test]
fn a_module_serving_its_own_loaders_keeps_the_hooks_in_lightnings_order() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    let mut trainer = trainer(&log, dir.path(), 1).build().unwrap();
    let mut own = FromModule::of(&model);
    trainer.fit(&mut model, &mut own).unwrap();
    assert_as_lightning("module_loaders", &log);
}

#[test]
fn bare_loaders_keep_the_hooks_in_lightnings_order() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    let mut trainer = trainer(&log, dir.path(), 1).build().unwrap();
    let (train, val) = (
        DataLoader::new(samples(4), 2),
        DataLoader::new(samples(2), 2),
    );
    trainer.fit_loaders(&mut model, train, Some(val)).unwrap();
    // Lightning's `fit(model, train, val)`: the loaders given, not the module's.
    let served = ["module:train_dataloader", "module:val_dataloader"];
    assert_as_lightning_but("module_loaders", &log, &served);
}

#[test]
fn without_validation_loaders_there_is_no_sanity_check_to_call_hooks_for() {
    let dir = tempfile::tempdir().unwrap();
    let log: Log = Rc::default();
    let mut model = recorded(&log);
    let mut trainer = trainer(&log, dir.path(), 1).build().unwrap();
    let train = DataLoader::new(samples(4), 2);
    trainer.fit_loaders(&mut model, train, None).unwrap();
    let calls = log.borrow();
    // As Lightning's: the validation step is written but no loader is defined.
    let sanity = calls
        .iter()
        .filter(|c| c.contains("sanity") || c.contains("validation"));
    assert_eq!(sanity.count(), 0, "{calls:?}");
    assert!(
        calls.iter().any(|c| c == "module:training_step(1)"),
        "{calls:?}"
    );
}

//! The built-in callbacks through the public API: EarlyStopping's rules (in Lightning's
//! order), LearningRateMonitor's logged rates, LambdaCallback, GradientAccumulationScheduler.

use std::cell::RefCell;
use std::rc::Rc;

use fulmen::callbacks::{
    EarlyStopping, GradientAccumulationScheduler, LambdaCallback, LearningRateMonitor, Mode,
    ModelCheckpoint,
};
use fulmen::checkpoint::Checkpoint;
use fulmen::optim::{Interval, LrScheduler, StepLR};
use fulmen::prelude::*;

#[lightning_module]
struct Net {
    layer: Linear<2, 2>,
    #[skip]
    schedule: Option<LrScheduler>,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        let sgd = Optim::sgd(0.1).momentum(0.9);
        match &self.schedule {
            Some(s) => sgd.scheduler(s.clone()),
            None => sgd,
        }
    }
}

fn loader() -> DataLoader<([f32; 2], Class<2>)> {
    let data = (0..8)
        .map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()))
        .collect();
    DataLoader::new(InMemoryDataset::new(data), 2)
}

fn builder(dir: &std::path::Path) -> fulmen::TrainerBuilder {
    Trainer::builder()
        .default_root_dir(dir)
        .enable_progress_bar(false)
        .enable_model_summary(false)
}

/// Logs `values[epoch]` as `score` at every epoch end, before the monitoring callbacks look.
fn scores(values: &'static [f64]) -> LambdaCallback {
    LambdaCallback::new().on_train_epoch_end(move |t| {
        let v = values[t.current_epoch().min(values.len() - 1)];
        t.log("score", v);
    })
}

/// Fits with early stopping on `values`; returns the epochs run and EarlyStopping's state as
/// the last checkpoint recorded it.
fn stop_on(values: &'static [f64], es: EarlyStopping) -> (usize, fulmen::serde_json::Value) {
    let dir = tempfile::tempdir().unwrap();
    let key = fulmen::Callback::state_key(&es);
    let mut t = builder(dir.path())
        .max_epochs(values.len())
        .no_logger()
        .callback(scores(values))
        .callback(es)
        .callback(ModelCheckpoint::new().dirpath(dir.path()).save_last(true))
        .build()
        .unwrap();
    t.fit_loaders(&mut Net::new(), loader(), None).unwrap();
    let last = Checkpoint::read(dir.path().join("last.ckpt")).unwrap();
    (
        t.current_epoch(),
        last.callback_state(&key).unwrap().clone(),
    )
}

#[test]
fn early_stopping_follows_lightnings_rules() {
    // Patience: no improvement at epochs 2 and 3 -> stop after epoch 3.
    let (epochs, state) = stop_on(
        &[1.0, 0.9, 0.95, 0.95, 0.95, 0.5],
        EarlyStopping::new("score").patience(2),
    );
    assert_eq!(epochs, 4);
    assert_eq!(state["stopped_epoch"], 3);
    assert_eq!(state["best_score"], 0.9);
    let reason = state["stopping_reason"].as_str().unwrap();
    assert_eq!(reason, "Monitored metric score did not improve in the last 2 records. Best score: 0.900. Signaling Trainer to stop.");

    // min_delta: 0.9 is not 0.2 better than 1.0, 0.7 is.
    let (epochs, _) = stop_on(
        &[1.0, 0.9, 0.7, 0.6, 0.6],
        EarlyStopping::new("score").patience(2).min_delta(0.2),
    );
    assert_eq!(
        epochs, 5,
        "0.9 waits, 0.7 resets, 0.6 and 0.6 wait: stop after epoch 4"
    );

    let (epochs, state) = stop_on(
        &[0.1, 0.6, 0.7],
        EarlyStopping::new("score")
            .mode(Mode::Max)
            .stopping_threshold(0.5),
    );
    assert_eq!(epochs, 2);
    assert!(state["stopping_reason"]
        .as_str()
        .unwrap()
        .starts_with("Stopping threshold reached: score = 0.6 > 0.5"));

    let (epochs, state) = stop_on(
        &[1.0, 20.0, 0.5],
        EarlyStopping::new("score").divergence_threshold(10.0),
    );
    assert_eq!(epochs, 2);
    assert!(state["stopping_reason"]
        .as_str()
        .unwrap()
        .starts_with("Divergence threshold reached"));

    let (epochs, state) = stop_on(&[1.0, f64::NAN, 0.5], EarlyStopping::new("score"));
    assert_eq!(epochs, 2);
    assert!(state["stopping_reason"]
        .as_str()
        .unwrap()
        .contains("is not finite"));
}

#[test]
fn early_stopping_on_a_metric_never_logged_names_the_logged_ones() {
    let dir = tempfile::tempdir().unwrap();
    let err = builder(dir.path())
        .max_epochs(3)
        .no_logger()
        .callback(scores(&[1.0]))
        .callback(EarlyStopping::new("scor"))
        .build()
        .unwrap()
        .fit_loaders(&mut Net::new(), loader(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("`scor`") && err.contains("\"score\""), "{err}");
    // Not strict: ignored.
    builder(dir.path())
        .max_epochs(2)
        .no_logger()
        .callback(EarlyStopping::new("scor").strict(false))
        .build()
        .unwrap()
        .fit_loaders(&mut Net::new(), loader(), None)
        .unwrap();
}

/// The `lr-SGD` column of metrics.csv, and the step column beside it.
fn logged_rates(dir: &std::path::Path) -> Vec<(usize, f64)> {
    let mut reader =
        csv::Reader::from_path(dir.join("lightning_logs/version_0/metrics.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = |name: &str| headers.iter().position(|h| h == name).unwrap();
    let (lr, step) = (col("lr-SGD"), col("step"));
    reader
        .records()
        .map(|r| r.unwrap())
        .filter(|r| !r[lr].is_empty())
        .map(|r| (r[step].parse().unwrap(), r[lr].parse().unwrap()))
        .collect()
}

#[test]
fn learning_rate_monitor_logs_the_rate_at_the_schedulers_interval() {
    let run = |schedule: LrScheduler, monitor: LearningRateMonitor| {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Net::new();
        model.schedule = Some(schedule);
        builder(dir.path())
            .max_epochs(3)
            .enable_checkpointing(false)
            .callback(monitor)
            .build()
            .unwrap()
            .fit_loaders(&mut model, loader(), None)
            .unwrap();
        logged_rates(dir.path())
    };
    let per_epoch = run(StepLR::new(1, 0.5).into(), LearningRateMonitor::new());
    assert_eq!(per_epoch, [(0, 0.1), (4, 0.05), (8, 0.025)]);
    let per_step = run(
        LrScheduler::from(StepLR::new(2, 0.5)).interval(Interval::Step),
        LearningRateMonitor::new(),
    );
    assert_eq!(per_step.len(), 12);
    assert_eq!(&per_step[..4], [(0, 0.1), (1, 0.1), (2, 0.05), (3, 0.05)]);

    let dir = tempfile::tempdir().unwrap();
    let err = builder(dir.path())
        .no_logger()
        .callback(LearningRateMonitor::new())
        .build()
        .unwrap()
        .fit_loaders(&mut Net::new(), loader(), None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("LearningRateMonitor") && err.contains("logger"),
        "{err}"
    );
}

#[test]
fn lambda_callback_calls_its_closures() {
    let dir = tempfile::tempdir().unwrap();
    let calls = Rc::new(RefCell::new(Vec::new()));
    let (a, b, c) = (calls.clone(), calls.clone(), calls.clone());
    builder(dir.path())
        .max_epochs(1)
        .no_logger()
        .enable_checkpointing(false)
        .callback(
            LambdaCallback::new()
                .on_train_start(move |_| a.borrow_mut().push("train_start".to_string()))
                .on_train_batch_start(move |_, i| b.borrow_mut().push(format!("batch {i}")))
                .on_train_batch_end(move |_, loss, i| {
                    assert!(loss.is_finite());
                    c.borrow_mut().push(format!("end {i}"))
                }),
        )
        .build()
        .unwrap()
        .fit_loaders(&mut Net::new(), loader(), None)
        .unwrap();
    assert_eq!(
        *calls.borrow(),
        [
            "train_start",
            "batch 0",
            "end 0",
            "batch 1",
            "end 1",
            "batch 2",
            "end 2",
            "batch 3",
            "end 3"
        ]
    );
}

#[test]
fn gradient_accumulation_scheduler_changes_k_by_epoch() {
    let dir = tempfile::tempdir().unwrap();
    let mut t = builder(dir.path())
        .max_epochs(3)
        .no_logger()
        .enable_checkpointing(false)
        .callback(GradientAccumulationScheduler::new([(1, 2), (2, 4)]))
        .build()
        .unwrap();
    t.fit_loaders(&mut Net::new(), loader(), None).unwrap();
    assert_eq!(
        t.global_step(),
        4 + 2 + 1,
        "4 batches per epoch: k = 1, 2, 4"
    );
    let err = builder(dir.path())
        .accumulate_grad_batches(2)
        .no_logger()
        .callback(GradientAccumulationScheduler::new([(0, 2)]))
        .build()
        .unwrap()
        .fit_loaders(&mut Net::new(), loader(), None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("accumulate_grad_batches"), "{err}");
}

//! Lightning's trainer flags through the public API: gradient accumulation (and its exact
//! resume), clipping, anomaly detection, batch limits, validation intervals, fast_dev_run,
//! overfit_batches, min_epochs, max_time, and the command-line flags.

#[path = "support/quiet.rs"]
mod quiet;

use std::cell::RefCell;
use std::rc::Rc;

use clap::Parser;
use fulmen::optim::ClipAlgorithm;
use fulmen::prelude::*;
use fulmen::trainer::{Limit, TrainerArgs};

#[lightning_module]
struct Mlp {
    l1: Linear<2, 4>,
    l2: Linear<4, 2>,
    #[hparam]
    scale: f32,
    #[hparam]
    nan_grads: bool,
}

#[lightning_module]
impl Mlp {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let logits = self.l2.forward(self.l1.forward(ctx.trace(x)).tanh());
        let logits = logits * E::from_f32(self.scale).unwrap();
        if self.nan_grads {
            // Zero forward, NaN backward: d sqrt(u)/du is infinite at 0, times 0.
            return (logits * E::from_f32(0.0).unwrap()).sqrt().sum();
        }
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        ctx.log("train_loss", &loss);
        loss
    }
    fn validation_step(&mut self, (x, y): ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        let logits = self.l2.forward(self.l1.forward(x).tanh());
        ctx.log(
            "val_loss",
            cross_entropy_with_logits_loss(logits, y.one_hot()),
        );
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

type Sample = ([f32; 2], Class<2>);

fn samples(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let x = i as f32 / n as f32;
            ([x, 1.0 - x * x], Class::new(i % 2).unwrap())
        })
        .collect()
}

fn loader(n: usize, batch: usize) -> DataLoader<Sample> {
    DataLoader::new(InMemoryDataset::new(samples(n)), batch)
}

/// Counts of what the loops did.
#[derive(Default, Debug, Clone, PartialEq)]
struct Counts {
    steps: usize,
    train_batches: Vec<usize>,
    validations: Vec<usize>,
    epochs: usize,
}

struct Count(Rc<RefCell<Counts>>);

impl Callback for Count {
    fn on_before_optimizer_step(&mut self, _t: &mut TrainerView) {
        self.0.borrow_mut().steps += 1;
    }
    fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, i: usize) {
        self.0.borrow_mut().train_batches.push(i);
    }
    fn on_validation_end(&mut self, t: &mut TrainerView) {
        if !t.sanity_checking() {
            let epoch = t.current_epoch();
            self.0.borrow_mut().validations.push(epoch);
        }
    }
    fn on_train_epoch_end(&mut self, _t: &mut TrainerView) {
        self.0.borrow_mut().epochs += 1;
    }
}

use quiet::trainer as builder;

/// Fits a fresh model on 16 samples in batches of 2 (8 batches), validating on 8 in batches
/// of 2 (4 batches); returns the trainer, the model and the counts.
fn fit(b: fulmen::TrainerBuilder) -> (fulmen::Result<()>, Trainer, Mlp, Counts) {
    let counts = Rc::new(RefCell::new(Counts::default()));
    let mut t = b.callback(Count(counts.clone())).build().unwrap();
    let mut model = Mlp::new(1.0, false);
    let r = t.fit_loaders(&mut model, loader(16, 2), Some(loader(8, 2)));
    let c = counts.borrow().clone();
    (r, t, model, c)
}

fn params(m: &Mlp) -> Vec<f32> {
    [
        m.l1.weight.as_vec(),
        m.l1.bias.as_vec(),
        m.l2.weight.as_vec(),
        m.l2.bias.as_vec(),
    ]
    .concat()
}

#[test]
fn accumulation_steps_every_k_batches_and_at_the_epochs_end() {
    let (r, t, _, c) = fit(builder().max_epochs(2).accumulate_grad_batches(3));
    r.unwrap();
    // 8 batches: steps after batches 3, 6 and 8 of each epoch.
    assert_eq!(c.steps, 6);
    assert_eq!(t.global_step(), 6);
    assert_eq!(c.train_batches.len(), 16);
}

#[test]
fn accumulating_k_batches_equals_one_batch_k_times_larger() {
    // Both runs start from the same weights (copied: the tests of this file share the global
    // seed stream, so re-seeding would not guarantee it).
    let start = Mlp::new(1.0, false);
    let run = |batch: usize, k: usize| {
        let mut model = twin(&start);
        builder()
            .max_epochs(1)
            .num_sanity_val_steps(0)
            .accumulate_grad_batches(k)
            .build()
            .unwrap()
            .fit_loaders(&mut model, loader(12, batch), None)
            .unwrap();
        params(&model)
    };
    let (accumulated, big) = (run(2, 3), run(6, 1));
    for (a, b) in accumulated.iter().zip(&big) {
        assert!((a - b).abs() < 1e-6, "{accumulated:?}\n{big:?}");
    }
}

#[test]
fn a_run_saved_inside_an_accumulation_window_resumes_exactly() {
    let dir = tempfile::tempdir().unwrap();
    let mid = dir.path().join("mid.ckpt");
    struct SaveAt(std::path::PathBuf);
    impl Callback for SaveAt {
        fn on_train_batch_end(&mut self, t: &mut TrainerView, _l: f64, i: usize) {
            if t.current_epoch() == 1 && i == 4 {
                t.save_checkpoint(&self.0, false);
            }
        }
    }
    let trainer = || {
        builder()
            .max_epochs(3)
            .accumulate_grad_batches(3)
            .default_root_dir(dir.path())
    };
    let mut full = Mlp::new(1.0, false);
    trainer()
        .callback(SaveAt(mid.clone()))
        .build()
        .unwrap()
        .fit_loaders(&mut full, loader(16, 2).shuffle(true), Some(loader(8, 2)))
        .unwrap();
    let ckpt = fulmen::checkpoint::Checkpoint::read(&mid).unwrap();
    assert!(
        ckpt.tensor_names().any(|n| n == "grads/l1.weight"),
        "pending gradients are saved"
    );
    let mut resumed = Mlp::new(1.0, false);
    trainer()
        .build()
        .unwrap()
        .fit_from(
            &mut resumed,
            &mut fulmen::datamodule::Loaders {
                train: Some(loader(16, 2).shuffle(true)),
                val: Some(loader(8, 2)),
                ..Default::default()
            },
            &mid,
        )
        .unwrap();
    let bits = |m: &Mlp| params(m).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&resumed), bits(&full));
}

#[test]
fn clipping_by_norm_and_by_value_bounds_the_step() {
    // Scaled logits make the gradients large; SGD with lr 0.1 moves the weights by
    // 0.1 × the clipped gradient.
    let step = |algorithm: ClipAlgorithm| {
        seed_everything(11);
        let mut model = Mlp::new(1000.0, false);
        let before = params(&model);
        builder()
            .max_steps(1)
            .num_sanity_val_steps(0)
            .gradient_clip_val(0.5)
            .gradient_clip_algorithm(algorithm)
            .build()
            .unwrap()
            .fit_loaders(&mut model, loader(4, 4), None)
            .unwrap();
        let delta: Vec<f32> = params(&model)
            .iter()
            .zip(&before)
            .map(|(a, b)| (a - b) / 0.1)
            .collect();
        delta
    };
    let by_norm = step(ClipAlgorithm::Norm);
    let norm = by_norm.iter().map(|d| d * d).sum::<f32>().sqrt();
    assert!(
        (norm - 0.5).abs() < 1e-3,
        "gradient norm after clipping: {norm}"
    );
    let by_value = step(ClipAlgorithm::Value);
    let max = by_value.iter().fold(0f32, |m, d| m.max(d.abs()));
    assert!(
        (max - 0.5).abs() < 1e-4,
        "largest gradient after clipping: {max}"
    );
}

#[test]
fn non_finite_gradients_are_reported_not_applied() {
    let run = |b: fulmen::TrainerBuilder| {
        let mut model = Mlp::new(1.0, true);
        let before = params(&model);
        let err = b
            .max_epochs(1)
            .build()
            .unwrap()
            .fit_loaders(&mut model, loader(4, 2), None)
            .unwrap_err()
            .to_string();
        assert_eq!(params(&model), before, "no step was taken");
        err
    };
    let err = run(builder().detect_anomaly(true));
    assert!(err.contains("`l1.weight`") && err.contains("NaN"), "{err}");
    let err = run(builder().gradient_clip_val(1.0));
    assert!(
        err.contains("gradient norm is NaN") && err.contains("not clipped"),
        "{err}"
    );
}

#[test]
fn limits_choose_how_many_batches_each_loop_runs() {
    let (r, t, _, c) = fit(builder()
        .max_epochs(2)
        .limit_train_batches(0.5)
        .limit_val_batches(1));
    r.unwrap();
    assert_eq!(t.global_step(), 8, "4 of 8 batches per epoch");
    assert_eq!(c.validations, [0, 1]);
    let (r, t, _, c) = fit(builder().max_epochs(2).limit_val_batches(0));
    r.unwrap();
    assert!(c.validations.is_empty() && !t.callback_metrics().contains_key("val_loss"));
    let (r, ..) = fit(builder().limit_train_batches(0.01));
    assert!(r.unwrap_err().to_string().contains("limit_train_batches"));
    let err = builder()
        .limit_val_batches(1.5)
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("limit_val_batches"), "{err}");
}

#[test]
fn validation_runs_on_its_interval_and_epochs() {
    let (r, _, _, c) = fit(builder().max_epochs(2).val_check_interval(0.5));
    r.unwrap();
    assert_eq!(c.validations, [0, 0, 1, 1], "twice per epoch");
    let (r, _, _, c) = fit(builder().max_epochs(1).val_check_interval(2usize));
    r.unwrap();
    assert_eq!(c.validations, [0, 0, 0, 0], "every 2 of 8 batches");
    let (r, _, _, c) = fit(builder().max_epochs(4).check_val_every_n_epoch(2));
    r.unwrap();
    assert_eq!(c.validations, [1, 3]);
    let (r, ..) = fit(builder().val_check_interval(9usize));
    assert!(r.unwrap_err().to_string().contains("val_check_interval"));
}

#[test]
fn fast_dev_run_runs_n_batches_once_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let counts = Rc::new(RefCell::new(Counts::default()));
    let mut t = Trainer::builder()
        .fast_dev_run(2)
        .max_epochs(50)
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .callback(Count(counts.clone()))
        .build()
        .unwrap();
    t.fit_loaders(&mut Mlp::new(1.0, false), loader(16, 2), Some(loader(8, 2)))
        .unwrap();
    let c = counts.borrow().clone();
    assert_eq!((t.global_step(), c.epochs), (2, 1));
    assert_eq!(c.train_batches, [0, 1]);
    assert_eq!(c.validations, [0]);
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no logs, no checkpoints"
    );
}

#[test]
fn overfit_batches_trains_on_the_same_unshuffled_batches() {
    let (r, t, _, c) = fit(builder().max_epochs(3).overfit_batches(2usize));
    r.unwrap();
    assert_eq!(t.global_step(), 6);
    assert_eq!(c.train_batches, [0, 1, 0, 1, 0, 1]);
    // Shuffled loaders with different seeds train alike once overfit_batches turns the
    // shuffle off; without it they do not.
    let start = Mlp::new(1.0, false);
    let trained = |overfit: bool, seed: u64| {
        let mut model = twin(&start);
        let mut b = builder().max_epochs(3).num_sanity_val_steps(0);
        b = if overfit {
            b.overfit_batches(2usize)
        } else {
            b.limit_train_batches(2usize)
        };
        b.build()
            .unwrap()
            .fit_loaders(&mut model, loader(16, 2).shuffle(true).seed(seed), None)
            .unwrap();
        params(&model)
    };
    assert_eq!(trained(true, 1), trained(true, 2));
    assert_ne!(trained(false, 1), trained(false, 2));
}

/// A module with `m`'s weights.
fn twin(m: &Mlp) -> Mlp {
    let mut copy = Mlp::new(1.0, false);
    fulmen::checkpoint::Checkpoint::of_module(m, "Mlp")
        .and_then(|c| c.load_weights(&mut copy))
        .unwrap();
    copy
}

#[test]
fn min_epochs_outlasts_a_stop_request_and_max_time_stops_early() {
    struct StopNow;
    impl Callback for StopNow {
        fn on_train_epoch_end(&mut self, t: &mut TrainerView) {
            t.request_stop();
        }
    }
    let (r, t, ..) = fit(builder().max_epochs(10).min_epochs(3).callback(StopNow));
    r.unwrap();
    assert_eq!(t.current_epoch(), 3);
    let (r, t, ..) = fit(builder().max_epochs(10).callback(StopNow));
    r.unwrap();
    assert_eq!(t.current_epoch(), 1);
    let (r, t, _, c) = fit(builder().max_epochs(10).max_time(std::time::Duration::ZERO));
    r.unwrap();
    assert_eq!(t.global_step(), 1, "stops after the first batch");
    assert_eq!(c.validations, [0], "validates when it stops");
}

#[derive(Parser)]
struct Cli {
    #[command(flatten)]
    trainer: TrainerArgs,
}

#[test]
fn command_line_flags_override_the_code() {
    let cli = Cli::parse_from([
        "prog",
        "--limit-train-batches",
        "0.25",
        "--limit-val-batches",
        "3",
        "--accumulate-grad-batches",
        "2",
        "--gradient-clip-algorithm",
        "value",
        "--fast-dev-run",
    ]);
    let a = &cli.trainer;
    assert_eq!(a.limit_train_batches, Some(Limit::Fraction(0.25)));
    assert_eq!(a.limit_val_batches, Some(Limit::Count(3)));
    assert_eq!(a.accumulate_grad_batches, Some(2));
    assert_eq!(a.gradient_clip_algorithm, Some(ClipAlgorithm::Value));
    assert_eq!(a.fast_dev_run, Some(1));
    let (r, t, ..) = fit(builder().max_epochs(5).args(a));
    r.unwrap();
    assert_eq!(
        t.global_step(),
        1,
        "fast_dev_run from the command line wins"
    );
    assert!(Cli::try_parse_from(["prog", "--gradient-clip-algorithm", "clamp"]).is_err());
    let time = |s: &str| Cli::try_parse_from(["prog", "--max-time", s]).map(|c| c.trainer.max_time);
    assert_eq!(
        time("00:01:30:05").unwrap(),
        Some(std::time::Duration::from_secs(5405))
    );
    assert_eq!(
        time("2.5").unwrap(),
        Some(std::time::Duration::from_secs_f64(2.5))
    );
    let err = time("1:30").err().unwrap().to_string();
    assert!(err.contains("DD:HH:MM:SS"), "{err}");
}

#[test]
fn precisions_train_and_bf16_is_refused_clearly() {
    use fulmen::trainer::Precision;
    let (r, ..) = fit(builder()
        .max_epochs(1)
        .precision("32-true".parse().unwrap()));
    r.unwrap();
    // 64-true: trained in f64 on a copy, the f32 module gets the weights back; its
    // checkpoints hold f64 tensors, which load into the f32 module, and resume exactly.
    let dir = tempfile::tempdir().unwrap();
    let run64 = |b: fulmen::TrainerBuilder| {
        b.max_epochs(2)
            .precision(Precision::F64)
            .default_root_dir(dir.path())
            .build()
            .unwrap()
    };
    let mut m = Mlp::new(1.0, false);
    let before = params(&m);
    run64(
        builder()
            .enable_checkpointing(true)
            .callback(fulmen::callbacks::ModelCheckpoint::new().save_top_k(-1)),
    )
    .fit_loaders(&mut m, loader(16, 2), Some(loader(8, 2)))
    .unwrap();
    assert_ne!(params(&m), before);
    let first = dir.path().join("checkpoints/epoch=0-step=8.ckpt");
    let last = dir.path().join("checkpoints/epoch=1-step=16.ckpt");
    let reloaded = Mlp::load_from_checkpoint(&last).unwrap();
    assert_eq!(
        params(&reloaded),
        params(&m),
        "f64 weights rounded to f32 both ways"
    );
    let mut resumed = Mlp::new(1.0, false);
    run64(builder())
        .fit_from(
            &mut resumed,
            &mut fulmen::datamodule::Loaders {
                train: Some(loader(16, 2)),
                val: Some(loader(8, 2)),
                ..Default::default()
            },
            &first,
        )
        .unwrap();
    assert_eq!(params(&resumed), params(&m));

    // 16-true: everything in half precision; checkpoints hold F16 tensors that load into
    // the f32 module.
    let dir16 = tempfile::tempdir().unwrap();
    let mut m = Mlp::new(1.0, false);
    let before = params(&m);
    builder()
        .max_epochs(2)
        .precision(Precision::True16)
        .default_root_dir(dir16.path())
        .enable_checkpointing(true)
        .build()
        .unwrap()
        .fit_loaders(&mut m, loader(16, 2), Some(loader(8, 2)))
        .unwrap();
    assert_ne!(params(&m), before);
    assert!(params(&m).iter().all(|v| v.is_finite()));
    let ckpt = dir16.path().join("checkpoints/epoch=1-step=16.ckpt");
    assert_eq!(
        params(&Mlp::load_from_checkpoint(&ckpt).unwrap()),
        params(&m)
    );
    let err = "bf16-mixed".parse::<Precision>().unwrap_err().to_string();
    assert!(err.contains("bfloat16"), "{err}");
    let err = Cli::try_parse_from(["prog", "--precision", "bf16-true"])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("bfloat16"), "{err}");
}

#[test]
fn sixteen_mixed_scales_the_loss_keeps_f32_weights_and_resumes_exactly() {
    use fulmen::trainer::Precision;
    struct Scales(Rc<RefCell<Vec<f64>>>);
    impl Callback for Scales {
        fn on_train_batch_end(&mut self, t: &mut TrainerView, _l: f64, _i: usize) {
            self.0.borrow_mut().push(t.loss_scale().unwrap());
        }
    }
    let scales_of = |logit_scale: f32| -> (Vec<f64>, bool) {
        let scales = Rc::new(RefCell::new(Vec::new()));
        let mut m = Mlp::new(logit_scale, false);
        let before = params(&m);
        builder()
            .max_epochs(1)
            .precision(Precision::Mixed16)
            .callback(Scales(scales.clone()))
            .build()
            .unwrap()
            .fit_loaders(&mut m, loader(16, 2), None)
            .unwrap();
        assert!(
            params(&m).iter().all(|v| v.is_finite()),
            "no overflow reaches the weights"
        );
        let s = scales.borrow().clone();
        (s, params(&m) != before)
    };
    // Cross-entropy's backward overflows f16 at 2^15 (NaN): one step is skipped, then the
    // halved scale holds.
    assert_eq!(scales_of(1.0), (vec![16384.0; 8], true));
    // Logits ×1000 make a loss whose scaled value overflows f16 until the scale is far lower.
    let (big, _) = scales_of(1000.0);
    assert!(
        big.windows(2).all(|w| w[1] <= w[0]) && big[7] < 16384.0,
        "{big:?}"
    );

    let dir = tempfile::tempdir().unwrap();
    let run = |b: fulmen::TrainerBuilder| {
        b.max_epochs(2)
            .precision(Precision::Mixed16)
            .default_root_dir(dir.path())
            .enable_checkpointing(true)
            .build()
            .unwrap()
    };
    let mut full = Mlp::new(1.0, false);
    run(builder().callback(fulmen::callbacks::ModelCheckpoint::new().save_top_k(-1)))
        .fit_loaders(&mut full, loader(16, 2).shuffle(true), Some(loader(8, 2)))
        .unwrap();
    let first = dir.path().join("checkpoints/epoch=0-step=8.ckpt");
    let ckpt = fulmen::checkpoint::Checkpoint::read(&first).unwrap();
    assert!(ckpt.tensor_names().any(|n| n == "l1.weight"));
    let mut resumed = Mlp::new(1.0, false);
    run(builder())
        .fit_from(
            &mut resumed,
            &mut fulmen::datamodule::Loaders {
                train: Some(loader(16, 2).shuffle(true)),
                val: Some(loader(8, 2)),
                ..Default::default()
            },
            &first,
        )
        .unwrap();
    let bits = |m: &Mlp| params(m).iter().map(|v| v.to_bits()).collect::<Vec<_>>();
    assert_eq!(bits(&resumed), bits(&full));
}

#[test]
fn testing_in_half_precision_leaves_the_f32_weights_alone() {
    use fulmen::trainer::Precision;
    let mut m = Mlp::new(1.0, false);
    let before = params(&m);
    let metrics = builder()
        .precision(Precision::True16)
        .build()
        .unwrap()
        .validate_loader(&mut m, loader(8, 2))
        .unwrap();
    assert!(metrics["val_loss"].is_finite());
    assert_eq!(params(&m), before);
}

//! The learning-rate range test (`Tuner::lr_find`): each step's rate grows exponentially from
//! `min_lr`, the smoothed loss stops the test once it diverges, the suggestion is where the
//! loss falls fastest, the plot is a PNG with the curve and the suggestion, and the module and
//! trainer are as they were afterwards. As a callback (`LearningRateFinder`) the fit trains at
//! the suggestion, its scheduler starting from it, as the tuner's user would; a resumed fit
//! runs no test.

#[path = "support/examples.rs"]
mod examples;
#[path = "support/serial.rs"]
mod serial;

use std::cell::{Cell, RefCell};
use std::rc::Rc;

use fulmen::callbacks::LearningRateFinder;
use fulmen::optim::StepLR;
use fulmen::prelude::*;
use fulmen::tuner::{LrFind, Tuner};

type Sample = ([f32; 2], [f32; 1]);

fn loaders() -> fulmen::datamodule::Loaders<Sample> {
    let samples: Vec<Sample> = (0..64)
        .map(|i| {
            let x = [(i as f32 * 0.7).sin(), (i as f32 * 0.3).cos()];
            (x, [3.0 * x[0] - 2.0 * x[1] + 0.5])
        })
        .collect();
    fulmen::datamodule::Loaders {
        train: Some(DataLoader::new(InMemoryDataset::new(samples), 32)),
        ..Default::default()
    }
}

#[lightning_module]
struct Net {
    layer: Linear<2, 1>,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        mse_loss(self.layer.forward(ctx.trace(x)), y)
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.01)
    }
}

/// Counts the epochs its trainer runs.
struct Epochs(Rc<Cell<usize>>);
impl Callback for Epochs {
    fn on_train_epoch_end(&mut self, _: &mut TrainerView) {
        self.0.set(self.0.get() + 1);
    }
}

#[test]
fn the_range_test_finds_the_steepest_fall_and_leaves_module_and_trainer_as_they_were() {
    let _one = serial::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    seed_everything(1);
    let mut net = Net::new();
    let before = (net.layer.weight.as_vec(), net.layer.bias.as_vec());
    let epochs = Rc::new(Cell::new(0));
    let mut trainer = Trainer::builder()
        .max_epochs(2)
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .enable_checkpointing(false)
        .callback(Epochs(epochs.clone()))
        .build()
        .unwrap();
    let settings = LrFind::default().min_lr(1e-4).max_lr(100.0);
    let found = Tuner::new(&mut trainer)
        .lr_find(&mut net, &mut loaders(), settings)
        .unwrap();

    // Exponential rates, one per step, until the loss diverged (SGD on this data does by 100).
    let n = found.losses.len();
    assert_eq!(found.lrs.len(), n);
    assert!(
        20 < n && n < 100,
        "{n} steps: {:?} {:?}",
        found.lrs,
        found.losses
    );
    for (i, lr) in found.lrs.iter().enumerate() {
        let want = 1e-4 * 1e6f64.powf(i as f64 / 100.0);
        assert!((lr / want - 1.0).abs() < 1e-12, "step {i}: {lr} vs {want}");
    }
    let last = found.losses[n - 1];
    let best = found.losses.iter().copied().fold(f64::INFINITY, f64::min);
    assert!(
        last.is_nan() || last > 4.0 * best,
        "stopped on divergence: {last} vs best {best}"
    );

    // The suggestion: the steepest fall by NumPy's gradient, past the first 10 steps.
    let kept = &found.losses[10..n - 1];
    let gradient: Vec<f64> = (0..kept.len())
        .map(|i| match i {
            0 => kept[1] - kept[0],
            i if i == kept.len() - 1 => kept[i] - kept[i - 1],
            i => (kept[i + 1] - kept[i - 1]) / 2.0,
        })
        .collect();
    let steepest = (0..gradient.len())
        .min_by(|&a, &b| gradient[a].total_cmp(&gradient[b]))
        .unwrap();
    assert_eq!(found.suggestion(), Some(found.lrs[10 + steepest]));

    // The plot: the blue curve and the red suggestion on white.
    let png = dir.path().join("lr_find.png");
    found.plot(&png).unwrap();
    let image = image::open(&png).unwrap().to_rgb8();
    assert_eq!(image.dimensions(), (800, 560));
    let count = |f: &dyn Fn(&image::Rgb<u8>) -> bool| image.pixels().filter(|p| f(p)).count();
    assert!(count(&|p| p.0 == [0, 0, 255]) > 200, "a curve");
    assert!(count(&|p| p.0 == [255, 0, 0]) > 50, "a suggestion");

    // The module is as it was, and the trainer fits with its own callbacks and logger.
    assert_eq!((net.layer.weight.as_vec(), net.layer.bias.as_vec()), before);
    assert_eq!(epochs.get(), 0, "the trainer's callbacks sat the test out");
    trainer.fit(&mut net, &mut loaders()).unwrap();
    assert_eq!(epochs.get(), 2);
    let versions: Vec<_> = std::fs::read_dir(dir.path().join("lightning_logs"))
        .unwrap()
        .collect();
    assert_eq!(versions.len(), 1, "the test logged nothing");
}

#[test]
fn settings_that_make_no_curve_are_refused() {
    let _one = serial::one_at_a_time();
    let mut trainer = Trainer::builder().build().unwrap();
    let mut net = Net::new();
    let bad = LrFind::default().min_lr(1.0).max_lr(0.5);
    let err = Tuner::new(&mut trainer)
        .lr_find(&mut net, &mut loaders(), bad)
        .unwrap_err();
    assert!(err.to_string().contains("max_lr"), "{err}");
}

#[test]
fn the_example_plots_the_curve_and_trains_at_the_suggestion() {
    // With the tuner, and as the fit's callback: the same suggestion, the same training.
    let mut outs = Vec::new();
    for as_callback in [false, true] {
        let dir = tempfile::tempdir().unwrap();
        let mut args = vec![
            "--data-dir",
            examples::DATA,
            "--seed",
            "1",
            "--enable-progress-bar",
            "false",
        ];
        if as_callback {
            args.push("--as-callback");
        }
        let out = examples::run("lr_find", dir.path(), &args);
        let text = examples::text(&out);
        assert!(out.status.success(), "{text}");
        let lr = text
            .lines()
            .find_map(|l| l.strip_prefix("suggested learning rate: "));
        let lr: f64 = lr.unwrap_or_else(|| panic!("{text}")).parse().unwrap();
        assert!((1e-6..1.0).contains(&lr), "{text}");
        let val = text
            .lines()
            .find(|l| l.starts_with("val_acc after 10 epochs"));
        let val = val.unwrap_or_else(|| panic!("{text}")).to_string();
        assert!(image::open(dir.path().join("lr_find.png")).is_ok());
        outs.push((lr, val));
    }
    assert_eq!(outs[0], outs[1]);
}

#[test]
fn accumulated_windows_pair_each_step_with_its_rate_and_loss() {
    let _one = serial::one_at_a_time();
    seed_everything(2);
    let mut net = Net::new();
    // Two batches an epoch, windows of three: every window is cut short by its epoch's end.
    let mut trainer = Trainer::builder()
        .accumulate_grad_batches(3)
        .no_logger()
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .enable_checkpointing(false)
        .build()
        .unwrap();
    let settings = LrFind::default()
        .num_training(20)
        .early_stop_threshold(None);
    let found = Tuner::new(&mut trainer)
        .lr_find(&mut net, &mut loaders(), settings)
        .unwrap();
    assert_eq!((found.lrs.len(), found.losses.len()), (20, 20));
    for (i, lr) in found.lrs.iter().enumerate() {
        let want = 1e-8 * 1e8f64.powf(i as f64 / 20.0);
        assert!((lr / want - 1.0).abs() < 1e-12, "step {i}: {lr} vs {want}");
    }
}

/// `Net` at a rate of its own, halved every epoch.
#[lightning_module]
struct Scheduled {
    layer: Linear<2, 1>,
    #[hparam]
    lr: f64,
}

#[lightning_module]
impl Scheduled {
    fn training_step(
        &mut self,
        (x, y): RegressionBatch<2, 1, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        mse_loss(self.layer.forward(ctx.trace(x)), y)
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(self.lr).scheduler(StepLR::new(1, 0.5))
    }
}

/// The first optimizer's rate at the start of each training epoch.
struct Rates(Rc<RefCell<Vec<f64>>>);
impl Callback for Rates {
    fn on_train_epoch_start(&mut self, trainer: &mut TrainerView) {
        self.0.borrow_mut().push(trainer.lr());
    }
}

#[test]
fn the_finder_callback_trains_at_the_suggestion_as_the_tuners_user_would() {
    let _one = serial::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let settings = || {
        LrFind::default()
            .min_lr(1e-4)
            .max_lr(100.0)
            .num_training(40)
    };
    let trainer = |rates: &Rc<RefCell<Vec<f64>>>| {
        Trainer::builder()
            .max_epochs(3)
            .default_root_dir(dir.path())
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .callback(Rates(rates.clone()))
    };

    // The callback.
    seed_everything(1);
    let mut by_callback = Scheduled::new(0.01);
    let rates = Rc::new(RefCell::new(Vec::new()));
    let finder = LearningRateFinder::new(settings());
    let found = finder.found();
    let mut t = trainer(&rates).callback(finder).build().unwrap();
    t.fit(&mut by_callback, &mut loaders()).unwrap();
    let suggestion = found
        .borrow()
        .as_ref()
        .and_then(|f| f.suggestion())
        .unwrap();
    assert_ne!(suggestion, 0.01);
    // Every epoch's rate is the schedule's, from the suggestion.
    let want = [suggestion, suggestion / 2.0, suggestion / 4.0];
    assert_eq!(*rates.borrow(), want);

    // The tuner, its suggestion then set by hand: the same weights.
    seed_everything(1);
    let mut by_hand = Scheduled::new(0.01);
    let unused = Rc::new(RefCell::new(Vec::new()));
    let mut t = trainer(&unused)
        .no_logger()
        .enable_checkpointing(false)
        .build()
        .unwrap();
    let tuned = Tuner::new(&mut t)
        .lr_find(&mut by_hand, &mut loaders(), settings())
        .unwrap();
    assert_eq!(tuned.suggestion(), Some(suggestion));
    by_hand.lr = suggestion;
    t.fit(&mut by_hand, &mut loaders()).unwrap();
    assert_eq!(
        (by_hand.layer.weight.as_vec(), by_hand.layer.bias.as_vec()),
        (
            by_callback.layer.weight.as_vec(),
            by_callback.layer.bias.as_vec()
        )
    );

    // Resumed, the fit runs no test: its rates are the checkpoint's.
    let rates = Rc::new(RefCell::new(Vec::new()));
    let finder = LearningRateFinder::new(settings());
    let found = finder.found();
    let mut t = trainer(&rates)
        .max_epochs(4)
        .callback(finder)
        .build()
        .unwrap();
    t.fit_from(&mut by_callback, &mut loaders(), "last")
        .unwrap();
    assert!(found.borrow().is_none());
    assert_eq!(*rates.borrow(), [suggestion / 8.0]);
}

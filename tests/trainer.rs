//! Training through the public API: logging into metrics.csv, Lightning's logging defaults,
//! errors for bad settings, NaN losses and missing steps.

use fulmen::prelude::*;

#[path = "support/quiet.rs"]
mod quiet;

#[lightning_module]
struct Mlp {
    l1: Linear<4, 8>,
    l2: Linear<8, 3>,
    #[hparam]
    lr: f64,
    #[hparam]
    poison: bool,
}

#[lightning_module]
impl Mlp {
    fn forward<T: Tape<E, D>>(
        &self,
        x: Tensor<(usize, Const<4>), E, D, T>,
    ) -> Tensor<(usize, Const<3>), E, D, T> {
        self.l2.forward(self.l1.forward(x).relu())
    }
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let loss = cross_entropy_with_logits_loss(self.forward(ctx.trace(x)), y.one_hot());
        ctx.log("train_loss", &loss);
        ctx.log("loss_both", &loss).on_epoch(true);
        ctx.log("batch_max", ctx.batch_size())
            .on_step(false)
            .on_epoch(true)
            .reduce(fulmen::context::Reduce::Max);
        if self.poison {
            return loss * E::nan();
        }
        loss
    }
    fn validation_step(&self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) {
        let logits = self.forward(x);
        ctx.log("val_acc", accuracy(&logits, &y));
        ctx.log("val_n", ctx.batch_size() as f64);
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::adam(self.lr)
    }
}

fn iris() -> Vec<([f32; 4], Class<3>)> {
    fulmen::data::iris::bundled()
}

fn read_csv(path: &std::path::Path) -> (Vec<String>, Vec<Vec<String>>) {
    let text = std::fs::read_to_string(path).unwrap();
    let mut lines = text.lines();
    let header = lines.next().unwrap().split(',').map(String::from).collect();
    let rows = lines
        .map(|l| l.split(',').map(String::from).collect())
        .collect();
    (header, rows)
}

#[test]
fn metrics_csv_and_hparams_yaml_follow_lightnings_layout() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Mlp::new(0.01, false);
    let train = DataLoader::new(InMemoryDataset::new(iris()), 40); // 4 batches: 40, 40, 40, 30
    let val = DataLoader::new(InMemoryDataset::new(iris()[..25].to_vec()), 10); // 10, 10, 5
    let mut trainer = Trainer::builder()
        .max_epochs(2)
        .default_root_dir(dir.path())
        .log_every_n_steps(1)
        .enable_progress_bar(false)
        .build()
        .unwrap();
    trainer.fit_loaders(&mut model, train, Some(val)).unwrap();
    assert_eq!(trainer.global_step(), 8);
    assert_eq!(trainer.current_epoch(), 2);
    let log_dir = trainer.log_dir().unwrap();
    assert_eq!(log_dir, dir.path().join("lightning_logs/version_0"));

    let (header, rows) = read_csv(&log_dir.join("metrics.csv"));
    assert_eq!(
        header,
        [
            "batch_max",
            "epoch",
            "loss_both_epoch",
            "loss_both_step",
            "step",
            "train_loss",
            "val_acc",
            "val_n"
        ]
    );
    let col = |name: &str| header.iter().position(|h| h == name).unwrap();
    // 8 step rows and, per epoch, one validation row and one training-epoch row.
    let step_rows: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| !r[col("train_loss")].is_empty())
        .collect();
    assert_eq!(step_rows.len(), 8);
    for (i, r) in step_rows.iter().enumerate() {
        assert_eq!(r[col("step")], i.to_string());
        assert_eq!(r[col("epoch")], (i / 4).to_string());
        assert_eq!(r[col("loss_both_step")], r[col("train_loss")]);
    }
    let val_rows: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| !r[col("val_acc")].is_empty())
        .collect();
    assert_eq!(val_rows.len(), 2);
    assert_eq!(
        val_rows[1][col("step")],
        "7",
        "epoch metrics are logged at the last step"
    );
    // The epoch mean is weighted by batch size: (10 + 10 + 5 rows) with values 10, 10, 5.
    let weighted: f64 = (10.0 * 10.0 + 10.0 * 10.0 + 5.0 * 5.0) / 25.0;
    assert_eq!(val_rows[0][col("val_n")].parse::<f64>().unwrap(), weighted);
    let epoch_rows: Vec<&Vec<String>> = rows
        .iter()
        .filter(|r| !r[col("loss_both_epoch")].is_empty())
        .collect();
    assert_eq!(epoch_rows.len(), 2);
    assert_eq!(
        epoch_rows[0][col("batch_max")],
        "40",
        "reduce=Max keeps the largest value"
    );
    let mean_of_steps: f64 = {
        let v: Vec<f64> = step_rows[..4]
            .iter()
            .map(|r| r[col("train_loss")].parse().unwrap())
            .collect();
        (v[0] * 40.0 + v[1] * 40.0 + v[2] * 40.0 + v[3] * 30.0) / 150.0
    };
    let logged: f64 = epoch_rows[0][col("loss_both_epoch")].parse().unwrap();
    assert!(
        (logged - mean_of_steps).abs() < 1e-6,
        "{logged} vs {mean_of_steps}"
    );

    let hparams = std::fs::read_to_string(log_dir.join("hparams.yaml")).unwrap();
    assert_eq!(hparams, "lr: 0.01\npoison: false\n");
    assert!(trainer.callback_metrics().contains_key("val_acc"));
    assert!(trainer.callback_metrics().contains_key("loss_both_epoch"));

    // A second run gets the next version directory.
    let mut again = Trainer::builder()
        .max_steps(1)
        .default_root_dir(dir.path())
        .enable_progress_bar(false)
        .build()
        .unwrap();
    again
        .fit_loaders(
            &mut model,
            DataLoader::new(InMemoryDataset::new(iris()), 50),
            None,
        )
        .unwrap();
    assert_eq!(
        again.log_dir().unwrap(),
        dir.path().join("lightning_logs/version_1")
    );
    assert_eq!(
        again.global_step(),
        1,
        "max_steps stops inside the first epoch"
    );
}

#[test]
fn a_nan_loss_stops_training_naming_epoch_and_step_before_touching_weights() {
    let mut model = Mlp::new(0.01, true);
    let before = model.l1.weight.as_vec();
    let mut trainer = Trainer::builder()
        .max_epochs(3)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .build()
        .unwrap();
    let err = trainer
        .fit_loaders(
            &mut model,
            DataLoader::new(InMemoryDataset::new(iris()), 16),
            None,
        )
        .unwrap_err();
    assert!(
        matches!(
            err,
            fulmen::Error::NonFiniteLoss {
                epoch: 0,
                step: 0,
                batch: 0,
                ..
            }
        ),
        "{err}"
    );
    assert!(err.to_string().contains("epoch 0, step 0"), "{err}");
    assert_eq!(model.l1.weight.as_vec(), before);
}

#[test]
fn settings_the_build_cannot_honour_are_refused() {
    let err = Trainer::builder()
        .accelerator("gpu")
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("without CUDA support"), "{err}");
    let err = Trainer::builder()
        .accelerator("tpu")
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`tpu` is not an accelerator"), "{err}");
    let err = Trainer::builder()
        .devices(4)
        .build()
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("`devices`"), "{err}");
    assert!(Trainer::builder().accelerator("auto").build().is_ok());
}

#[test]
fn stages_without_their_step_or_data_say_so() {
    let mut model = Mlp::new(0.01, false);
    let mut trainer = Trainer::builder()
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .build()
        .unwrap();
    let loader = DataLoader::new(InMemoryDataset::new(iris()), 16);
    let err = trainer
        .test_loader(&mut model, loader.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`Mlp` has no `test_step`"), "{err}");
    let err = trainer
        .predict_loader(&mut model, loader.clone())
        .unwrap_err()
        .to_string();
    assert!(err.contains("`Mlp` has no `predict_step`"), "{err}");
    let metrics = trainer.validate_loader(&mut model, loader).unwrap();
    assert_eq!(metrics["val_n"], (16.0 * 16.0 * 9.0 + 6.0 * 6.0) / 150.0);
    let empty = DataLoader::new(InMemoryDataset::new(Vec::<([f32; 4], Class<3>)>::new()), 16);
    let err = trainer
        .fit_loaders(&mut model, empty, None)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("train_dataloader") && err.contains("empty"),
        "{err}"
    );
}

#[lightning_module]
struct Dict {
    l: Linear<4, 3>,
}

#[lightning_module]
impl Dict {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let logits = self.l.forward(ctx.trace(x));
        let acc = accuracy(&logits, &y);
        let loss = cross_entropy_with_logits_loss(logits, y.one_hot());
        ctx.log_dict([("d_loss", loss.log_value()), ("d_acc", acc)])
            .prog_bar(true)
            .on_epoch(true);
        loss
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

/// Keeps what the progress bar and callbacks saw at the end of training.
struct Seen(std::rc::Rc<std::cell::RefCell<Vec<String>>>);

impl Callback for Seen {
    fn on_train_end(&mut self, t: &mut TrainerView) {
        let mut seen = self.0.borrow_mut();
        seen.extend(t.progress_bar_metrics().keys().cloned());
        seen.extend(t.callback_metrics().keys().map(|k| format!("cb:{k}")));
    }
}

#[test]
fn log_dict_logs_every_value_with_the_options_chained_on_it() {
    let seen = std::rc::Rc::default();
    let mut trainer = quiet::trainer()
        .max_epochs(1)
        .callback(Seen(std::rc::Rc::clone(&seen)))
        .build()
        .unwrap();
    let loader = DataLoader::new(InMemoryDataset::new(iris()), 16);
    trainer.fit_loaders(&mut Dict::new(), loader, None).unwrap();
    let seen = seen.borrow();
    for key in [
        "d_acc_step",
        "d_loss_step",
        "cb:d_acc_epoch",
        "cb:d_loss_epoch",
    ] {
        assert!(seen.iter().any(|k| k == key), "{key} in {seen:?}");
    }
}

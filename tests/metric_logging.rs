//! Metric objects in a module (`#[metric]` fields): logging one logs the metric over the whole
//! epoch (not a mean of its batch values), reset for the next; its state is checkpointed, so a
//! run resumed inside an epoch logs the same value; in 16-mixed the half copy's updates count;
//! a metric that is not a field is refused by name.

#[path = "support/quiet.rs"]
mod quiet;
#[path = "support/serial.rs"]
mod serial;

use fulmen::callbacks::ModelCheckpoint;
use fulmen::metrics::{Accuracy, Average, F1Score, MetricCollection};
use fulmen::prelude::*;
use fulmen::trainer::Precision;

type Sample = ([f32; 2], Class<3>);

fn samples(n: usize, shift: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let j = i + shift;
            let x = [
                ((j * 37) % 17) as f32 / 8.0 - 1.0,
                ((j * 11) % 13) as f32 / 6.0 - 1.0,
            ];
            let class = if x[0] + 0.3 * x[1] > 0.4 {
                0
            } else if x[1] > 0.0 {
                1
            } else {
                2
            };
            (x, Class::new(class).unwrap())
        })
        .collect()
}

#[lightning_module]
struct Scored {
    layer: Linear<2, 3>,
    #[metric(Accuracy::multiclass(3))]
    train_acc: Accuracy,
    #[metric(F1Score::multiclass(3).average(Average::Macro))]
    val_f1: F1Score,
    #[hparam]
    stray: bool,
}

#[lightning_module]
impl Scored {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<Loss<E, D>> {
        let logits = self.layer.forward(ctx.trace(x));
        self.train_acc.update(&logits, &y)?;
        ctx.log("train_acc", &self.train_acc).on_epoch(true);
        Ok(cross_entropy_with_logits_loss(logits, y.one_hot()))
    }
    fn validation_step(
        &mut self,
        (x, y): ClassBatch<2, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let logits = self.layer.forward(x);
        if self.stray {
            // A metric that is no field of the module.
            let mut local = Accuracy::multiclass(3);
            local.update(&logits, &y)?;
            ctx.log("local_acc", &local);
        }
        self.val_f1.update(&logits, &y)?;
        ctx.log("val_f1", &self.val_f1);
        Ok(())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.5)
    }
}

fn loaders() -> (DataLoader<Sample>, DataLoader<Sample>) {
    (
        DataLoader::new(InMemoryDataset::new(samples(40, 0)), 6).shuffle(true),
        // 31 samples in batches of 7: the last has 3.
        DataLoader::new(InMemoryDataset::new(samples(31, 100)), 7),
    )
}

/// The macro F1 over every validation sample at once, and the mean of the batches' F1s.
fn f1_whole_and_batch_mean(model: &Scored<f32, Cpu>) -> (f64, f64) {
    let dev = Cpu::default();
    let (mut whole, mut per_batch) = (F1Score::multiclass(3), Vec::new());
    for chunk in samples(31, 100).chunks(7) {
        let x: Tensor<(usize, Const<2>), f32, Cpu> = dev.tensor_from_vec(
            chunk.iter().flat_map(|s| s.0).collect(),
            (chunk.len(), Const),
        );
        let y: Vec<usize> = chunk.iter().map(|s| s.1.index()).collect();
        let logits = model.layer.forward(x);
        whole.update(&logits, &y).unwrap();
        let mut one = F1Score::multiclass(3);
        one.update(&logits, &y).unwrap();
        per_batch.push(one.compute().unwrap());
    }
    let mean = per_batch.iter().sum::<f64>() / per_batch.len() as f64;
    (whole.compute().unwrap(), mean)
}

#[test]
fn a_logged_metric_is_the_epochs_value_and_starts_again_each_epoch() {
    let _one = serial::one_at_a_time();
    seed_everything(4);
    let mut model = Scored::new(false);
    let (train, val) = loaders();
    let mut trainer = quiet::trainer().max_epochs(2).build().unwrap();
    trainer
        .fit_loaders(&mut model, train, Some(val.clone()))
        .unwrap();
    let logged = trainer.callback_metrics()["val_f1"];
    let (whole, batch_mean) = f1_whole_and_batch_mean(&model);
    assert!((logged - whole).abs() < 1e-12, "{logged} vs {whole}");
    assert!(
        (whole - batch_mean).abs() > 1e-3,
        "the data tells the two apart"
    );
    // Validated again: the same value, not one accumulated over both.
    let again = trainer.validate_loader(&mut model, val).unwrap()["val_f1"];
    assert_eq!(again, logged);
    // Training: the batch's value per step, the epoch's at its end.
    let metrics = trainer.callback_metrics();
    for key in ["train_acc_step", "train_acc_epoch"] {
        assert!((0.0..=1.0).contains(&metrics[key]), "{key}: {metrics:?}");
    }
}

#[test]
fn a_run_resumed_inside_an_epoch_logs_the_metric_of_the_whole_epoch() {
    let _one = serial::one_at_a_time();
    let dir = tempfile::tempdir().unwrap();
    let fit = |epochs: usize, resume: Option<&std::path::Path>, precision: Precision| {
        seed_everything(9);
        let mut model = Scored::new(false);
        let (train, val) = loaders();
        let mut trainer = quiet::trainer()
            .max_epochs(epochs)
            .precision(precision)
            .enable_checkpointing(true)
            .default_root_dir(dir.path())
            .callback(ModelCheckpoint::new().every_n_train_steps(3).save_top_k(-1))
            .build()
            .unwrap();
        let mut loaders = fulmen::datamodule::Loaders {
            train: Some(train),
            val: Some(val),
            ..Default::default()
        };
        trainer.fit_from(&mut model, &mut loaders, resume).unwrap();
        trainer.callback_metrics()["train_acc_epoch"]
    };
    for precision in [Precision::F32, Precision::Mixed16] {
        let whole = fit(2, None, precision);
        // 7 batches an epoch: the checkpoint after step 9 is inside the second epoch.
        let inside = std::fs::read_dir(dir.path().join("checkpoints"))
            .unwrap()
            .map(|e| e.unwrap().path())
            .find(|p| p.to_string_lossy().contains("step=9"))
            .unwrap();
        let resumed = fit(2, Some(&inside), precision);
        // Counted (in 16-mixed, from the half copy's updates) and learning.
        assert!((0.3..=1.0).contains(&whole), "{precision:?}: {whole}");
        assert_eq!(resumed, whole, "{precision:?}");
        std::fs::remove_dir_all(dir.path().join("checkpoints")).unwrap();
    }
}

#[test]
fn a_metric_that_is_no_field_is_refused_by_name() {
    let _one = serial::one_at_a_time();
    let mut model = Scored::new(true);
    let (train, val) = loaders();
    let err = quiet::trainer()
        .max_epochs(1)
        .build()
        .unwrap()
        .fit_loaders(&mut model, train, Some(val))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`local_acc`") && err.contains("not a #[metric] field of Scored"),
        "{err}"
    );
}

/// The validation metrics as one collection.
#[lightning_module]
struct Collected {
    layer: Linear<2, 3>,
    #[metric(MetricCollection::new("val_")
        .with("acc", Accuracy::multiclass(3))
        .with("f1", F1Score::multiclass(3).average(Average::Macro)))]
    val: MetricCollection,
}

#[lightning_module]
impl Collected {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn validation_step(
        &mut self,
        (x, y): ClassBatch<2, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        self.val.update(self.layer.forward(x), &y)?;
        ctx.log_dict(self.val.iter());
        Ok(())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.5)
    }
}

#[test]
fn a_collection_logs_each_member_over_the_epoch_under_its_prefix() {
    let _one = serial::one_at_a_time();
    seed_everything(4);
    let mut model = Collected::new();
    let (train, val) = loaders();
    let mut trainer = quiet::trainer().max_epochs(1).build().unwrap();
    trainer
        .fit_loaders(&mut model, train, Some(val.clone()))
        .unwrap();
    let metrics = trainer.callback_metrics().clone();
    // The same weights in a module of single metrics: the same epoch values.
    let mut single = Scored::new(false);
    single.layer = model.layer.clone();
    let (f1, _) = f1_whole_and_batch_mean(&single);
    assert!((metrics["val_f1"] - f1).abs() < 1e-12, "{metrics:?}");
    assert!((0.0..=1.0).contains(&metrics["val_acc"]), "{metrics:?}");
    // Each member is a metric of its own to the trainer, and was reset.
    let names: Vec<String> = fulmen::metrics::MetricFields::metric_fields(&model)
        .into_iter()
        .map(|(n, m)| {
            assert!(m.tracked().last().is_none(), "{n} reset");
            n
        })
        .collect();
    assert_eq!(names, ["val/acc", "val/f1"]);
    // An update one member refuses is added to none.
    let mut c = MetricCollection::new("")
        .with("acc", Accuracy::multiclass(3))
        .with("top2", Accuracy::multiclass(3).top_k(2));
    let err = c
        .update(&[0usize][..], &[0usize][..])
        .unwrap_err()
        .to_string();
    assert!(err.contains("top_k 2 needs a score per class"), "{err}");
    assert!(c.get("acc").unwrap().tracked().last().is_none());
}

//! The batch-transfer hooks (their order among the other hooks is `tests/hook_order.rs`'s):
//! what `on_before_batch_transfer` does on the host and `on_after_batch_transfer` on the
//! device reaches every step in every precision; `transfer_batch_to_device` moves a batch type
//! fulmen cannot; a data module's hook replaces the module's; the example `iris_augment`
//! (a module with its own data, standardized and noised on the host) trains.

use std::cell::RefCell;

use fulmen::prelude::*;

#[path = "support/examples.rs"]
mod examples;
#[path = "support/quiet.rs"]
mod quiet;

type Sample = ([f32; 2], Class<2>);

thread_local! {
    /// `(step, first input of its batch, dataloader_idx)` of every step run on this thread.
    static SEEN: RefCell<Vec<(&'static str, f32, usize)>> = const { RefCell::new(Vec::new()) };
}

fn seen() -> Vec<(&'static str, f32, usize)> {
    SEEN.with(|s| s.take())
}

fn record<E: FloatDtype, D: TrainDevice<E>>(
    step: &'static str,
    x: &Tensor<(usize, Const<2>), E, D>,
    idx: usize,
) {
    let first = x.as_vec()[0].to_f32().unwrap_or(f32::NAN);
    SEEN.with(|s| s.borrow_mut().push((step, first, idx)));
}

/// Rows `[3 + i, 1]`, in batches of 2.
fn loader(n: usize) -> DataLoader<Sample> {
    let each = (0..n).map(|i| ([3.0 + i as f32, 1.0], Class::new(i % 2).unwrap()));
    DataLoader::new(InMemoryDataset::new(each.collect()), 2)
}

fn trainer(dir: &std::path::Path, precision: &str) -> Trainer {
    let builder = quiet::trainer().precision(precision.parse().unwrap());
    let builder = builder.max_epochs(1).num_sanity_val_steps(0);
    builder.default_root_dir(dir).build().unwrap()
}

/// Multiplies the inputs by 10 on the host and adds 1 on the device.
#[lightning_module]
struct Shifting {
    layer: Linear<2, 2>,
}

#[lightning_module]
impl Shifting {
    fn on_before_batch_transfer(
        &mut self,
        (x, y): ClassBatch<2, 2, f32, Cpu>,
        _dataloader_idx: usize,
    ) -> ClassBatch<2, 2, f32, Cpu> {
        (x * 10.0, y)
    }
    fn on_after_batch_transfer(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        _dataloader_idx: usize,
    ) -> ClassBatch<2, 2, E, D> {
        (x + E::one(), y)
    }
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        record("training_step", &x, 0);
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn validation_step(&mut self, (x, _): ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        record("validation_step", &x, ctx.dataloader_idx());
    }
    fn predict_step(&mut self, (x, _): ClassBatch<2, 2, E, D>, _: &mut StepContext<E, D>) -> f32 {
        x.as_vec()[0].to_f32().unwrap_or(f32::NAN)
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

#[test]
fn every_step_sees_its_batch_through_the_hooks_in_every_precision() {
    for precision in ["32-true", "64-true", "16-mixed", "16-true"] {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Shifting::<f32, Cpu>::new();
        let mut trainer = trainer(dir.path(), precision);
        trainer
            .fit_loaders(&mut model, loader(4), Some(loader(2)))
            .unwrap();
        let expected = [
            ("training_step", 31.0, 0),
            ("training_step", 51.0, 0),
            ("validation_step", 31.0, 0),
        ];
        assert_eq!(seen(), expected, "{precision}");
        let predictions = trainer.predict_loader(&mut model, loader(4)).unwrap();
        assert_eq!(predictions, [31.0, 51.0], "{precision}");
    }
}

/// A batch type of the user's own, which `CastBatch` does not know: rows and their ids.
struct Rows<E: FloatDtype, D: TrainDevice<E>> {
    x: Tensor<(usize, Const<2>), E, D>,
    ids: Vec<u64>,
}

/// 16-mixed's half step casts the batch the f32 module's hooks made.
impl<E2: FloatDtype, D: TrainDevice<f32> + TrainDevice<E2>> fulmen::data::CastDtype<E2>
    for Rows<f32, D>
{
    type Out = Rows<E2, D>;
    fn cast_dtype(self) -> Rows<E2, D> {
        Rows {
            x: self.x.to_dtype::<E2>(),
            ids: self.ids,
        }
    }
}

/// A sample of the user's own, collated into `Rows` on the host.
#[derive(Clone)]
struct Item {
    x: [f32; 2],
    id: u64,
}

impl Collate<Rows<f32, Cpu>, Cpu> for Item {
    fn collate(samples: Vec<Self>, device: &Cpu) -> Rows<f32, Cpu> {
        let ids = samples.iter().map(|s| s.id).collect();
        let data: Vec<f32> = samples.iter().flat_map(|s| s.x).collect();
        let n = samples.len();
        Rows {
            x: device.tensor((data, (n, Const::<2>))),
            ids,
        }
    }
}

#[lightning_module]
struct OwnBatch {
    layer: Linear<2, 1>,
    #[skip]
    ids: Vec<u64>,
}

#[lightning_module]
impl OwnBatch {
    fn transfer_batch_to_device(
        &mut self,
        batch: Rows<f32, Cpu>,
        device: &D,
        _dataloader_idx: usize,
    ) -> Rows<E, D> {
        Rows {
            x: fulmen::data::host_to_device(&batch.x, device),
            ids: batch.ids,
        }
    }
    fn training_step(&mut self, batch: Rows<E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
        self.ids.extend(&batch.ids);
        record("training_step", &batch.x, 0);
        self.layer.forward(ctx.trace(batch.x)).square().mean()
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

#[test]
fn transfer_batch_to_device_moves_a_batch_type_of_the_users_own() {
    for precision in ["32-true", "64-true", "16-mixed"] {
        let dir = tempfile::tempdir().unwrap();
        let items = (0..4).map(|i| Item {
            x: [i as f32, 2.0],
            id: 100 + i,
        });
        let data = DataLoader::new(InMemoryDataset::new(items.collect()), 2);
        let mut model = OwnBatch::<f32, Cpu>::new();
        trainer(dir.path(), precision)
            .fit_loaders(&mut model, data, None)
            .unwrap();
        let seen: Vec<f32> = seen().into_iter().map(|(_, x, _)| x).collect();
        assert_eq!(seen, [0.0, 2.0], "{precision}");
        // The step saw every id: in place, from a copy (64-true) or the half step (16-mixed).
        assert_eq!(model.ids, [100, 101, 102, 103], "{precision}");
    }
}

/// Multiplies the inputs by 100 on the host, in place of the module's hook; records each
/// validation loader's index.
#[data_module]
struct Scaling {
    #[skip]
    indices: Vec<usize>,
}

#[data_module]
impl Scaling {
    fn train_dataloader(&self) -> DataLoader<Sample> {
        loader(2)
    }
    fn val_dataloader(&self) -> Vec<DataLoader<Sample>> {
        vec![loader(2), loader(4)]
    }
    fn on_before_batch_transfer(
        &mut self,
        (x, y): ClassBatch<2, 2, f32, Cpu>,
        dataloader_idx: usize,
    ) -> ClassBatch<2, 2, f32, Cpu> {
        self.indices.push(dataloader_idx);
        (x * 100.0, y)
    }
}

#[test]
fn a_data_modules_hook_replaces_the_modules_and_the_others_stay_the_modules() {
    let dir = tempfile::tempdir().unwrap();
    let mut model = Shifting::<f32, Cpu>::new();
    let mut dm = Scaling::new();
    trainer(dir.path(), "32-true")
        .fit(&mut model, &mut dm)
        .unwrap();
    // ×100 (the data module's), not ×10 (the module's), then the module's +1.
    let expected = [
        ("training_step", 301.0, 0),
        ("validation_step", 301.0, 0),
        ("validation_step", 301.0, 1),
        ("validation_step", 501.0, 1),
    ];
    assert_eq!(seen(), expected);
    assert_eq!(dm.indices, [0, 0, 1, 1], "each batch's loader");
}

/// On the device, the data module's (`E` and `D` are in scope in its hooks as in a module's).
#[data_module]
struct Negating {}

#[data_module]
impl Negating {
    fn train_dataloader(&self) -> DataLoader<Sample> {
        loader(2)
    }
    fn on_after_batch_transfer(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        _dataloader_idx: usize,
    ) -> ClassBatch<2, 2, E, D> {
        (x.negate(), y)
    }
}

#[test]
fn a_data_modules_device_hook_runs_in_every_precision() {
    for precision in ["32-true", "64-true"] {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Shifting::<f32, Cpu>::new();
        trainer(dir.path(), precision)
            .fit(&mut model, &mut Negating::new())
            .unwrap();
        // ×10 (the module's), then negated (the data module's, in place of the module's +1).
        assert_eq!(seen(), [("training_step", -30.0, 0)], "{precision}");
    }
}

/// Runs `iris_augment` with `args` in a fresh folder: its exit status and its output.
fn iris_augment(args: &[&str]) -> (bool, String) {
    let dir = tempfile::tempdir().unwrap();
    let quiet = [
        "--enable-progress-bar",
        "false",
        "--enable-model-summary",
        "false",
    ];
    let out = examples::run("iris_augment", dir.path(), &[&quiet[..], args].concat());
    (out.status.success(), examples::text(&out))
}

#[test]
fn the_augmenting_example_trains_on_its_own_data_reproducibly() {
    let data = ["--data-dir", examples::DATA, "--seed", "3"];
    let (ok, noised) = iris_augment(&data);
    assert!(ok, "{noised}");
    let accuracy = noised
        .lines()
        .find_map(|l| l.strip_prefix("validation accuracy: "))
        .and_then(|a| a.trim().parse::<f64>().ok());
    assert!(accuracy.is_some_and(|a| a >= 0.9), "{noised}");
    // The noise comes from the seeded stream: the same seed gives the same run...
    assert_eq!(iris_augment(&data), (true, noised.clone()));
    // ...and it reaches the training steps: without it the losses differ.
    let (ok, clean) = iris_augment(&[&data[..], &["--noise", "0"]].concat());
    assert!(ok, "{clean}");
    let losses = |t: &str| -> Vec<String> {
        t.lines()
            .filter(|l| l.contains("Loss"))
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(losses(&clean).len(), 30, "{clean}");
    assert_ne!(losses(&clean), losses(&noised));
}

#[test]
fn the_augmenting_example_names_a_missing_data_file() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("none");
    let (ok, t) = iris_augment(&["--data-dir", missing.to_str().unwrap()]);
    assert!(!ok, "{t}");
    assert!(
        t.contains("none/iris.npz") && t.contains("make_iris"),
        "{t}"
    );
}

//! Prediction on its own terms: `predict_step` takes unlabeled inputs from the data module's
//! `predict_dataloader` (a sample type of its own) and returns host values, in any precision,
//! and the module it ran on is left as it was; writers get each batch with its samples'
//! indices, and `PredictionFiles` writes them all as `.npy` or `.csv` in dataset order.

#[path = "support/examples.rs"]
mod examples;
#[path = "support/quiet.rs"]
mod quiet;
#[path = "support/serial.rs"]
mod serial;

use fulmen::distributed::Ranks;
use fulmen::prediction_writer::{PredictionFiles, PredictionWriter, WriteInterval};
use fulmen::prelude::*;

/// Four features, three classes; prediction gets the features alone.
#[lightning_module]
struct Net {
    layer_1: Linear<4, 8>,
    layer_2: Linear<8, 3>,
}

#[lightning_module]
impl Net {
    fn forward<T: Tape<E, D>>(
        &self,
        x: Tensor<(usize, Const<4>), E, D, T>,
    ) -> Tensor<(usize, Const<3>), E, D, T> {
        self.layer_2.forward(self.layer_1.forward(x).relu())
    }
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.forward(ctx.trace(x)), y.one_hot())
    }
    /// The class probabilities of each row, as `f32`s on the host.
    fn predict_step(
        &mut self,
        x: Tensor<(usize, Const<4>), E, D>,
        _ctx: &mut StepContext<E, D>,
    ) -> Vec<[f32; 3]> {
        let p = self.forward(x).softmax::<Axis<1>>().as_vec();
        p.chunks(3)
            .map(|r| [0, 1, 2].map(|i| r[i].to_f32().unwrap_or(f32::NAN)))
            .collect()
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::adam(0.05)
    }
}

fn features(i: usize) -> [f32; 4] {
    [0, 1, 2, 3].map(|k| ((i * 4 + k) as f32 * 0.61).sin())
}

/// Labeled rows to train on, unlabeled ones to predict.
#[data_module]
struct Rows {
    n: usize,
}

#[data_module]
impl Rows {
    fn train_dataloader(&self) -> DataLoader<([f32; 4], Class<3>)> {
        let rows: Vec<_> = (0..self.n)
            .map(|i| {
                let x = features(i);
                let class = usize::from(x[0] > 0.0) + usize::from(x[1] > 0.5);
                (x, Class::new(class).unwrap())
            })
            .collect();
        DataLoader::new(InMemoryDataset::new(rows), 8)
    }
    fn predict_dataloader(&self) -> DataLoader<[f32; 4]> {
        let rows: Vec<[f32; 4]> = (100..100 + self.n).map(features).collect();
        DataLoader::new(InMemoryDataset::new(rows), 5)
    }
}

fn predict(net: &mut Net<f32, Cpu>, precision: &str) -> Vec<[f32; 3]> {
    let precision: fulmen::trainer::Precision = precision.parse().unwrap();
    let mut trainer = quiet::trainer().precision(precision).build().unwrap();
    let batches = trainer.predict(net, &mut Rows::new(12)).unwrap();
    assert_eq!(batches.len(), 3, "12 rows in batches of 5");
    batches.into_iter().flatten().collect()
}

#[test]
fn predict_steps_take_their_own_samples_in_every_precision() {
    let _one = serial::one_at_a_time();
    seed_everything(3);
    let mut net = Net::new();
    quiet::trainer()
        .max_epochs(5)
        .build()
        .unwrap()
        .fit(&mut net, &mut Rows::new(32))
        .unwrap();
    let weights = net.layer_1.weight.as_vec();

    let f32s = predict(&mut net, "32-true");
    assert_eq!(f32s.len(), 12);
    for row in &f32s {
        assert!((row.iter().sum::<f32>() - 1.0).abs() < 1e-5, "{row:?}");
    }
    // The same rows by hand, through the module's own forward.
    let x: Vec<f32> = (100..112).flat_map(features).collect();
    let x: Tensor<(usize, Const<4>), f32, Cpu> = Cpu::default().tensor_from_vec(x, (12, Const));
    let by_hand = net.forward(x).softmax::<Axis<1>>().as_vec();
    assert_eq!(f32s.iter().flatten().copied().collect::<Vec<_>>(), by_hand);

    for (precision, tolerance) in [("64-true", 1e-5), ("16-true", 1e-2), ("16-mixed", 1e-6)] {
        let other = predict(&mut net, precision);
        for (a, b) in other.iter().flatten().zip(f32s.iter().flatten()) {
            assert!((a - b).abs() < tolerance, "{precision}: {a} vs {b}");
        }
    }
    assert_eq!(
        net.layer_1.weight.as_vec(),
        weights,
        "prediction leaves the module alone"
    );
}

/// Each batch's indices and number, as a writer sees them.
#[derive(Default)]
struct Batches(Vec<(Vec<usize>, usize, usize)>);

impl PredictionWriter<Vec<[f32; 3]>> for Batches {
    fn interval(&self) -> WriteInterval {
        WriteInterval::Batch
    }
    fn write_on_batch_end(
        &mut self,
        _trainer: &TrainerView,
        _ranks: &Ranks<'_>,
        prediction: &Vec<[f32; 3]>,
        batch_indices: &[usize],
        batch_idx: usize,
    ) -> fulmen::Result<()> {
        self.0
            .push((batch_indices.to_vec(), batch_idx, prediction.len()));
        Ok(())
    }
}

#[test]
fn writers_get_every_batch_and_files_hold_every_row_in_order() {
    let _one = serial::one_at_a_time();
    seed_everything(4);
    let mut net = Net::new();
    let rows = predict(&mut net, "32-true");
    let mut trainer = quiet::trainer().build().unwrap();

    let mut batches = Batches::default();
    trainer
        .predict_with(&mut net, &mut Rows::new(12), &mut batches)
        .unwrap();
    let want: Vec<(Vec<usize>, usize, usize)> = vec![
        ((0..5).collect(), 0, 5),
        ((5..10).collect(), 1, 5),
        ((10..12).collect(), 2, 2),
    ];
    assert_eq!(batches.0, want);

    let dir = tempfile::tempdir().unwrap();
    let npy = dir.path().join("p.npy");
    trainer
        .predict_with(
            &mut net,
            &mut Rows::new(12),
            &mut PredictionFiles::npy(&npy),
        )
        .unwrap();
    let file = npyz::NpyFile::new(std::fs::File::open(&npy).unwrap()).unwrap();
    assert_eq!(file.shape(), &[12, 3]);
    let stored: Vec<f32> = file.into_vec().unwrap();
    assert_eq!(stored, rows.iter().flatten().copied().collect::<Vec<_>>());

    let csv = dir.path().join("p.csv");
    trainer
        .predict_with(
            &mut net,
            &mut Rows::new(12),
            &mut PredictionFiles::csv(&csv),
        )
        .unwrap();
    let mut reader = csv::Reader::from_path(&csv).unwrap();
    assert_eq!(reader.headers().unwrap(), vec!["index", "0", "1", "2"]);
    for (i, record) in reader.records().enumerate() {
        let record = record.unwrap();
        assert_eq!(record[0].parse::<usize>().unwrap(), i);
        for k in 0..3 {
            let v: f64 = record[k + 1].parse().unwrap();
            assert_eq!(v, f64::from(rows[i][k]));
        }
    }
}

#[test]
fn the_example_writes_every_validation_flower_in_both_formats() {
    let dir = tempfile::tempdir().unwrap();
    let args = [
        "--data-dir",
        examples::DATA,
        "--seed",
        "1",
        "--enable-progress-bar",
        "false",
    ];
    let out = examples::run("iris_predict", dir.path(), &args);
    assert!(out.status.success(), "{}", examples::text(&out));
    let mut reader = csv::Reader::from_path(dir.path().join("predictions.csv")).unwrap();
    let rows: Vec<csv::StringRecord> = reader.records().map(Result::unwrap).collect();
    assert_eq!(rows.len(), 30, "the 20% validation split of 150 flowers");
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row[0].parse::<usize>().unwrap(), i);
        let total: f64 = (1..4).map(|k| row[k].parse::<f64>().unwrap()).sum();
        assert!((total - 1.0).abs() < 1e-5, "probabilities: {row:?}");
    }
    let npy = std::fs::File::open(dir.path().join("predictions.npy")).unwrap();
    assert_eq!(npyz::NpyFile::new(npy).unwrap().shape(), &[30, 3]);
}

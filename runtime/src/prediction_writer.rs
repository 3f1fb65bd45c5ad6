//! Writing predictions as they are made (Lightning's `BasePredictionWriter`): a
//! [`PredictionWriter`] gets each batch's predictions with the dataset indices of its samples,
//! or all of them at the end, on every rank; [`PredictionFiles`] is the shipped one, which
//! writes them as a `.npy` array or a `.csv` table in dataset order, gathered from every rank
//! under DDP. `Trainer::predict_with` runs one.
//!
//! ```no_run
//! # use fulmen::prelude::*;
//! # #[lightning_module]
//! # struct Net { layer: Linear<4, 3> }
//! # #[lightning_module]
//! # impl Net {
//! #     fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
//! #         cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
//! #     }
//! #     fn predict_step(&mut self, x: Tensor<(usize, Const<4>), E, D>, _ctx: &mut StepContext<E, D>) -> Vec<Vec<f32>> {
//! #         let p = self.layer.forward(x).softmax::<Axis<1>>().as_vec();
//! #         p.chunks(3).map(|r| r.iter().map(|v| v.to_f32().unwrap_or(f32::NAN)).collect()).collect()
//! #     }
//! #     fn configure_optimizers(&self) -> Optim { Optim::sgd(0.1) }
//! # }
//! use fulmen::prediction_writer::PredictionFiles;
//!
//! # fn main() -> fulmen::Result<()> {
//! let rows = DataLoader::new(InMemoryDataset::new(vec![[0.5f32; 4]; 10]), 4);
//! let mut trainer = Trainer::builder().build()?;
//! let mut files = PredictionFiles::npy("predictions.npy");
//! trainer.predict_loader_with(&mut Net::new(), rows, &mut files)?;
//! # Ok(())
//! # }
//! ```

use std::path::{Path, PathBuf};

use crate::distributed::Ranks;
use crate::{Error, Result, TrainerView};

/// When a [`PredictionWriter`] writes (Lightning's `write_interval`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WriteInterval {
    /// After each batch (the predictions are not kept).
    Batch,
    /// Once, with every prediction (kept until then).
    Epoch,
    /// Both.
    BatchAndEpoch,
}

/// Writes the predictions of type `P` a `predict` run makes; see the [module docs](self).
/// Both methods run on every rank, with that rank's predictions.
pub trait PredictionWriter<P> {
    /// When it writes.
    fn interval(&self) -> WriteInterval;
    /// The prediction of batch `batch_idx`, whose samples are `batch_indices` of the dataset.
    fn write_on_batch_end(
        &mut self,
        _trainer: &TrainerView,
        _ranks: &Ranks<'_>,
        _prediction: &P,
        _batch_indices: &[usize],
        _batch_idx: usize,
    ) -> Result<()> {
        Ok(())
    }
    /// Every batch's prediction and the dataset indices of its samples, in order.
    fn write_on_epoch_end(
        &mut self,
        _trainer: &TrainerView,
        _ranks: &Ranks<'_>,
        _predictions: &[P],
        _batch_indices: &[Vec<usize>],
    ) -> Result<()> {
        Ok(())
    }
}

/// A batch's prediction as one row of numbers per sample: what [`PredictionFiles`] writes.
pub trait Rows {
    /// One row per sample of the batch.
    fn rows(&self) -> Vec<Vec<f64>>;
}

impl Rows for Vec<f32> {
    fn rows(&self) -> Vec<Vec<f64>> {
        self.iter().map(|&v| vec![f64::from(v)]).collect()
    }
}
impl Rows for Vec<f64> {
    fn rows(&self) -> Vec<Vec<f64>> {
        self.iter().map(|&v| vec![v]).collect()
    }
}
impl Rows for Vec<usize> {
    fn rows(&self) -> Vec<Vec<f64>> {
        self.iter().map(|&v| vec![v as f64]).collect()
    }
}
impl<const N: usize> Rows for Vec<[f32; N]> {
    fn rows(&self) -> Vec<Vec<f64>> {
        self.iter()
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect()
    }
}
impl Rows for Vec<Vec<f32>> {
    fn rows(&self) -> Vec<Vec<f64>> {
        self.iter()
            .map(|r| r.iter().map(|&v| f64::from(v)).collect())
            .collect()
    }
}
impl Rows for Vec<Vec<f64>> {
    fn rows(&self) -> Vec<Vec<f64>> {
        self.clone()
    }
}

/// The shipped writer: every prediction, one row per sample in dataset order, gathered from
/// every rank and written by rank 0 as a `float32` `.npy` array `[samples, width]` (NumPy's
/// `np.load`) or a `.csv` table with the sample's index first.
#[derive(Debug, Clone)]
pub struct PredictionFiles {
    path: PathBuf,
    csv: bool,
}

impl PredictionFiles {
    /// Writes a `.npy` array at `path`.
    pub fn npy(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            csv: false,
        }
    }
    /// Writes a `.csv` table at `path`: `index,0,1,...`, then a line per sample.
    pub fn csv(path: impl Into<PathBuf>) -> Self {
        Self {
            path: path.into(),
            csv: true,
        }
    }

    fn write(&self, rows: &[(usize, Vec<f64>)]) -> Result<()> {
        let width = rows.first().map_or(0, |r| r.1.len());
        if let Some((index, row)) = rows.iter().find(|r| r.1.len() != width) {
            return Err(Error::msg(format!(
                "{}: sample {index}'s prediction has {} values, the first one's {width}: a table needs one width",
                self.path.display(),
                row.len()
            )));
        }
        match self.csv {
            true => write_csv(&self.path, rows, width),
            false => write_npy(&self.path, rows, width),
        }
    }
}

impl<P: Rows> PredictionWriter<P> for PredictionFiles {
    fn interval(&self) -> WriteInterval {
        WriteInterval::Epoch
    }

    fn write_on_epoch_end(
        &mut self,
        _trainer: &TrainerView,
        ranks: &Ranks<'_>,
        predictions: &[P],
        batch_indices: &[Vec<usize>],
    ) -> Result<()> {
        let mut rows = Vec::new();
        let mut wrong = None;
        for (batch, (p, indices)) in predictions.iter().zip(batch_indices).enumerate() {
            let batch_rows = p.rows();
            if batch_rows.len() != indices.len() && wrong.is_none() {
                wrong = Some(Error::msg(format!(
                    "{}: predict_step gave {} rows for batch {batch}, which has {} samples: return one row per sample",
                    self.path.display(),
                    batch_rows.len(),
                    indices.len()
                )));
            }
            rows.extend(indices.iter().copied().zip(batch_rows));
        }
        // Every rank learns whether one went wrong before any waits on the others' rows.
        let mut any = [f64::from(u8::from(wrong.is_some()))];
        ranks.collective.all_reduce_max_f64(&mut any)?;
        if let Some(e) = wrong {
            return Err(e);
        }
        if any[0] > 0.0 {
            return Err(Error::msg(format!(
                "{}: another rank's predictions do not make one row per sample (its error says which)",
                self.path.display()
            )));
        }
        let rows = ranks.gather_rows(&rows)?;
        match ranks.rank() {
            0 => self.write(&rows),
            _ => Ok(()),
        }
    }
}

fn write_npy(path: &Path, rows: &[(usize, Vec<f64>)], width: usize) -> Result<()> {
    use npyz::WriterBuilder;
    crate::files::write_atomic(path, |tmp| {
        let file = std::io::BufWriter::new(std::fs::File::create(tmp)?);
        let shape = [rows.len() as u64, width as u64];
        let mut writer = npyz::WriteOptions::new()
            .default_dtype()
            .shape(&shape)
            .writer(file)
            .begin_nd()?;
        for (_, row) in rows {
            writer.extend(row.iter().map(|&v| v as f32))?;
        }
        writer.finish()
    })
}

fn write_csv(path: &Path, rows: &[(usize, Vec<f64>)], width: usize) -> Result<()> {
    crate::files::write_atomic(path, |tmp| {
        let mut out = csv::Writer::from_path(tmp)?;
        let header = std::iter::once("index".to_string()).chain((0..width).map(|c| c.to_string()));
        out.write_record(header)?;
        for (index, row) in rows {
            let cells = std::iter::once(index.to_string()).chain(row.iter().map(|v| v.to_string()));
            out.write_record(cells)?;
        }
        out.flush()
    })
}

/// What the prediction loop hands each batch's prediction (`Q`, the placed module's) to.
pub(crate) trait PredictionSink<Q> {
    /// Batch `batch_idx`'s prediction, its samples `indices` of the dataset.
    fn batch(
        &mut self,
        trainer: &TrainerView,
        ranks: &Ranks<'_>,
        prediction: Q,
        indices: Vec<usize>,
        batch_idx: usize,
    ) -> Result<()>;
    /// After the last batch.
    fn end(&mut self, trainer: &TrainerView, ranks: &Ranks<'_>) -> Result<()>;
}

/// The predictions as the user's type `P` (from the placed module's `Q`): kept to be
/// returned, handed to a writer, or both.
pub(crate) struct Collected<'w, P, Q> {
    pub convert: fn(Q) -> P,
    pub writer: Option<&'w mut dyn PredictionWriter<P>>,
    /// Whether `predict` returns them.
    pub keep: bool,
    pub kept: Vec<P>,
    pub indices: Vec<Vec<usize>>,
}

impl<P, Q> Collected<'_, P, Q> {
    fn interval(&self) -> Option<WriteInterval> {
        self.writer.as_ref().map(|w| w.interval())
    }
}

impl<P, Q> PredictionSink<Q> for Collected<'_, P, Q> {
    fn batch(
        &mut self,
        trainer: &TrainerView,
        ranks: &Ranks<'_>,
        prediction: Q,
        indices: Vec<usize>,
        batch_idx: usize,
    ) -> Result<()> {
        let p = (self.convert)(prediction);
        let interval = self.interval();
        if let (Some(w), Some(WriteInterval::Batch | WriteInterval::BatchAndEpoch)) =
            (self.writer.as_deref_mut(), interval)
        {
            w.write_on_batch_end(trainer, ranks, &p, &indices, batch_idx)?;
        }
        if self.keep
            || matches!(
                interval,
                Some(WriteInterval::Epoch | WriteInterval::BatchAndEpoch)
            )
        {
            self.kept.push(p);
            self.indices.push(indices);
        }
        Ok(())
    }

    fn end(&mut self, trainer: &TrainerView, ranks: &Ranks<'_>) -> Result<()> {
        let interval = self.interval();
        match (self.writer.as_deref_mut(), interval) {
            (Some(w), Some(WriteInterval::Epoch | WriteInterval::BatchAndEpoch)) => {
                w.write_on_epoch_end(trainer, ranks, &self.kept, &self.indices)
            }
            _ => Ok(()),
        }
    }
}

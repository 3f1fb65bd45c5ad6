//! Where and in what a stage runs (Lightning's accelerator and precision plugins): the
//! device the trainer was built for, the precision of its settings, and one mechanism for
//! every pair of them ([`PlaceAs`]): the module itself trains in f32 on the CPU, a copy in
//! every other dtype or device, and batches are collated on the CPU in f32 and moved there
//! through the batch-transfer hooks ([`crate::batch_transfer`]).

use std::collections::BTreeMap;

use dfdx::tensor::Cpu;

use super::connectors::Serving;
use super::loops::{Collation, Job};
use super::settings::Precision;
use super::Trainer;
use crate::batch_transfer::{self, BatchTransfer, DataBatchTransfer};
use crate::checkpoint::{Checkpoint, CkptDtype};
use crate::data::Collate;
use crate::datamodule::{DataModule, Stage};
use crate::device::{Half, RunDevice};
use crate::kernels::Unscale;
use crate::module::{BatchOf, PlaceAs, Placement, Precisions, PredictAs, PredictBatchOf, Predicts};
use crate::precision::{HalfStep, HalfSteps, Mixed};
use crate::prediction_writer::{Collected, PredictionWriter};
use crate::stage_data::{DataFor, DataForOn, DataIn};
use crate::{FloatDtype, Result, TrainDevice};

/// The module `M` placed in dtype `E` on device `D`.
type On<M, E, D> = <M as PlaceAs<E, D>>::On;

/// A stage's metrics.
type Metrics = BTreeMap<String, f64>;

impl Trainer {
    /// Runs `stage` on the trainer's device in its precision.
    pub(super) fn run_in_precision<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        stage: Stage,
        resume: Option<Checkpoint>,
    ) -> Result<Metrics>
    where
        M: Precisions,
        DM: DataModule + DataFor<M>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        match self.device {
            RunDevice::Cpu => self.run_on(model, datamodule, stage, resume, Cpu::default()),
            #[cfg(feature = "cuda")]
            RunDevice::Cuda(ordinal) => {
                let device = self.cuda(ordinal)?;
                self.run_on(model, datamodule, stage, resume, device)
            }
            #[cfg(not(feature = "cuda"))]
            RunDevice::Cuda(_) => Err(crate::device::gpu_count().err().unwrap_or_else(|| {
                crate::Error::msg("this fulmen was built without CUDA support")
            })),
        }
    }

    /// The CUDA device, opened on the first run that needs it and kept for the next ones.
    #[cfg(feature = "cuda")]
    fn cuda(&mut self, ordinal: usize) -> Result<dfdx::tensor::Cuda> {
        if let Some(device) = &self.cuda {
            return Ok(device.clone());
        }
        let device = crate::device::open_cuda(ordinal, crate::seed::next_seed())?;
        self.cuda = Some(device.clone());
        Ok(device)
    }

    /// `stage` on `device` in the trainer's precision: "64-true" and "16-true" in f64 and
    /// half precision, "32-true" in f32, and "16-mixed" training in f32 with each step's
    /// forward and backward on a half-precision twin.
    fn run_on<D, M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        stage: Stage,
        resume: Option<Checkpoint>,
        device: D,
    ) -> Result<Metrics>
    where
        D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
        <D as TrainDevice<f32>>::Kernels: Unscale<D>,
        M: Placement<D>,
        DM: DataModule + DataForOn<M, D>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        let place = (model, datamodule, stage, resume, device);
        match self.settings.precision {
            Precision::F64 => self.run_placed::<f64, _, _, _>(place, None),
            Precision::True16 => self.run_placed::<Half, _, _, _>(place, None),
            precision => {
                let half: HalfSteps<f32, D, On<M, f32, D>> =
                    (precision == Precision::Mixed16 && stage == Stage::Fit).then(|| {
                        Box::new(Mixed::<D, On<M, f32, D>, On<M, Half, D>>::new(
                            M::half_of,
                            M::half_batch,
                            M::swap_with_half,
                        )) as Box<dyn HalfStep<f32, D, On<M, f32, D>>>
                    });
                self.run_placed::<f32, _, _, _>(place, half)
            }
        }
    }

    /// `stage` on `model` placed in `E` on `device`: training hands a copy's weights and
    /// hyperparameters back, evaluation leaves `model` alone ([`PlaceAs::placed`]).
    #[allow(clippy::type_complexity)]
    fn run_placed<E, D, M, DM>(
        &mut self,
        (model, dm, stage, resume, device): (&mut M, &mut DM, Stage, Option<Checkpoint>, D),
        half: HalfSteps<'_, E, D, On<M, E, D>>,
    ) -> Result<Metrics>
    where
        E: FloatDtype + CkptDtype,
        D: TrainDevice<E>,
        M: PlaceAs<E, D>,
        DM: DataIn<M, E, D>,
        DM::Sample: Collate<M::Batch, Cpu>,
        DM::EvalSample: Collate<M::EvalBatch, Cpu>,
    {
        batch_transfer::warn_if_both(
            <On<M, E, D> as BatchTransfer<M::Batch, BatchOf<On<M, E, D>, E, D>, D>>::WRITTEN,
            <DM as DataBatchTransfer<M::Batch, BatchOf<On<M, E, D>, E, D>, D>>::WRITTEN,
        );
        let collate = Collation::Steps {
            train: batched::<E, D, M, DM, DM::Sample, M::Batch, _>,
            eval: batched::<E, D, M, DM, DM::EvalSample, M::EvalBatch, _>,
        };
        model
            .placed(&device.clone(), stage == Stage::Fit, |on| {
                self.run(Job {
                    model: on,
                    dm,
                    stage,
                    resume,
                    device,
                    collate,
                    serving: Serving::of::<DM::Source>(),
                    predictions: None,
                    half,
                })
            })?
            .map(|r| r.metrics)
    }

    /// `predict` on the trainer's device in its precision ("16-mixed" predicts in f32; there
    /// is no step to run on a half twin): each prediction to `writer`, and (`keep`) all of
    /// them returned in order.
    pub(super) fn predict_in_precision<M, DM>(
        &mut self,
        model: &mut M,
        datamodule: &mut DM,
        writer: Option<&mut dyn PredictionWriter<M::Prediction>>,
        keep: bool,
    ) -> Result<Vec<M::Prediction>>
    where
        M: Predicts,
        DM: DataModule + DataFor<M>,
        DM::PredictSample: Collate<M::PredictBatch, Cpu>,
    {
        let out = (writer, keep);
        match self.device {
            RunDevice::Cpu => self.predict_on(model, datamodule, Cpu::default(), out),
            #[cfg(feature = "cuda")]
            RunDevice::Cuda(ordinal) => {
                let device = self.cuda(ordinal)?;
                self.predict_on(model, datamodule, device, out)
            }
            #[cfg(not(feature = "cuda"))]
            RunDevice::Cuda(_) => Err(crate::device::gpu_count().err().unwrap_or_else(|| {
                crate::Error::msg("this fulmen was built without CUDA support")
            })),
        }
    }

    fn predict_on<D, M, DM>(
        &mut self,
        model: &mut M,
        dm: &mut DM,
        device: D,
        out: Out<'_, M::Prediction>,
    ) -> Result<Vec<M::Prediction>>
    where
        D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
        M: Placement<D> + PredictAs<f32, D> + PredictAs<f64, D> + PredictAs<Half, D>,
        DM: DataModule + DataForOn<M, D>,
        DM::PredictSample: Collate<M::PredictBatch, Cpu>,
    {
        match self.settings.precision {
            Precision::F64 => self.predict_placed::<f64, _, _, _>(model, dm, device, out),
            Precision::True16 => self.predict_placed::<Half, _, _, _>(model, dm, device, out),
            _ => self.predict_placed::<f32, _, _, _>(model, dm, device, out),
        }
    }

    fn predict_placed<E, D, M, DM>(
        &mut self,
        model: &mut M,
        dm: &mut DM,
        device: D,
        (writer, keep): Out<'_, M::Prediction>,
    ) -> Result<Vec<M::Prediction>>
    where
        E: FloatDtype + CkptDtype,
        D: TrainDevice<E>,
        M: PredictAs<E, D>,
        DM: DataIn<M, E, D>,
        DM::PredictSample: Collate<M::PredictBatch, Cpu>,
    {
        batch_transfer::warn_if_both(
            <On<M, E, D> as BatchTransfer<M::PredictBatch, PredictBatchOf<On<M, E, D>, E, D>, D>>::WRITTEN,
            <DM as DataBatchTransfer<M::PredictBatch, PredictBatchOf<On<M, E, D>, E, D>, D>>::WRITTEN,
        );
        let collate =
            Collation::Predict(batched::<E, D, M, DM, DM::PredictSample, M::PredictBatch, _>);
        let mut sink = Collected {
            convert: M::prediction,
            writer,
            keep,
            kept: Vec::new(),
            indices: Vec::new(),
        };
        model.placed(&device.clone(), false, |on| {
            self.run(Job {
                model: on,
                dm,
                stage: Stage::Predict,
                resume: None,
                device,
                collate,
                serving: Serving::of::<DM::Source>(),
                predictions: Some(&mut sink),
                half: None,
            })
        })??;
        Ok(sink.kept)
    }
}

/// Where a prediction run's predictions go: a writer, and whether they are returned.
type Out<'w, P> = (Option<&'w mut dyn PredictionWriter<P>>, bool);

/// A loader's samples (`S`) as the placed module's batch (`B`) on `device`: collated on the
/// host ([`PlaceAs::host`]) as the batch the steps' signatures name (`H`), then through the
/// batch-transfer hooks (by default moved and cast, [`crate::data::CastBatch`]).
fn batched<E, D, M, DM, S, H, B>(
    on: &mut On<M, E, D>,
    dm: &mut DM,
    samples: Vec<S>,
    device: &D,
    dataloader_idx: usize,
) -> B
where
    E: FloatDtype,
    D: TrainDevice<E>,
    M: PlaceAs<E, D>,
    On<M, E, D>: BatchTransfer<H, B, D>,
    DM: DataBatchTransfer<H, B, D>,
    S: Collate<H, Cpu>,
{
    let host = Collate::collate(samples, &M::host(device));
    batch_transfer::transfer((dm, on), host, device, dataloader_idx)
}

//! What a stage of a module asks of its data module, in one bound ([`DataFor`]): where its
//! loaders come from (the data module's own, or the module's: `DataModule::Source`) and its
//! batch-transfer hooks ([`crate::batch_transfer`]), for every precision and device the stage
//! may run in.

use dfdx::tensor::Cpu;

use crate::batch_transfer::DataBatchTransfer;
use crate::datamodule::DataModule;
use crate::device::{Half, TrainDevice};
use crate::module::{BatchOf, EvalBatchOf, Placed, Placement, Precisions, PredictBatchOf};
use crate::module_data::LoadersOf;

/// A data module a stage of the module `M` runs on, in every precision on `D`: its loaders (or
/// the module's, [`crate::module_data`]) give what `M`'s steps take, and its batch-transfer
/// hooks (none, for most: then it takes every batch) take `M`'s batches.
#[diagnostic::on_unimplemented(
    message = "the batch-transfer hooks of `{Self}` do not take the batches of `{M}`",
    label = "every batch of every loader passes through the data module's batch-transfer hooks",
    note = "a data module's `on_before_batch_transfer` takes the module's batch collated on the host (`ClassBatch<4, 3, f32, Cpu>`, say), its `on_after_batch_transfer` the batch on the device (`ClassBatch<4, 3, E, D>`): the types of the module's `training_step`, `validation_step` and `predict_step` in those places"
)]
pub trait DataForOn<M, D>:
    Sized
    + DataModule<
        Source: LoadersOf<Placed<M, f32, D>, Self>
                    + LoadersOf<Placed<M, f64, D>, Self>
                    + LoadersOf<Placed<M, Half, D>, Self>,
    > + DataBatchTransfer<M::Batch, BatchOf<Placed<M, f32, D>, f32, D>, D>
    + DataBatchTransfer<M::EvalBatch, EvalBatchOf<Placed<M, f32, D>, f32, D>, D>
    + DataBatchTransfer<M::PredictBatch, PredictBatchOf<Placed<M, f32, D>, f32, D>, D>
    + DataBatchTransfer<M::Batch, BatchOf<Placed<M, f64, D>, f64, D>, D>
    + DataBatchTransfer<M::EvalBatch, EvalBatchOf<Placed<M, f64, D>, f64, D>, D>
    + DataBatchTransfer<M::PredictBatch, PredictBatchOf<Placed<M, f64, D>, f64, D>, D>
    + DataBatchTransfer<M::Batch, BatchOf<Placed<M, Half, D>, Half, D>, D>
    + DataBatchTransfer<M::EvalBatch, EvalBatchOf<Placed<M, Half, D>, Half, D>, D>
    + DataBatchTransfer<M::PredictBatch, PredictBatchOf<Placed<M, Half, D>, Half, D>, D>
where
    M: Placement<D>,
    D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
{
}

impl<DM, M, D> DataForOn<M, D> for DM
where
    M: Placement<D>,
    D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
    DM: DataModule<
            Source: LoadersOf<Placed<M, f32, D>, DM>
                        + LoadersOf<Placed<M, f64, D>, DM>
                        + LoadersOf<Placed<M, Half, D>, DM>,
        > + DataBatchTransfer<M::Batch, BatchOf<Placed<M, f32, D>, f32, D>, D>
        + DataBatchTransfer<M::EvalBatch, EvalBatchOf<Placed<M, f32, D>, f32, D>, D>
        + DataBatchTransfer<M::PredictBatch, PredictBatchOf<Placed<M, f32, D>, f32, D>, D>
        + DataBatchTransfer<M::Batch, BatchOf<Placed<M, f64, D>, f64, D>, D>
        + DataBatchTransfer<M::EvalBatch, EvalBatchOf<Placed<M, f64, D>, f64, D>, D>
        + DataBatchTransfer<M::PredictBatch, PredictBatchOf<Placed<M, f64, D>, f64, D>, D>
        + DataBatchTransfer<M::Batch, BatchOf<Placed<M, Half, D>, Half, D>, D>
        + DataBatchTransfer<M::EvalBatch, EvalBatchOf<Placed<M, Half, D>, Half, D>, D>
        + DataBatchTransfer<M::PredictBatch, PredictBatchOf<Placed<M, Half, D>, Half, D>, D>,
{
}

/// A data module a stage of the module `M` runs on, on every device of this build (the CPU,
/// and CUDA with the `cuda` feature): [`DataForOn`] for each. Every `#[data_module]` without
/// batch-transfer hooks is one, through the blanket impl.
#[cfg(feature = "cuda")]
pub trait DataFor<M: Precisions>: DataForOn<M, Cpu> + DataForOn<M, dfdx::tensor::Cuda> {}
#[cfg(feature = "cuda")]
impl<M: Precisions, DM: DataForOn<M, Cpu> + DataForOn<M, dfdx::tensor::Cuda>> DataFor<M> for DM {}
/// A data module a stage of the module `M` runs on, on every device of this build (the CPU,
/// and CUDA with the `cuda` feature): [`DataForOn`] for each. Every `#[data_module]` without
/// batch-transfer hooks is one, through the blanket impl.
#[cfg(not(feature = "cuda"))]
pub trait DataFor<M: Precisions>: DataForOn<M, Cpu> {}
#[cfg(not(feature = "cuda"))]
impl<M: Precisions, DM: DataForOn<M, Cpu>> DataFor<M> for DM {}

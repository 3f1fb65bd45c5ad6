//! What a stage of a module asks of its data module, in one bound ([`DataFor`]): where its
//! loaders come from (the data module's own, or the module's: `DataModule::Source`) and its
//! batch-transfer hooks ([`crate::batch_transfer`]), for every precision and device the stage
//! may run in.

use dfdx::tensor::Cpu;

use crate::batch_transfer::DataBatchTransfer;
use crate::datamodule::DataModule;
use crate::device::{FloatDtype, Half, TrainDevice};
use crate::module::{BatchOf, EvalBatchOf, PlaceAs, Placed, Placement, Precisions, PredictBatchOf};
use crate::module_data::LoadersOf;

/// A data module a stage of the module `M` runs on, placed in `E` on `D`: its loaders (or the
/// module's, [`crate::module_data`]) give what `M`'s steps take, and its batch-transfer hooks
/// (none, for most: then it takes every batch) take `M`'s batches of every kind there.
pub trait DataIn<M, E, D>:
    Sized
    + DataModule<Source: LoadersOf<Placed<M, E, D>, Self>>
    + DataBatchTransfer<M::Batch, BatchOf<Placed<M, E, D>, E, D>, D>
    + DataBatchTransfer<M::EvalBatch, EvalBatchOf<Placed<M, E, D>, E, D>, D>
    + DataBatchTransfer<M::PredictBatch, PredictBatchOf<Placed<M, E, D>, E, D>, D>
where
    M: PlaceAs<E, D>,
    E: FloatDtype,
    D: TrainDevice<E>,
{
}

impl<DM, M, E, D> DataIn<M, E, D> for DM
where
    M: PlaceAs<E, D>,
    E: FloatDtype,
    D: TrainDevice<E>,
    DM: DataModule<Source: LoadersOf<Placed<M, E, D>, DM>>
        + DataBatchTransfer<M::Batch, BatchOf<Placed<M, E, D>, E, D>, D>
        + DataBatchTransfer<M::EvalBatch, EvalBatchOf<Placed<M, E, D>, E, D>, D>
        + DataBatchTransfer<M::PredictBatch, PredictBatchOf<Placed<M, E, D>, E, D>, D>,
{
}

/// [`DataIn`] in every precision on `D`.
#[diagnostic::on_unimplemented(
    message = "the batch-transfer hooks of `{Self}` do not take the batches of `{M}`",
    label = "every batch of every loader passes through the data module's batch-transfer hooks",
    note = "a data module's `on_before_batch_transfer` takes the module's batch collated on the host (`ClassBatch<4, 3, f32, Cpu>`, say), its `on_after_batch_transfer` the batch on the device (`ClassBatch<4, 3, E, D>`): the types of the module's `training_step`, `validation_step` and `predict_step` in those places"
)]
pub trait DataForOn<M, D>: DataIn<M, f32, D> + DataIn<M, f64, D> + DataIn<M, Half, D>
where
    M: Placement<D>,
    D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
{
}

impl<DM, M, D> DataForOn<M, D> for DM
where
    M: Placement<D>,
    D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
    DM: DataIn<M, f32, D> + DataIn<M, f64, D> + DataIn<M, Half, D>,
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

//! The model side of training (Lightning's `LightningModule`).
//!
//! Write it with `#[lightning_module]` on the struct and on its impl; the macro implements this
//! trait from the methods you write and checks their names and signatures at compile time.

use dfdx::nn::TensorCollection;
use dfdx::tensor::Cpu;

use crate::callback::Callback;
use crate::context::{Loss, StepContext};
use crate::data::CastBatch;
use crate::device::{FloatDtype, Half, TrainDevice};
use crate::hparams::{CarryHParams, Hyperparameters};
use crate::optim::Optim;

/// A model with its training logic. `E` is the dtype, `D` the device.
pub trait LightningModule<E: FloatDtype, D: TrainDevice<E>>:
    TensorCollection<E, D> + Hyperparameters + CarryHParams<E, D> + crate::spec::Layers
{
    /// What every step receives, as taken from `training_step`'s signature.
    type Batch;
    /// What `predict_step` returns (`()` without one).
    type Prediction;

    /// The struct's name, for messages.
    const NAME: &'static str;
    /// Whether the module wrote a `validation_step` (without one the validation loop is skipped).
    const HAS_VALIDATION_STEP: bool = false;
    const HAS_TEST_STEP: bool = false;
    const HAS_PREDICT_STEP: bool = false;

    /// Computes the loss of one batch; the trainer runs backward and the optimizer on it.
    fn training_step(&mut self, batch: Self::Batch, ctx: &mut StepContext<E, D>) -> Loss<E, D>;

    fn validation_step(&mut self, _batch: Self::Batch, _ctx: &mut StepContext<E, D>) {}

    fn test_step(&mut self, _batch: Self::Batch, _ctx: &mut StepContext<E, D>) {}

    fn predict_step(&mut self, batch: Self::Batch, ctx: &mut StepContext<E, D>)
        -> Self::Prediction;

    /// The optimizer (and, later, its learning-rate schedule).
    fn configure_optimizers(&self) -> Optim;

    /// Callbacks the module brings with it, added after the trainer's.
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        Vec::new()
    }

    crate::__lifecycle_hooks!();
}

/// A module the trainer can run in every precision it supports (`precision` "32-true",
/// "64-true", "16-mixed"): what it is in f64 and in half precision, and its batch cast to
/// them. Every `#[lightning_module]` has it through the blanket impl.
pub trait Precisions: LightningModule<f32, Cpu> + CarryHParams<f32, Cpu> + OnGpu + Sized {
    type F64: LightningModule<f64, Cpu>
        + CarryHParams<f64, Cpu>
        + TensorCollection<f64, Cpu, To<f32, Cpu> = Self>;
    fn batch_f64(batch: Self::Batch) -> <Self::F64 as LightningModule<f64, Cpu>>::Batch;
    /// This module in f64, hyperparameters included.
    fn to_f64(&self) -> Self::F64;
    /// `m` back in f32.
    fn from_f64(m: &Self::F64) -> Self;

    /// What it is in half precision ("16-mixed" runs `training_step` on it, "16-true"
    /// everything).
    type Half: LightningModule<Half, Cpu>
        + CarryHParams<Half, Cpu>
        + TensorCollection<Half, Cpu, To<f32, Cpu> = Self>;
    fn batch_half(batch: Self::Batch) -> <Self::Half as LightningModule<Half, Cpu>>::Batch;
    /// A half-precision copy of this module, hyperparameters included.
    fn to_half(&self) -> Self::Half;
    /// `m` back in f32.
    fn from_half(m: &Self::Half) -> Self;
}

impl<M> Precisions for M
where
    M: LightningModule<f32, Cpu> + CarryHParams<f32, Cpu>,
    M: TensorCollection<f32, Cpu>,
    M::To<f64, Cpu>: LightningModule<f64, Cpu>
        + CarryHParams<f64, Cpu>
        + TensorCollection<f64, Cpu, To<f32, Cpu> = M>,
    M::Batch: CastBatch<f64, Cpu, Out = <M::To<f64, Cpu> as LightningModule<f64, Cpu>>::Batch>,
    M::To<Half, Cpu>: LightningModule<Half, Cpu>
        + CarryHParams<Half, Cpu>
        + TensorCollection<Half, Cpu, To<f32, Cpu> = M>,
    M::Batch: CastBatch<Half, Cpu, Out = <M::To<Half, Cpu> as LightningModule<Half, Cpu>>::Batch>,
    M: OnGpu,
{
    type F64 = M::To<f64, Cpu>;
    fn batch_f64(batch: Self::Batch) -> <Self::F64 as LightningModule<f64, Cpu>>::Batch {
        CastBatch::<f64, Cpu>::cast(batch, &Cpu::default())
    }
    fn to_f64(&self) -> Self::F64 {
        let mut m = dfdx::nn::ToDtype::to_dtype::<f64>(self);
        self.carry_hparams(&mut m);
        m
    }
    fn from_f64(m: &Self::F64) -> Self {
        let mut back = dfdx::nn::ToDtype::to_dtype::<f32>(m);
        m.carry_hparams::<f32, Cpu>(&mut back);
        back
    }
    type Half = M::To<Half, Cpu>;
    fn batch_half(batch: Self::Batch) -> <Self::Half as LightningModule<Half, Cpu>>::Batch {
        CastBatch::<Half, Cpu>::cast(batch, &Cpu::default())
    }
    fn to_half(&self) -> Self::Half {
        let mut m = dfdx::nn::ToDtype::to_dtype::<Half>(self);
        self.carry_hparams(&mut m);
        m
    }
    fn from_half(m: &Self::Half) -> Self {
        let mut back = dfdx::nn::ToDtype::to_dtype::<f32>(m);
        m.carry_hparams::<f32, Cpu>(&mut back);
        back
    }
}

/// `M` (f32 on the CPU, as the user holds it) as a module of dtype `E2` on device `D`: the
/// copy the trainer runs there, the way back, and the batch moved there.
pub trait PlaceAs<E2: FloatDtype, D: TrainDevice<E2>>:
    LightningModule<f32, Cpu> + CarryHParams<f32, Cpu> + Sized
{
    type On: LightningModule<E2, D> + CarryHParams<E2, D>;
    /// A copy of this module in `E2` on `device`, hyperparameters included.
    fn place(&self, device: &D) -> crate::Result<Self::On>;
    /// `m` back in f32 on the CPU.
    fn unplace(m: &Self::On) -> Self;
    fn place_batch(batch: Self::Batch, device: &D) -> <Self::On as LightningModule<E2, D>>::Batch;
}

impl<M, E2, D> PlaceAs<E2, D> for M
where
    E2: FloatDtype,
    D: TrainDevice<E2>,
    Cpu: TrainDevice<E2>,
    M: LightningModule<f32, Cpu> + CarryHParams<f32, Cpu>,
    M::To<E2, Cpu>: TensorCollection<E2, Cpu, To<f32, Cpu> = M> + CarryHParams<E2, Cpu>,
    <M::To<E2, Cpu> as TensorCollection<E2, Cpu>>::To<E2, D>: LightningModule<E2, D>
        + CarryHParams<E2, D>
        + TensorCollection<E2, D, To<E2, Cpu> = M::To<E2, Cpu>>,
    M::Batch: CastBatch<
        E2,
        D,
        Out = <<M::To<E2, Cpu> as TensorCollection<E2, Cpu>>::To<E2, D> as LightningModule<
            E2,
            D,
        >>::Batch,
    >,
{
    type On = <M::To<E2, Cpu> as TensorCollection<E2, Cpu>>::To<E2, D>;
    fn place(&self, device: &D) -> crate::Result<Self::On> {
        let mut cast = dfdx::nn::ToDtype::to_dtype::<E2>(self);
        self.carry_hparams::<E2, Cpu>(&mut cast);
        let mut m = dfdx::nn::ToDevice::try_to_device(&cast, device)?;
        cast.carry_hparams::<E2, D>(&mut m);
        Ok(m)
    }
    fn unplace(m: &Self::On) -> Self {
        let mut host = dfdx::nn::ToDevice::to_device(m, &Cpu::default());
        m.carry_hparams::<E2, Cpu>(&mut host);
        let mut back = dfdx::nn::ToDtype::to_dtype::<f32>(&host);
        host.carry_hparams::<f32, Cpu>(&mut back);
        back
    }
    fn place_batch(batch: Self::Batch, device: &D) -> <Self::On as LightningModule<E2, D>>::Batch {
        batch.cast(device)
    }
}

/// A module the trainer can run on the device `D` in every precision: f32, f64 and half
/// copies there, and the f32 copy's half twin for "16-mixed" steps.
pub trait Placement<D>: PlaceAs<f32, D> + PlaceAs<f64, D> + PlaceAs<Half, D>
where
    D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
{
    /// The half-precision copy of `m` (made on the device at every "16-mixed" step).
    fn half_of(m: &<Self as PlaceAs<f32, D>>::On) -> <Self as PlaceAs<Half, D>>::On;
}

impl<M, D> Placement<D> for M
where
    D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
    M: PlaceAs<f32, D> + PlaceAs<f64, D> + PlaceAs<Half, D>,
    <M as PlaceAs<f32, D>>::On: TensorCollection<f32, D, To<Half, D> = <M as PlaceAs<Half, D>>::On>,
{
    fn half_of(m: &<Self as PlaceAs<f32, D>>::On) -> <Self as PlaceAs<Half, D>>::On {
        let mut h = dfdx::nn::ToDtype::to_dtype::<Half>(m);
        m.carry_hparams::<Half, D>(&mut h);
        h
    }
}

/// What a module needs to run on the GPU: [`Placement`] on CUDA in builds with the `cuda`
/// feature, nothing in others.
#[cfg(feature = "cuda")]
pub trait OnGpu: Placement<dfdx::tensor::Cuda> {}
#[cfg(feature = "cuda")]
impl<M: Placement<dfdx::tensor::Cuda>> OnGpu for M {}
/// What a module needs to run on the GPU: [`Placement`] on CUDA in builds with the `cuda`
/// feature, nothing in others.
#[cfg(not(feature = "cuda"))]
pub trait OnGpu {}
#[cfg(not(feature = "cuda"))]
impl<M> OnGpu for M {}

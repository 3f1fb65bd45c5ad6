//! The model side of training (Lightning's `LightningModule`).
//!
//! Write it with `#[lightning_module]` on the struct and on its impl; the macro implements this
//! trait from the methods you write and checks their names and signatures at compile time.

use dfdx::nn::TensorCollection;
use dfdx::tensor::Cpu;

use crate::batch_transfer::BatchTransfer;
use crate::callback::Callback;
use crate::context::{OptimizationMode, StepContext, StepOutput};
use crate::data::CastDtype;
use crate::device::{FloatDtype, Half, TrainDevice};
use crate::hparams::{CarryHParams, Hyperparameters};
use crate::optim::Optimizers;

/// A model with its training logic. `E` is the dtype, `D` the device.
pub trait LightningModule<E: FloatDtype, D: TrainDevice<E>>:
    TensorCollection<E, D>
    + Hyperparameters
    + CarryHParams<E, D>
    + crate::spec::Layers
    + crate::metrics::MetricFields
{
    /// What every step receives, as taken from `training_step`'s signature.
    type Batch;
    /// What `validation_step` and `test_step` receive, as taken from their signatures: a
    /// batch of their own, or without one the training batch.
    type EvalBatch;
    /// What `predict_step` receives, as taken from its signature: a batch of its own (inputs
    /// without labels, say), or without one the training batch.
    type PredictBatch;
    /// What `predict_step` returns (`()` without one).
    type Prediction;

    /// The struct's name, for messages.
    const NAME: &'static str;
    /// Whether the module wrote a `validation_step` (without one the validation loop is skipped).
    const HAS_VALIDATION_STEP: bool = false;
    /// Whether the module wrote a `test_step` (`test` refuses a module without one).
    const HAS_TEST_STEP: bool = false;
    /// Whether the module wrote a `predict_step` (`predict` refuses a module without one).
    const HAS_PREDICT_STEP: bool = false;
    /// Whether the module wrote an `optimizer_zero_grad`, which then decides when the
    /// gradients are zeroed (without one, the trainer zeroes them after each step).
    /// `#[lightning_module]` sets it; an impl written by hand that overrides
    /// `optimizer_zero_grad` must set it too, or the hook's choice is not followed.
    const HAS_OPTIMIZER_ZERO_GRAD: bool = false;

    /// Who steps the optimizers: [`Automatic`](crate::Automatic) (the trainer) or
    /// [`Manual`](crate::Manual) (`training_step`, under
    /// `#[lightning_module(manual_optimization)]`).
    type Optimization: OptimizationMode;

    /// One training batch. Under automatic optimization it computes the loss, and the trainer
    /// runs backward and the optimizer on it; under manual optimization it does those itself
    /// (see [`crate::manual`]) and may give a value to log. `#[lightning_module]` writes this
    /// from the user's `training_step`, converting what it returns.
    fn training_step(
        &mut self,
        batch: Self::Batch,
        ctx: &mut StepContext<E, D, Self::Optimization>,
    ) -> crate::Result<StepOutput<E, D>>;

    /// Runs one validation batch (Lightning's `validation_step`): what it logs through `ctx` is
    /// reduced over the epoch; an error stops the run. By default, nothing. (The one a module
    /// writes returns nothing or a `fulmen::Result<()>`: see [`crate::EvalStep`].)
    fn validation_step(
        &mut self,
        _batch: Self::EvalBatch,
        _ctx: &mut StepContext<E, D>,
    ) -> crate::Result<()> {
        Ok(())
    }

    /// Runs one test batch (Lightning's `test_step`), as
    /// [`validation_step`](Self::validation_step) does.
    fn test_step(
        &mut self,
        _batch: Self::EvalBatch,
        _ctx: &mut StepContext<E, D>,
    ) -> crate::Result<()> {
        Ok(())
    }

    /// The prediction of one batch (Lightning's `predict_step`); `predict` returns them in order.
    /// `#[lightning_module]` writes one returning `()` when the impl has none.
    fn predict_step(
        &mut self,
        batch: Self::PredictBatch,
        ctx: &mut StepContext<E, D>,
    ) -> Self::Prediction;

    /// The optimizer and its learning-rate schedule; under manual optimization, several, each
    /// over its own fields ([`Optim::params`](crate::Optim::params)). `#[lightning_module]`
    /// accepts an `Optim`, an array or a `Vec` of them.
    fn configure_optimizers(&self) -> Optimizers;

    /// Callbacks the module brings with it, added after the trainer's.
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        Vec::new()
    }

    /// When `fit` resumes from a checkpoint, before anything is loaded from it (Lightning's
    /// order): `checkpoint` may be changed, its tensors renamed
    /// ([`rename_tensor`](crate::checkpoint::Checkpoint::rename_tensor)), dropped
    /// ([`remove_tensor`](crate::checkpoint::Checkpoint::remove_tensor)) or added
    /// ([`set_tensor`](crate::checkpoint::Checkpoint::set_tensor)), and what loads is the
    /// result: the usual way to resume a model whose fields changed since the checkpoint was
    /// written: [`rename_field`](crate::checkpoint::Checkpoint::rename_field) renames a
    /// field's tensors with the optimizers' buffers, the kept gradients and the layers'
    /// scalars stored under its name (`optimizer/<name>/…`, `grads/<name>`). A tensor that
    /// still does not fit then fails the resume, by its name; so does an error given to
    /// `trainer.fail`. The generated `load_from_checkpoint` calls it too, before the weights
    /// load, with a view of no run ([`load_from_checkpoint`]); `Trainer::load_weights` does
    /// not.
    fn on_load_checkpoint(
        &mut self,
        _trainer: &mut crate::TrainerView,
        _checkpoint: &mut crate::checkpoint::Checkpoint,
    ) {
    }

    /// Downloads or checks files (Lightning's `prepare_data` on the module): in every stage,
    /// once per machine by its local rank 0, after the data module's and before `setup`.
    /// What it gives `trainer.fail` ends the stage.
    fn prepare_data(&mut self, _trainer: &mut crate::TrainerView) {}

    /// In every stage, after `setup` and before anything is restored or the optimizers are
    /// configured (Lightning's `configure_model`): where a module makes or changes its layers
    /// for the stage (loads a pretrained backbone, say). Each stage calls it again on the same
    /// module: make it idempotent.
    fn configure_model(&mut self, _trainer: &mut crate::TrainerView) {}

    /// When a validation loop starts, before `on_validation_start`. Lightning's default puts
    /// the model in eval mode; fulmen's layers have no mode to switch (`validation_step` runs
    /// them with `forward`), so by default nothing: where a module swaps in the weights it
    /// evaluates (an average, say). Under FULL_SHARD the parameters are placeholders here
    /// (gathered after it): swap weights in a callback's `with_weights` instead.
    fn on_validation_model_eval(&mut self, _trainer: &mut crate::TrainerView) {}
    /// When a validation loop ends, after `on_validation_end`: undoes
    /// [`on_validation_model_eval`](Self::on_validation_model_eval).
    fn on_validation_model_train(&mut self, _trainer: &mut crate::TrainerView) {}
    /// In `fit`, before a validation loop that does not fall inside an accumulation window.
    /// Lightning's default frees the gradients; fulmen zeroes them after each step (unless the
    /// module wrote `optimizer_zero_grad`) and keeps them allocated for the next, so by
    /// default nothing.
    fn on_validation_model_zero_grad(&mut self, _trainer: &mut crate::TrainerView) {}
    /// When the test loop starts, before `on_test_start` (as
    /// [`on_validation_model_eval`](Self::on_validation_model_eval)).
    fn on_test_model_eval(&mut self, _trainer: &mut crate::TrainerView) {}
    /// When the test loop ends, after `on_test_end`.
    fn on_test_model_train(&mut self, _trainer: &mut crate::TrainerView) {}
    /// When the prediction loop starts, before `on_predict_start` (no `…_model_train`
    /// follows it, as in Lightning).
    fn on_predict_model_eval(&mut self, _trainer: &mut crate::TrainerView) {}

    /// At the end of each accumulation window under automatic optimization, after
    /// `on_after_backward` and before `on_before_optimizer_step` (Lightning's `optimizer_step`,
    /// whose closure ran the window's last `training_step` and backward by then): takes the
    /// step with [`optimizer.step()`](crate::optim::OptimizerStep::step). Override it to set
    /// the rates by hand (a warm-up) or to skip steps; see [`crate::optim::OptimizerStep`].
    fn optimizer_step(
        &mut self,
        _trainer: &mut crate::TrainerView,
        _epoch: usize,
        _batch_idx: usize,
        optimizer: &mut crate::optim::OptimizerStep,
    ) {
        optimizer.step();
    }

    /// On the first batch of each accumulation window under automatic optimization, after
    /// `on_before_zero_grad` and before the backward (Lightning's `optimizer_zero_grad`):
    /// zeroes the gradients with [`optimizer.zero_grad()`](crate::optim::ZeroGrad::zero_grad).
    /// A module that writes it decides: without the call, the new window's gradients are
    /// added to the last window's. Such a module's steps hold a second set of gradients
    /// while they run, and its checkpoints keep the gradients.
    fn optimizer_zero_grad(
        &mut self,
        _trainer: &mut crate::TrainerView,
        _epoch: usize,
        _batch_idx: usize,
        optimizer: &mut crate::optim::ZeroGrad,
    ) {
        optimizer.zero_grad();
    }

    /// Before the automatic step, after `on_before_optimizer_step` (Lightning's
    /// `configure_gradient_clipping`): clips by the trainer's `gradient_clip_val` and
    /// `gradient_clip_algorithm`. Override it to clip otherwise (by epoch, say).
    fn configure_gradient_clipping(
        &mut self,
        _trainer: &mut crate::TrainerView,
        clipping: &mut crate::optim::GradientClipping,
    ) {
        if let Some(val) = clipping.gradient_clip_val() {
            clipping.clip_gradients(val, clipping.gradient_clip_algorithm());
        }
    }

    /// When a scheduler is due under automatic optimization (after the step, for one on
    /// steps; at the epoch's end, for one on epochs): steps it
    /// ([`scheduler.step()`](crate::optim::SchedulerStep::step), Lightning's
    /// `lr_scheduler_step`). Override it to hold a schedule back (during a warm-up, say).
    fn lr_scheduler_step(
        &mut self,
        _trainer: &mut crate::TrainerView,
        scheduler: &mut crate::optim::SchedulerStep,
    ) {
        scheduler.step();
    }

    crate::__lifecycle_hooks!();
}

/// What the generated `load_from_checkpoint` does, in Lightning's order: the module built
/// from the checkpoint's hyperparameters by `build` (its `FromHParams`), its
/// `on_load_checkpoint` with the checkpoint to change (and a trainer view of no run: what it
/// gives `trainer.fail` ends the load, naming the file), then the checkpoint's weights.
pub fn load_from_checkpoint<M: LightningModule<f32, Cpu>>(
    path: impl AsRef<std::path::Path>,
    build: impl FnOnce(&crate::HParams) -> crate::Result<M>,
) -> crate::Result<M> {
    let mut ckpt = crate::checkpoint::Checkpoint::read(path)?;
    let mut module = build(ckpt.hparams()).map_err(|e| ckpt.error(e))?;
    let mut view = crate::TrainerView::new(None);
    module.on_load_checkpoint(&mut view, &mut ckpt);
    view.take_error().map_err(|e| ckpt.error(e))?;
    ckpt.load_weights(&mut module)?;
    Ok(module)
}

/// The batch the module `On` runs on (in `E` on `D`).
pub(crate) type BatchOf<On, E, D> = <On as LightningModule<E, D>>::Batch;
/// The evaluation batch the module `On` runs on.
pub(crate) type EvalBatchOf<On, E, D> = <On as LightningModule<E, D>>::EvalBatch;
/// The prediction batch the module `On` runs on.
pub(crate) type PredictBatchOf<On, E, D> = <On as LightningModule<E, D>>::PredictBatch;

/// `Self`, the f32 CPU module the user holds, run in dtype `E` on device `D`: how the trainer
/// places a module for a run, in every precision on every device.
pub trait PlaceAs<E: FloatDtype, D: TrainDevice<E>>: LightningModule<f32, Cpu> + Sized {
    /// The module the run trains: `Self` in f32 on the CPU, a copy elsewhere. Every batch
    /// passes through its batch-transfer hooks ([`crate::batch_transfer`]): collated as
    /// `Self`'s (f32, on the CPU), run as its own.
    type On: LightningModule<E, D>
        + BatchTransfer<Self::Batch, BatchOf<Self::On, E, D>, D>
        + BatchTransfer<Self::EvalBatch, EvalBatchOf<Self::On, E, D>, D>
        + BatchTransfer<Self::PredictBatch, PredictBatchOf<Self::On, E, D>, D>;

    /// `f` on this module in `E` on `device`: the module itself where that is what it is (f32
    /// on the CPU), else a copy made for the run, whose weights and hyperparameters come back
    /// into this one when `write_back` (training; whether `f` succeeded or not, so that what
    /// was trained is never lost). `#[skip]` fields go to the copy and back, in every stage,
    /// where they can (`CarryHParams::carry_skipped`); the others stay in this module as they
    /// were. Evaluation leaves the module alone: a round trip through
    /// f16 would round its weights.
    fn placed<R>(
        &mut self,
        device: &D,
        write_back: bool,
        f: impl FnOnce(&mut Self::On) -> R,
    ) -> crate::Result<R>;

    /// The CPU a run on `device` collates its samples on, into the f32 batches the steps'
    /// signatures name (so that one compile-time check covers every precision and device):
    /// on the CPU the run's own device (reseeded every training step: what a batch-transfer
    /// hook draws comes from the run's stream), on a GPU a CPU seeded from the process's
    /// stream for each batch.
    fn host(device: &D) -> Cpu;
}

/// f32 on the CPU is where the user's module is: it trains in place.
impl<M> PlaceAs<f32, Cpu> for M
where
    M: LightningModule<f32, Cpu>
        + BatchTransfer<M::Batch, M::Batch, Cpu>
        + BatchTransfer<M::EvalBatch, M::EvalBatch, Cpu>
        + BatchTransfer<M::PredictBatch, M::PredictBatch, Cpu>,
{
    type On = M;

    fn placed<R>(&mut self, _: &Cpu, _: bool, f: impl FnOnce(&mut M) -> R) -> crate::Result<R> {
        Ok(f(self))
    }

    fn host(device: &Cpu) -> Cpu {
        HostOf::host(device)
    }
}

/// The CPU a run on a device collates its batches on ([`PlaceAs::host`]).
trait HostOf {
    fn host(&self) -> Cpu;
}

impl HostOf for Cpu {
    fn host(&self) -> Cpu {
        self.clone()
    }
}

#[cfg(feature = "cuda")]
impl HostOf for dfdx::tensor::Cuda {
    fn host(&self) -> Cpu {
        dfdx::tensor::Cpu::seed_from_u64(crate::seed::next_seed())
    }
}

/// Every other dtype and device trains a copy.
macro_rules! placed_copies {
    ($(($e:ty, $d:ty)),* $(,)?) => {$(
        impl<M> PlaceAs<$e, $d> for M
        where
            M: LightningModule<f32, Cpu> + CarryHParams<f32, Cpu>,
            M::To<$e, Cpu>: TensorCollection<$e, Cpu, To<f32, Cpu> = M> + CarryHParams<$e, Cpu>,
            Copy<M, $e, $d>: LightningModule<$e, $d>
                + CarryHParams<$e, $d>
                + TensorCollection<$e, $d, To<$e, Cpu> = M::To<$e, Cpu>>
                + BatchTransfer<M::Batch, BatchOf<Copy<M, $e, $d>, $e, $d>, $d>
                + BatchTransfer<M::EvalBatch, EvalBatchOf<Copy<M, $e, $d>, $e, $d>, $d>
                + BatchTransfer<M::PredictBatch, PredictBatchOf<Copy<M, $e, $d>, $e, $d>, $d>,
        {
            type On = Copy<M, $e, $d>;

            fn placed<R>(
                &mut self,
                device: &$d,
                write_back: bool,
                f: impl FnOnce(&mut Self::On) -> R,
            ) -> crate::Result<R> {
                // Each move carries what dfdx's drops: hyperparameters and layers' scalars.
                // Its `#[skip]` fields too, those that can go: cloned out of this module
                // (`CarryHParams::carry_skipped`), then moved between the copies
                // (`swap_skipped`), and cloned back in.
                let mut cast = dfdx::nn::ToDtype::to_dtype::<$e>(self);
                self.carry::<$e, Cpu>(&mut cast)?;
                self.carry_skipped::<$e, Cpu>(&mut cast);
                let mut copy = dfdx::nn::ToDevice::try_to_device(&cast, device).map_err(|e| {
                    crate::Error::Device(format!("moving the module to the device: {e:?}"))
                })?;
                cast.carry::<$e, $d>(&mut copy)?;
                cast.swap_skipped::<$e, $d>(&mut copy);
                let result = f(&mut copy);
                if write_back {
                    let mut host = dfdx::nn::ToDevice::to_device(&copy, &Cpu::default());
                    copy.carry::<$e, Cpu>(&mut host)?;
                    copy.swap_skipped::<$e, Cpu>(&mut host);
                    let mut back = dfdx::nn::ToDtype::to_dtype::<f32>(&host);
                    host.carry::<f32, Cpu>(&mut back)?;
                    host.swap_skipped::<f32, Cpu>(&mut back);
                    // The fields that could not go stay as they were.
                    back.keep_uncarried(self);
                    *self = back;
                } else {
                    // What the stage kept beside the tensors comes back; the weights do not.
                    copy.swap_skipped::<$e, Cpu>(&mut cast);
                    cast.carry_skipped::<f32, Cpu>(self);
                }
                Ok(result)
            }

            fn host(device: &$d) -> Cpu {
                HostOf::host(device)
            }

        }
    )*};
}

/// The copy of the f32 CPU module `M` in `E` on `D`.
type Copy<M, E, D> =
    <<M as TensorCollection<f32, Cpu>>::To<E, Cpu> as TensorCollection<E, Cpu>>::To<E, D>;

placed_copies!((f64, Cpu), (Half, Cpu));
#[cfg(feature = "cuda")]
placed_copies!(
    (f32, dfdx::tensor::Cuda),
    (f64, dfdx::tensor::Cuda),
    (Half, dfdx::tensor::Cuda),
);

/// The module `M` placed in `E` on `D`.
pub(crate) type Placed<M, E, D> = <M as PlaceAs<E, D>>::On;

/// A module the trainer can run on the device `D` in every precision ("32-true", "64-true",
/// "16-true", "16-mixed"): the placements, and the half-precision twin of its f32 placement
/// that "16-mixed" runs each step on.
pub trait Placement<D>: PlaceAs<f32, D> + PlaceAs<f64, D> + PlaceAs<Half, D>
where
    D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
{
    /// The half-precision copy of `m`, hyperparameters included.
    fn half_of(m: &Placed<Self, f32, D>) -> crate::Result<Placed<Self, Half, D>>;
    /// A batch of the f32 placement as the half copy's: its float tensors cast on the device.
    fn half_batch(
        batch: BatchOf<Placed<Self, f32, D>, f32, D>,
    ) -> BatchOf<Placed<Self, Half, D>, Half, D>;
    /// Swaps the `#[skip]` fields of the f32 placement and its half copy that both have
    /// (`CarryHParams::swap_skipped`): the half step has them, and gives them back.
    fn swap_with_half(m: &mut Placed<Self, f32, D>, half: &mut Placed<Self, Half, D>);
}

impl<M, D> Placement<D> for M
where
    D: TrainDevice<f32> + TrainDevice<f64> + TrainDevice<Half>,
    M: PlaceAs<f32, D> + PlaceAs<f64, D> + PlaceAs<Half, D>,
    Placed<M, f32, D>: TensorCollection<f32, D, To<Half, D> = Placed<M, Half, D>>,
    BatchOf<Placed<M, f32, D>, f32, D>: CastDtype<Half, Out = BatchOf<Placed<M, Half, D>, Half, D>>,
{
    fn half_of(m: &Placed<M, f32, D>) -> crate::Result<Placed<M, Half, D>> {
        let mut h = dfdx::nn::ToDtype::to_dtype::<Half>(m);
        m.carry::<Half, D>(&mut h)?;
        Ok(h)
    }

    fn swap_with_half(m: &mut Placed<M, f32, D>, half: &mut Placed<M, Half, D>) {
        m.swap_skipped::<Half, D>(half);
    }

    fn half_batch(
        batch: BatchOf<Placed<M, f32, D>, f32, D>,
    ) -> BatchOf<Placed<M, Half, D>, Half, D> {
        batch.cast_dtype()
    }
}

/// A module the trainer can run in every precision on every device of this build (the CPU, and
/// CUDA with the `cuda` feature): every `#[lightning_module]`, through the blanket impl.
#[cfg(feature = "cuda")]
pub trait Precisions: Placement<Cpu> + Placement<dfdx::tensor::Cuda> {}
#[cfg(feature = "cuda")]
impl<M: Placement<Cpu> + Placement<dfdx::tensor::Cuda>> Precisions for M {}
/// A module the trainer can run in every precision on every device of this build (the CPU, and
/// CUDA with the `cuda` feature): every `#[lightning_module]`, through the blanket impl.
#[cfg(not(feature = "cuda"))]
pub trait Precisions: Placement<Cpu> {}
#[cfg(not(feature = "cuda"))]
impl<M: Placement<Cpu>> Precisions for M {}

/// `Self` placed in `E` on `D` for prediction: the placed module's predictions handed back as
/// `Self`'s (the same type in every placement).
pub trait PredictAs<E: FloatDtype, D: TrainDevice<E>>: PlaceAs<E, D> {
    /// A prediction of the placed module as this module's (the same value).
    fn prediction(p: <Self::On as LightningModule<E, D>>::Prediction) -> Self::Prediction;
}

impl<E: FloatDtype, D: TrainDevice<E>, M> PredictAs<E, D> for M
where
    M: PlaceAs<E, D>,
    M::On: LightningModule<E, D, Prediction = M::Prediction>,
{
    fn prediction(p: M::Prediction) -> M::Prediction {
        p
    }
}

/// A module `Trainer::predict` runs in every precision on every device of this build: its
/// `predict_step` returns the same type in each (host values, not the device's tensors).
#[diagnostic::on_unimplemented(
    message = "`{Self}` cannot predict in every precision and device: its `predict_step` must return the same type in each",
    label = "`Trainer::predict` hands back what `predict_step` returns, from any precision and device",
    note = "return host values that do not name `E` or `D` (`Vec<f32>`, `Vec<usize>`, `logits.as_vec()`), and give `predict_step` a batch type the trainer can cast (tensors, labels, tuples of them) or one the module's `transfer_batch_to_device` moves"
)]
pub trait Predicts:
    Precisions + PredictAs<f32, Cpu> + PredictAs<f64, Cpu> + PredictAs<Half, Cpu> + PredictsOnCuda
{
}
impl<M> Predicts for M where
    M: Precisions
        + PredictAs<f32, Cpu>
        + PredictAs<f64, Cpu>
        + PredictAs<Half, Cpu>
        + PredictsOnCuda
{
}

/// The CUDA placements of [`Predicts`] (nothing without the `cuda` feature).
#[cfg(feature = "cuda")]
pub trait PredictsOnCuda:
    PredictAs<f32, dfdx::tensor::Cuda>
    + PredictAs<f64, dfdx::tensor::Cuda>
    + PredictAs<Half, dfdx::tensor::Cuda>
{
}
#[cfg(feature = "cuda")]
impl<M> PredictsOnCuda for M where
    M: PredictAs<f32, dfdx::tensor::Cuda>
        + PredictAs<f64, dfdx::tensor::Cuda>
        + PredictAs<Half, dfdx::tensor::Cuda>
{
}
/// The CUDA placements of [`Predicts`] (nothing without the `cuda` feature).
#[cfg(not(feature = "cuda"))]
pub trait PredictsOnCuda {}
#[cfg(not(feature = "cuda"))]
impl<M> PredictsOnCuda for M {}

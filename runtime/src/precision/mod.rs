//! Mixed precision (`precision="16-mixed"`): the module keeps its f32 weights (the master
//! copy the optimizer updates, what checkpoints save); each training step runs forward and
//! backward on a half-precision copy (dfdx's `AMP<f16>`: f16 storage, f32 arithmetic) made from
//! it, with the loss multiplied by a dynamic scale so that small gradients survive f16. The
//! gradients are unscaled into the f32 ones; a window with an infinite or NaN gradient skips
//! its optimizer step and halves the scale, and every 2000 good steps double it (PyTorch's
//! `GradScaler`, see [`LossScaler`]). Validation and testing run in f32. Checkpoints hold the
//! f32 weights and the scaler, so a 16-mixed run resumes exactly. Under manual optimization
//! the step's own calls do the same (`manual.rs`).
//!
//! A copy per step means `training_step` sees the module's weights as they were before the
//! step; its `#[skip]` fields of a type that names neither dtype nor device are moved into the
//! copy for the step and back (`CarryHParams::swap_skipped`), the others are `Default` there.

mod manual;
pub(crate) mod scaler;

pub use scaler::LossScaler;

use std::collections::BTreeSet;
use std::rc::Rc;

use dfdx::tensor::UniqueId;

use dfdx::nn::TensorCollection;
use dfdx::tensor::Gradients;
use dfdx::tensor_ops::Backward;
use num_traits::FromPrimitive;

use crate::context::mode::ManualSteps;
use crate::context::{LogEntry, LogValue, Loss, StepContext, StepInfo, StepOutput};
use crate::device::{FloatDtype, Half, TrainDevice};
use crate::freeze::{self, Freezing, Unfrozen};
use crate::kernels::{Scratch, Unscale};
use crate::metrics::MetricFields;
use crate::module::LightningModule;
use crate::walk::{self, Item, ItemMut, Tensors};
use crate::{Error, Result};

/// The half-precision side of a "16-mixed" training step, for a module `M` of dtype `E`
/// (type-erased so that the loops need not name the half module's type). Its batch is `M`'s,
/// transferred for the f32 module and cast to half precision on the device (autocast's way).
pub(crate) trait HalfStep<E: FloatDtype, D: TrainDevice<E>, M: LightningModule<E, D>> {
    /// `training_step` on a half copy of `model`: the loss value and what it logged.
    fn forward(
        &mut self,
        model: &mut M,
        batch: M::Batch,
        on: On<'_, D>,
    ) -> Result<(f64, Vec<LogEntry>)>;
    /// Backward of the last forward's loss, scaled and divided by `k` (accumulation), adding
    /// the unscaled gradients into `grads`; the buffers the forward updated (batch norm's
    /// running statistics) are copied back into `model`.
    fn backward(&mut self, model: &mut M, grads: &mut Gradients<E, D>, k: usize) -> Result<()>;
    /// Under manual optimization: `training_step` on a half copy of `model`, whose calls
    /// (`manual_backward`, `step`, ...) go to `run` with `model` and its gradients `grads`
    /// (see `manual.rs`). The value to log and what the step logged.
    fn manual(
        &mut self,
        model: &mut M,
        grads: &mut Gradients<E, D>,
        run: &mut dyn ManualSteps<E, D>,
        batch: M::Batch,
        on: On<'_, D>,
    ) -> Result<(Option<f64>, Vec<LogEntry>)>;
    /// At an optimizer step: whether the window's gradients were all finite (if not, the step
    /// is skipped); updates the scale.
    fn finish_window(&mut self) -> bool;
    /// A window whose step the module skipped (`optimizer_step` without `step()`): its
    /// non-finite gradients forgotten, the scale as it was (no `scaler.update`).
    fn skip_window(&mut self);
    fn scaler(&self) -> &LossScaler;
    fn set_scaler(&mut self, scaler: LossScaler);
}

/// Where a half step runs: its device, its place in the run, and the parameters frozen (by
/// name: the half copy's tensors are new at every step).
pub(crate) struct On<'s, D> {
    pub device: &'s D,
    pub info: StepInfo,
    pub frozen: &'s Freezing,
}

type HalfCopy<H, D> = (H, Rc<BTreeSet<UniqueId>>, Gradients<Half, D>);

/// The half copy of `model` for a step, its frozen parameters' ids (what its layers ask), and
/// zero gradients for the others.
fn half_copy<M, H: TensorCollection<Half, D>, D: TrainDevice<Half>>(
    to_half: fn(&M) -> Result<H>,
    model: &M,
    frozen: &Freezing,
) -> Result<HalfCopy<H, D>> {
    let half = to_half(model)?;
    let ids = Rc::new(freeze::frozen_ids(&Tensors(&half), frozen)?);
    let grads = freeze::alloc_grads(&Unfrozen {
        params: Tensors(&half),
        freezing: frozen,
    })?;
    Ok((half, ids, grads))
}

/// The half-precision side of a run, when it has one ("16-mixed" training).
pub(crate) type HalfSteps<'a, E, D, M> = Option<Box<dyn HalfStep<E, D, M> + 'a>>;

/// [`HalfStep`] for a module `M` whose half copy is `H`.
pub(crate) struct Mixed<
    D: TrainDevice<f32> + TrainDevice<Half>,
    M: LightningModule<f32, D>,
    H: LightningModule<Half, D>,
> {
    pub to_half: fn(&M) -> Result<H>,
    /// `M`'s batch as `H`'s: its float tensors cast on the device.
    pub half_batch: fn(M::Batch) -> H::Batch,
    /// Swaps `M`'s `#[skip]` fields with `H`'s (`CarryHParams::swap_skipped`).
    pub swap_skipped: fn(&mut M, &mut H),
    pub scaler: LossScaler,
    /// The copy, loss and freezing of the step in flight.
    pending: Option<(H, Loss<Half, D>, Freezing)>,
    /// The host kernels' copies for unscaling, reused between steps.
    buffer: Scratch<f32>,
    window_inf: bool,
    /// Under manual optimization, per optimizer: a non-finite gradient since its last step.
    found_inf: Vec<bool>,
}

impl<
        D: TrainDevice<f32> + TrainDevice<Half>,
        M: LightningModule<f32, D>,
        H: LightningModule<Half, D>,
    > Mixed<D, M, H>
{
    pub fn new(
        to_half: fn(&M) -> Result<H>,
        half_batch: fn(M::Batch) -> H::Batch,
        swap_skipped: fn(&mut M, &mut H),
    ) -> Self {
        Self {
            to_half,
            half_batch,
            swap_skipped,
            scaler: LossScaler::default(),
            pending: None,
            buffer: Vec::new(),
            window_inf: false,
            found_inf: Vec::new(),
        }
    }
}

impl<D, M, H> HalfStep<f32, D, M> for Mixed<D, M, H>
where
    D: TrainDevice<f32> + TrainDevice<Half>,
    <D as TrainDevice<f32>>::Kernels: Unscale<D>,
    M: LightningModule<f32, D>,
    H: LightningModule<Half, D>,
{
    fn forward(
        &mut self,
        model: &mut M,
        batch: M::Batch,
        on: On<'_, D>,
    ) -> Result<(f64, Vec<LogEntry>)> {
        let (mut half, ids, grads) = half_copy(self.to_half, model, on.frozen)?;
        let mut ctx = StepContext::<Half, D, H::Optimization>::new(on.device.clone(), on.info);
        ctx.grads = Some(grads);
        let batch = (self.half_batch)(batch);
        // The step has the module's `#[skip]` fields, and gives them back.
        (self.swap_skipped)(model, &mut half);
        let out = freeze::within(ids, || half.training_step(batch, &mut ctx));
        (self.swap_skipped)(model, &mut half);
        let StepOutput::Loss(loss) = out? else {
            return Err(Error::msg(
                "16-mixed: an automatic step returned no loss to differentiate",
            ));
        };
        let value = loss.log_value();
        self.pending = Some((half, loss, on.frozen.clone()));
        Ok((value, std::mem::take(&mut ctx.logs)))
    }

    fn backward(&mut self, model: &mut M, grads: &mut Gradients<f32, D>, k: usize) -> Result<()> {
        let (half, loss, frozen) = self
            .pending
            .take()
            .ok_or_else(|| Error::msg("16-mixed: backward without a forward"))?;
        take_buffers(&half, model)?;
        let factor = Half::from_f64(self.scaler.scale / k as f64)
            .ok_or_else(|| Error::msg("16-mixed: the loss scale is not representable"))?;
        let mut half_grads = (loss * factor).backward();
        let inv = 1.0 / self.scaler.scale;
        // The frozen parameters have no gradient to add.
        let finite = <D as TrainDevice<f32>>::Kernels::unscale(
            &Unfrozen {
                params: Tensors(&half),
                freezing: &frozen,
            },
            &mut half_grads,
            &Unfrozen {
                params: Tensors(&*model),
                freezing: &frozen,
            },
            grads,
            inv,
            &mut self.buffer,
        )?;
        self.window_inf |= !finite;
        Ok(())
    }

    fn manual(
        &mut self,
        model: &mut M,
        grads: &mut Gradients<f32, D>,
        run: &mut dyn ManualSteps<f32, D>,
        batch: M::Batch,
        on: On<'_, D>,
    ) -> Result<(Option<f64>, Vec<LogEntry>)> {
        let (mut half, ids, _) = half_copy(self.to_half, &*model, on.frozen)?;
        let batch = (self.half_batch)(batch);
        // The step has the module's `#[skip]` fields, and gives them back.
        (self.swap_skipped)(model, &mut half);
        let mut steps = manual::MixedManual {
            run,
            model,
            grads,
            scaler: &mut self.scaler,
            scratch: &mut self.buffer,
            found_inf: &mut self.found_inf,
            frozen: on.frozen,
        };
        let mut ctx = StepContext::<Half, D, H::Optimization>::new(on.device.clone(), on.info);
        ctx.grads = Some(Gradients::leaky());
        ctx.manual = Some(&mut steps);
        let out = freeze::within(ids, || half.training_step(batch, &mut ctx));
        let logs = std::mem::take(&mut ctx.logs);
        drop(ctx);
        (self.swap_skipped)(steps.model, &mut half);
        let StepOutput::Logged(value) = out? else {
            return Err(Error::msg(
                "16-mixed: a manual step returned a loss to differentiate",
            ));
        };
        // What the step's forwards moved: batch norm's running statistics.
        take_buffers(&half, steps.model)?;
        Ok((value, logs))
    }

    fn finish_window(&mut self) -> bool {
        let found_inf = std::mem::take(&mut self.window_inf);
        self.scaler.update(found_inf);
        !found_inf
    }

    fn skip_window(&mut self) {
        self.window_inf = false;
    }

    fn scaler(&self) -> &LossScaler {
        &self.scaler
    }

    fn set_scaler(&mut self, scaler: LossScaler) {
        self.scaler = scaler;
    }
}

/// Copies the buffers of `half` (batch norm's running statistics, which its forward moved)
/// into those of `model` (the same tensors in f32, in walk order), converted where they live,
/// its scalars (batch norm's `num_batches_tracked`, which its forward counted), and its
/// metrics (which its step updated).
fn take_buffers<D, M, H>(half: &H, model: &mut M) -> Result<()>
where
    D: TrainDevice<f32> + TrainDevice<Half>,
    M: TensorCollection<f32, D> + MetricFields,
    H: TensorCollection<Half, D> + MetricFields,
{
    for ((_, to), (_, from)) in model
        .metric_fields_mut()
        .into_iter()
        .zip(half.metric_fields())
    {
        *to.tracked_mut() = from.tracked().clone();
    }
    let (mut moved, mut scalars) = (Vec::new(), Vec::new());
    walk::read(half, |name, item| {
        match item {
            Item::Tensor {
                tensor,
                trainable: false,
            } => moved.push((name, tensor.flat()?.try_to_dtype::<f32>()?)),
            Item::Scalar(value) => scalars.push((name, value)),
            Item::Tensor { .. } => {}
        }
        Ok(())
    })?;
    let (mut moved, mut scalars) = (moved.into_iter(), scalars.into_iter());
    walk::write(model, |name, item| match item {
        ItemMut::Tensor {
            tensor,
            trainable: false,
        } => match moved.next() {
            Some((twin, values)) if twin == name => tensor
                .set_flat(values)
                .map_err(|e| Error::msg(format!("16-mixed: buffer `{name}`: {e}"))),
            _ => Err(Error::msg(format!(
                "16-mixed: buffer `{name}` has no half-precision twin"
            ))),
        },
        ItemMut::Scalar(slot) => match scalars.next() {
            Some((twin, value)) if twin == name => {
                *slot = value;
                Ok(())
            }
            _ => Err(Error::msg(format!(
                "16-mixed: scalar `{name}` has no half-precision twin"
            ))),
        },
        _ => Ok(()),
    })
}

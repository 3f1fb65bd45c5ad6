//! Mixed precision (`precision="16-mixed"`): the module keeps its f32 weights (the master
//! copy the optimizer updates, what checkpoints save); each training step runs forward and
//! backward on a half-precision copy (dfdx's `AMP<f16>`: f16 storage, f32 arithmetic) made from
//! it, with the loss multiplied by a dynamic scale so that small gradients survive f16. The
//! gradients are unscaled into the f32 ones; a window with an infinite or NaN gradient skips
//! its optimizer step and halves the scale, and every 2000 good steps double it (PyTorch's
//! `GradScaler`, see [`LossScaler`]). Validation and testing run in f32. Checkpoints hold the
//! f32 weights and the scaler, so a 16-mixed run resumes exactly.
//!
//! A copy per step means `training_step` sees the module as it was before the step: state it
//! changes in `&mut self` during the step does not reach the f32 module.

use serde::{Deserialize, Serialize};

use crate::context::{LogEntry, LogValue, Loss, StepContext, StepInfo};
use crate::device::{FloatDtype, Half, TrainDevice};
use crate::module::LightningModule;
use crate::optim::grads;
use crate::{Error, Result};

use dfdx::nn::{TensorCollection, ZeroGrads};
use dfdx::shapes::Rank0;
use dfdx::tensor::{Gradients, HasErr, OwnedTape, Tensor, Trace};
use dfdx::tensor_ops::{Backward, TryAdd, TryMul};

use crate::walk::{self, Item, ItemMut};
use num_traits::{FromPrimitive, ToPrimitive};

/// PyTorch's `GradScaler`: growth ×2 every 2000 good steps, backoff ×0.5 — but an initial
/// scale of 2^15, not 2^16: the scaled loss is stored in f16 here, whose largest value is
/// 65504, so 2^16 would overflow on the first step every time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LossScaler {
    pub scale: f64,
    pub growth_factor: f64,
    pub backoff_factor: f64,
    pub growth_interval: usize,
    growth_tracker: usize,
}

impl Default for LossScaler {
    fn default() -> Self {
        Self {
            scale: 32768.0,
            growth_factor: 2.0,
            backoff_factor: 0.5,
            growth_interval: 2000,
            growth_tracker: 0,
        }
    }
}

impl LossScaler {
    /// After an optimizer step: back off when it was skipped for a non-finite gradient, grow
    /// after `growth_interval` good steps in a row.
    pub fn update(&mut self, found_inf: bool) {
        if found_inf {
            self.scale *= self.backoff_factor;
            self.growth_tracker = 0;
        } else {
            self.growth_tracker += 1;
            if self.growth_tracker == self.growth_interval {
                self.scale *= self.growth_factor;
                self.growth_tracker = 0;
            }
        }
    }
}

/// The half-precision side of a "16-mixed" training step, for a module `M` of dtype `E` and
/// samples `S` (type-erased so that the loops need not name the half module's type).
pub(crate) trait HalfStep<E: FloatDtype, D: TrainDevice<E>, M: LightningModule<E, D>, S> {
    /// `training_step` on a half copy of `model`: the loss value and what it logged.
    fn forward(
        &mut self,
        model: &M,
        samples: Vec<S>,
        device: &D,
        info: StepInfo,
    ) -> Result<(f64, Vec<LogEntry>)>;
    /// Backward of the last forward's loss, scaled and divided by `k` (accumulation), adding
    /// the unscaled gradients into `grads`; the buffers the forward updated (batch norm's
    /// running statistics) are copied back into `model`.
    fn backward(&mut self, model: &mut M, grads: &mut Gradients<E, D>, k: usize) -> Result<()>;
    /// At an optimizer step: whether the window's gradients were all finite (if not, the step
    /// is skipped); updates the scale.
    fn finish_window(&mut self) -> bool;
    fn scaler(&self) -> &LossScaler;
    fn set_scaler(&mut self, scaler: LossScaler);
}

/// The half-precision side of a run, when it has one ("16-mixed" training).
pub(crate) type HalfSteps<'a, E, D, M, S> = Option<Box<dyn HalfStep<E, D, M, S> + 'a>>;

/// [`HalfStep`] for a module `M` whose half copy is `H`.
pub(crate) struct Mixed<D: TrainDevice<Half>, M, H: LightningModule<Half, D>, S> {
    pub to_half: fn(&M) -> H,
    pub collate: fn(Vec<S>, &D) -> H::Batch,
    pub scaler: LossScaler,
    /// The copy and loss of the step in flight.
    pending: Option<(H, Loss<Half, D>)>,
    /// Unscaled gradients on the host (the CPU's path), reused between steps.
    buffer: Vec<Vec<f32>>,
    window_inf: bool,
}

impl<D: TrainDevice<Half>, M, H: LightningModule<Half, D>, S> Mixed<D, M, H, S> {
    pub fn new(to_half: fn(&M) -> H, collate: fn(Vec<S>, &D) -> H::Batch) -> Self {
        Self {
            to_half,
            collate,
            scaler: LossScaler::default(),
            pending: None,
            buffer: Vec::new(),
            window_inf: false,
        }
    }
}

impl<D, M, H, S> HalfStep<f32, D, M, S> for Mixed<D, M, H, S>
where
    D: TrainDevice<f32> + TrainDevice<Half>,
    M: LightningModule<f32, D>,
    H: LightningModule<Half, D>,
{
    fn forward(
        &mut self,
        model: &M,
        samples: Vec<S>,
        device: &D,
        info: StepInfo,
    ) -> Result<(f64, Vec<LogEntry>)> {
        let mut half = (self.to_half)(model);
        let mut ctx = StepContext::<Half, D>::new(device.clone(), info);
        ctx.grads = Some(half.alloc_grads());
        let batch = (self.collate)(samples, device);
        let loss = half.training_step(batch, &mut ctx);
        let value = loss.log_value();
        self.pending = Some((half, loss));
        Ok((value, std::mem::take(&mut ctx.logs)))
    }

    fn backward(&mut self, model: &mut M, grads: &mut Gradients<f32, D>, k: usize) -> Result<()> {
        let (half, loss) = self
            .pending
            .take()
            .ok_or_else(|| Error::msg("16-mixed: backward without a forward"))?;
        take_buffers(&half, model)?;
        let factor = Half::from_f64(self.scaler.scale / k as f64)
            .ok_or_else(|| Error::msg("16-mixed: the loss scale is not representable"))?;
        let mut half_grads = (loss * factor).backward();
        let inv = 1.0 / self.scaler.scale;
        let finite = if <D as TrainDevice<f32>>::host_kernels() {
            unscale_on_host(&half, &mut half_grads, model, grads, inv, &mut self.buffer)?
        } else {
            unscale_where_they_live(&half, &mut half_grads, model, grads, inv)?
        };
        self.window_inf |= !finite;
        Ok(())
    }

    fn finish_window(&mut self) -> bool {
        let found_inf = std::mem::take(&mut self.window_inf);
        self.scaler.update(found_inf);
        !found_inf
    }

    fn scaler(&self) -> &LossScaler {
        &self.scaler
    }

    fn set_scaler(&mut self, scaler: LossScaler) {
        self.scaler = scaler;
    }
}

/// Copies the buffers of `half` (batch norm's running statistics, which its forward moved)
/// into those of `model` (the same tensors in f32, in walk order), converted where they live.
fn take_buffers<D, M, H>(half: &H, model: &mut M) -> Result<()>
where
    D: TrainDevice<f32> + TrainDevice<Half>,
    M: TensorCollection<f32, D>,
    H: TensorCollection<Half, D>,
{
    let err = |e: <D as HasErr>::Err| Error::Device(format!("16-mixed buffers: {e:?}"));
    let mut moved = Vec::new();
    walk::read(half, |name, item| {
        if let Item::Tensor {
            tensor,
            trainable: false,
        } = item
        {
            moved.push((name, tensor.flat()?.try_to_dtype::<f32>().map_err(err)?));
        }
        Ok(())
    })?;
    let mut moved = moved.into_iter();
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
        _ => Ok(()),
    })
}

/// Adds `inv` times the gradients of `half`'s trainable tensors into those of `model` (the
/// same tensors in f32, in walk order), through host buffers (`buffer`, reused between
/// steps); nothing is added, and `false` returned, when any of them is not finite.
fn unscale_on_host<D, M, H>(
    half: &H,
    half_grads: &mut Gradients<Half, D>,
    model: &M,
    grads: &mut Gradients<f32, D>,
    inv: f64,
    buffer: &mut Vec<Vec<f32>>,
) -> Result<bool>
where
    D: TrainDevice<f32> + TrainDevice<Half>,
    M: TensorCollection<f32, D>,
    H: TensorCollection<Half, D>,
{
    let (mut finite, mut i) = (true, 0);
    grads::for_each(half, half_grads, |_, g| {
        if buffer.len() <= i {
            buffer.push(Vec::new());
        }
        let out = &mut buffer[i];
        out.clear();
        out.extend(g.iter().map(|v| {
            let x = (v.to_f64().unwrap_or(f64::NAN) * inv) as f32;
            finite &= x.is_finite();
            x
        }));
        i += 1;
    })?;
    if !finite {
        return Ok(false);
    }
    let mut j = 0;
    grads::for_each(model, grads, |_, g| {
        if let Some(values) = buffer.get(j) {
            for (a, &b) in g.iter_mut().zip(values) {
                *a += b;
            }
        }
        j += 1;
    })?;
    Ok(true)
}

/// [`unscale_on_host`] without leaving the device: each half gradient becomes f32 there, and
/// is added into its f32 gradient by differentiating `inv · Σ ⟨p, g⟩` over the f32 tensors
/// `p` ([`AnyTensor::dot`](crate::walk::AnyTensor::dot): one matrix product each way per
/// tensor). One number comes to the host: the sum of every gradient's
/// [`finite_probe`](crate::optim::composed::finite_probe).
fn unscale_where_they_live<D, M, H>(
    half: &H,
    half_grads: &mut Gradients<Half, D>,
    model: &M,
    grads: &mut Gradients<f32, D>,
    inv: f64,
) -> Result<bool>
where
    D: TrainDevice<f32> + TrainDevice<Half>,
    M: TensorCollection<f32, D>,
    H: TensorCollection<Half, D>,
{
    let err = |e: <D as HasErr>::Err| Error::Device(format!("16-mixed unscaling: {e:?}"));
    let mut in_f32: Vec<Tensor<(usize,), f32, D>> = Vec::new();
    let mut check = grads::Total::<f32, D>::default();
    walk::read(half, |_, item| {
        if let Item::Tensor {
            tensor,
            trainable: true,
        } = item
        {
            let g = tensor
                .grad_flat(half_grads)?
                .try_to_dtype::<f32>()
                .map_err(err)?;
            check.add_device(crate::optim::composed::finite_probe(g.clone())?)?;
            in_f32.push(g);
        }
        Ok(())
    })?;
    if !check.value().is_finite() {
        return Ok(false);
    }
    let mut in_f32 = in_f32.into_iter();
    let mut total: Option<Tensor<Rank0, f32, D, OwnedTape<f32, D>>> = None;
    walk::read(model, |name, item| {
        if let Item::Tensor {
            tensor,
            trainable: true,
        } = item
        {
            let g = in_f32.next().ok_or_else(|| {
                Error::msg(format!("16-mixed: `{name}` has no half-precision twin"))
            })?;
            let d = tensor.dot(g)?;
            total = Some(match total.take() {
                Some(t) => t.try_add(d).map_err(err)?,
                None => d,
            });
        }
        Ok(())
    })?;
    if let Some(total) = total {
        // The gradients so far join the tape (on a zero that adds nothing), so that the
        // backward adds into them; the tape gives them back with the additions.
        let so_far = total
            .device()
            .try_zeros::<Rank0>()
            .map_err(err)?
            .traced(std::mem::replace(grads, Gradients::leaky()));
        *grads = total
            .try_mul(inv as f32)
            .and_then(|t| t.try_add(so_far))
            .and_then(|t| t.try_backward())
            .map_err(err)?;
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use super::*;
    use dfdx::nn::{builders::Linear, BuildOnDevice, Module, ToDtype};
    use dfdx::prelude::{Cpu, SampleTensor};
    use dfdx::tensor_ops::SumTo;

    type Net = (Linear<3, 4>, Linear<4, 2>);
    type Built<E> = <Net as BuildOnDevice<Cpu, E>>::Built;

    /// A small net, its half copy, and the half copy's gradients of a loss scaled by 1024.
    fn setup() -> (Built<f32>, Built<Half>, Gradients<Half, Cpu>) {
        let dev = Cpu::default();
        let m = Net::build_on_device(&dev);
        let half = m.to_dtype::<Half>();
        let x: Tensor<(usize, dfdx::shapes::Const<3>), Half, Cpu> =
            dev.sample_normal_like(&(5, dfdx::shapes::Const));
        let y = half.forward(x.traced(half.alloc_grads()));
        let g = (y.square().sum::<Rank0, _>() * Half::from_f64(1024.0).expect("f16")).backward();
        (m, half, g)
    }

    /// Gradients already accumulated in f32, as after an earlier micro-batch.
    fn earlier(m: &Built<f32>) -> Gradients<f32, Cpu> {
        let x: Tensor<(usize, dfdx::shapes::Const<3>), f32, Cpu> =
            Cpu::default().sample_normal_like(&(2, dfdx::shapes::Const));
        m.forward(x.traced(m.alloc_grads()))
            .sum::<Rank0, _>()
            .backward()
    }

    fn all(m: &impl TensorCollection<f32, Cpu>, g: &mut Gradients<f32, Cpu>) -> Vec<Vec<f32>> {
        let mut out = Vec::new();
        grads::for_each(m, g, |_, g| out.push(g.to_vec())).expect("walk");
        out
    }

    #[test]
    fn unscaling_on_the_device_adds_what_the_host_adds() {
        let (m, half, mut hg) = setup();
        let (mut on_host, mut on_device) = (earlier(&m), earlier(&m));
        let before = all(&m, &mut on_host);
        let inv = 1.0 / 1024.0;
        let mut buffer = Vec::new();
        assert!(unscale_on_host(&half, &mut hg, &m, &mut on_host, inv, &mut buffer).expect("host"));
        assert!(unscale_where_they_live(&half, &mut hg, &m, &mut on_device, inv).expect("device"));
        let (host, device) = (all(&m, &mut on_host), all(&m, &mut on_device));
        assert_eq!(host, device, "the same bits");
        assert_ne!(host, before, "the half gradients were added");
    }

    #[test]
    fn a_non_finite_half_gradient_adds_nothing_on_the_device() {
        let (m, half, mut hg) = setup();
        grads::for_each(&half, &mut hg, |name, g| {
            if name == "1.bias" {
                g[1] = Half::from_f64(f64::INFINITY).expect("f16");
            }
        })
        .expect("walk");
        let mut on_device = earlier(&m);
        let before = all(&m, &mut on_device);
        let added = unscale_where_they_live(&half, &mut hg, &m, &mut on_device, 1.0 / 1024.0);
        assert!(!added.expect("device"), "an infinite gradient is reported");
        assert_eq!(all(&m, &mut on_device), before, "nothing was added");
    }

    #[test]
    fn the_scale_backs_off_on_overflow_and_grows_after_its_interval() {
        let mut s = LossScaler {
            growth_interval: 3,
            ..LossScaler::default()
        };
        s.update(true);
        assert_eq!(s.scale, 16384.0);
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 16384.0);
        s.update(false);
        assert_eq!(s.scale, 32768.0, "three good steps in a row");
        s.update(false);
        s.update(true);
        s.update(false);
        s.update(false);
        assert_eq!(s.scale, 16384.0, "an overflow restarts the count");
    }
}

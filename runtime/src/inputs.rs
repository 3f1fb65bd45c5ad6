//! A training step's inputs: the tensors it traced ([`StepContext::trace`]) that existed
//! before it began (its batch) and are not parameters of the module. What the trace returns is
//! a copy with an id of its own (one pass over the batch), the only tensor recorded: nothing
//! reads its gradient (the trainer keeps the parameters'
//! alone, and a step never sees its gradients), so a layer whose input is one skips that
//! gradient's product: for a dense first layer, a third of its backward. PyTorch skips it the
//! same way, for a tensor that does not require a gradient.
//!
//! The trainer records each `training_step`; a loop written out records its steps with a
//! [`Recording`]:
//!
//! ```
//! use fulmen::inputs::Recording;
//! use fulmen::prelude::*;
//!
//! let dev = Cpu::default();
//! let mut model: fulmen::layers::linear::modules::Linear<4, 2, f32, Cpu> =
//!     BuildModule::build(&dev);
//! let x: Tensor<Rank2<8, 4>, f32, Cpu> = dev.sample_normal();
//! let mut grads = model.alloc_grads();
//! for _ in 0..2 {
//!     let step = Recording::start(&model, &dev).expect("the model's tensors");
//!     let y = model.forward_mut(step.trace(x.clone(), grads));
//!     grads = y.square().mean().backward(); // no gradient of x computed
//!     drop(step);
//!     model.zero_grads(&mut grads);
//! }
//! ```
//!
//! What is not recorded keeps its gradient: the batch itself, traced again by other means in
//! the same step (an adversarial example's `x.clone().leaky_traced()`), a parameter traced as
//! an input (`ctx.trace(self.w.clone())`: a clone has its parameter's id), and anything the
//! step computed, even without its tape (a GAN's generated images traced again for the
//! discriminator: the generator's step may need their gradient, in either order).
//!
//! [`StepContext::trace`]: crate::context::StepContext::trace

use std::cell::RefCell;
use std::collections::BTreeSet;

use dfdx::nn::tensor_collection::TensorCollection;
use dfdx::shapes::{Rank0, Shape, Unit};
use dfdx::tensor::{Gradients, OwnedTape, Storage, Tensor, Trace, UniqueId};
use dfdx::tensor_ops::TryMul;

use crate::device::{FloatDtype, HostAccess};
use crate::walk::{id_of, Params, Tensors};
use crate::Result;

/// The running step's parameters, the first id it made, and the inputs it traced so far.
#[derive(Debug)]
struct Step {
    params: BTreeSet<UniqueId>,
    began: Option<UniqueId>,
    inputs: BTreeSet<UniqueId>,
}

thread_local! {
    /// The recording of the training step running on this thread, if one is.
    static STEP: RefCell<Option<Step>> = const { RefCell::new(None) };
}

/// A training step's recording of its inputs on this thread, from [`start`](Self::start)
/// until it is dropped.
#[derive(Debug)]
#[must_use = "the recording ends when it is dropped"]
pub struct Recording {
    /// The recording this one interrupted (a loop run inside a step), put back when it ends.
    outer: Option<Step>,
    /// Not `Send`: the recording is this thread's.
    _thread: std::marker::PhantomData<*const ()>,
}

impl Recording {
    /// Starts recording a step of `model` (whose parameters are never inputs) on `device`.
    /// Every tensor the step trains must be in `model`: one outside it (a learned prompt,
    /// an image being optimized) that the step traces would get no gradient from a layer.
    pub fn start<E: FloatDtype, D: HostAccess<E>, M: TensorCollection<E, D>>(
        model: &M,
        device: &D,
    ) -> Result<Recording> {
        Self::of(&Tensors(model), device)
    }

    /// Starts recording a step of the parameters `params` on `device`.
    pub(crate) fn of<E: FloatDtype, D: HostAccess<E>, P: Params<E, D> + ?Sized>(
        params: &P,
        device: &D,
    ) -> Result<Recording> {
        let mut ids = BTreeSet::new();
        params.each(&mut |_, tensor| {
            ids.extend(tensor.id());
            Ok(())
        })?;
        // dfdx numbers tensors in the order they are made: from this one on, the step's own.
        let first: Tensor<Rank0, E, D> = device.try_zeros()?;
        let step = Step {
            params: ids,
            began: id_of(&first),
            inputs: BTreeSet::new(),
        };
        Ok(Recording {
            outer: STEP.with(|s| s.replace(Some(step))),
            _thread: std::marker::PhantomData,
        })
    }

    /// `x` as an input (see [`input`]), traced into `grads` (dfdx's `traced`).
    pub fn trace<S: Shape, E: FloatDtype, D: HostAccess<E>>(
        &self,
        x: Tensor<S, E, D>,
        grads: Gradients<E, D>,
    ) -> Tensor<S, E, D, OwnedTape<E, D>> {
        input(x).traced(grads)
    }
}

impl Drop for Recording {
    fn drop(&mut self) {
        let outer = self.outer.take();
        STEP.with(|s| *s.borrow_mut() = outer);
    }
}

/// `x`, about to be traced by the running step: when it is an input (made before the step, not
/// a parameter), a copy with an id of its own, recorded; anything else unchanged.
pub(crate) fn input<S: Shape, E: FloatDtype, D: HostAccess<E>>(
    x: Tensor<S, E, D>,
) -> Tensor<S, E, D> {
    let eligible = STEP.with(|s| match (s.borrow().as_ref(), id_of(&x)) {
        (Some(step), Some(id)) => {
            step.began.is_some_and(|began| id < began) && !step.params.contains(&id)
        }
        _ => false,
    });
    if !eligible {
        return x;
    }
    // A copy (times one: every value, NaN and -0 included, unchanged), so that only this
    // trace's tensor is an input, not the batch's every clone.
    match x.clone().try_mul(E::one()) {
        Ok(copy) => {
            STEP.with(|s| {
                if let (Some(step), Some(id)) = (s.borrow_mut().as_mut(), id_of(&copy)) {
                    step.inputs.insert(id);
                }
            });
            copy
        }
        Err(_) => x,
    }
}

/// Whether `t` is an input the running step traced: its gradient is not wanted.
pub(crate) fn is_input<S: Shape, E: Unit, D: Storage<E>, T>(t: &Tensor<S, E, D, T>) -> bool {
    STEP.with(|s| match (s.borrow().as_ref(), id_of(t)) {
        (Some(step), Some(id)) => step.inputs.contains(&id),
        _ => false,
    })
}

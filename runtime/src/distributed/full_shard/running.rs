//! A unit's forward and backward under FULL_SHARD: the run a step belongs to ([`within`],
//! [`running`]), and what a [`Unit`](crate::layers::Unit) layer does in it ([`forward`] on a
//! tape, [`evaluate`] without).
//!
//! The forward gathers the unit's parameters, runs its layers on a tape of their own that is
//! dropped at once (so neither the gathered parameters nor the activations inside the unit
//! outlive it), and frees the parameters. Its one op on the caller's tape gathers them again
//! into a copy of the layers, recomputes the forward, runs that tape from the gradient of the
//! unit's output, which the caller's backward computed, hands the input's gradient back to
//! the caller, and reduce-scatters the parameters' gradients into the shards'. The gradients
//! are swapped between the tapes, not copied, so they are those of the layers without the
//! unit, bit for bit.
//!
//! The recomputation must give the forward's output: a layer inside a unit that draws random
//! numbers (dropout) draws others the second time, and the gradients would be those of
//! another mask. The backward compares the two outputs and stops with an error naming the
//! unit when they differ beyond a GPU's non-determinism: keep random layers out of units.

use std::any::Any;
use std::cell::RefCell;
use std::rc::Rc;

use dfdx::nn::{Module, TensorCollection};
use dfdx::shapes::{Rank0, Shape};
use dfdx::tensor::{Gradients, HasErr, OwnedTape, PutTape, SplitTape, Tape, Tensor, Trace};
use dfdx::tensor_ops::{Backward, MaxTo, TrySub};

use super::{FullShard, Shared};
use crate::layers::or_panic;
use crate::{FloatDtype, Result, TrainDevice};

thread_local! {
    /// The FULL_SHARD run whose step this thread is in.
    static RUNNING: RefCell<Option<Rc<dyn Any>>> = const { RefCell::new(None) };
}

/// The FULL_SHARD run whose step this thread is in, if any.
pub(crate) fn running<E: FloatDtype, D: TrainDevice<E>>() -> Option<Shared<E, D>> {
    let any = RUNNING.with(|r| r.borrow().clone())?;
    any.downcast::<RefCell<FullShard<E, D>>>().ok()
}

/// Runs `f` as part of a step of `run`: the units it runs (its forwards, its backward) gather
/// their parameters from `run`.
pub(crate) fn within<E: FloatDtype, D: TrainDevice<E>, R>(
    run: &Shared<E, D>,
    f: impl FnOnce() -> R,
) -> R {
    struct Restore(Option<Rc<dyn Any>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let previous = self.0.take();
            RUNNING.with(|r| *r.borrow_mut() = previous);
        }
    }
    let run: Rc<dyn Any> = run.clone();
    let _restore = Restore(RUNNING.with(|r| r.borrow_mut().replace(run)));
    f()
}

/// Unit `k`'s forward without a tape (evaluation): into a copy of the layers, gathered.
pub(crate) fn evaluate<Si, So, E, D, M>(
    run: &Shared<E, D>,
    k: usize,
    module: &M,
    x: Tensor<Si, E, D>,
) -> Result<Tensor<So, E, D>>
where
    Si: Shape,
    So: Shape,
    E: FloatDtype,
    D: TrainDevice<E>,
    M: Module<Tensor<Si, E, D>, Output = Tensor<So, E, D>, Error = D::Err>
        + TensorCollection<E, D>
        + Clone,
{
    let mut twin = module.clone();
    run.borrow().gather(k, &mut twin)?;
    Ok(twin.try_forward(x)?)
}

/// Unit `k`'s forward on a tape, `f(module, x)`: `module` is the unit's layers (through
/// `&mut self`, so that batch norm updates its statistics) or a copy of them (layers that
/// train through `&self`).
pub(crate) fn forward<Si, So, E, D, M>(
    run: &Shared<E, D>,
    k: usize,
    module: &mut M,
    x: Tensor<Si, E, D, OwnedTape<E, D>>,
    f: Taped<M, Si, So, E, D>,
) -> Result<Tensor<So, E, D, OwnedTape<E, D>>>
where
    Si: Shape,
    So: Shape,
    E: FloatDtype,
    D: TrainDevice<E>,
    M: TensorCollection<E, D> + Clone + 'static,
{
    run.borrow().gather(k, module)?;
    let (x, tape) = x.split_tape();
    let (y, _dropped) = f(module, x.clone().traced(Gradients::leaky()))?.split_tape();
    run.borrow().release(k, module)?;
    let tape = recompute(run, k, module.clone(), x, y.clone(), tape, f);
    Ok(y.put_tape(tape))
}

/// A unit's layers' forward on a tape.
pub(crate) type Taped<M, Si, So, E, D> =
    fn(
        &mut M,
        Tensor<Si, E, D, OwnedTape<E, D>>,
    ) -> std::result::Result<Tensor<So, E, D, OwnedTape<E, D>>, <D as HasErr>::Err>;

/// Adds to `tape` the backward of unit `k` (`y = f(twin, x)`), recomputed (see the module's
/// documentation).
fn recompute<Si, So, E, D, T, M>(
    run: &Shared<E, D>,
    k: usize,
    twin: M,
    x: Tensor<Si, E, D>,
    y: Tensor<So, E, D>,
    mut tape: T,
    f: Taped<M, Si, So, E, D>,
) -> T
where
    Si: Shape,
    So: Shape,
    E: FloatDtype,
    D: TrainDevice<E>,
    T: Tape<E, D>,
    M: TensorCollection<E, D> + 'static,
{
    let run = run.clone();
    tape.add_backward_op(move |grads| {
        let mut twin = twin;
        or_panic(run.borrow().gather(k, &mut twin));
        let (y2, mut inner) = f(&mut twin, x.clone().traced(Gradients::leaky()))?.split_tape();
        or_panic(same_output(&run, k, &y, &y2));
        // The caller's gradients while the recomputed tape runs; its first op takes the
        // gradient of the output and what the input's holds so far.
        let callers = Rc::new(RefCell::new(Gradients::leaky()));
        let (from, yk, y2k, xk) = (callers.clone(), y.clone(), y2.clone(), x.clone());
        inner.add_backward_op(move |g| {
            let mut outer = from.borrow_mut();
            std::mem::swap(outer.get_or_alloc_mut(&yk)?, g.get_or_alloc_mut(&y2k)?);
            std::mem::swap(outer.get_or_alloc_mut(&xk)?, g.get_or_alloc_mut(&xk)?);
            Ok(())
        });
        let seed = y2.device().try_zeros::<Rank0>()?;
        std::mem::swap(grads, &mut *callers.borrow_mut());
        let done = seed.clone().put_tape(inner).try_backward();
        std::mem::swap(grads, &mut *callers.borrow_mut());
        let mut done = done?;
        // Nothing reads the output's gradient again: the seed's one value takes its place.
        std::mem::swap(grads.get_or_alloc_mut(&y)?, done.get_or_alloc_mut(&seed)?);
        std::mem::swap(grads.get_or_alloc_mut(&x)?, done.get_or_alloc_mut(&x)?);
        or_panic(run.borrow_mut().scatter_grads(k, &twin, &mut done));
        Ok(())
    });
    tape
}

/// Whether unit `k`'s recomputed output `again` is its forward's `y`, up to the reordered
/// sums of a GPU's kernels (1e-3 of the output's largest value; another dropout mask moves
/// values by their own size).
fn same_output<S: Shape, E: FloatDtype, D: TrainDevice<E>>(
    run: &Shared<E, D>,
    k: usize,
    y: &Tensor<S, E, D>,
    again: &Tensor<S, E, D>,
) -> Result<()> {
    let largest = |t: Tensor<S, E, D>| -> Result<f64> {
        let max = t.try_abs()?.try_max::<(), S::AllAxes>()?;
        Ok(max
            .as_vec()
            .first()
            .and_then(|v| v.to_f64())
            .unwrap_or(f64::NAN))
    };
    let (scale, diff) = (
        largest(y.clone())?,
        largest(again.clone().try_sub(y.clone())?)?,
    );
    // A non-finite output is no sign of randomness: it goes on as it would without units
    // (the loss check or `detect_anomaly` stops the run).
    if !scale.is_finite() || diff <= 1e-3 * scale {
        return Ok(());
    }
    Err(crate::Error::msg(format!(
        "FULL_SHARD recomputes unit `{}` in the backward, and its output came out different ({diff:e} apart, its values reach {scale:e}): a layer inside it draws random numbers (dropout); keep random layers out of `Unit`s",
        run.borrow().unit_name(k)
    )))
}

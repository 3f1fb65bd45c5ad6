//! [`segment`]: a piece of a forward recorded on a tape of its own and spliced into the
//! caller's, so that the gradients of the tensors made inside it are freed as soon as its
//! backward is done.
//!
//! dfdx keeps the gradient of every tensor a backward reaches until the whole backward ends
//! (only then does `Gradients` drop those that are not parameters). Made of dfdx's ops, as the
//! layers are on CUDA ([`composed`](super::composed)), a batch norm leaves nine
//! activation-sized gradients behind and a 3×3 convolution those of its nine-fold columns.
//! For three ResNet-50 bottlenecks (`benches/device_memory.rs`) the backward left 60 block
//! outputs' worth of gradients behind, more than the forward had kept; with segments, 2.6.
//!
//! A segment's backward is one op of the caller's tape. It swaps the gradient of the
//! segment's output into the segment's own tape, together with what the gradients of its
//! inputs and parameters hold so far; runs that tape, which adds to them as dfdx always does;
//! swaps those back; and drops the rest. Buffers are swapped, not copied, so the gradients are
//! the same, bit for bit, as without the segment. The caller's tape keeps a one-value buffer
//! in place of the output's gradient, which nothing reads again.
//!
//! What it costs: each buffer swapped in first has a zeroed one allocated in its place (dfdx
//! has no other way to insert one), which lives until the segment's backward ends; and the
//! segment keeps its inputs and output (their ids name the gradients) until its backward,
//! where dfdx might have freed some earlier.

use std::cell::RefCell;
use std::rc::Rc;

use dfdx::shapes::{Rank0, Shape};
use dfdx::tensor::{Gradients, OwnedTape, PutTape, SplitTape, Storage, Tape, Tensor, Trace};
use dfdx::tensor_ops::Backward;

use crate::device::{FloatDtype, HostAccess};
use crate::Result;

/// A tensor whose gradient a segment swaps between tapes: an input, the output or a
/// parameter.
pub(crate) trait Handle<E, D: Storage<E>> {
    /// The gradient in `grads` (allocated, zeroed, if it has none).
    fn grad<'g>(
        &self,
        grads: &'g mut Gradients<E, D>,
    ) -> std::result::Result<&'g mut D::Vec, D::Err>;
}

impl<S: Shape, E, D: Storage<E>> Handle<E, D> for Tensor<S, E, D> {
    fn grad<'g>(
        &self,
        grads: &'g mut Gradients<E, D>,
    ) -> std::result::Result<&'g mut D::Vec, D::Err> {
        grads.get_or_alloc_mut(self)
    }
}

/// Swaps the gradients of `handles` between `a` and `b` (each allocates, zeroed, those it
/// lacks). A tensor named twice (the same tensor passed as two inputs) has one gradient,
/// swapped once: its second handle finds the buffer the first did.
fn swap_grads<E, D: Storage<E>>(
    handles: &[Box<dyn Handle<E, D>>],
    a: &mut Gradients<E, D>,
    b: &mut Gradients<E, D>,
) -> std::result::Result<(), D::Err> {
    // Every buffer first, so that none moves in memory while their addresses are compared.
    for h in handles {
        h.grad(a)?;
    }
    let mut seen: Vec<*const D::Vec> = Vec::with_capacity(handles.len());
    for h in handles {
        let at: *const D::Vec = h.grad(a)?;
        if !seen.contains(&at) {
            seen.push(at);
            std::mem::swap(h.grad(a)?, h.grad(b)?);
        }
    }
    Ok(())
}

/// `f(xs)`, recorded on a tape of its own and spliced into the tapes of `xs` (see the module's
/// documentation). `params` are the tensors `f` differentiates besides `xs`: a parameter left
/// out would lose its gradient. Without a tape on `xs` it is `f(xs)`.
pub(crate) fn segment<const N: usize, S1, S2, E, D, T>(
    xs: [Tensor<S1, E, D, T>; N],
    params: Vec<Box<dyn Handle<E, D>>>,
    f: impl FnOnce([Tensor<S1, E, D, OwnedTape<E, D>>; N]) -> Result<Tensor<S2, E, D, OwnedTape<E, D>>>,
) -> Result<Tensor<S2, E, D, T>>
where
    S1: Shape,
    S2: Shape,
    E: FloatDtype,
    D: HostAccess<E>,
    T: Tape<E, D>,
{
    let mut outer = T::default();
    let values = xs.map(|x| {
        let (x, tape) = x.split_tape();
        outer = std::mem::take(&mut outer).merge(tape);
        x
    });
    let traced = values
        .each_ref()
        .map(|x| x.clone().traced(Gradients::leaky()));
    let (y, mut inner) = f(traced)?.split_tape();
    if !T::OWNS_TAPE {
        return Ok(y.put_tape(outer));
    }
    let dev = y.device().clone();
    // The output first, then what is swapped back out.
    let mut handles: Vec<Box<dyn Handle<E, D>>> = vec![Box::new(y.clone())];
    handles.extend(
        values
            .into_iter()
            .map(|x| Box::new(x) as Box<dyn Handle<E, D>>),
    );
    handles.extend(params);
    let handles = Rc::new(handles);
    // The caller's gradients while the segment's backward runs.
    let callers = Rc::new(RefCell::new(Gradients::leaky()));

    // The segment's first backward op (its tape runs last to first): the gradients come in,
    // leaving zeros in their place.
    let (incoming, from) = (handles.clone(), callers.clone());
    inner.add_backward_op(move |grads| swap_grads(&incoming, &mut from.borrow_mut(), grads));
    outer.add_backward_op(move |grads| {
        // The scalar the segment's backward starts from: its one-value gradient takes the
        // place of the output's, which nothing reads again.
        let seed = dev.try_zeros::<Rank0>()?;
        std::mem::swap(grads, &mut *callers.borrow_mut());
        let done = seed.clone().put_tape(inner).try_backward();
        std::mem::swap(grads, &mut *callers.borrow_mut());
        let mut done = done?;
        std::mem::swap(handles[0].grad(grads)?, seed.grad(&mut done)?);
        swap_grads(&handles[1..], &mut done, grads)
    });
    Ok(y.put_tape(outer))
}

#[cfg(test)]
mod tests {
    use dfdx::shapes::Rank1;
    use dfdx::tensor::{AsArray, Cpu, Gradients, Tensor, TensorFrom, Trace, WithEmptyTape};
    use dfdx::tensor_ops::{Backward, SumTo, TryAdd, TryMul};

    use super::{segment, Handle};
    use crate::device::HostAccess;

    type V = Tensor<Rank1<5>, f64, Cpu>;
    type Taped = Tensor<Rank1<5>, f64, Cpu, dfdx::tensor::OwnedTape<f64, Cpu>>;

    fn body(x: Taped, p: &V) -> Taped {
        (x * p.clone()).sin() * p.clone()
    }

    fn join(a: Taped, b: Taped) -> Taped {
        (a * b).exp()
    }

    /// `a` and `b` are one tensor (dfdx refuses a product of a tensor with itself).
    fn twice(a: Taped, b: Taped) -> Taped {
        a.exp() * b.sin()
    }

    /// The gradients of x, p and q through a graph that uses x twice, joins two tensors and a
    /// tensor with itself, chains pieces, and starts from gradients p already holds (an earlier
    /// micro-batch's): with every piece a segment or none.
    fn gradients(segmented: bool) -> Vec<Vec<f64>> {
        let dev = Cpu::default();
        let x: V = dev.tensor([0.3, -1.2, 0.7, 2.0, -0.4]);
        let p: V = dev.tensor([1.1, 0.5, -0.8, 0.2, 1.7]);
        let q: V = dev.tensor([-0.6, 0.9, 0.4, -1.3, 0.25]);
        let mut grads = Gradients::leaky();
        Cpu::with_grad(&p, &mut grads, |g| {
            g.copy_from_slice(&[0.5, -1.0, 2.0, 0.0, 3.0])
        })
        .unwrap();
        let xt = x.clone().traced(grads);
        let again = xt.with_empty_tape();
        let hp: Box<dyn Handle<f64, Cpu>> = Box::new(p.clone());
        let hq: Box<dyn Handle<f64, Cpu>> = Box::new(q.clone());
        let y = if segmented {
            let a = segment([xt], vec![hp], |[x]| Ok(body(x, &p))).unwrap();
            let b = segment([a], vec![hq], |[a]| Ok(body(a, &q))).unwrap();
            let c = segment([b, again], Vec::new(), |[b, x]| Ok(join(b, x))).unwrap();
            let same = c.with_empty_tape();
            segment([c, same], Vec::new(), |[c, same]| Ok(twice(c, same))).unwrap()
        } else {
            let c = join(body(body(xt, &p), &q), again);
            let same = c.with_empty_tape();
            twice(c, same)
        };
        let q_again = q.clone().retaped::<dfdx::tensor::OwnedTape<f64, Cpu>>();
        let loss = y.try_add(q_again).unwrap().try_mul(0.5).unwrap();
        let mut grads = loss.sum().backward();
        [&x, &p, &q]
            .iter()
            .map(|t| {
                let mut v = Vec::new();
                Cpu::with_grad(t, &mut grads, |g| v = g.to_vec()).unwrap();
                v
            })
            .collect()
    }

    #[test]
    fn a_segment_gives_the_gradients_dfdx_gives_bit_for_bit() {
        let (plain, split) = (gradients(false), gradients(true));
        assert!(plain.iter().flatten().all(|v| *v != 0.0 && v.is_finite()));
        assert_eq!(plain, split);
    }

    #[test]
    fn without_a_tape_a_segment_is_its_function() {
        let dev = Cpu::default();
        let x: V = dev.tensor([0.3, -1.2, 0.7, 2.0, -0.4]);
        let p: V = dev.tensor([1.1, 0.5, -0.8, 0.2, 1.7]);
        let y = segment([x.clone()], Vec::new(), |[x]| Ok(body(x, &p))).unwrap();
        let want = (x * p.clone()).sin() * p;
        assert_eq!(y.array(), want.array());
    }
}

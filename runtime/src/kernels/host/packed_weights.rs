//! Dense layers' weights kept packed from one batch to the next while the weights stay as they
//! are: the evaluation and prediction loops open a [`keep_packed_weights`] scope, and inside
//! it a dense layer's forward packs its weights for the tiles once ([`Panels`]) instead of
//! once per call (6% of an MLP's inference on one thread, 9% on two, where each thread had
//! packed all of them).
//!
//! Never stale: an entry is found by the address of the weights' values and holds a handle on
//! the tensor that owns them ([`Buf`]), so that address cannot be freed and given to another
//! tensor while the entry lives, and dfdx copies a buffer before writing it while another
//! handle shares it: weights changed inside the scope (an optimizer step, a copy into the
//! tensor) are new values at a new address, packed again on their first use.

use std::cell::RefCell;
use std::marker::PhantomData;
#[cfg(target_arch = "x86_64")]
use std::sync::Arc;

use super::buf::Buf;
#[cfg(target_arch = "x86_64")]
use super::tiled::{Mat, Panels};

/// Packed bytes kept at most; past it the oldest entries go (a model whose weights change
/// every batch inside the scope must not keep every version).
const KEEP_BYTES: usize = 256 << 20;

/// Weights, `out × in` row-major, and their transpose packed.
#[cfg_attr(not(target_arch = "x86_64"), allow(dead_code))]
struct Entry {
    values: Buf<f32>,
    inputs: usize,
    #[cfg(target_arch = "x86_64")]
    panels: Arc<Panels>,
}

#[derive(Default)]
struct Kept {
    /// Open scopes on this thread.
    open: usize,
    entries: Vec<Entry>,
}

thread_local! {
    static KEPT: RefCell<Kept> = RefCell::default();
}

/// While the returned guard lives, dense layers computed on this thread keep their weights
/// packed for fulmen's tiled products from one call to the next: packed once, not once per
/// batch. Weights changed meanwhile are packed again (a kept entry holds a handle on the
/// tensor, whose values dfdx copies before writing them). They are dropped with the last
/// guard. The trainer's validation, test
/// and prediction loops hold one (not under `FULL_SHARD`, whose gathered weights are new
/// every batch); hold one yourself when you run a model's inference outside the trainer.
/// Elsewhere than x86-64 with AVX2, and for weights that are not f32, it changes nothing.
pub fn keep_packed_weights() -> PackedWeights {
    KEPT.with_borrow_mut(|kept| kept.open += 1);
    PackedWeights {
        _thread: PhantomData,
    }
}

/// The scope of [`keep_packed_weights`]: a guard of this thread's.
#[must_use = "the weights are kept only while the guard lives"]
pub struct PackedWeights {
    _thread: PhantomData<*const ()>,
}

impl Drop for PackedWeights {
    fn drop(&mut self) {
        let dropped = KEPT.with_borrow_mut(|kept| {
            kept.open -= 1;
            match kept.open {
                0 => std::mem::take(&mut kept.entries),
                _ => Vec::new(),
            }
        });
        drop(dropped);
    }
}

#[cfg(target_arch = "x86_64")]
/// The transpose of `weights` (`out × inputs`, row-major, a tensor's values read in place)
/// packed: kept from an earlier call, or packed now and kept. `None` outside a scope, and for
/// values that are a copy (their address says nothing of the tensor).
pub(super) fn packed(weights: &Buf<f32>, inputs: usize) -> Option<Arc<Panels>> {
    if !weights.is_shared() || inputs == 0 {
        return None;
    }
    let out = weights.len() / inputs;
    let same = |e: &Entry| {
        e.values.as_ptr() == weights.as_ptr()
            && e.values.len() == weights.len()
            && e.inputs == inputs
    };
    let found = KEPT.with_borrow(|kept| {
        if kept.open == 0 {
            return Err(());
        }
        Ok(kept
            .entries
            .iter()
            .find(|e| same(e))
            .map(|e| e.panels.clone()))
    });
    match found {
        Err(()) => None,
        Ok(Some(panels)) => Some(panels),
        Ok(None) => {
            let panels = Arc::new(Panels::of(Mat::transposed(weights, inputs), inputs, out));
            let bytes = |e: &Entry| e.values.len() * 4;
            let evicted = KEPT.with_borrow_mut(|kept| {
                let mut total: usize = kept.entries.iter().map(bytes).sum::<usize>();
                let mut evicted = Vec::new();
                while total + weights.len() * 4 > KEEP_BYTES && !kept.entries.is_empty() {
                    let e = kept.entries.remove(0);
                    total -= bytes(&e);
                    evicted.push(e);
                }
                kept.entries.push(Entry {
                    values: weights.clone(),
                    inputs,
                    panels: panels.clone(),
                });
                evicted
            });
            drop(evicted);
            Some(panels)
        }
    }
}

/// Weights kept on this thread now.
#[cfg(test)]
pub(super) fn kept() -> usize {
    KEPT.with_borrow(|kept| kept.entries.len())
}

#[cfg(all(test, target_arch = "x86_64"))]
mod tests {
    use dfdx::shapes::{Const, Rank2};
    use dfdx::tensor::{Cpu, Tensor, TensorFrom};

    use super::*;
    use crate::kernels::{Dense, Host};

    type Weights = Tensor<Rank2<40, 300>, f32, Cpu>;

    fn values(n: usize, seed: usize) -> Vec<f32> {
        (0..n)
            .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
            .collect()
    }

    /// The layer's output for `x` (5 × 300) and weights `w`, as bits.
    fn out(x: &[f32], w: &Weights) -> Vec<u32> {
        let dev = Cpu::default();
        let x: Tensor<(usize, Const<300>), f32, Cpu> = dev.tensor((x.to_vec(), (5, Const)));
        let y = <Host as Dense<f32, Cpu>>::linear(x, w, None).expect("a product");
        y.as_vec().iter().map(|v| v.to_bits()).collect()
    }

    /// Inside a scope the weights are packed once and give the bits of a packing per call;
    /// weights changed inside it are packed again; the last guard drops them all.
    #[test]
    fn kept_weights_are_the_weights_until_they_change() {
        if super::super::tiled::isa().is_none() {
            return;
        }
        let dev = Cpu::default();
        let mut w: Weights = dev.tensor(values(40 * 300, 1));
        let x = values(5 * 300, 2);
        let fresh = out(&x, &w);
        let outer = keep_packed_weights();
        {
            let _inner = keep_packed_weights();
            assert_eq!(out(&x, &w), fresh);
            assert_eq!(out(&x, &w), fresh, "kept");
            assert_eq!(kept(), 1, "packed once");
        }
        assert_eq!(kept(), 1, "an outer scope keeps them");
        // Changed in place: the kept values are another buffer now, so not read.
        w.copy_from(&values(40 * 300, 3));
        let changed = out(&x, &w);
        assert_ne!(changed, fresh);
        assert_eq!(kept(), 2);
        drop(outer);
        assert_eq!(kept(), 0);
        assert_eq!(out(&x, &w), changed, "the same bits outside a scope");
        assert_eq!(kept(), 0, "nothing kept outside a scope");
    }
}

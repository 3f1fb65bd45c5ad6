//! The host kernels' recent outputs, read in place by the kernels that take them as input.
//!
//! dfdx 0.13 has no public way to borrow a CPU tensor's values, so a kernel's input is copied
//! out of its tensor first, by one thread ([`Host::of`](super::host::Host::of)). But most
//! inputs are the outputs of the kernel before, whose buffer became its tensor's without a copy
//! ([`Host::into_tensor`](super::host::Host::into_tensor)). The last [`KEPT`] such outputs of
//! each thread are remembered here: a clone of the tensor, which keeps the buffer allocated
//! and unchanged (dfdx writes into a tensor's buffer only when the tensor is its sole owner,
//! and copies it otherwise), and the pointer the kernel wrote it through. An input whose first
//! value lies at a remembered buffer's address, with as many values and contiguous strides,
//! is that buffer in that order, and is read in place ([`Buf::Shared`]).

use std::any::Any;
use std::cell::RefCell;
use std::collections::VecDeque;
use std::sync::Arc;

/// Outputs remembered per thread: enough for a residual block's input to still be there when
/// its shortcut reads it after the branch's five layers.
pub const KEPT: usize = 8;

/// Values a kernel reads: its own, or a remembered output's, shared.
pub enum Buf<T> {
    Owned(Vec<T>),
    Shared {
        /// The tensor that owns the values.
        keep: Arc<dyn Any + Send + Sync>,
        ptr: *const T,
        len: usize,
    },
}

// SAFETY: a shared buffer is never written while `keep` holds it (see the module's notes),
// and `keep` is a tensor, which is Send and Sync; reading it from any thread is sound.
unsafe impl<T: Sync> Send for Buf<T> {}
unsafe impl<T: Sync> Sync for Buf<T> {}

impl<T> std::ops::Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match self {
            Buf::Owned(v) => v,
            // SAFETY: `ptr` is the pointer the buffer's values were written through, before
            // the buffer was moved, unchanged, into the tensor `keep` holds; `len` values
            // were written there, and nothing writes them while `keep` lives.
            Buf::Shared { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

impl<T: Clone> Clone for Buf<T> {
    fn clone(&self) -> Self {
        match self {
            Buf::Owned(v) => Buf::Owned(v.clone()),
            Buf::Shared { keep, ptr, len } => Buf::Shared {
                keep: keep.clone(),
                ptr: *ptr,
                len: *len,
            },
        }
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> From<Vec<T>> for Buf<T> {
    fn from(v: Vec<T>) -> Self {
        Buf::Owned(v)
    }
}

impl<T: Clone> Buf<T> {
    /// The values as a vector: moved when owned, copied when shared.
    pub fn into_vec(self) -> Vec<T> {
        match self {
            Buf::Owned(v) => v,
            shared => shared.to_vec(),
        }
    }
}

struct Remembered {
    keep: Arc<dyn Any + Send + Sync>,
    /// The values' pointer, as `*const f32` or `*const f64`.
    ptr: *const (),
    len: usize,
    is_f64: bool,
}

thread_local! {
    static RECENT: RefCell<VecDeque<Remembered>> = const { RefCell::new(VecDeque::new()) };
}

/// Remembers that `keep` (a tensor) owns the `len` values written through `ptr`.
pub fn remember<T: 'static>(keep: Arc<dyn Any + Send + Sync>, ptr: *const T, len: usize) {
    let is_f64 = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>();
    RECENT.with_borrow_mut(|recent| {
        if recent.len() == KEPT {
            recent.pop_front();
        }
        recent.push_back(Remembered {
            keep,
            ptr: ptr.cast(),
            len,
            is_f64,
        });
    });
}

/// The remembered buffer of `len` values of `T` whose first value is at `addr`.
pub fn lookup<T: 'static>(addr: usize, len: usize) -> Option<Buf<T>> {
    let is_f64 = std::any::TypeId::of::<T>() == std::any::TypeId::of::<f64>();
    RECENT.with_borrow(|recent| {
        recent
            .iter()
            .rev()
            .find(|r| r.ptr as usize == addr && r.len == len && r.is_f64 == is_f64)
            .map(|r| Buf::Shared {
                keep: r.keep.clone(),
                ptr: r.ptr.cast(),
                len,
            })
    })
}

#[cfg(test)]
mod tests {
    use dfdx::shapes::{Rank3, Rank4};
    use dfdx::tensor::{Cpu, Tensor, TensorFrom};
    use dfdx::tensor_ops::{BroadcastTo, PermuteTo, ReshapeTo};

    use super::Buf;
    use crate::layers::host::Host;

    fn values(h: Host) -> (bool, Vec<f32>) {
        match h {
            Host::F32(b) => (matches!(b, Buf::Shared { .. }), b.to_vec()),
            Host::F64(_) => panic!("f32 in, f32 out"),
        }
    }

    #[test]
    fn only_an_outputs_own_buffer_in_its_own_order_is_read_in_place() {
        let dev = Cpu::default();
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let t: Tensor<Rank3<2, 3, 4>, f32, Cpu> = Host::F32(v.clone().into())
            .into_tensor(&dev, Default::default())
            .unwrap();
        assert_eq!(values(Host::of(&t).unwrap()), (true, v.clone()));
        // The same buffer reshaped keeps its order: still read in place.
        let flat = t.clone().reshape::<Rank4<6, 1, 2, 2>>();
        assert_eq!(values(Host::of(&flat).unwrap()), (true, v.clone()));
        // A permuted view of it is copied, in the view's order.
        let p = t.clone().permute::<Rank3<2, 4, 3>, _>();
        assert_eq!(values(Host::of(&p).unwrap()), (false, p.as_vec()));
        // So is a broadcast.
        let b = t
            .clone()
            .broadcast::<Rank4<2, 2, 3, 4>, dfdx::shapes::Axis<0>>();
        assert_eq!(values(Host::of(&b).unwrap()), (false, b.as_vec()));
        // A tensor written after it was made gets a buffer of its own.
        let mut w = t.clone();
        w[[0, 0, 0]] = 100.0;
        let (shared, got) = values(Host::of(&w).unwrap());
        assert!(!shared);
        assert_eq!(got[0], 100.0);
        assert_eq!(
            values(Host::of(&t).unwrap()).1[0],
            0.0,
            "the output is unchanged"
        );
        // A tensor that is no kernel's output is copied.
        let other: Tensor<Rank3<2, 3, 4>, f32, Cpu> = dev.tensor(v.clone());
        assert_eq!(values(Host::of(&other).unwrap()), (false, v));
    }
}

//! [`Buf`]: the values a host kernel reads, its own or a tensor's, read in place.
//!
//! dfdx 0.13 has no public way to borrow a CPU tensor's values. But a tensor indexes its values
//! by reference, which gives their address and strides
//! ([`HostAccess::in_host_memory`](crate::device::HostAccess::in_host_memory)), and a clone of
//! the tensor keeps them allocated and unchanged: dfdx copies a buffer before writing it while
//! another handle shares it. A contiguous tensor of a kernel dtype (f32, f64) is read in place
//! that way (a kernel's input is most often the previous kernel's output, and its weights are
//! parameters); any other is copied ([`Values::of`](super::values::Values::of)).

use std::any::{Any, TypeId};
use std::sync::Arc;

use dfdx::shapes::{HasShape, Shape};
use dfdx::tensor::Tensor;

use crate::device::{FloatDtype, HostAccess, InHostMemory};

/// Values a kernel reads: its own, or a tensor's, shared.
pub struct Buf<T>(Repr<T>);

enum Repr<T> {
    Owned(Vec<T>),
    Shared {
        /// The tensor that owns the values.
        _keep: Arc<dyn Any + Send + Sync>,
        ptr: *const T,
        len: usize,
    },
}

// SAFETY: an owned buffer is a `Vec<T>`, which is Send and Sync when `T` is. A shared one is
// only read, through `&self`, while `_keep` (a tensor: Send and Sync) holds the values: sending
// or sharing it across threads reads `T`s from several threads, which `T: Sync` allows.
unsafe impl<T: Send + Sync> Send for Buf<T> {}
unsafe impl<T: Send + Sync> Sync for Buf<T> {}

impl<T> Buf<T> {
    /// Whether the values are a tensor's, read in place.
    pub fn is_shared(&self) -> bool {
        matches!(self.0, Repr::Shared { .. })
    }

    /// The buffer, when it is the kernel's own.
    pub fn as_mut_vec(&mut self) -> Option<&mut Vec<T>> {
        match &mut self.0 {
            Repr::Owned(v) => Some(v),
            Repr::Shared { .. } => None,
        }
    }
}

impl<T: 'static> Buf<T> {
    /// The values of `t` in place, if `T` is its dtype and they are contiguous in host memory
    /// in `t`'s order.
    pub fn of_tensor<S: Shape, E: FloatDtype, D: HostAccess<E>>(
        t: &Tensor<S, E, D>,
    ) -> Option<Self> {
        if TypeId::of::<E>() != TypeId::of::<T>() {
            return None;
        }
        let InHostMemory {
            keep,
            addr,
            strides,
        } = D::in_host_memory(t)?;
        let dims = t.shape().concrete();
        let mut expect = 1;
        for i in (0..S::NUM_DIMS).rev() {
            if dims[i] > 1 && strides[i] != expect {
                return None;
            }
            expect *= dims[i];
        }
        Some(Buf(Repr::Shared {
            _keep: keep,
            // The tensor's dtype is `T` (checked above), and its `len` values lie contiguously
            // from `addr` on (the strides, checked above), in the buffer `keep` holds.
            ptr: addr as *const T,
            len: t.shape().num_elements(),
        }))
    }
}

impl<T> std::ops::Deref for Buf<T> {
    type Target = [T];
    fn deref(&self) -> &[T] {
        match &self.0 {
            Repr::Owned(v) => v,
            // SAFETY: only `of_tensor` makes a shared buffer: `ptr` is the address of the first
            // of `len` contiguous values of type `T` in the buffer of the tensor `_keep` holds,
            // which nothing writes or frees while `_keep` lives (see the module's notes).
            Repr::Shared { ptr, len, .. } => unsafe { std::slice::from_raw_parts(*ptr, *len) },
        }
    }
}

impl<T: Clone> Clone for Buf<T> {
    fn clone(&self) -> Self {
        Buf(match &self.0 {
            Repr::Owned(v) => Repr::Owned(v.clone()),
            Repr::Shared { _keep, ptr, len } => Repr::Shared {
                _keep: _keep.clone(),
                ptr: *ptr,
                len: *len,
            },
        })
    }
}

impl<T: std::fmt::Debug> std::fmt::Debug for Buf<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list().entries(self.iter()).finish()
    }
}

impl<T> From<Vec<T>> for Buf<T> {
    fn from(v: Vec<T>) -> Self {
        Buf(Repr::Owned(v))
    }
}

impl<T: Clone> Buf<T> {
    /// The values as a vector: moved when owned, copied when shared.
    pub fn into_vec(self) -> Vec<T> {
        match self.0 {
            Repr::Owned(v) => v,
            Repr::Shared { ptr, len, .. } => {
                // SAFETY: as in `deref`; the values are copied before `_keep` is dropped.
                unsafe { std::slice::from_raw_parts(ptr, len) }.to_vec()
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use dfdx::shapes::{Rank3, Rank4};
    use dfdx::tensor::{Cpu, Tensor, TensorFrom};
    use dfdx::tensor_ops::{BroadcastTo, PermuteTo, ReshapeTo};

    use super::Buf;
    use crate::kernels::host::values::Values;

    fn values(h: Values) -> (bool, Vec<f32>) {
        match h {
            Values::F32(b) => (b.is_shared(), b.to_vec()),
            Values::F64(_) => panic!("f32 in, f32 out"),
        }
    }

    #[test]
    fn only_a_contiguous_tensor_in_its_own_order_is_read_in_place() {
        let dev = Cpu::default();
        let v: Vec<f32> = (0..24).map(|i| i as f32).collect();
        let t: Tensor<Rank3<2, 3, 4>, f32, Cpu> = dev.tensor(v.clone());
        assert_eq!(values(Values::of(&t).unwrap()), (true, v.clone()));
        // The same buffer reshaped keeps its order: still read in place.
        let flat = t.clone().reshape::<Rank4<6, 1, 2, 2>>();
        assert_eq!(values(Values::of(&flat).unwrap()), (true, v.clone()));
        // A permuted view of it is copied, in the view's order.
        let p = t.clone().permute::<Rank3<2, 4, 3>, _>();
        assert_eq!(values(Values::of(&p).unwrap()), (false, p.as_vec()));
        // So is a broadcast.
        let b = t
            .clone()
            .broadcast::<Rank4<2, 2, 3, 4>, dfdx::shapes::Axis<0>>();
        assert_eq!(values(Values::of(&b).unwrap()), (false, b.as_vec()));
        // A tensor written while it is read gets a buffer of its own; the values read stay.
        let read = Values::of(&t).unwrap();
        let mut w = t.clone();
        w[[0, 0, 0]] = 100.0;
        assert_eq!(values(read).1[0], 0.0, "the values read are unchanged");
        assert_eq!(values(Values::of(&w).unwrap()).1[0], 100.0);
        // An f64 buffer is not read as f32.
        let d: Tensor<Rank3<2, 3, 4>, f64, Cpu> = dev.tensor([[[0.5; 4]; 3]; 2]);
        assert!(Buf::<f32>::of_tensor(&d).is_none());
    }
}

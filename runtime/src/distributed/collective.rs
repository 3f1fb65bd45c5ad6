//! The collectives a multi-process run needs, behind one small trait: sums across ranks,
//! a broadcast from one rank, a barrier. [`Single`] is the one-process run (every call a
//! no-op); MPI implements it on CPUs (feature `mpi`), NCCL on GPUs (feature `nccl`).

use std::any::TypeId;
use std::sync::mpsc::{channel, RecvTimeoutError, Sender};
use std::time::Duration;

use crate::Result;

/// Operations every rank calls in the same order.
pub trait Collective: Send {
    /// This process's rank, `0..world_size()`.
    fn rank(&self) -> usize;
    /// The number of processes in the run.
    fn world_size(&self) -> usize;
    /// Sums `values` element-wise across ranks; every rank ends with the sum.
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()>;
    /// Sums `values` element-wise across ranks, in f64; every rank ends with the sum.
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()>;
    /// Sums `values` element-wise onto rank `root` (the others' `values` are left as they
    /// were).
    fn reduce_sum_f32(&self, root: usize, values: &mut [f32]) -> Result<()>;
    /// Sums `values` element-wise onto rank `root`, in f64 (the others' `values` are left as they
    /// were).
    fn reduce_sum_f64(&self, root: usize, values: &mut [f64]) -> Result<()>;
    /// The element-wise maximum across ranks.
    fn all_reduce_max_f64(&self, values: &mut [f64]) -> Result<()>;
    /// Replaces `bytes` on every rank with rank `root`'s.
    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) -> Result<()>;
    /// Returns once every rank has called it.
    fn barrier(&self) -> Result<()>;
    /// Time spent in collectives so far (waiting for slower ranks included).
    fn busy(&self) -> Duration {
        Duration::ZERO
    }
    /// Averages gradients of the dtype `dtype` across the ranks where they live, when this
    /// collective can (NCCL, on the GPU's own buffers); `Ok(false)` when it cannot, and they
    /// go through the host. `each(f)` calls `f` on every gradient buffer as the device holds
    /// it (a `CudaSlice` on CUDA), in the same order on every rank and every call.
    fn average_in_place(&self, _dtype: TypeId, _each: &mut EachBuffer<'_>) -> Result<bool> {
        Ok(false)
    }
}

/// Calls the function it is given on every gradient buffer of a model, type-erased, in walk
/// order ([`Collective::average_in_place`]).
pub type EachBuffer<'a> =
    dyn FnMut(&mut dyn FnMut(&mut dyn std::any::Any) -> Result<()>) -> Result<()> + 'a;

/// The one-process run.
#[derive(Debug, Clone, Copy, Default)]
pub struct Single;

impl Collective for Single {
    fn rank(&self) -> usize {
        0
    }
    fn world_size(&self) -> usize {
        1
    }
    fn all_reduce_sum_f32(&self, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_sum_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn all_reduce_max_f64(&self, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn reduce_sum_f32(&self, _: usize, _: &mut [f32]) -> Result<()> {
        Ok(())
    }
    fn reduce_sum_f64(&self, _: usize, _: &mut [f64]) -> Result<()> {
        Ok(())
    }
    fn broadcast(&self, _: usize, _: &mut Vec<u8>) -> Result<()> {
        Ok(())
    }
    fn barrier(&self) -> Result<()> {
        Ok(())
    }
}

/// Ends the run when a collective waits longer than its timeout: the other ranks are gone or
/// stuck (a rank that died leaves the rest blocked in MPI, Lightning's most reported
/// distributed hang), and no call returns to report it. `stop` ends the run (MPI's abort,
/// which takes every rank down) and must not return.
#[cfg_attr(not(any(feature = "mpi", feature = "nccl")), allow(dead_code))]
pub(crate) struct Watchdog {
    arm: Sender<Option<&'static str>>,
}

#[cfg_attr(not(any(feature = "mpi", feature = "nccl")), allow(dead_code))]
impl Watchdog {
    pub fn new(rank: usize, timeout: Duration, stop: fn() -> !) -> Self {
        let (arm, armed) = channel::<Option<&'static str>>();
        std::thread::spawn(move || {
            let mut waiting: Option<&'static str> = None;
            loop {
                let next = match waiting {
                    None => armed.recv().map_err(|_| RecvTimeoutError::Disconnected),
                    Some(_) => armed.recv_timeout(timeout),
                };
                match next {
                    Ok(what) => waiting = what,
                    Err(RecvTimeoutError::Disconnected) => return,
                    Err(RecvTimeoutError::Timeout) => {
                        eprintln!(
                            "error: rank {rank}: {} waited {:.0} s for the other ranks; one of them died or hangs, so this rank stops (the timeout is the trainer's `collective_timeout`)",
                            waiting.unwrap_or("a collective"),
                            timeout.as_secs_f64()
                        );
                        stop();
                    }
                }
            }
        });
        Self { arm }
    }

    /// Runs `f`, ending the process if it takes longer than the timeout.
    pub fn guard<R>(&self, what: &'static str, f: impl FnOnce() -> R) -> R {
        let _ = self.arm.send(Some(what));
        let r = f();
        let _ = self.arm.send(None);
        r
    }
}

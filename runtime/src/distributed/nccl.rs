//! [`Collective`] over NCCL (cudarc's bindings), for multi-process runs on GPUs: one process
//! per GPU, started by fulmen itself ([`launch`](super::launch)), torchrun or `srun`.
//!
//! Rank 0 makes NCCL's unique id and hands it to the others through the
//! [`rendezvous`](super::rendezvous) at the master address; from there on every collective
//! is NCCL's. Gradients are averaged on the GPU in dfdx's own buffers ([`Collective::average_in_place`]):
//! copied into buckets of [`BUCKET`](super::BUCKET) values, all-reduced with NCCL's `Avg` in
//! one group, and copied back, with no trip through the host. The other collectives (metrics,
//! flags, the start-up broadcast of rank 0's weights) are small and go through host copies.
//!
//! cudarc 0.9's `CudaDevice` works on the legacy default stream, as dfdx's does, so NCCL's
//! kernels are ordered after the backward pass that wrote the gradients and before the
//! optimizer reads them.

use std::any::{Any, TypeId};
use std::net::TcpListener;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use cudarc::driver::{CudaDevice, CudaSlice, DeviceRepr, DeviceSlice, ValidAsZeroBits};
use cudarc::nccl::{group_end, group_start, Comm, Id, NcclType, ReduceOp};

use super::collective::{Collective, EachBuffer, Watchdog};
use super::{rendezvous, ClusterEnv, BUCKET};
use crate::{Error, Result};

/// The NCCL communicator of this rank, on its GPU.
pub struct Nccl {
    inner: Mutex<Inner>,
    rank: usize,
    size: usize,
    watchdog: Watchdog,
    /// Nanoseconds spent in collectives.
    busy: AtomicU64,
}

struct Inner {
    comm: Comm,
    dev: Arc<CudaDevice>,
    /// The gradient buckets (send, receive) of the last average, kept for the next
    /// step: `Vec<(CudaSlice<E>, CudaSlice<E>)>` for the run's dtype.
    buckets: Option<Box<dyn Any + Send>>,
}

// SAFETY: NCCL communicators may be used from any thread, one call at a time; every use of
// `comm` (a raw handle) goes through the mutex.
unsafe impl Send for Inner {}

/// Ends the process: a rank stuck in NCCL cannot be unblocked, and exiting normally would
/// wait for the GPU work that hangs.
fn stop() -> ! {
    // SAFETY: _exit ends the process at once; nothing is expected to run after it.
    unsafe { libc::_exit(3) }
}

fn nccl_error(what: &str) -> impl Fn(cudarc::nccl::result::NcclError) -> Error + '_ {
    move |e| Error::msg(format!("NCCL {what}: {:?}", e.0))
}

fn cuda_error(what: &str) -> impl Fn(cudarc::driver::DriverError) -> Error + '_ {
    move |e| Error::msg(format!("CUDA ({what}): {:?}", e.0))
}

impl Nccl {
    /// Joins the run's NCCL communicator on GPU `ordinal`. Rank 0 serves the id on `listener`
    /// (or on the master port); a rank or an answer that does not come within `timeout` is an
    /// error, and a collective that waits longer than it ends the process.
    pub fn join(
        env: &ClusterEnv,
        ordinal: usize,
        listener: Option<TcpListener>,
        timeout: Duration,
    ) -> Result<Self> {
        let (rank, size) = (env.global_rank, env.world_size);
        let dev = CudaDevice::new(ordinal).map_err(cuda_error("opening the GPU"))?;
        let id = if rank == 0 {
            let id = Id::new().map_err(nccl_error("unique id (is libnccl.so.2 loadable?)"))?;
            let blob: Vec<u8> = id.internal().iter().map(|&c| c as u8).collect();
            if size > 1 {
                let listener = match listener {
                    Some(l) => l,
                    None => TcpListener::bind(("0.0.0.0", env.master_port)).map_err(|e| {
                        Error::config(
                            "MASTER_PORT",
                            format!("rank 0 cannot listen on port {}: {e}", env.master_port),
                        )
                    })?,
                };
                rendezvous::serve(&listener, size, &blob, timeout)?;
            }
            id
        } else {
            let blob = rendezvous::fetch(&env.master_addr, env.master_port, rank, size, timeout)?;
            let internal: [std::ffi::c_char; 128] = blob
                .iter()
                .map(|&b| b as std::ffi::c_char)
                .collect::<Vec<_>>()
                .try_into()
                .map_err(|_| {
                    Error::msg(format!(
                        "rendezvous: rank 0 sent {} bytes, not an NCCL id (128)",
                        blob.len()
                    ))
                })?;
            Id::uninit(internal)
        };
        let watchdog = Watchdog::new(rank, timeout, stop);
        let comm = watchdog
            .guard("NCCL initialization", || {
                Comm::from_rank(dev.clone(), rank, size, id)
            })
            .map_err(nccl_error("initialization"))?;
        Ok(Self {
            inner: Mutex::new(Inner {
                comm,
                dev,
                buckets: None,
            }),
            rank,
            size,
            watchdog,
            busy: AtomicU64::new(0),
        })
    }

    /// Runs `f` on the communicator, guarded by the watchdog and timed.
    fn call<R>(&self, what: &'static str, f: impl FnOnce(&mut Inner) -> Result<R>) -> Result<R> {
        let mut inner = self
            .inner
            .lock()
            .map_err(|_| Error::msg("NCCL: a collective panicked"))?;
        let start = Instant::now();
        let r = self.watchdog.guard(what, || f(&mut inner));
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy.fetch_add(nanos, Ordering::Relaxed);
        r
    }

    /// `op` over `values` on every rank (or onto `root`), through device copies.
    fn host_op<T: NcclType + DeviceRepr + ValidAsZeroBits + Unpin>(
        &self,
        what: &'static str,
        values: &mut [T],
        op: ReduceOp,
        root: Option<usize>,
    ) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        let rank = self.rank;
        self.call(what, |inner| {
            let send = inner.dev.htod_sync_copy(values).map_err(cuda_error(what))?;
            let mut recv = inner
                .dev
                .alloc_zeros::<T>(values.len())
                .map_err(cuda_error(what))?;
            match root {
                None => inner.comm.all_reduce(&send, &mut recv, &op),
                Some(r) => inner.comm.reduce(&send, &mut recv, &op, r as i32),
            }
            .map_err(nccl_error(what))?;
            if root.is_none_or(|r| r == rank) {
                inner
                    .dev
                    .dtoh_sync_copy_into(&recv, values)
                    .map_err(cuda_error(what))?;
            } else {
                inner.dev.synchronize().map_err(cuda_error(what))?;
            }
            Ok(())
        })
    }

    /// Averages gradients of dtype `E` across the ranks in place, on the GPU. `each(f)` calls
    /// `f` on every gradient buffer, in the same order on every rank and every call; it is
    /// called three times (sizes, copy in, copy out).
    fn average<E: NcclType + DeviceRepr + ValidAsZeroBits + Unpin + Send + 'static>(
        &self,
        each: &mut EachBuffer<'_>,
    ) -> Result<()> {
        let mut lens = Vec::new();
        each(&mut |g| {
            lens.push(buffer::<E>(g)?.len());
            Ok(())
        })?;
        let total: usize = lens.iter().sum();
        if total == 0 {
            return Ok(());
        }
        // Each gradient's pieces: (offset in the gradient, bucket, offset in it, length).
        let mut pieces = Vec::with_capacity(lens.len());
        let mut at = 0;
        for &len in &lens {
            let mut mine = Vec::new();
            let mut done = 0;
            while done < len {
                let (b, off) = (at / BUCKET, at % BUCKET);
                let take = (len - done).min(BUCKET - off);
                mine.push((done, b, off, take));
                done += take;
                at += take;
            }
            pieces.push(mine);
        }
        self.call("gradient all-reduce", |inner| {
            let fresh = || -> Result<Vec<(CudaSlice<E>, CudaSlice<E>)>> {
                (0..total.div_ceil(BUCKET))
                    .map(|b| {
                        let len = (total - b * BUCKET).min(BUCKET);
                        let alloc = || inner.dev.alloc_zeros::<E>(len);
                        Ok((
                            alloc().map_err(cuda_error("gradient buckets"))?,
                            alloc().map_err(cuda_error("gradient buckets"))?,
                        ))
                    })
                    .collect()
            };
            type Buckets<E> = Vec<(CudaSlice<E>, CudaSlice<E>)>;
            let kept = inner
                .buckets
                .take()
                .and_then(|b| b.downcast::<Buckets<E>>().ok());
            let mut buckets = match kept {
                Some(b) if b.iter().map(|(s, _)| s.len()).sum::<usize>() == total => *b,
                _ => fresh()?,
            };
            let dev = inner.dev.clone();
            let mut i = 0;
            each(&mut |g| {
                let g = buffer::<E>(g)?;
                for &(from, b, off, len) in &pieces[i] {
                    let src = g.slice(from..from + len);
                    let mut dst = buckets[b].0.slice_mut(off..off + len);
                    dev.dtod_copy(&src, &mut dst)
                        .map_err(cuda_error("gradients into buckets"))?;
                }
                i += 1;
                Ok(())
            })?;
            group_start().map_err(nccl_error("group start"))?;
            for (send, recv) in &mut buckets {
                inner
                    .comm
                    .all_reduce(send, recv, &ReduceOp::Avg)
                    .map_err(nccl_error("gradient all-reduce"))?;
            }
            group_end().map_err(nccl_error("group end"))?;
            let mut i = 0;
            each(&mut |g| {
                let g = buffer::<E>(g)?;
                for &(from, b, off, len) in &pieces[i] {
                    let src = buckets[b].1.slice(off..off + len);
                    let mut dst = g.slice_mut(from..from + len);
                    dev.dtod_copy(&src, &mut dst)
                        .map_err(cuda_error("buckets into gradients"))?;
                }
                i += 1;
                Ok(())
            })?;
            // The wait for the other ranks happens here, under the watchdog.
            dev.synchronize()
                .map_err(cuda_error("gradient all-reduce"))?;
            inner.buckets = Some(Box::new(buckets));
            Ok(())
        })
    }
}

impl Collective for Nccl {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()> {
        self.host_op("all-reduce", values, ReduceOp::Sum, None)
    }
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        self.host_op("all-reduce", values, ReduceOp::Sum, None)
    }
    fn reduce_sum_f32(&self, root: usize, values: &mut [f32]) -> Result<()> {
        self.host_op("reduce", values, ReduceOp::Sum, Some(root))
    }
    fn reduce_sum_f64(&self, root: usize, values: &mut [f64]) -> Result<()> {
        self.host_op("reduce", values, ReduceOp::Sum, Some(root))
    }
    fn all_reduce_max_f64(&self, values: &mut [f64]) -> Result<()> {
        self.host_op("all-reduce", values, ReduceOp::Max, None)
    }
    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) -> Result<()> {
        // Rank `root`'s length: the others add nothing to it.
        let mut len = [if self.rank == root {
            bytes.len() as u64
        } else {
            0
        }];
        self.host_op("broadcast", &mut len, ReduceOp::Sum, None)?;
        bytes.resize(len[0] as usize, 0);
        if bytes.is_empty() {
            return Ok(());
        }
        let rank = self.rank;
        self.call("broadcast", |inner| {
            let send = if rank == root {
                Some(
                    inner
                        .dev
                        .htod_sync_copy(bytes)
                        .map_err(cuda_error("broadcast"))?,
                )
            } else {
                None
            };
            let mut recv = inner
                .dev
                .alloc_zeros::<u8>(bytes.len())
                .map_err(cuda_error("broadcast"))?;
            inner
                .comm
                .broadcast(&send, &mut recv, root as i32)
                .map_err(nccl_error("broadcast"))?;
            inner
                .dev
                .dtoh_sync_copy_into(&recv, bytes)
                .map_err(cuda_error("broadcast"))
        })
    }
    fn barrier(&self) -> Result<()> {
        self.host_op("barrier", &mut [0u8], ReduceOp::Sum, None)
    }
    fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy.load(Ordering::Relaxed))
    }
    /// f32 and f64 gradients are averaged in place on the GPU; half precision's (dfdx's
    /// `AMP<f16>`, which NCCL has no type for) take the host path.
    fn average_in_place(&self, dtype: TypeId, each: &mut EachBuffer<'_>) -> Result<bool> {
        if dtype == TypeId::of::<f32>() {
            self.average::<f32>(each).map(|()| true)
        } else if dtype == TypeId::of::<f64>() {
            self.average::<f64>(each).map(|()| true)
        } else {
            Ok(false)
        }
    }
}

/// A gradient buffer as NCCL averages it: a `CudaSlice<E>`.
fn buffer<E: 'static>(g: &mut dyn Any) -> Result<&mut CudaSlice<E>> {
    g.downcast_mut::<CudaSlice<E>>()
        .ok_or_else(|| Error::msg("NCCL: a gradient buffer of another dtype than the others"))
}

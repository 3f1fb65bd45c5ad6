//! Multi-process training (Lightning's strategies): where this process is
//! ([`ClusterEnv`]), what the ranks share ([`Strategy`]), and the collectives that keep them
//! in step ([`Collective`]: MPI on CPUs with the `mpi` feature, NCCL on GPUs with `nccl`).
//! A GPU run of several devices started as one process starts its other ranks itself
//! (`launch`), as Lightning does.
//!
//! Under DDP every rank starts from rank 0's weights, trains on its own share of each epoch
//! (the loaders' distributed sampler), and before each optimizer step sums the gradients
//! across ranks in buckets and divides by the world size, so all ranks take the same step.
//! Rank 0 alone writes logs, checkpoints (but FULL_SHARD's sharded ones, of a file per rank)
//! and the progress bar; `prepare_data` runs once per
//! node, and the others wait for it (and stop with it when it fails). SHARD_GRAD_OP (`shard.rs`) gives each parameter tensor
//! to one rank to step; FULL_SHARD (`full_shard/`) keeps 1/N of every parameter on each rank
//! and gathers a [`Unit`](crate::layers::Unit)'s only while it runs.

mod collective;
mod env;
pub(crate) mod full_shard;
pub(crate) mod launch;
#[cfg(feature = "mpi")]
mod mpi;
#[cfg(feature = "nccl")]
pub(crate) mod nccl;
// Compiled without NCCL too, so that its tests run on every machine.
mod ranks;
#[cfg_attr(not(feature = "nccl"), allow(dead_code))]
pub(crate) mod rendezvous;
pub mod requeue;
pub(crate) mod shard;
mod strategy;

use std::time::Duration;

use dfdx::nn::TensorCollection;
use dfdx::tensor::Gradients;
use num_traits::NumCast;

pub use collective::{Collective, EachBuffer, Single};
pub use env::{expand_nodelist, ClusterEnv, Launcher};
pub use ranks::Ranks;
pub use strategy::Strategy;

use crate::device::{Devices, RunDevice};
use crate::walk::{self, Item, ItemMut, Params};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// Values per all-reduce call (16 MiB of f32), as DDP's gradient buckets.
const BUCKET: usize = 4 << 20;

/// This process's part in the run the flags and the environment describe.
pub(crate) struct Plan {
    pub strategy: Strategy,
    pub env: ClusterEnv,
    /// Whether this process launched its ranks itself (rank 0 of a GPU run).
    pub launched: bool,
    /// Where rank 0 of such a run hands out NCCL's id (its first trainer's only).
    #[cfg_attr(not(feature = "nccl"), allow(dead_code))]
    pub listener: Option<std::net::TcpListener>,
}

/// Checks the flags against the launcher's environment; a GPU run of several devices that
/// no launcher started starts its other ranks here ([`launch`]).
pub(crate) fn plan(
    strategy: Strategy,
    env: ClusterEnv,
    gpu: bool,
    devices: &Devices,
    num_nodes: usize,
    timeout: Duration,
) -> Result<Plan> {
    let requested = match devices {
        Devices::Count(n) => Some(*n),
        Devices::Ordinals(v) => Some(v.len()),
        Devices::Auto => None,
    };
    if num_nodes == 0 {
        return Err(Error::config(
            "num_nodes",
            "0 nodes requested; use at least 1",
        ));
    }
    let multi = matches!(
        strategy,
        Strategy::Ddp | Strategy::ShardGradOp | Strategy::FullShard
    );
    if env.world_size == 1 {
        let n = requested.unwrap_or(1);
        if num_nodes > 1 {
            return Err(Error::config(
                "num_nodes",
                format!("{num_nodes} nodes requested, but this process was started alone; submit with SLURM (`srun`) or `mpirun` across the nodes"),
            ));
        }
        // Lightning's launcher: DDP on GPUs (asked for, or several GPUs with "auto"), one
        // process per GPU, started from this one.
        if gpu && (multi || (strategy == Strategy::Auto && n > 1)) {
            if !cfg!(feature = "nccl") {
                return Err(Error::config(
                    "strategy",
                    format!("{strategy:?} on {n} GPU(s) needs NCCL, and this fulmen was built without it; rebuild with `--features nccl`"),
                ));
            }
            // Every rank's GPU must exist before any rank starts.
            let count = crate::device::gpu_count()?;
            let highest = match devices {
                Devices::Ordinals(v) => v.iter().max().map_or(0, |m| m + 1),
                _ => n,
            };
            if highest > count {
                return Err(Error::config(
                    "devices",
                    format!("{devices:?} asks for {highest} GPU(s) for {strategy:?}, but this machine has {count}"),
                ));
            }
            let (env, listener) = launch::ranks(n, timeout)?;
            return Ok(Plan {
                launched: true,
                listener,
                ..Plan::new(strategy, Strategy::Ddp, env)
            });
        }
        if n > 1 {
            return Err(Error::config(
                "devices",
                if multi {
                    format!("{n} devices with strategy {strategy:?}, but this process was started alone: on CPUs start one process per device with `mpirun -n {n} <program>` or `srun -n {n} <program>` (fulmen starts no CPU workers itself)")
                } else {
                    format!("{n} devices requested with strategy {strategy:?}; use strategy \"ddp\" and start one process per device with `mpirun -n {n}` or `srun -n {n}`")
                },
            ));
        }
        return Ok(Plan::new(strategy, Strategy::SingleDevice, env));
    }
    if strategy == Strategy::SingleDevice {
        return Err(Error::config(
            "strategy",
            format!(
                "single_device, but the {:?} launcher started {} processes; use \"ddp\"",
                env.launcher, env.world_size
            ),
        ));
    }
    if let (Some(n), Some(t)) = (requested, env.tasks_per_node) {
        if n != t {
            return Err(Error::config(
                "devices",
                format!(
                    "--devices {n} contradicts the {:?} launcher's {t} processes per node; pass --devices {t} or launch {n} per node",
                    env.launcher
                ),
            ));
        }
    }
    if num_nodes != env.num_nodes {
        return Err(Error::config(
            "num_nodes",
            format!(
                "--num-nodes {num_nodes} contradicts the {:?} launcher's {} node(s)",
                env.launcher, env.num_nodes
            ),
        ));
    }
    Ok(Plan::new(strategy, Strategy::Ddp, env))
}

impl Plan {
    /// `strategy` (`auto` resolved to `auto_is`) on ranks this process did not launch.
    fn new(strategy: Strategy, auto_is: Strategy, env: ClusterEnv) -> Self {
        Plan {
            strategy: match strategy {
                Strategy::Auto => auto_is,
                s => s,
            },
            env,
            launched: false,
            listener: None,
        }
    }
}

/// Joins the other ranks on the engine of the device this process trains on: NCCL on a GPU,
/// MPI on the CPU. A run of one process that launched nobody needs neither.
pub(crate) fn join(
    plan: &mut Plan,
    device: RunDevice,
    timeout: Duration,
) -> Result<std::sync::Arc<dyn Collective>> {
    let env = &plan.env;
    match device {
        _ if env.world_size == 1 && !plan.launched => Ok(std::sync::Arc::new(Single)),
        #[cfg(feature = "nccl")]
        RunDevice::Cuda(ordinal) => {
            let listener = plan.listener.take();
            Ok(std::sync::Arc::new(nccl::Nccl::join(env, ordinal, listener, timeout)?))
        }
        #[cfg(not(feature = "nccl"))]
        RunDevice::Cuda(_) => Err(Error::config(
            "strategy",
            format!(
                "the {:?} launcher started {} processes on GPUs, but this fulmen was built without NCCL; rebuild with `--features nccl`",
                env.launcher, env.world_size
            ),
        )),
        RunDevice::Cpu => join_mpi(env, timeout),
    }
}

#[cfg(feature = "mpi")]
fn join_mpi(env: &ClusterEnv, timeout: Duration) -> Result<std::sync::Arc<dyn Collective>> {
    let mpi = mpi::Mpi::join(timeout)?;
    if mpi.world_size() != env.world_size || mpi.rank() != env.global_rank {
        return Err(Error::config(
            "strategy",
            format!(
                "MPI sees rank {} of {} but the {:?} launcher's environment says rank {} of {}: start the processes with MPI (`mpirun`, or `srun --mpi=pmix`)",
                mpi.rank(),
                mpi.world_size(),
                env.launcher,
                env.global_rank,
                env.world_size
            ),
        ));
    }
    Ok(std::sync::Arc::new(mpi))
}

#[cfg(not(feature = "mpi"))]
fn join_mpi(env: &ClusterEnv, _timeout: Duration) -> Result<std::sync::Arc<dyn Collective>> {
    Err(Error::config(
        "strategy",
        format!(
            "the {:?} launcher started {} processes, but this fulmen was built without MPI; rebuild with `--features mpi`",
            env.launcher, env.world_size
        ),
    ))
}

/// Appends `values` to `out` as they travel between ranks: f64, little-endian (exact for
/// every dtype fulmen trains in).
pub(crate) fn to_wire<E: FloatDtype>(values: &[E], out: &mut Vec<u8>) {
    for v in values {
        out.extend(v.to_f64().unwrap_or(f64::NAN).to_le_bytes());
    }
}

/// The values [`to_wire`] wrote, as `E`.
pub(crate) fn from_wire<E: FloatDtype>(bytes: &[u8]) -> impl Iterator<Item = E> + '_ {
    bytes.chunks_exact(8).map(|b| {
        let v = f64::from_le_bytes(b.try_into().unwrap_or([0; 8]));
        E::from(v).unwrap_or_else(E::nan)
    })
}

/// Rank 0's weights and buffers, on every rank: one broadcast per tensor, so that no rank
/// holds more than one tensor's copy on the wire.
pub(crate) fn broadcast_module<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    c: &dyn Collective,
    model: &mut M,
) -> Result<()> {
    if c.world_size() == 1 {
        return Ok(());
    }
    let root = c.rank() == 0;
    // The same tensors on every rank first, or every rank stops (rather than waiting in a
    // broadcast the others never make).
    let (mut count, mut total) = (0u64, 0u64);
    walk::read(model, |_, item| {
        if let Item::Tensor { tensor, .. } = item {
            count += 1;
            total += tensor.num_values() as u64;
        }
        Ok(())
    })?;
    let mut shape = Vec::new();
    if root {
        shape.extend(count.to_le_bytes());
        shape.extend(total.to_le_bytes());
    }
    c.broadcast(0, &mut shape)?;
    let word = |at: usize| {
        shape
            .get(at..at + 8)
            .and_then(|b| b.try_into().ok())
            .map_or(u64::MAX, u64::from_le_bytes)
    };
    let (root_count, root_total) = (word(0), word(8));
    if !all_true(c, (root_count, root_total) == (count, total))? {
        return Err(Error::msg(format!(
            "the ranks do not build the same model: rank 0's has {root_count} tensors of {root_total} values, rank {}'s {count} of {total}",
            c.rank()
        )));
    }
    walk::write(model, |_, item| {
        let ItemMut::Tensor { tensor, .. } = item else {
            return Ok(());
        };
        let values = match root {
            true => tensor.values(),
            false => vec![E::zero(); tensor.num_values()],
        };
        let values = broadcast_values(c, 0, values)?;
        if !root {
            tensor.set_values(&values);
        }
        Ok(())
    })
}

/// Rank `root`'s `values` on every rank (of one length on all), in the wire type of `E`.
pub(crate) fn broadcast_values<E: FloatDtype>(
    c: &dyn Collective,
    root: usize,
    values: Vec<E>,
) -> Result<Vec<E>> {
    if std::mem::size_of::<E>() == 8 {
        let mut wire = cast::<E, f64>(values);
        c.broadcast_f64(root, &mut wire)?;
        Ok(cast(wire))
    } else {
        let mut wire = cast::<E, f32>(values);
        c.broadcast_f32(root, &mut wire)?;
        Ok(cast(wire))
    }
}

/// `values` as `B`: moved when `A` is `B`, converted value by value when not (exact between
/// the dtypes fulmen trains in and their wire types: f32 for the 2- and 4-byte ones, f64 for
/// f64).
pub(crate) fn cast<A: FloatDtype, B: FloatDtype>(values: Vec<A>) -> Vec<B> {
    let any: Box<dyn std::any::Any> = Box::new(values);
    match any.downcast::<Vec<B>>() {
        Ok(same) => *same,
        Err(any) => any.downcast::<Vec<A>>().map_or_else(
            |_| Vec::new(),
            |v| {
                v.into_iter()
                    .map(|x| B::from(x).unwrap_or_else(B::nan))
                    .collect()
            },
        ),
    }
}

/// Every trainable gradient of `params` summed across ranks (in buckets of [`BUCKET`]
/// values) and divided by the world size: the gradient of the global batch's mean loss.
pub(crate) fn average_grads<E: FloatDtype, D: TrainDevice<E>, P: Params<E, D> + ?Sized>(
    c: &dyn Collective,
    params: &P,
    grads: &mut Gradients<E, D>,
) -> Result<()> {
    // On the GPU, in its own buffers (also for a world of one: the same path as several).
    let in_place = c.average_in_place(std::any::TypeId::of::<E>(), &mut |f| {
        params.each(&mut |_, tensor| f(tensor.grad_buffer(grads)?))
    })?;
    if in_place || c.world_size() == 1 {
        return Ok(());
    }
    if std::mem::size_of::<E>() == 8 {
        reduce_as::<f64, E, D, P>(c, params, grads, |c, v| c.all_reduce_sum_f64(v))
    } else {
        reduce_as::<f32, E, D, P>(c, params, grads, |c, v| c.all_reduce_sum_f32(v))
    }
}

fn reduce_as<W, E, D, P>(
    c: &dyn Collective,
    params: &P,
    grads: &mut Gradients<E, D>,
    all_reduce: fn(&dyn Collective, &mut [W]) -> Result<()>,
) -> Result<()>
where
    W: num_traits::Float,
    E: FloatDtype,
    D: TrainDevice<E>,
    P: Params<E, D> + ?Sized,
{
    let mut flat: Vec<W> = Vec::new();
    params.each(&mut |_, tensor| {
        tensor.with_grad(grads, &mut |g| {
            flat.extend(
                g.iter()
                    .map(|v| <W as NumCast>::from(*v).unwrap_or_else(W::nan)),
            );
        })
    })?;
    for bucket in flat.chunks_mut(BUCKET) {
        all_reduce(c, bucket)?;
    }
    let inv = 1.0 / c.world_size() as f64;
    let mut at = 0;
    params.each(&mut |_, tensor| {
        tensor.with_grad(grads, &mut |g| {
            for (dst, src) in g.iter_mut().zip(&flat[at..]) {
                let mean = src.to_f64().unwrap_or(f64::NAN) * inv;
                *dst = E::from(mean).unwrap_or_else(E::nan);
            }
            at += g.len();
        })
    })
}

/// Whether every rank's flag is true (a 16-mixed window is stepped only when no rank saw an
/// infinite gradient).
pub(crate) fn all_true(c: &dyn Collective, flag: bool) -> Result<bool> {
    let mut v = [if flag { 0.0 } else { 1.0 }];
    c.all_reduce_sum_f64(&mut v)?;
    Ok(v[0] == 0.0)
}

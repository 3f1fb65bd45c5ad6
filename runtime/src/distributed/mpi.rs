//! [`Collective`] over MPI (rsmpi on the system's OpenMPI), for multi-process runs on CPUs
//! started by `mpirun` or `srun --mpi=pmix`.

use std::sync::Mutex;
use std::time::Duration;

use mpi::collective::{CommunicatorCollectives, Root, SystemOperation};
use mpi::environment::Universe;
use mpi::topology::{Communicator, SimpleCommunicator};
use mpi::Threading;

use super::collective::{check_blocks, Collective, Watchdog};
use crate::{Error, Result};

/// MPI's state, finalized when the process exits (an MPI process that exits without
/// `MPI_Finalize` is reported by `mpirun` as a failure).
static UNIVERSE: Mutex<Option<Universe>> = Mutex::new(None);
static INIT: std::sync::OnceLock<std::result::Result<(), String>> = std::sync::OnceLock::new();

extern "C" fn finalize() {
    if let Ok(mut universe) = UNIVERSE.lock() {
        drop(universe.take());
    }
}

/// Ends every rank of the run: MPI_Abort, which `mpirun` and `srun` carry to the others
/// (the blocked collective holds MPI's state, so finalizing would hang).
fn abort() -> ! {
    SimpleCommunicator::world().abort(3)
}

/// The MPI world: every rank of the run.
pub struct Mpi {
    rank: usize,
    size: usize,
    watchdog: Watchdog,
    /// One collective at a time: MPI is initialized for serialized calls.
    lock: Mutex<()>,
    /// Nanoseconds spent in collectives.
    busy: std::sync::atomic::AtomicU64,
}

impl Mpi {
    /// Joins the MPI world (initializing MPI once per process); a collective that waits
    /// longer than `timeout` ends the process with an error naming the wait.
    pub fn join(timeout: Duration) -> Result<Self> {
        INIT.get_or_init(
            || match mpi::initialize_with_threading(Threading::Serialized) {
                Some((universe, _)) => {
                    *UNIVERSE
                        .lock()
                        .map_err(|_| "MPI state poisoned".to_string())? = Some(universe);
                    // SAFETY: `finalize` is a plain function that only takes a lock and drops
                    // MPI's universe; atexit runs it once, after main returns.
                    unsafe { libc::atexit(finalize) };
                    Ok(())
                }
                None => Err("MPI was initialized outside fulmen".to_string()),
            },
        )
        .clone()
        .map_err(|e| Error::config("strategy", e))?;
        let world = SimpleCommunicator::world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Self {
            rank,
            size,
            watchdog: Watchdog::new(rank, timeout, abort),
            lock: Mutex::new(()),
            busy: Default::default(),
        })
    }

    fn call<R>(&self, what: &'static str, f: impl FnOnce(&SimpleCommunicator) -> R) -> Result<R> {
        let _one = self
            .lock
            .lock()
            .map_err(|_| Error::msg("MPI: a collective panicked"))?;
        let world = SimpleCommunicator::world();
        let start = std::time::Instant::now();
        let r = self.watchdog.guard(what, || f(&world));
        let nanos = u64::try_from(start.elapsed().as_nanos()).unwrap_or(u64::MAX);
        self.busy
            .fetch_add(nanos, std::sync::atomic::Ordering::Relaxed);
        Ok(r)
    }
}

impl Mpi {
    fn reduce<T: mpi::datatype::Equivalence + Clone>(
        &self,
        root: usize,
        values: &mut [T],
    ) -> Result<()> {
        let send = values.to_vec();
        let rank = self.rank;
        self.call("reduce", |w| {
            let root_process = w.process_at_rank(root as i32);
            if rank == root {
                root_process.reduce_into_root(&send[..], values, SystemOperation::sum());
            } else {
                root_process.reduce_into(&send[..], SystemOperation::sum());
            }
        })
    }
}

impl Mpi {
    fn broadcast_values<T: mpi::datatype::Equivalence>(
        &self,
        root: usize,
        values: &mut [T],
    ) -> Result<()> {
        if values.is_empty() {
            return Ok(());
        }
        self.call("broadcast", |w| {
            w.process_at_rank(root as i32).broadcast_into(values)
        })
    }

    fn gather<T: mpi::datatype::Equivalence>(&self, mine: &[T], all: &mut [T]) -> Result<()> {
        check_blocks(self.size, mine.len(), all.len())?;
        if mine.is_empty() {
            return Ok(());
        }
        self.call("all-gather", |w| w.all_gather_into(mine, all))
    }

    fn scatter<T: mpi::datatype::Equivalence>(&self, all: &[T], mine: &mut [T]) -> Result<()> {
        check_blocks(self.size, mine.len(), all.len())?;
        if mine.is_empty() {
            return Ok(());
        }
        self.call("reduce-scatter", |w| {
            w.reduce_scatter_block_into(all, mine, SystemOperation::sum())
        })
    }
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }
    fn world_size(&self) -> usize {
        self.size
    }
    fn all_reduce_sum_f32(&self, values: &mut [f32]) -> Result<()> {
        let send = values.to_vec();
        self.call("all-reduce", |w| {
            w.all_reduce_into(&send[..], values, SystemOperation::sum())
        })
    }
    fn all_reduce_sum_f64(&self, values: &mut [f64]) -> Result<()> {
        let send = values.to_vec();
        self.call("all-reduce", |w| {
            w.all_reduce_into(&send[..], values, SystemOperation::sum())
        })
    }
    fn reduce_sum_f32(&self, root: usize, values: &mut [f32]) -> Result<()> {
        self.reduce(root, values)
    }
    fn reduce_sum_f64(&self, root: usize, values: &mut [f64]) -> Result<()> {
        self.reduce(root, values)
    }
    fn all_reduce_max_f64(&self, values: &mut [f64]) -> Result<()> {
        let send = values.to_vec();
        self.call("all-reduce", |w| {
            w.all_reduce_into(&send[..], values, SystemOperation::max())
        })
    }
    fn broadcast(&self, root: usize, bytes: &mut Vec<u8>) -> Result<()> {
        let root = root as i32;
        let mut len = bytes.len() as u64;
        self.call("broadcast", |w| {
            w.process_at_rank(root).broadcast_into(&mut len)
        })?;
        bytes.resize(len as usize, 0);
        if bytes.is_empty() {
            return Ok(()); // MPI refuses a broadcast of nothing
        }
        self.call("broadcast", |w| {
            w.process_at_rank(root).broadcast_into(&mut bytes[..])
        })
    }
    fn broadcast_f32(&self, root: usize, values: &mut [f32]) -> Result<()> {
        self.broadcast_values(root, values)
    }
    fn broadcast_f64(&self, root: usize, values: &mut [f64]) -> Result<()> {
        self.broadcast_values(root, values)
    }
    fn all_gather_f32(&self, mine: &[f32], all: &mut [f32]) -> Result<()> {
        self.gather(mine, all)
    }
    fn all_gather_f64(&self, mine: &[f64], all: &mut [f64]) -> Result<()> {
        self.gather(mine, all)
    }
    fn reduce_scatter_sum_f32(&self, all: &[f32], mine: &mut [f32]) -> Result<()> {
        self.scatter(all, mine)
    }
    fn reduce_scatter_sum_f64(&self, all: &[f64], mine: &mut [f64]) -> Result<()> {
        self.scatter(all, mine)
    }
    fn barrier(&self) -> Result<()> {
        self.call("barrier", |w| w.barrier())
    }
    fn busy(&self) -> Duration {
        Duration::from_nanos(self.busy.load(std::sync::atomic::Ordering::Relaxed))
    }
}

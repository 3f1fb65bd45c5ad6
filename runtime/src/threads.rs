//! The thread that runs the loops as one of the kernels' workers. Every multithreaded kernel
//! (the tiled products, ReLU, pooling, batch norm, the optimizer steps) hands its work to
//! rayon. Called from a thread outside rayon's pool, each call queues its work for the pool,
//! wakes a worker and puts the calling thread to sleep until the work is done: two context
//! switches per kernel, and the work runs on another core than the one whose cache holds its
//! inputs. With `RAYON_NUM_THREADS=1`, MLP inference (784→256→10, batch 256) ran at a median
//! of 159 k images/s that way and 172 k with the calling thread as the pool's only worker
//! (5 alternating runs each; 229 k and 256 k on 2 threads).
//!
//! [`compute_here`] makes the process's main thread the first worker of a pool of its own,
//! as large as rayon's global pool ([`rayon::current_num_threads`]: `RAYON_NUM_THREADS`, or
//! a global pool you built before). The kernels then run their share of the work on the
//! calling thread, and the pool's other threads steal the rest. Other threads keep using
//! rayon's global pool as before: a data loader's worker that uses rayon while the main
//! thread waits for its batch is served by the global pool's threads, never by the main
//! thread, so the wait cannot deadlock.

use std::sync::OnceLock;

/// Makes the calling thread, when it is the process's main thread, the first of the kernels'
/// worker threads, once per process ([`Trainer`](crate::Trainer)'s builder and
/// [`seed::cpu`](crate::seed::cpu) call it). Elsewhere (a test harness's thread, a thread
/// already in a rayon pool) it does nothing, and the kernels hand their work to the pool
/// they find, as before.
pub fn compute_here() {
    static POOL: OnceLock<Option<rayon::ThreadPool>> = OnceLock::new();
    if std::thread::current().name() != Some("main") {
        return;
    }
    POOL.get_or_init(|| {
        // Fails when this thread already works for a pool (`install` around the trainer):
        // the kernels then run there.
        let threads = rayon::current_num_threads();
        rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .use_current_thread()
            .thread_name(|i| format!("fulmen-worker-{i}"))
            .build()
            .ok()
    });
}

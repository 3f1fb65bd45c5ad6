//! `fulmen::threads::compute_here` on a process's main thread (this test has no harness, so
//! that it runs there): the main thread becomes the first of the kernels' workers, a kernel's
//! parallel work runs on it (all of it with one thread), and another thread's rayon work
//! while the main thread waits for it still finishes. Each thread count runs in a process of
//! its own (the pool is made once per process).

use std::process::Command;
use std::sync::mpsc;
use std::thread::ThreadId;
use std::time::Duration;

use fulmen::prelude::*;
use rayon::prelude::*;

#[module]
struct Mlp {
    net: (Linear<784, 256>, ReLU, Linear<256, 10>),
}

const CHILD: &str = "FULMEN_THREADS_TEST_CHILD";

fn main() {
    match std::env::var(CHILD) {
        Ok(threads) => child(threads.parse().expect("a thread count")),
        Err(_) => {
            for threads in [1, 2] {
                let exe = std::env::current_exe().expect("this test's path");
                let out = Command::new(exe)
                    .env(CHILD, threads.to_string())
                    .env("RAYON_NUM_THREADS", threads.to_string())
                    .output()
                    .expect("the test runs itself");
                assert!(
                    out.status.success(),
                    "{threads} threads: {}{}",
                    String::from_utf8_lossy(&out.stdout),
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            println!("threads: the main thread is the kernels' first worker, on 1 and 2 threads");
        }
    }
}

fn child(threads: usize) {
    assert_eq!(rayon::current_thread_index(), None, "not a worker before");
    fulmen::threads::compute_here();
    assert_eq!(rayon::current_thread_index(), Some(0), "the first worker");
    assert_eq!(rayon::current_num_threads(), threads);

    // Parallel work started here: with one thread all of it runs on this thread; with more,
    // this thread takes part.
    let here = std::thread::current().id();
    let ran_on: Vec<ThreadId> = (0..64)
        .into_par_iter()
        .map(|_| {
            std::thread::sleep(Duration::from_millis(2));
            std::thread::current().id()
        })
        .collect();
    assert!(ran_on.contains(&here), "the main thread took part");
    if threads == 1 {
        assert!(
            ran_on.iter().all(|&t| t == here),
            "one thread: all of it here"
        );
    }

    // A layer's product on the tiles, from this thread: the same values as on another
    // thread (whose kernels run on rayon's global pool).
    let dev = Cpu::seed_from_u64(0);
    let mlp = Mlp::<f32, Cpu>::build(&dev);
    let x: Tensor<Rank2<256, 784>, f32, Cpu> = dev.sample_normal();
    let y = mlp.net.forward(x.clone()).as_vec();
    let elsewhere = std::thread::scope(|s| {
        s.spawn(|| mlp.net.forward(x.clone()).as_vec())
            .join()
            .expect("the other thread's product")
    });
    assert_eq!(y, elsewhere);

    // Another thread's rayon work while this thread waits for it (a data loader's worker
    // using rayon, the main thread waiting for its batch): it must not wait for this thread.
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        let sum: u64 = (0..1_000_000u64).into_par_iter().sum();
        tx.send(sum).expect("the main thread waits");
    });
    let sum = rx
        .recv_timeout(Duration::from_secs(60))
        .expect("another thread's rayon work finished while the main thread waited");
    assert_eq!(sum, 999_999 * 1_000_000 / 2);
}

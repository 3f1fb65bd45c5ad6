//! The CIFAR-10 example's `job.slurm` under a real one-node SLURM (`scripts/slurm-local.sh`;
//! `.ci/run` starts it): 2 tasks, `srun --mpi=pmix`, DDP over MPI, on small CIFAR-format
//! files. Without a cluster (`sinfo` failing) the tests say they were skipped; with
//! `FULMEN_SLURM=1` (as `.ci/run` sets) they are required.
#![cfg(not(feature = "mpi"))]

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use fulmen::checkpoint::Checkpoint;

#[path = "support/nested_build.rs"]
mod nested_build;
use nested_build::cargo_build;

const ROOT: &str = env!("CARGO_MANIFEST_DIR");

/// The example built with MPI, or `None` (skipped) without a SLURM cluster.
fn binary() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let up = Command::new("sinfo")
                .arg("-h")
                .output()
                .is_ok_and(|o| o.status.success());
            if !up {
                assert!(
                    std::env::var_os("FULMEN_SLURM").is_none(),
                    "FULMEN_SLURM is set but sinfo fails: is the cluster up (scripts/slurm-local.sh start)?"
                );
                eprintln!("skipped: no SLURM cluster (scripts/slurm-local.sh start)");
                return None;
            }
            let target = cargo_build(
                "mpi-build",
                &["--release", "--features", "mpi", "--example", "cifar10"],
                "the example",
            );
            Some(target.join("release/examples/cifar10"))
        })
        .as_deref()
}

/// Five training files of 40 images and a test file of 16, in CIFAR-10's binary format.
fn write_data(dir: &Path) {
    let bin = dir.join(fulmen::data::cifar10::DIR);
    std::fs::create_dir_all(&bin).expect("mkdir");
    let mut state = 12345u32;
    let mut records = |n: usize| -> Vec<u8> {
        let mut bytes = Vec::with_capacity(n * 3073);
        for i in 0..n {
            bytes.push((i % 10) as u8);
            bytes.extend((0..3072).map(|_| {
                state = state.wrapping_mul(1_103_515_245).wrapping_add(12345);
                (state >> 24) as u8
            }));
        }
        bytes
    };
    for name in fulmen::data::cifar10::TRAIN_FILES {
        std::fs::write(bin.join(name), records(40)).expect("write");
    }
    std::fs::write(bin.join(fulmen::data::cifar10::TEST_FILE), records(16)).expect("write");
}

/// Submits the example's job.slurm training the small ResNet for `epochs` into `root` with
/// `strategy`, plus `extra` flags.
fn submit(root: &Path, data: &Path, epochs: usize, strategy: &str, extra: &str) -> String {
    let out = Command::new("sbatch")
        .args(["--parsable", "--output"])
        .arg(root.join("job-%j.out"))
        .arg("examples/cifar10/job.slurm")
        .current_dir(ROOT)
        .env("BIN", binary().expect("checked"))
        .env("DATA_DIR", data)
        .env("ROOT_DIR", root)
        .env("ARCH", "small")
        .env("EPOCHS", epochs.to_string())
        .env("BATCH_SIZE", "16")
        .env("STRATEGY", strategy)
        .env(
            "EXTRA_ARGS",
            format!("--val-size 32 --num-workers 0 --seed 3 {extra}"),
        )
        .output()
        .expect("sbatch starts");
    assert!(
        out.status.success(),
        "sbatch: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .split(';')
        .next()
        .unwrap_or("")
        .to_string()
}

/// `scontrol show job`'s `key=value` for `key`.
fn job_field(job: &str, key: &str) -> Option<String> {
    let out = Command::new("scontrol")
        .args(["show", "job", job])
        .output()
        .ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .find_map(|kv| kv.strip_prefix(&format!("{key}=")).map(str::to_string))
}

/// Waits until `done` holds, checking every half second, at most `limit`.
fn wait_for(limit: Duration, what: &str, mut done: impl FnMut() -> bool) {
    let start = Instant::now();
    while !done() {
        assert!(start.elapsed() < limit, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn finished(job: &str) -> String {
    let mut state = String::new();
    wait_for(Duration::from_secs(600), "the job to end", || {
        state = job_field(job, "JobState").unwrap_or_default();
        matches!(
            state.as_str(),
            "COMPLETED" | "FAILED" | "CANCELLED" | "TIMEOUT" | "NODE_FAIL"
        )
    });
    state
}

fn output(root: &Path, job: &str) -> String {
    std::fs::read_to_string(root.join(format!("job-{job}.out"))).unwrap_or_default()
}

/// The newest regular checkpoint under `root`'s logs.
fn last_checkpoint(root: &Path) -> Checkpoint {
    let mut found: Vec<(std::time::SystemTime, PathBuf)> = Vec::new();
    for version in std::fs::read_dir(root.join("lightning_logs"))
        .expect("logs")
        .flatten()
    {
        for f in std::fs::read_dir(version.path().join("checkpoints"))
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "ckpt") {
                found.push((
                    f.metadata().and_then(|m| m.modified()).expect("mtime"),
                    f.path(),
                ));
            }
        }
    }
    found.sort();
    let (_, path) = found.pop().expect("a checkpoint");
    Checkpoint::read(path).expect("readable")
}

#[test]
fn the_job_trains_on_two_tasks_and_rank_zero_writes_one_log() {
    if binary().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_data(dir.path());
    let job = submit(dir.path(), dir.path(), 2, "ddp", "");
    let state = finished(&job);
    let out = output(dir.path(), &job);
    assert_eq!(state, "COMPLETED", "{out}");
    assert!(out.contains("epoch 1: train_loss"), "{out}");
    assert!(out.contains("test_acc"), "{out}");
    let logs = dir.path().join("lightning_logs");
    assert!(logs.join("version_0/metrics.csv").exists(), "{out}");
    assert!(
        !logs.join("version_1").exists(),
        "rank 1 wrote no log of its own"
    );
}

/// The tutorial's `--strategy fsdp` (FULL_SHARD: each ResNet block gathered from both tasks
/// while it runs), writing sharded checkpoints: one file per task.
#[test]
fn the_job_trains_with_full_shard_and_writes_sharded_checkpoints() {
    if binary().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    write_data(dir.path());
    let job = submit(
        dir.path(),
        dir.path(),
        2,
        "fsdp",
        "--state-dict-type sharded",
    );
    let state = finished(&job);
    let out = output(dir.path(), &job);
    assert_eq!(state, "COMPLETED", "{out}");
    assert!(out.contains("epoch 1: train_loss"), "{out}");
    assert!(out.contains("test_acc"), "{out}");
    let ckpt = last_checkpoint(dir.path());
    assert_eq!(ckpt.epoch(), Some(1), "{out}");
    let parts = std::fs::read_dir(ckpt.path().expect("read from a path"))
        .expect("a sharded checkpoint is a directory")
        .count();
    assert_eq!(parts, 2, "one file per task");
    let weights = ckpt.tensor("net.2.1.weight").expect("the head's weights");
    assert!(weights.iter().all(|v| v.is_finite()));
}

#[test]
fn a_requeued_job_resumes_and_ends_with_the_uninterrupted_weights() {
    if binary().is_none() {
        return;
    }
    const EPOCHS: usize = 30;
    let (plain, requeued) = (
        tempfile::tempdir().expect("a temporary directory"),
        tempfile::tempdir().expect("a temporary directory"),
    );
    write_data(plain.path());
    write_data(requeued.path());
    let job = submit(requeued.path(), requeued.path(), EPOCHS, "ddp", "");
    wait_for(Duration::from_secs(300), "epoch 2 of the job", || {
        output(requeued.path(), &job).contains("epoch 2: train_loss")
    });
    let signal = Command::new("scancel")
        .args(["--signal=USR1", &job])
        .status()
        .expect("scancel starts");
    assert!(signal.success());
    wait_for(Duration::from_secs(120), "the job to be requeued", || {
        job_field(&job, "Restarts").is_some_and(|r| r != "0")
    });
    let hpc = requeued.path().join("hpc_ckpt_1.ckpt");
    assert!(hpc.exists(), "{}", output(requeued.path(), &job));
    // SLURM holds a requeued job for a while; let it start now.
    let _ = Command::new("scontrol")
        .args(["update", &format!("JobId={job}"), "StartTime=now"])
        .status();
    let state = finished(&job);
    let out = output(requeued.path(), &job);
    assert_eq!(state, "COMPLETED", "{out}");
    assert!(out.contains("job ") && out.contains("requeued"), "{out}");
    assert!(
        out.contains("Restoring states from the HPC checkpoint"),
        "{out}"
    );

    let reference = submit(plain.path(), plain.path(), EPOCHS, "ddp", "");
    assert_eq!(
        finished(&reference),
        "COMPLETED",
        "{}",
        output(plain.path(), &reference)
    );
    let (a, b) = (
        last_checkpoint(plain.path()),
        last_checkpoint(requeued.path()),
    );
    assert_eq!(a.epoch(), b.epoch());
    let names: Vec<&str> = a.tensor_names().collect();
    assert_eq!(names, b.tensor_names().collect::<Vec<_>>());
    for name in names.iter().filter(|n| !n.starts_with("optimizer/")) {
        assert_eq!(
            a.tensor(name).expect("stored"),
            b.tensor(name).expect("stored"),
            "`{name}` differs from the uninterrupted job's"
        );
    }
}

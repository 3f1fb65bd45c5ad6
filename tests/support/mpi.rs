//! The MPI examples under a real `mpirun` (OpenMPI; `.ci/run` installs it), for the
//! distributed tests: `tests/programs/iris_ranks.rs` (the example `iris_ddp` with fault injection) and `examples/fsdp` built with `--features mpi`
//! into `target/mpi-build`, run on several ranks, and what they write read back.
#![allow(dead_code)] // each test file uses part of it

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;

#[path = "nested_build.rs"]
mod nested_build;

/// The directory of the MPI examples, or `None` (the tests say they were skipped) where
/// there is no `mpirun`; with `FULMEN_MPI=1` (as `.ci/run` sets) they are required.
pub fn examples() -> Option<&'static Path> {
    static BUILT: OnceLock<Option<PathBuf>> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let have_mpirun = Command::new("mpirun").arg("--version").output().is_ok();
            if !have_mpirun {
                assert!(
                    std::env::var_os("FULMEN_MPI").is_none(),
                    "FULMEN_MPI is set but there is no mpirun"
                );
                eprintln!(
                    "skipped: no mpirun (apt-get install openmpi-bin libopenmpi-dev libclang-dev)"
                );
                return None;
            }
            let target = nested_build::cargo_build(
                "mpi-build",
                &[
                    "--features",
                    "mpi",
                    "--example",
                    "iris_ranks",
                    "--example",
                    "fsdp",
                ],
                "the MPI examples",
            );
            Some(target.join("debug/examples"))
        })
        .as_deref()
}

/// `mpirun -n n <program> args` (`program`: `name`, or `prlimit …` then `name` when
/// `wrapper` is given), with `env` exported to every rank.
pub fn mpirun(
    n: usize,
    wrapper: &[&str],
    name: &str,
    args: &[&str],
    env: &[(&str, &str)],
) -> Output {
    let exe = examples().expect("checked by the caller").join(name);
    let mut cmd = Command::new("mpirun");
    cmd.args(["--oversubscribe", "-n", &n.to_string()]);
    for (k, v) in env {
        cmd.args(["-x", &format!("{k}={v}")]);
    }
    cmd.args(wrapper)
        .arg(exe)
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        .output()
        .expect("mpirun starts")
}

/// The example `name` as one process (no launcher), plus `args`.
pub fn alone(name: &str, args: &[&str]) -> Output {
    let exe = examples().expect("checked by the caller").join(name);
    Command::new(exe).args(args).output().expect("runs")
}

/// The f32 weights a rank wrote with `--out`.
pub fn weights(path: &Path) -> Vec<f32> {
    std::fs::read(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `dir/name`, created, as a command-line argument.
pub fn subdir(dir: &Path, name: &str) -> String {
    let p = dir.join(name);
    std::fs::create_dir_all(&p).expect("mkdir");
    p.to_str().expect("utf-8").to_string()
}

/// The largest difference between two sets of weights (infinite where either holds NaN).
pub fn max_diff(a: &[f32], b: &[f32]) -> f32 {
    assert_eq!(a.len(), b.len());
    a.iter()
        .zip(b)
        .map(|(x, y)| match (x - y).abs() {
            d if d.is_nan() => f32::INFINITY,
            d => d,
        })
        .fold(0.0, f32::max)
}

/// What a run printed.
pub fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// The checkpoint of epoch `epoch` that rank 0 wrote under `root`.
pub fn checkpoint_of_epoch(root: &Path, epoch: usize) -> PathBuf {
    let dir = root.join("lightning_logs/version_0/checkpoints");
    std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&format!("epoch={epoch}-")))
        })
        .unwrap_or_else(|| panic!("no checkpoint of epoch {epoch} in {}", dir.display()))
}

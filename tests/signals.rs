//! Ctrl-C (SIGINT) and SIGTERM outside SLURM stop a run as Lightning's `KeyboardInterrupt`
//! does: after the step in flight, `on_exception` run, every logger flushed and closed, no
//! temporary file left, and a non-zero exit (130, 143) with a one-line message. A second
//! signal exits at once.

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "support/examples.rs"]
mod examples;
#[path = "support/quiet.rs"]
mod quiet;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{IrisClassifier, IrisDataModule};
use fulmen::callbacks::OnExceptionCheckpoint;
use fulmen::prelude::*;

/// Waits until a file of `dir` ends with `suffix`, or panics after a minute.
fn wait_for(dir: &Path, suffix: &str, child: &mut Child) {
    let start = Instant::now();
    let seen = || {
        files(dir)
            .iter()
            .any(|p| p.to_string_lossy().ends_with(suffix))
    };
    while !seen() {
        if let Ok(Some(status)) = child.try_wait() {
            panic!("the run ended ({status}) before a {suffix} file appeared");
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "no {suffix} file appeared"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn send(child: &Child, signal: i32) {
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(child.id() as i32, signal) }, 0);
}

/// Waits for the child, killing it after a minute.
fn finish(mut child: Child) -> Output {
    let start = Instant::now();
    while child.try_wait().expect("waiting for the run").is_none() {
        if start.elapsed() > Duration::from_secs(60) {
            let _ = child.kill();
            panic!("the run did not stop within a minute of the signal");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    child.wait_with_output().expect("the run's output")
}

/// Every file under `dir`, recursively.
fn files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).into_iter().flatten().flatten() {
        let path = entry.path();
        if path.is_dir() {
            out.extend(files(&path));
        } else {
            out.push(path);
        }
    }
    out
}

#[test]
fn sigint_and_sigterm_stop_the_iris_example_with_its_logs_written_and_no_temporary_file() {
    for (signal, name, code) in [
        (libc::SIGINT, "SIGINT", 130),
        (libc::SIGTERM, "SIGTERM", 143),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let mut child = Command::new(examples::example("iris"))
            .args([
                "--max-epochs",
                "1000000",
                "--enable-progress-bar",
                "false",
                "--data-dir",
            ])
            .arg(concat!(env!("CARGO_MANIFEST_DIR"), "/data"))
            .arg("--default-root-dir")
            .arg(dir.path())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("the iris example starts");
        let version = dir.path().join("lightning_logs/version_0");
        // A checkpoint is written at every epoch's end: a few epochs in, signal.
        wait_for(dir.path(), ".ckpt", &mut child);
        std::thread::sleep(Duration::from_millis(300));
        send(&child, signal);
        let out = finish(child);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(code), "{name}: {stderr}");
        let last = stderr.lines().last().unwrap_or_default();
        assert!(
            last.starts_with(&format!("error: {name} at epoch "))
                && last.ends_with("the run stopped after the step in flight"),
            "{name}: {stderr}"
        );
        // Every row logged reached metrics.csv: one every 50 steps (`log_every_n_steps`), the
        // last within 50 steps of the step the message names.
        let metrics = std::fs::read_to_string(version.join("metrics.csv"))
            .unwrap_or_else(|e| panic!("{name}: metrics.csv: {e}"));
        let step: usize = last
            .split_once(", step ")
            .and_then(|(_, rest)| rest.split(':').next()?.parse().ok())
            .unwrap_or_else(|| panic!("no step in {last}"));
        let header: Vec<&str> = metrics.lines().next().unwrap().split(',').collect();
        let step_col = header.iter().position(|h| *h == "step").unwrap();
        let logged: Vec<usize> = metrics
            .lines()
            .skip(1)
            .filter_map(|row| row.split(',').nth(step_col)?.parse().ok())
            .collect();
        let newest = logged.iter().max().copied().unwrap_or(0);
        assert!(
            step >= 50 && newest + 50 >= step && newest < step,
            "{name}: stopped at step {step}, metrics.csv:\n{metrics}"
        );
        let leftovers: Vec<_> = files(dir.path())
            .into_iter()
            .filter(|p| p.file_name().unwrap().to_string_lossy().contains(".tmp"))
            .collect();
        assert!(leftovers.is_empty(), "{name}: {leftovers:?}");
    }
}

/// Writes a marker file when training has begun, then sleeps in every step; reports its
/// `on_exception` on stderr.
struct SlowSteps {
    ready: PathBuf,
}

impl Callback for SlowSteps {
    fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, _batch: usize) {
        std::fs::write(&self.ready, "").unwrap();
        std::thread::sleep(Duration::from_secs(2));
    }

    fn on_exception(&mut self, _t: &mut TrainerView, error: &fulmen::Error) {
        eprintln!("on_exception: {error}");
    }
}

/// This test binary again, running only `signals_child` (ignored in a plain `cargo test`),
/// with its marker file and, when `after_fit`, the short fit followed by the program's work.
fn child_run(ready: &Path, after_fit: bool) -> Child {
    Command::new(std::env::current_exe().unwrap())
        .args(["--exact", "signals_child", "--ignored", "--nocapture"])
        .env("FULMEN_SIGNALS_CHILD", ready)
        .envs(after_fit.then_some(("FULMEN_SIGNALS_AFTER_FIT", "1")))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("the test binary starts again")
}

/// Not a test of its own: the run the tests above signal, when `child_run` starts this binary
/// for it (`--ignored`).
#[test]
#[ignore = "the child process of the signal tests; they run it"]
fn signals_child() {
    let ready = std::env::var_os("FULMEN_SIGNALS_CHILD")
        .expect("FULMEN_SIGNALS_CHILD names the marker file (the signal tests set it)");
    let after_fit = std::env::var_os("FULMEN_SIGNALS_AFTER_FIT").is_some();
    let mut dm = IrisDataModule::new(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data").into(),
        16,
        0.2,
        42,
        true,
    );
    if after_fit {
        // A short fit, then the program's own work: a signal now is the program's again.
        let mut trainer = quiet::trainer().max_epochs(1).build().unwrap();
        trainer
            .fit(&mut IrisClassifier::new(0.01), &mut dm)
            .unwrap();
        std::fs::write(&ready, "").unwrap();
        std::thread::sleep(Duration::from_secs(60));
        std::process::exit(0);
    }
    let mut trainer = quiet::trainer()
        .max_epochs(100)
        .callback(OnExceptionCheckpoint::new(
            Path::new(&ready).parent().unwrap(),
        ))
        .callback(SlowSteps {
            ready: ready.into(),
        })
        .build()
        .unwrap();
    let result = trainer.fit(&mut IrisClassifier::new(0.01), &mut dm);
    let code = result.map_or_else(|e| e.exit_code(), |()| 0);
    std::process::exit(code.into());
}

#[test]
fn one_ctrl_c_runs_on_exception_and_a_second_exits_at_once() {
    // One: the step in flight ends (it sleeps 2 s), then `on_exception`, then exit 130.
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut child = child_run(&ready, false);
    wait_for(dir.path(), "ready", &mut child);
    send(&child, libc::SIGINT);
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(
        stderr.contains("on_exception: SIGINT at epoch 0, step "),
        "{stderr}"
    );
    // OnExceptionCheckpoint saved the run where it stopped, after its first step.
    let saved = fulmen::checkpoint::Checkpoint::read(dir.path().join("on_exception.ckpt")).unwrap();
    assert_eq!((saved.epoch(), saved.global_step()), (Some(0), Some(1)));

    // Two: the second exits while the step still sleeps, without `on_exception`.
    std::fs::remove_file(&ready).unwrap();
    let mut child = child_run(&ready, false);
    wait_for(dir.path(), "ready", &mut child);
    send(&child, libc::SIGINT);
    std::thread::sleep(Duration::from_millis(200));
    send(&child, libc::SIGINT);
    let out = finish(child);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(130), "{stderr}");
    assert!(!stderr.contains("on_exception"), "{stderr}");
}

#[test]
fn after_a_fit_ctrl_c_ends_the_program_as_it_would_without_fulmen() {
    use std::os::unix::process::ExitStatusExt;
    let dir = tempfile::tempdir().unwrap();
    let ready = dir.path().join("ready");
    let mut child = child_run(&ready, true);
    wait_for(dir.path(), "ready", &mut child);
    send(&child, libc::SIGINT);
    let out = finish(child);
    assert_eq!(
        out.status.signal(),
        Some(libc::SIGINT),
        "{:?}: {}",
        out.status,
        String::from_utf8_lossy(&out.stderr)
    );
}

//! DDP on CPUs under a real `mpirun` (OpenMPI; `.ci/run` installs it): `tests/programs/iris_ranks.rs` (the example `iris_ddp` with fault injection)
//! is built with `--features mpi` into `target/mpi-build` and run on 2 ranks. Without
//! `mpirun` on the PATH the tests say they were skipped; with `FULMEN_MPI=1` (as `.ci/run`
//! sets) they are required.
#![cfg(not(feature = "mpi"))]

use std::path::Path;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

#[path = "support/mpi.rs"]
mod mpi;
use mpi::{checkpoint_of_epoch, max_diff, subdir, text, weights};

/// The Iris example built with MPI, or `None` (skipped) where there is no `mpirun`.
fn example() -> Option<std::path::PathBuf> {
    mpi::examples().map(|dir| dir.join("iris_ranks"))
}

fn mpirun(n: usize, args: &[&str]) -> Output {
    mpi::mpirun(n, &[], "iris_ranks", args, &[])
}

/// The example on 2 ranks with `strategy`, logging under `root`, plus `args`.
fn two_ranks(strategy: &str, root: &str, args: &[&str]) -> Output {
    let common = [
        "--strategy",
        strategy,
        "--devices",
        "2",
        "--enable-model-summary",
        "false",
        "--default-root-dir",
        root,
    ];
    mpirun(2, &[&common[..], args].concat())
}

/// The example as one process, logging under `root`, plus `args`; it must succeed.
fn one_process(root: &str, args: &[&str]) {
    let out = mpi::alone(
        "iris_ranks",
        &[
            &[
                "--enable-model-summary",
                "false",
                "--default-root-dir",
                root,
            ],
            args,
        ]
        .concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
}

/// Two ranks on batches of 16 (plus `extra`) end bitwise identical, and equal to one process
/// on the global batch of 32.
fn ranks_equal_one_process(extra: &[&str]) {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (d, s) = (subdir(dir.path(), "ddp"), subdir(dir.path(), "single"));
    let (ddp, single) = (Path::new(&d), Path::new(&s));
    let out = two_ranks(
        "ddp",
        &d,
        &[&["--batch-size", "16", "--out", &d], extra].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let (r0, r1) = (
        weights(&ddp.join("rank0.weights")),
        weights(&ddp.join("rank1.weights")),
    );
    assert_eq!(
        r0.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        r1.iter().map(|v| v.to_bits()).collect::<Vec<_>>(),
        "both ranks hold bitwise-identical weights"
    );
    // Rank 0 alone writes the logs.
    assert!(ddp.join("lightning_logs/version_0").exists());
    assert!(!ddp.join("lightning_logs/version_1").exists());

    one_process(&s, &[&["--batch-size", "32", "--out", &s], extra].concat());
    let one = weights(&single.join("rank0.weights"));
    let diff = max_diff(&r0, &one);
    assert!(
        diff < 1e-5,
        "DDP on 2×16 and one process on 32 differ by {diff}"
    );
}

#[test]
fn two_ranks_end_identical_and_equal_to_one_process_on_the_global_batch() {
    if example().is_none() {
        return;
    }
    ranks_equal_one_process(&[]);
}

#[test]
fn manual_optimization_averages_the_gradients_over_the_ranks() {
    if example().is_none() {
        return;
    }
    // Two optimizers stepped by hand: `manual_backward` averages as the trainer's backward.
    ranks_equal_one_process(&["--manual"]);
}

#[test]
fn a_hung_rank_ends_the_run_with_the_timeout_error() {
    if example().is_none() {
        return;
    }
    let start = Instant::now();
    let out = two_ranks(
        "ddp",
        "/tmp/fulmen-ddp-hang",
        &["--hang-at-step", "3", "--collective-timeout", "5"],
    );
    let took = start.elapsed();
    assert!(!out.status.success());
    assert!(
        text(&out).contains("all-reduce waited 5 s for the other ranks"),
        "{}",
        text(&out)
    );
    assert!(took < Duration::from_secs(60), "ended after {took:?}");
}

#[test]
fn a_killed_rank_ends_the_run_in_bounded_time() {
    if example().is_none() {
        return;
    }
    let start = Instant::now();
    let out = two_ranks(
        "ddp",
        "/tmp/fulmen-ddp-kill",
        &["--hang-at-step", "3", "--die", "--collective-timeout", "5"],
    );
    assert!(!out.status.success(), "{}", text(&out));
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "ended after {:?}",
        start.elapsed()
    );
}

#[test]
fn a_failed_prepare_data_stops_every_rank_at_once() {
    if example().is_none() {
        return;
    }
    let start = Instant::now();
    let out = two_ranks(
        "ddp",
        "/tmp/fulmen-ddp-prepare",
        &["--fail-prepare-data", "--collective-timeout", "60"],
    );
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("the download failed"), "rank 0's own error: {t}");
    assert!(
        t.contains("`prepare_data` failed on rank 0"),
        "rank 1 learns it: {t}"
    );
    let took = start.elapsed();
    assert!(
        took < Duration::from_secs(40),
        "ended after {took:?}, not at once"
    );
}

#[test]
fn flags_that_contradict_the_launcher_are_named() {
    let Some(exe) = example() else { return };
    let out = mpirun(2, &["--strategy", "ddp", "--devices", "4"]);
    assert!(!out.status.success());
    assert!(
        text(&out).contains("--devices 4 contradicts"),
        "{}",
        text(&out)
    );
    let out = Command::new(&exe)
        .args(["--strategy", "ddp", "--devices", "2"])
        .output()
        .expect("runs");
    assert!(!out.status.success());
    assert!(text(&out).contains("mpirun -n 2"), "{}", text(&out));
}

#[test]
fn checkpoints_move_between_two_ranks_and_one() {
    if example().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = |name: &str| subdir(dir.path(), name);
    // 3 epochs on 2 ranks, then 2 more on one process (the same global batches).
    let (two, one) = (path("two"), path("one"));
    let epochs3 = ["--max-epochs", "3", "--checkpoints"];
    let out = two_ranks(
        "ddp",
        &two,
        &[&["--batch-size", "16"], &epochs3[..]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let ckpt = checkpoint_of_epoch(Path::new(&two), 2);
    let ckpt = ckpt.to_str().expect("utf-8");
    one_process(
        &one,
        &["--batch-size", "32", "--ckpt-path", ckpt, "--out", &one],
    );
    // 3 epochs on one process, then 2 more on 2 ranks.
    let (first, second) = (path("first"), path("second"));
    one_process(&first, &[&["--batch-size", "32"], &epochs3[..]].concat());
    let ckpt = checkpoint_of_epoch(Path::new(&first), 2);
    let ckpt = ckpt.to_str().expect("utf-8");
    let out = two_ranks(
        "ddp",
        &second,
        &["--batch-size", "16", "--ckpt-path", ckpt, "--out", &second],
    );
    assert!(out.status.success(), "{}", text(&out));
    // Both equal 5 uninterrupted epochs on one process.
    let whole = path("whole");
    one_process(&whole, &["--batch-size", "32", "--out", &whole]);
    let want = weights(&Path::new(&whole).join("rank0.weights"));
    for got in [
        weights(&Path::new(&one).join("rank0.weights")),
        weights(&Path::new(&second).join("rank0.weights")),
        weights(&Path::new(&second).join("rank1.weights")),
    ] {
        let diff = max_diff(&got, &want);
        assert!(
            diff < 1e-5,
            "a resumed run differs from the uninterrupted one by {diff}"
        );
    }
}

#[test]
fn shard_grad_op_trains_like_ddp_and_its_checkpoint_holds_the_whole_optimizer() {
    if example().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = |name: &str| subdir(dir.path(), name);
    let sharded = "fsdp:SHARD_GRAD_OP";
    let (full, part) = (path("full"), path("part"));
    let out = two_ranks(sharded, &full, &["--batch-size", "16", "--out", &full]);
    assert!(out.status.success(), "{}", text(&out));
    let (r0, r1) = (
        weights(&Path::new(&full).join("rank0.weights")),
        weights(&Path::new(&full).join("rank1.weights")),
    );
    assert_eq!(r0, r1, "every rank holds every owner's values");
    let whole = path("whole");
    one_process(&whole, &["--batch-size", "32", "--out", &whole]);
    let want = weights(&Path::new(&whole).join("rank0.weights"));
    let diff = max_diff(&r0, &want);
    assert!(
        diff < 1e-5,
        "sharded on 2×16 and one process on 32 differ by {diff}"
    );

    // 3 sharded epochs, resumed on one process: Adam's moments of both shards were saved.
    let out = two_ranks(
        sharded,
        &part,
        &["--batch-size", "16", "--max-epochs", "3", "--checkpoints"],
    );
    assert!(out.status.success(), "{}", text(&out));
    let ckpt = checkpoint_of_epoch(Path::new(&part), 2);
    let saved = fulmen::checkpoint::Checkpoint::read(&ckpt).expect("readable");
    let moments = saved
        .tensor_names()
        .filter(|n| n.starts_with("optimizer/"))
        .count();
    assert_eq!(moments, 8, "two Adam buffers for each of the 4 parameters");
    let resumed = path("resumed");
    let ckpt = ckpt.to_str().expect("utf-8");
    one_process(
        &resumed,
        &["--batch-size", "32", "--ckpt-path", ckpt, "--out", &resumed],
    );
    let got = weights(&Path::new(&resumed).join("rank0.weights"));
    let diff = max_diff(&got, &want);
    assert!(
        diff < 1e-5,
        "resumed from the sharded checkpoint, it differs by {diff}"
    );
}

/// Under SLURM's variables (no cluster needed), the requeue signal writes the HPC checkpoint
/// before `scontrol` is asked to requeue (under FULL_SHARD too, sharded), and SIGTERM stops
/// training after the step.
#[test]
fn requeue_and_term_signals_stop_after_the_step() {
    let Some(exe) = example() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = |signal: &str, root: &str, args: &[&str]| {
        let child = Command::new(&exe)
            .args([
                "--step-sleep-ms",
                "50",
                "--max-epochs",
                "50",
                "--default-root-dir",
                root,
            ])
            .args(args)
            .env("SLURM_NTASKS", "1")
            .env("SLURM_PROCID", "0")
            .env("SLURM_JOB_ID", "4242")
            .env("PATH", "/nonexistent") // no scontrol: its failure is named
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("starts");
        std::thread::sleep(Duration::from_secs(2));
        let sent = Command::new("/bin/kill")
            .args([&format!("-{signal}"), &child.id().to_string()])
            .status()
            .expect("kill starts");
        assert!(sent.success());
        let start = Instant::now();
        let out = child.wait_with_output().expect("ends");
        (out, start.elapsed())
    };
    let full_shard = ["--strategy", "fsdp", "--state-dict-type", "sharded"];
    for (name, args) in [("ddp", &[][..]), ("fsdp", &full_shard[..])] {
        let root = subdir(dir.path(), name);
        let (out, took) = run("USR1", &root, args);
        assert!(!out.status.success());
        assert!(
            text(&out).contains("scontrol requeue 4242"),
            "{name}: {}",
            text(&out)
        );
        assert!(
            took < Duration::from_secs(5),
            "{name}: stopped after {took:?}"
        );
        let hpc = Path::new(&root).join("hpc_ckpt_1.ckpt");
        let saved =
            fulmen::checkpoint::Checkpoint::read(&hpc).expect("the HPC checkpoint is whole");
        assert!(saved.global_step().is_some_and(|s| s > 0));
        let weight = saved.tensor("layer_1.weight").expect("stored");
        assert!(weight.iter().all(|v| v.is_finite()), "{name}: {weight:?}");
    }

    let (out, took) = run("TERM", &subdir(dir.path(), "term"), &[]);
    assert!(text(&out).contains("SIGTERM at epoch"), "{}", text(&out));
    assert!(took < Duration::from_secs(5), "stopped after {took:?}");
}

/// Two ranks as SLURM starts them (each its SLURM_PROCID from MPI's rank; no `scontrol`, so
/// the requeue itself fails, named), asked to requeue in the middle of an epoch: the HPC
/// checkpoint holds every rank's metric states added up, and the two ranks resumed from it
/// count the whole epoch (150 flowers), not rank 0's part of its beginning twice over.
#[test]
fn a_requeue_checkpoints_every_ranks_metric_states() {
    let Some(exe) = example() else { return };
    let dir = tempfile::tempdir().expect("a temporary directory");
    let root = subdir(dir.path(), "requeue");
    let slurm = |args: &[&str]| {
        let mut cmd = Command::new("mpirun");
        cmd.args(["--oversubscribe", "-n", "2"]);
        for kv in ["SLURM_NTASKS=2", "SLURM_JOB_ID=4242", "PATH=/nonexistent"] {
            cmd.args(["-x", kv]);
        }
        let rank_as_slurm = r#"SLURM_PROCID=$OMPI_COMM_WORLD_RANK exec "$0" "$@""#;
        cmd.args(["/bin/sh", "-c", rank_as_slurm])
            .arg(&exe)
            .args(["--manual", "--enable-model-summary", "false"])
            .args(["--default-root-dir", &root])
            .args(args)
            .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
            .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
            .output()
            .expect("mpirun starts")
    };
    // 75 flowers a rank in batches of 16: 5 batches an epoch, each two optimizer steps; step 14
    // ends the 2nd batch of epoch 1.
    let out = slurm(&["--max-epochs", "3", "--requeue-at-step", "14"]);
    assert!(
        text(&out).contains("scontrol requeue 4242"),
        "{}",
        text(&out)
    );
    let hpc = Path::new(&root).join("hpc_ckpt_1.ckpt");
    let saved = fulmen::checkpoint::Checkpoint::read(&hpc).expect("the HPC checkpoint");
    let (epoch, step) = (saved.epoch().unwrap(), saved.global_step().unwrap());
    let done = (step - 10 * epoch) / 2;
    assert!((1..5).contains(&done), "epoch {epoch}, step {step}");
    let seen = saved.metric_state("seen").expect("saved").get(0)[0];
    assert_eq!(
        seen,
        (32 * done) as f64,
        "both ranks' batches of the epoch so far"
    );

    // Resumed on two ranks to the end of that epoch: every flower counted once.
    let epochs = (epoch + 1).to_string();
    let hpc = hpc.to_str().unwrap();
    let out = slurm(&["--max-epochs", &epochs, "--ckpt-path", hpc]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("seen 150"), "{}", text(&out));
}

/// MetricPlots writes on rank 0 alone: when that fails, every rank stops with an error (none
/// waits for rank 0 in the next collective).
#[test]
fn a_picture_rank_zero_cannot_write_stops_every_rank() {
    if example().is_none() {
        return;
    }
    let start = Instant::now();
    let args = ["--strategy", "ddp", "--devices", "2", "--max-epochs", "0"];
    let mut all = args.to_vec();
    all.extend(["--validate", "--plots", "/proc/no-such-dir"]);
    let out = mpirun(2, &all);
    assert!(!out.status.success(), "{}", text(&out));
    assert!(text(&out).contains("MetricPlots"), "{}", text(&out));
    assert!(text(&out).contains("/proc/no-such-dir"), "{}", text(&out));
    assert!(
        start.elapsed() < Duration::from_secs(60),
        "took {:?}",
        start.elapsed()
    );
}

#[test]
fn a_stop_asked_on_one_rank_stops_both() {
    if example().is_none() {
        return;
    }
    let out = two_ranks("ddp", "/tmp/fulmen-ddp-stop", &["--stop-at-step", "7"]);
    assert!(out.status.success(), "{}", text(&out));
    let all = text(&out);
    assert!(all.contains("rank 0 of 2: trained 7 steps"), "{all}");
    assert!(all.contains("rank 1 of 2: trained 7 steps"), "{all}");
}

#[test]
fn without_the_distributed_sampler_every_rank_reads_every_sample() {
    if example().is_none() {
        return;
    }
    let root = "/tmp/fulmen-ddp-sampler";
    let sharded = two_ranks("ddp", root, &[]);
    assert!(sharded.status.success(), "{}", text(&sharded));
    // Iris: 150 samples in batches of 16, 5 epochs: 5 batches per epoch per rank when the
    // ranks split it, 10 when each reads all of it.
    assert!(
        text(&sharded).contains("rank 1 of 2: trained 25 steps"),
        "{}",
        text(&sharded)
    );
    let whole = two_ranks("ddp", root, &["--no-distributed-sampler"]);
    assert!(whole.status.success(), "{}", text(&whole));
    assert!(
        text(&whole).contains("rank 0 of 2: trained 50 steps"),
        "{}",
        text(&whole)
    );
    assert!(
        text(&whole).contains("rank 1 of 2: trained 50 steps"),
        "{}",
        text(&whole)
    );
}

/// The rows of a predictions CSV: each sample's index and values.
fn prediction_rows(path: &Path) -> Vec<(usize, Vec<f64>)> {
    let mut reader = csv::Reader::from_path(path).expect("the predictions CSV");
    reader
        .records()
        .map(|r| {
            let r = r.expect("a row");
            let values = r
                .iter()
                .skip(1)
                .map(|v| v.parse().expect("a number"))
                .collect();
            (r[0].parse().expect("an index"), values)
        })
        .collect()
}

#[test]
fn predictions_of_two_ranks_are_gathered_in_dataset_order() {
    if example().is_none() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let s = subdir(dir.path(), "single");
    let single = Path::new(&s).join("p.csv");
    let batch = [
        "--batch-size",
        "32",
        "--predict-csv",
        single.to_str().expect("a path"),
    ];
    one_process(&s, &batch);
    let one = prediction_rows(&single);
    // Under either strategy: after FULL_SHARD's fit the module is whole again.
    for strategy in ["ddp", "fsdp"] {
        let d = subdir(dir.path(), strategy);
        let ranks = Path::new(&d).join("p.csv");
        let out = two_ranks(
            strategy,
            &d,
            &["--predict-csv", ranks.to_str().expect("a path")],
        );
        assert!(out.status.success(), "{}", text(&out));
        let two = prediction_rows(&ranks);
        assert_eq!(two.len(), 150, "{strategy}: every flower once");
        let indices: Vec<usize> = two.iter().map(|r| r.0).collect();
        assert_eq!(indices, (0..150).collect::<Vec<_>>());
        for ((i, a), (_, b)) in two.iter().zip(&one) {
            let diff = a
                .iter()
                .zip(b)
                .map(|(x, y)| (x - y).abs())
                .fold(0.0, f64::max);
            assert!(diff < 1e-4, "{strategy}: flower {i}: {a:?} vs {b:?}");
        }
    }
}

/// What a run printed as its ranks' validation metrics (`--validate`): per rank, each
/// metric's name and value.
fn validated(out: &Output) -> Vec<Vec<(String, f64)>> {
    let text = String::from_utf8_lossy(&out.stdout);
    text.lines()
        .filter_map(|l| l.split_once(" validated: "))
        .map(|(_, m)| {
            m.split_whitespace()
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_string(), v.parse().expect("a number")))
                .collect()
        })
        .collect()
}

#[test]
fn metrics_over_one_to_four_ranks_are_the_same() {
    if example().is_none() {
        return;
    }
    // Untrained (every run the same weights), validated on 150 flowers in batches of 16 per
    // rank: each rank keeps its share, and the synced states are the whole's: counts to the
    // bit, every score gathered (exact AUROC, Spearman), extremes, means, co-moments; and
    // MetricPlots draws every rank's confusion matrix, the same picture.
    let plots = tempfile::tempdir().unwrap();
    let dir = |n: usize| plots.path().join(n.to_string());
    let picture = |n: usize| std::fs::read(dir(n).join("val_confusion-epoch=0.png")).unwrap();
    let args = [
        "--max-epochs",
        "0",
        "--validate",
        "--enable-model-summary",
        "false",
    ];
    let plots_of = |n: usize| dir(n).to_str().unwrap().to_string();
    let one_dir = plots_of(1);
    let mut alone = args.to_vec();
    alone.extend(["--plots", &one_dir]);
    let one = mpi::alone("iris_ranks", &alone);
    assert!(one.status.success(), "{}", text(&one));
    let want = validated(&one);
    assert_eq!(want.len(), 1, "{}", text(&one));
    let names: Vec<&str> = want[0].iter().map(|(k, _)| k.as_str()).collect();
    for name in [
        "val_acc",
        "val_ap",
        "val_auroc",
        "val_f1",
        "val_max_logit",
        "val_mean_logit",
        "val_pearson",
        "val_spearman",
    ] {
        assert!(names.contains(&name), "{name} in {names:?}");
    }
    // 150 flowers on 4 ranks: shares of 38, 38, 37 and 37, none evaluated twice.
    for n in [2, 3, 4] {
        let ranks = n.to_string();
        let n_dir = plots_of(n);
        let mut all = vec!["--strategy", "ddp", "--devices", &ranks, "--plots", &n_dir];
        all.extend(args);
        let out = mpirun(n, &all);
        assert!(out.status.success(), "{}", text(&out));
        let got = validated(&out);
        assert_eq!(got.len(), n, "{}", text(&out));
        for rank in got {
            for ((k, v), (wk, w)) in rank.iter().zip(&want[0]) {
                assert_eq!(k, wk);
                // Gathered scores are summed in another order: equal to rounding.
                assert!(
                    (v - w).abs() <= 1e-12 * w.abs().max(1.0),
                    "{n} ranks, {k}: {v} vs {w}"
                );
            }
        }
        assert!(picture(n) == picture(1), "{n} ranks drew another matrix");
    }
}

//! The examples' command lines as a user meets them: flags that cannot be right are refused
//! with a message about the value, and settings that leave nothing to train say so.

#[path = "support/examples.rs"]
mod examples;

use examples::{run, text, DATA};

/// Runs the iris example in a fresh folder with `args`, quietly.
fn iris(args: &[&str]) -> (std::process::Output, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let mut all = vec![
        "--data-dir",
        DATA,
        "--enable-progress-bar",
        "false",
        "--enable-model-summary",
        "false",
    ];
    all.extend_from_slice(args);
    (run("iris", dir.path(), &all), dir)
}

#[test]
fn negative_counts_are_refused_with_a_message_about_the_value() {
    for flag in [
        "--max-epochs",
        "--max-steps",
        "--min-epochs",
        "--num-nodes",
        "--accumulate-grad-batches",
        "--log-every-n-steps",
    ] {
        let (out, _dir) = iris(&[flag, "-2"]);
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{flag}: {t}");
        assert!(
            t.contains(&format!("invalid value '-2' for '{flag}")) && t.contains("-2 is negative"),
            "{flag}: {t}"
        );
    }
    let (out, _dir) = iris(&["--limit-train-batches", "-0.5"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(
        t.contains("`limit_train_batches`: -0.5 is not a fraction in [0, 1]"),
        "{t}"
    );
}

#[test]
fn settings_that_train_nothing_say_so() {
    for (args, why) in [
        (&["--max-epochs", "0"][..], "max_epochs=0"),
        (&["--max-steps", "0"][..], "max_steps=0"),
        (&["--limit-train-batches", "0"][..], "limit_train_batches=0"),
        (
            &["--limit-train-batches", "0.0"][..],
            "limit_train_batches=0",
        ),
    ] {
        let (out, _dir) = iris(args);
        let t = text(&out);
        assert!(out.status.success(), "{args:?}: {t}");
        assert!(
            t.contains(&format!("warning: {why}: nothing will be trained")),
            "{args:?}: {t}"
        );
    }
    // A normal run says nothing of the kind.
    let (out, _dir) = iris(&["--max-epochs", "1"]);
    assert!(
        !text(&out).contains("nothing will be trained"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_resume_past_max_epochs_says_that_nothing_will_be_trained() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let common = [
        "--enable-progress-bar",
        "false",
        "--enable-model-summary",
        "false",
        "--default-root-dir",
        root,
    ];
    let out = run(
        "iris_ranks",
        dir.path(),
        &[&common[..], &["--max-epochs", "2", "--checkpoints"]].concat(),
    );
    assert!(out.status.success(), "{}", text(&out));
    let ckpt = std::fs::read_dir(dir.path().join("lightning_logs/version_0/checkpoints"))
        .expect("the checkpoints folder")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .expect("a checkpoint");
    let ckpt = ckpt.to_str().unwrap();
    let out = run(
        "iris_ranks",
        dir.path(),
        &[&common[..], &["--max-epochs", "1", "--ckpt-path", ckpt]].concat(),
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("warning: max_epochs=1 (the checkpoint resumed from is at epoch 2): nothing will be trained"),
        "{t}"
    );
}

#[test]
fn zero_nodes_are_refused() {
    let (out, _dir) = iris(&["--num-nodes", "0"]);
    let t = text(&out);
    assert!(!out.status.success(), "{t}");
    assert!(t.contains("num_nodes") && t.contains("0 nodes"), "{t}");
}

/// Runs `iris_cli` in `dir`, its data the repository's and its logs under `dir`.
fn iris_cli(dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let root = dir.to_str().unwrap();
    let mut all = args.to_vec();
    all.extend([
        "--data.data_dir",
        DATA,
        "--trainer.default_root_dir",
        root,
        "--trainer.enable_progress_bar",
        "false",
        "--trainer.enable_model_summary",
        "false",
    ]);
    run("iris_cli", dir, &all)
}

const RUN_YAML: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/examples/iris_cli/run.yaml");

#[test]
fn the_cli_fits_from_a_config_and_saves_the_config_it_used_beside_hparams_yaml() {
    let dir = tempfile::tempdir().unwrap();
    let fit = iris_cli(
        dir.path(),
        &["fit", "--config", RUN_YAML, "--trainer.max_epochs", "2"],
    );
    assert!(fit.status.success(), "{}", text(&fit));
    assert!(
        text(&fit).contains("Spy Report: Epoch 1 ended"),
        "{}",
        text(&fit)
    );
    let version = dir.path().join("lightning_logs/version_0");
    assert!(version.join("hparams.yaml").exists());
    let saved = std::fs::read_to_string(version.join("config.yaml")).unwrap();
    let printed = iris_cli(
        dir.path(),
        &[
            "fit",
            "--config",
            RUN_YAML,
            "--trainer.max_epochs",
            "2",
            "--print_config",
        ],
    );
    assert!(printed.status.success(), "{}", text(&printed));
    assert_eq!(saved, String::from_utf8_lossy(&printed.stdout));
    assert!(
        saved.contains("max_epochs: 2") && saved.contains("lr: 0.01"),
        "{saved}"
    );
}

#[test]
fn later_configs_override_earlier_ones_flags_override_files_and_the_printout_reads_back() {
    let dir = tempfile::tempdir().unwrap();
    let over = dir.path().join("over.yaml");
    std::fs::write(
        &over,
        "model:\n  lr: 0.5\ndata:\n  batch_size: 4\ntrainer:\n  max_epochs: 7\n",
    )
    .unwrap();
    let over = over.to_str().unwrap();
    let args = [
        "fit",
        "--config",
        RUN_YAML,
        "--config",
        over,
        "--data.batch_size",
        "8",
        "--print_config",
    ];
    let out = iris_cli(dir.path(), &args);
    let printed = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(out.status.success(), "{}", text(&out));
    for line in [
        "lr: 0.5",
        "batch_size: 8",
        "max_epochs: 7",
        "seed_everything: 42",
        "val_size: 0.2",
    ] {
        assert!(printed.contains(line), "{line} in:\n{printed}");
    }
    let back = dir.path().join("printed.yaml");
    std::fs::write(&back, &printed).unwrap();
    let again = iris_cli(
        dir.path(),
        &["fit", "--config", back.to_str().unwrap(), "--print_config"],
    );
    assert_eq!(String::from_utf8_lossy(&again.stdout), printed);
}

#[test]
fn config_mistakes_name_the_file_or_flag_and_what_to_write() {
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    std::fs::write(&bad, "trainer:\n  max_epoch: 3\n").unwrap();
    let out = iris_cli(dir.path(), &["fit", "--config", bad.to_str().unwrap()]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("bad.yaml: unknown key `trainer.max_epoch`; did you mean `trainer.max_epochs`?"),
        "{t}"
    );
    std::fs::write(&bad, "trainer:\n  max_epochs: ten\n").unwrap();
    let out = iris_cli(dir.path(), &["fit", "--config", bad.to_str().unwrap()]);
    let t = text(&out);
    assert!(
        t.contains("bad.yaml: invalid value 'ten' for '--trainer.max_epochs"),
        "{t}"
    );
    let out = iris_cli(dir.path(), &["fit", "--model.lr", "fast"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("--model.lr: `model.lr`") && t.contains("expected f64"),
        "{t}"
    );
    let out = iris_cli(dir.path(), &["fit", "--trainer.max_epochs", "-3"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("-3 is negative"), "{t}");
    let out = iris_cli(dir.path(), &["fit", "--trainer.max_epoch", "3"]);
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("'--trainer.max_epochs'"), "{t}");
}

#[test]
fn ckpt_path_last_resumes_a_fit_in_a_new_process_and_validates_its_weights() {
    let dir = tempfile::tempdir().unwrap();
    let fit = iris_cli(
        dir.path(),
        &["fit", "--config", RUN_YAML, "--trainer.max_epochs", "2"],
    );
    assert!(fit.status.success(), "{}", text(&fit));
    // A new process resumes the newest checkpoint of the earlier run: epochs 2 and 3 only.
    let more = iris_cli(
        dir.path(),
        &[
            "fit",
            "--config",
            RUN_YAML,
            "--trainer.max_epochs",
            "4",
            "--ckpt_path",
            "last",
        ],
    );
    let t = text(&more);
    assert!(more.status.success(), "{t}");
    assert!(
        !t.contains("Epoch 1 ended") && t.contains("Epoch 2 ended") && t.contains("Epoch 3 ended"),
        "{t}"
    );
    let out = iris_cli(
        dir.path(),
        &["validate", "--config", RUN_YAML, "--ckpt_path", "last"],
    );
    let t = text(&out);
    assert!(out.status.success(), "{t}");
    assert!(
        t.contains("weights from") && t.contains("epoch=3-step=32.ckpt"),
        "{t}"
    );
    assert!(t.contains("val_acc: ") && t.contains("val_loss: "), "{t}");
    // The tutorial's data module has no test data, and says so; it predicts its validation
    // flowers (30, in batches of 16).
    let out = iris_cli(
        dir.path(),
        &["test", "--config", RUN_YAML, "--ckpt_path", "last"],
    );
    let t = text(&out);
    assert_eq!(out.status.code(), Some(1), "{t}");
    assert!(
        t.contains("the data module's `test_dataloader` returned none"),
        "{t}"
    );
    let out = iris_cli(
        dir.path(),
        &["predict", "--config", RUN_YAML, "--ckpt_path", "last"],
    );
    let t = text(&out);
    assert!(
        out.status.success() && t.contains("2 prediction batches"),
        "{t}"
    );
}

#[test]
fn the_tutorials_names_and_lightnings_are_one_setting_and_both_at_once_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    for (a, b) in [
        (["--epochs", "1"], ["--max-epochs", "3"]),
        (["--nodes", "2"], ["--num-nodes", "1"]),
        (["--gpus", "2"], ["--devices", "1"]),
    ] {
        let out = run("cifar10", dir.path(), &[&a[..], &b[..]].concat());
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{t}");
        assert!(
            t.contains(&format!("the argument '{} <", a[0]))
                && t.contains(&format!("cannot be used with '{} <", b[0])),
            "{t}"
        );
    }
    let help = text(&run("cifar10", dir.path(), &["--help"]));
    assert_eq!(help.matches("--strategy <").count(), 1, "{help}");
}

#[test]
fn logger_chooses_csv_tensorboard_both_in_one_folder_or_none() {
    let files = |dir: &std::path::Path| -> Vec<String> {
        let version = dir.join("lightning_logs/version_0");
        let mut names: Vec<String> = std::fs::read_dir(version)
            .into_iter()
            .flatten()
            .flatten()
            .map(|e| e.file_name().into_string().unwrap())
            .filter(|n| n != "checkpoints")
            .map(|n| {
                if n.starts_with("events.out.tfevents") {
                    "events".into()
                } else {
                    n
                }
            })
            .collect();
        names.sort();
        names
    };
    for (args, expected) in [
        (
            &["--logger", "csv,tensorboard"][..],
            &["events", "hparams.yaml", "metrics.csv"][..],
        ),
        (
            &["--logger", "tensorboard", "--logger", "csv"][..],
            &["events", "hparams.yaml", "metrics.csv"][..],
        ),
        (
            &["--logger", "tensorboard"][..],
            &["events", "hparams.yaml"][..],
        ),
        (&["--logger", "false"][..], &[][..]),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path().to_str().unwrap();
        let common = [
            "--max-epochs",
            "1",
            "--log-every-n-steps",
            "1",
            "--default-root-dir",
            root,
        ];
        let (out, _d) = iris(&[&common[..], args].concat());
        assert!(out.status.success(), "{args:?}: {}", text(&out));
        assert_eq!(files(dir.path()), expected, "{args:?}");
        assert!(
            !dir.path().join("lightning_logs/version_1").exists(),
            "{args:?}"
        );
    }
    let (out, _d) = iris(&["--logger", "wandb"]);
    assert!(
        text(&out).contains("`logger`: `wandb` is not csv, tensorboard or false"),
        "{}",
        text(&out)
    );
}

/// Runs `example` for 2 epochs in a fresh root, then for 3 with `--ckpt-path last`, with
/// `extra` flags both times; returns what the second run printed.
fn fit_then_resume_last(example: &str, extra: &[&str]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_str().unwrap();
    let common = [&["--data-dir", DATA, "--default-root-dir", root][..], extra].concat();
    let first = run(
        example,
        dir.path(),
        &[&common[..], &["--max-epochs", "2"]].concat(),
    );
    assert!(first.status.success(), "{example}: {}", text(&first));
    let more = ["--max-epochs", "3", "--ckpt-path", "last"];
    let second = run(example, dir.path(), &[&common[..], &more[..]].concat());
    let t = text(&second);
    assert!(second.status.success(), "{example}: {t}");
    t
}

#[test]
fn every_iris_example_resumes_with_ckpt_path_last() {
    for example in ["iris", "iris_datamodule", "epoch_timing"] {
        let t = fit_then_resume_last(example, &["--enable-progress-bar", "false"]);
        assert!(
            t.contains("Epoch 2 ended") && !t.contains("Epoch 1 ended"),
            "{example}: {t}"
        );
    }
}

#[test]
fn config_values_of_every_yaml_kind_reach_the_trainer_as_its_flags_take_them() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = dir.path().join("kinds.yaml");
    // null is unset (Lightning's configs write it); a list of loggers splits at commas; a
    // device list is ordinals.
    std::fs::write(
        &cfg,
        "trainer:\n  max_steps: null\n  logger: [csv, tensorboard]\n  devices: [0]\n  max_epochs: 1\n",
    )
    .unwrap();
    let out = iris_cli(dir.path(), &["fit", "--config", cfg.to_str().unwrap()]);
    assert!(out.status.success(), "{}", text(&out));
    let version = dir.path().join("lightning_logs/version_0");
    let events = std::fs::read_dir(&version).unwrap().flatten().any(|e| {
        e.file_name()
            .to_string_lossy()
            .starts_with("events.out.tfevents")
    });
    assert!(events, "the tensorboard logger of the list wrote");
    // A quoted flag value stays a string (and the model then refuses it for its f64).
    let out = iris_cli(
        dir.path(),
        &["fit", "--model.lr", "'0.5'", "--print_config"],
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("lr: '0.5'"),
        "{}",
        text(&out)
    );
}

#[test]
fn a_logger_named_twice_is_refused() {
    let (out, _d) = iris(&["--logger", "csv,csv"]);
    assert!(
        text(&out).contains("`csv` is given twice"),
        "{}",
        text(&out)
    );
}

#[test]
fn ckpt_path_last_without_save_last_names_the_newest_checkpoint_and_finds_runs_without_a_logger() {
    let t = fit_then_resume_last("iris", &["--enable-progress-bar", "false"]);
    assert!(
        t.contains("ckpt_path \"last\": no last*.ckpt") && t.contains("epoch=1-step=20.ckpt"),
        "{t}"
    );
    // Without a logger, checkpoints go to ROOT/checkpoints, and "last" finds them there.
    let t = fit_then_resume_last("iris", &["--logger", "false"]);
    assert!(
        t.contains("Epoch 2 ended") && !t.contains("Epoch 1 ended"),
        "{t}"
    );
}

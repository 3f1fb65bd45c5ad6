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
        "--no-progress-bar",
        "--no-model-summary",
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
        "--no-progress-bar",
        "--no-model-summary",
        "--default-root-dir",
        root,
    ];
    let out = run(
        "iris_ddp",
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
        "iris_ddp",
        dir.path(),
        &[&common[..], &["--max-epochs", "1", "--resume", ckpt]].concat(),
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

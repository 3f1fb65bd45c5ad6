//! examples/finetune.rs: a ResNet trained on the digits 0–4 lends its backbone to a new head
//! for the digits 5–9 (BackboneFinetuning); the loss goes down while the backbone is frozen
//! and again once it trains, and a run stopped after the epoch that unfroze it and resumed
//! ends with exactly the weights of one that was not stopped.

#[path = "support/examples.rs"]
mod examples;
#[path = "support/metrics_csv.rs"]
mod metrics_csv;

use std::path::Path;

use fulmen::checkpoint::Checkpoint;

fn finetune(dir: &Path, args: &[&str]) {
    let data = format!("{}/digits.npz", examples::DATA);
    let common = [
        "--data",
        &data,
        "--out",
        "out",
        "--pretrain-epochs",
        "2",
        "--unfreeze-at",
        "2",
    ];
    let out = examples::run("finetune", dir, &[&common[..], args].concat());
    assert!(out.status.success(), "{}", examples::text(&out));
}

#[test]
fn loss_goes_down_in_both_phases_and_a_resume_is_exact() {
    let whole = tempfile::tempdir().unwrap();
    finetune(whole.path(), &["--max-epochs", "4"]);
    let version = whole.path().join("out/finetune/lightning_logs/version_0");
    let loss = metrics_csv::column(&version, "train_loss_epoch");
    assert_eq!(loss.len(), 4, "{loss:?}");
    assert!(
        loss[1] < loss[0],
        "the head learns on a frozen backbone: {loss:?}"
    );
    assert!(loss[3] < loss[2], "then the whole network: {loss:?}");

    // The same fine-tuning stopped after epoch 2 (the backbone's first), then resumed.
    let split = tempfile::tempdir().unwrap();
    std::fs::create_dir(split.path().join("out")).unwrap();
    let pretrained = "out/pretrained.ckpt";
    std::fs::copy(whole.path().join(pretrained), split.path().join(pretrained)).unwrap();
    finetune(split.path(), &["--max-epochs", "3"]);
    finetune(split.path(), &["--max-epochs", "4", "--ckpt-path", "last"]);

    let a = Checkpoint::read(whole.path().join("out/finetuned.ckpt")).unwrap();
    let b = Checkpoint::read(split.path().join("out/finetuned.ckpt")).unwrap();
    let names: Vec<&str> = a.tensor_names().collect();
    assert!(names.contains(&"backbone.1.1.r.1.running_var") && names.contains(&"head.1.weight"));
    for name in names {
        assert_eq!(a.tensor(name).unwrap(), b.tensor(name).unwrap(), "{name}");
    }
    // The backbone moved from the pretrained one.
    let pre = Checkpoint::read(whole.path().join(pretrained)).unwrap();
    let conv = "backbone.0.0.weight";
    assert_ne!(pre.tensor(conv).unwrap(), a.tensor(conv).unwrap());
}

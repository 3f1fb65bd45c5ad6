//! TensorBoard reads what `TensorBoardLogger` writes: every scalar at every step, and the
//! hyperparameters of the HPARAMS tab. The reader is the `tensorboard` Python package's own
//! `EventAccumulator` (what `.ci/run` installs); without it the test says so and passes, unless
//! FULMEN_PYTHON names the Python that must have it.

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "support/python.rs"]
mod python;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use common::{IrisClassifier, IrisDataModule};
use fulmen::loggers::TensorBoardLogger;
use fulmen::prelude::*;

type Logged = Rc<RefCell<Vec<(BTreeMap<String, f64>, usize)>>>;

/// Forwards to the TensorBoard logger and keeps a copy of every call.
struct Tee(TensorBoardLogger, Logged);

impl Logger for Tee {
    fn log_hyperparams(&mut self, hparams: &HParams) -> fulmen::Result<()> {
        self.0.log_hyperparams(hparams)
    }
    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> fulmen::Result<()> {
        self.1.borrow_mut().push((metrics.clone(), step));
        self.0.log_metrics(metrics, step)
    }
    fn finalize(&mut self) -> fulmen::Result<()> {
        self.0.finalize()
    }
    fn log_dir(&self) -> Option<&std::path::Path> {
        self.0.log_dir()
    }
}

const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
from tensorboard.plugins.hparams import plugin_data_pb2
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.SCALARS: 0})
acc.Reload()
scalars = {t: [[e.step, e.value] for e in acc.Scalars(t)] for t in acc.Tags()["scalars"]}
content = acc.PluginTagToContent("hparams")
start = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/session_start_info"])
hparams = {k: json.loads(json.dumps(
    getattr(v, v.WhichOneof("kind")))) for k, v in start.session_start_info.hparams.items()}
exp = plugin_data_pb2.HParamsPluginData.FromString(content["_hparams_/experiment"]).experiment
print(json.dumps({"scalars": scalars, "hparams": hparams,
                  "hparam_names": [h.name for h in exp.hparam_infos],
                  "metrics": [m.name.tag for m in exp.metric_infos]}))
"#;

#[test]
fn tensorboard_reads_every_scalar_and_the_hparams() {
    let Some(python) =
        python::with_module("tensorboard.backend.event_processing.event_accumulator")
    else {
        return;
    };
    let dir = tempfile::tempdir().unwrap();
    let logged: Logged = Rc::default();
    let logger = TensorBoardLogger::new(dir.path(), "tb").unwrap();
    let log_dir = logger.log_dir().unwrap().to_path_buf();
    assert_eq!(log_dir, dir.path().join("tb/version_0"));
    let mut dm = IrisDataModule::new(
        concat!(env!("CARGO_MANIFEST_DIR"), "/data").into(),
        16,
        0.2,
        42,
        true,
    );
    Trainer::builder()
        .max_epochs(3)
        .log_every_n_steps(1)
        .logger(Tee(logger, logged.clone()))
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()
        .unwrap()
        .fit(&mut IrisClassifier::new(0.01), &mut dm)
        .unwrap();

    let out = std::process::Command::new(&python)
        .args(["-c", READER])
        .arg(&log_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let read: fulmen::serde_json::Value = fulmen::serde_json::from_slice(&out.stdout).unwrap();

    // Every value logged, at its step, as TensorBoard reads it back (stored as f32).
    let mut expected: BTreeMap<String, Vec<(u64, f32)>> = BTreeMap::new();
    expected.insert("hp_metric".into(), vec![(0, -1.0)]);
    for (metrics, step) in logged.borrow().iter() {
        for (tag, v) in metrics {
            expected
                .entry(tag.clone())
                .or_default()
                .push((*step as u64, *v as f32));
        }
    }
    let mut got: BTreeMap<String, Vec<(u64, f32)>> = BTreeMap::new();
    for (tag, points) in read["scalars"].as_object().unwrap() {
        let points = points
            .as_array()
            .unwrap()
            .iter()
            .map(|p| (p[0].as_u64().unwrap(), p[1].as_f64().unwrap() as f32));
        got.insert(tag.clone(), points.collect());
    }
    assert_eq!(got, expected);
    for tag in ["train_loss", "val_loss", "val_acc", "epoch"] {
        assert!(got.contains_key(tag), "{tag} missing from {:?}", got.keys());
    }
    assert_eq!(
        got["train_loss"].len(),
        24,
        "one point per step of 3 epochs × 8 batches"
    );

    assert_eq!(read["hparams"]["lr"], 0.01);
    assert_eq!(read["hparams"]["batch_size"], 16.0);
    assert_eq!(read["hparams"]["shuffle"], true);
    assert!(read["hparams"]["data_dir"]
        .as_str()
        .unwrap()
        .ends_with("data"));
    assert_eq!(read["hparam_names"][0], "lr");
    assert_eq!(read["metrics"], fulmen::serde_json::json!(["hp_metric"]));
    assert!(log_dir.join("hparams.yaml").exists());
}

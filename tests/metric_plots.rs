//! `MetricPlots` draws a module's confusion matrix and ROC curves at the end of every
//! validation epoch: PNG files under the logger's directory, and the same images in the
//! TensorBoard event file, as TensorBoard's own `EventAccumulator` reads them back (what
//! `.ci/run` installs; without it that part says so and passes, unless FULMEN_PYTHON names the
//! Python that must have it); a multilabel matrix, a panel per label.

#[path = "support/python.rs"]
mod python;

use fulmen::callbacks::MetricPlots;
use fulmen::loggers::TensorBoardLogger;
use fulmen::metrics::{plot, ConfusionMatrix, RocCurve};
use fulmen::prelude::*;

#[lightning_module]
struct Drawn {
    layer: Linear<4, 3>,
    #[metric(ConfusionMatrix::multiclass(3))]
    val_confusion: ConfusionMatrix,
    #[metric(RocCurve::multiclass(3))]
    val_roc: RocCurve,
}

#[lightning_module]
impl Drawn {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn validation_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        _ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let logits = self.layer.forward(x);
        self.val_confusion.update(&logits, &y)?;
        self.val_roc.update(&logits, &y)
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::adam(0.05)
    }
}

const READER: &str = r#"
import json, sys
from tensorboard.backend.event_processing import event_accumulator as ea
acc = ea.EventAccumulator(sys.argv[1], size_guidance={ea.IMAGES: 0})
acc.Reload()
images = {t: [[e.step, e.width, e.height, e.encoded_image_string[1:4].decode()] for e in acc.Images(t)]
          for t in acc.Tags()["images"]}
print(json.dumps(images))
"#;

/// How many pixels of a PNG are not white.
fn inked(path: &std::path::Path) -> usize {
    let img = image::open(path).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), plot::SIZE, "{}", path.display());
    img.pixels().filter(|p| p.0 != [255, 255, 255]).count()
}

#[test]
fn confusion_matrices_and_roc_curves_are_drawn_each_validation_epoch() {
    seed_everything(3);
    let dir = tempfile::tempdir().unwrap();
    let logger = TensorBoardLogger::new(dir.path(), "tb").unwrap();
    let log_dir = logger.log_dir().unwrap().to_path_buf();
    let data = fulmen::data::iris::bundled();
    let train = DataLoader::new(InMemoryDataset::new(data.clone()), 16).shuffle(true);
    let val = DataLoader::new(InMemoryDataset::new(data), 32);
    let mut model = Drawn::new();
    Trainer::builder()
        .max_epochs(2)
        .logger(logger)
        .callback(MetricPlots::new())
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()
        .unwrap()
        .fit_loaders(&mut model, train, Some(val))
        .unwrap();
    let plots = log_dir.join("plots");
    let mut files: Vec<String> = std::fs::read_dir(&plots)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    // Two validation epochs (the sanity check draws nothing).
    assert_eq!(
        files,
        [
            "val_confusion-epoch=0.png",
            "val_confusion-epoch=1.png",
            "val_roc-epoch=0.png",
            "val_roc-epoch=1.png"
        ]
    );
    for f in &files {
        assert!(inked(&plots.join(f)) > 2_000, "{f} has a picture");
    }
    // Each epoch drew its own samples: reset after each.
    assert!(model
        .val_confusion
        .matrix()
        .unwrap()
        .iter()
        .flatten()
        .all(|&v| v == 0.0));

    let Some(python) =
        python::with_module("tensorboard.backend.event_processing.event_accumulator")
    else {
        return;
    };
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
    for tag in ["val_confusion", "val_roc"] {
        let images = read[tag]
            .as_array()
            .unwrap_or_else(|| panic!("{tag} in {read}"));
        assert_eq!(images.len(), 2, "{tag}: {images:?}");
        for image in images {
            assert_eq!(image[1], plot::SIZE.0);
            assert_eq!(image[2], plot::SIZE.1);
            assert_eq!(image[3], "PNG");
        }
    }
}

#[test]
fn a_multilabel_confusion_matrix_draws_a_panel_per_label() {
    use fulmen::metrics::Metric;
    let mut cm = ConfusionMatrix::multilabel(4);
    let preds: Vec<[f32; 4]> = (0..12)
        .map(|i| [0, 1, 2, 3].map(|l| ((i * 7 + l * 3) % 10) as f32 / 10.0))
        .collect();
    let target: Vec<[bool; 4]> = (0..12)
        .map(|i| [0, 1, 2, 3].map(|l| (i + l) % 3 == 0))
        .collect();
    cm.update(&preds[..], &target[..]).unwrap();
    assert!(cm.is_picture());
    let png = cm.picture().unwrap();
    let img = image::load_from_memory(&png).unwrap().to_rgb8();
    assert_eq!(img.dimensions(), plot::SIZE);
    // Four labels: a 2 × 2 grid, each quarter inked by its own matrix.
    let (w, h) = (plot::SIZE.0 / 2, plot::SIZE.1 / 2);
    for (qx, qy) in [(0, 0), (1, 0), (0, 1), (1, 1)] {
        let inked = (0..w)
            .flat_map(|x| (0..h).map(move |y| (qx * w + x, qy * h + y)))
            .filter(|&(x, y)| img.get_pixel(x, y).0 != [255, 255, 255])
            .count();
        assert!(
            inked > 1_000,
            "quarter ({qx}, {qy}) holds {inked} inked pixels"
        );
    }
}

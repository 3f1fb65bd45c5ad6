//! examples/gan.rs (manual optimization, two optimizers) makes digits: a classifier trained
//! here on the real 8×8 digits takes 1,000 generated ones for digits (mean confidence ≥ 0.8)
//! of most classes (at least 8 of the 10 are each ≥ 3% of them), where an untrained generator
//! fails both; and the grids of generated digits are written as PNGs on their epochs.

#[path = "support/examples.rs"]
mod examples;

use fulmen::prelude::*;

const PIXELS: usize = 64;

#[lightning_module]
struct Judge {
    l1: Linear<PIXELS, 64>,
    l2: Linear<64, 10>,
}

#[lightning_module]
impl Judge {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<PIXELS, 10, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let logits = self.l2.forward(self.l1.forward(ctx.trace(x)).relu());
        cross_entropy_with_logits_loss(logits, y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::adam(1e-3)
    }
}

/// The real digits, pixels in [-1, 1] as the GAN learns them.
fn digits() -> Vec<([f32; PIXELS], Class<10>)> {
    let path = format!("{}/digits.npz", examples::DATA);
    fulmen::data::npz::read_classification::<PIXELS, 10>(&path, "X", "y")
        .unwrap()
        .into_iter()
        .map(|(x, y)| (x.map(|v| v / 8.0 - 1.0), y))
        .collect()
}

/// The class probabilities of each of `xs` (rows of pixels).
fn probabilities(judge: &Judge<f32, Cpu>, xs: &[f32]) -> Vec<Vec<f32>> {
    let n = xs.len() / PIXELS;
    let x: Tensor<(usize, Const<PIXELS>), f32, Cpu> =
        Cpu::default().tensor_from_vec(xs.to_vec(), (n, Const));
    let p = judge
        .l2
        .forward(judge.l1.forward(x).relu())
        .softmax::<Axis<1>>();
    p.as_vec().chunks(10).map(<[f32]>::to_vec).collect()
}

/// The mean confidence of `judge` on the generated digits in `samples.npz`, and how many
/// classes are each at least 3% of them.
fn judged(judge: &Judge<f32, Cpu>, samples: &std::path::Path) -> (f32, usize) {
    let array = fulmen::data::npz::read_array(samples, "X").unwrap();
    assert_eq!(array.shape, [1000, PIXELS]);
    let xs: Vec<f32> = array.data.iter().map(|&v| v as f32).collect();
    let probs = probabilities(judge, &xs);
    let mut counts = [0usize; 10];
    let mut confidence = 0.0;
    for p in &probs {
        let (best, top) = (0..10).fold((0, 0.0f32), |b, c| if p[c] > b.1 { (c, p[c]) } else { b });
        counts[best] += 1;
        confidence += top;
    }
    let classes = counts
        .iter()
        .filter(|&&c| c * 100 >= 3 * probs.len())
        .count();
    (confidence / probs.len() as f32, classes)
}

#[test]
fn the_gan_makes_digits_of_most_classes_where_an_untrained_one_does_not() {
    let dir = tempfile::tempdir().unwrap();
    let data = format!("{}/digits.npz", examples::DATA);
    let gan = |epochs: &str, out: &str| {
        let args = [
            "--data",
            &data,
            "--max-epochs",
            epochs,
            "--lr",
            "1e-3",
            "--batch-size",
            "32",
            "--grid-every",
            "10",
            "--out",
            out,
        ];
        let run = examples::run("gan", dir.path(), &args);
        assert!(run.status.success(), "{}", examples::text(&run));
        dir.path().join(out)
    };
    let trained = gan("25", "trained");
    let untrained = gan("0", "untrained");
    for epoch in [10, 20] {
        let grid = image::open(trained.join(format!("epoch_{epoch}.png"))).unwrap();
        // 8 × 8 digits of 8 × 8 pixels, each 4 × 4 and framed.
        assert_eq!((grid.width(), grid.height()), (272, 272));
    }
    assert!(!trained.join("epoch_25.png").exists());

    seed_everything(0);
    let mut judge = Judge::new();
    let real = digits();
    let loader = DataLoader::new(InMemoryDataset::new(real.clone()), 64).shuffle(true);
    Trainer::builder()
        .max_epochs(100)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .enable_model_summary(false)
        .build()
        .unwrap()
        .fit_loaders(&mut judge, loader, None)
        .unwrap();
    let xs: Vec<f32> = real.iter().flat_map(|(x, _)| x.iter().copied()).collect();
    let right = (probabilities(&judge, &xs).iter().zip(&real))
        .filter(|(p, (_, y))| (0..10).all(|c| p[c] <= p[y.index()]))
        .count();
    assert!(
        right * 100 >= 95 * real.len(),
        "the judge knows {right} of {} digits",
        real.len()
    );

    let (confidence, classes) = judged(&judge, &trained.join("samples.npz"));
    assert!(
        confidence >= 0.8 && classes >= 8,
        "trained: confidence {confidence}, {classes} classes"
    );
    let (confidence, classes) = judged(&judge, &untrained.join("samples.npz"));
    assert!(
        confidence < 0.8 && classes < 8,
        "untrained: confidence {confidence}, {classes} classes"
    );
}

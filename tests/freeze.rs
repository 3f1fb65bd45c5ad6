//! Freezing (`TrainerView::freeze`, `BackboneFinetuning`): frozen parameters do not move and
//! have no gradient, a frozen batch norm keeps its running statistics, unfreezing trains them
//! again at the backbone group's growing rate, and mistakes are named.

#[path = "support/quiet.rs"]
mod quiet;
#[path = "support/serial.rs"]
mod serial;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::rc::Rc;

use fulmen::callbacks::BackboneFinetuning;
use fulmen::data::Image;
use fulmen::layers::{Conv2DNoBias, Fused};
use fulmen::optim::Group;
use fulmen::prelude::*;
use fulmen::trainer::Precision;
use fulmen::weights::{At, Weights};

type Sample = (Image<1>, Class<2>);

fn samples(n: usize) -> Vec<Sample> {
    (0..n)
        .map(|i| {
            let pixels: Vec<f32> = (0..16)
                .map(|p| ((i * 7 + p * 3) as f32 * 0.37).sin())
                .collect();
            let class = usize::from(pixels[5] > 0.0);
            (
                Image::new(pixels, 4, 4).unwrap(),
                Class::new(class).unwrap(),
            )
        })
        .collect()
}

#[lightning_module]
struct Net {
    body: Fused<(Conv2DNoBias<1, 4, 3, 1, 1>, BatchNorm2D<4>, ReLU)>,
    head: (AvgPoolGlobal, Linear<4, 2>),
    #[hparam]
    backbone_group: bool,
    #[hparam]
    adam: bool,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): fulmen::data::ImageBatch<1, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let features = self.body.forward_mut(ctx.trace(x));
        cross_entropy_with_logits_loss(self.head.forward(features), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        match (self.backbone_group, self.adam) {
            (_, true) => Optim::adam(0.01),
            (true, false) => Optim::sgd(0.1).group(Group::of(["body"])),
            (false, false) => Optim::sgd(0.1),
        }
    }
}

/// Per epoch: the tensors after its last step, and the backbone group's rate in it.
#[derive(Default)]
struct Seen {
    tensors: Vec<BTreeMap<String, Vec<f32>>>,
    backbone_lr: Vec<Option<f64>>,
    grad_names: Vec<String>,
}

struct Recorder(Rc<RefCell<Seen>>, Option<&'static str>);

const NAMES: [&str; 5] = [
    "body.0.weight",
    "body.1.weight",
    "body.1.running_mean",
    "body.1.running_var",
    "head.1.weight",
];

impl Callback for Recorder {
    fn on_fit_start(&mut self, trainer: &mut TrainerView) {
        if let Some(field) = self.1 {
            trainer.freeze(field);
        }
    }
    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        let lr = trainer.optimizers()[0].groups.get(1).map(|g| g.0);
        self.0.borrow_mut().backbone_lr.push(lr);
    }
    fn with_weights(&mut self, trainer: &mut TrainerView, at: At, weights: &mut dyn Weights) {
        let mut seen = self.0.borrow_mut();
        if at == At::BeforeOptimizerStep {
            match weights.grad_norms(2.0) {
                Ok(norms) => seen.grad_names = norms.into_iter().map(|(n, _)| n).collect(),
                Err(e) => trainer.fail(e),
            }
        }
        if at == At::TrainBatchEnd {
            let mut now = BTreeMap::new();
            for name in NAMES {
                match weights.values(name) {
                    Ok(v) => now.insert(name.to_string(), v),
                    Err(e) => return trainer.fail(e),
                };
            }
            // Batch ends of one epoch: the last one's stays.
            let epoch = trainer.current_epoch();
            seen.tensors.truncate(epoch);
            seen.tensors.push(now);
        }
    }
}

fn fit(
    net: &mut Net<f32, Cpu>,
    epochs: usize,
    freeze: Option<&'static str>,
    cb: Option<BackboneFinetuning>,
) -> (fulmen::Result<()>, Seen) {
    fit_in(Precision::F32, net, epochs, freeze, cb)
}

fn fit_in(
    precision: Precision,
    net: &mut Net<f32, Cpu>,
    epochs: usize,
    freeze: Option<&'static str>,
    cb: Option<BackboneFinetuning>,
) -> (fulmen::Result<()>, Seen) {
    let seen = Rc::new(RefCell::new(Seen::default()));
    let mut builder = quiet::trainer()
        .max_epochs(epochs)
        .precision(precision)
        .callback(Recorder(seen.clone(), freeze));
    if let Some(cb) = cb {
        builder = builder.callback(cb);
    }
    let mut trainer = builder.build().unwrap();
    let train = DataLoader::new(InMemoryDataset::new(samples(16)), 8);
    let out = trainer.fit_loaders(net, train, None);
    let seen = std::mem::take(&mut *seen.borrow_mut());
    (out, seen)
}

fn values(net: &Net<f32, Cpu>) -> BTreeMap<String, Vec<f32>> {
    let (conv, bn) = (&net.body.0 .0, &net.body.0 .1);
    BTreeMap::from([
        ("body.0.weight".to_string(), conv.weight.as_vec()),
        ("body.1.weight".to_string(), bn.weight.as_vec()),
        ("body.1.running_mean".to_string(), bn.running_mean.as_vec()),
        ("body.1.running_var".to_string(), bn.running_var.as_vec()),
        ("head.1.weight".to_string(), net.head.1.weight.as_vec()),
    ])
}

#[test]
fn a_frozen_body_and_its_batch_norm_statistics_stay_as_they_were() {
    let _one = serial::one_at_a_time();
    for precision in [Precision::F32, Precision::Mixed16] {
        seed_everything(3);
        let mut net = Net::new(false, false);
        let before = values(&net);
        let (out, seen) = fit_in(precision, &mut net, 2, Some("body"), None);
        out.unwrap();
        let after = values(&net);
        for name in [
            "body.0.weight",
            "body.1.weight",
            "body.1.running_mean",
            "body.1.running_var",
        ] {
            assert_eq!(
                before[name], after[name],
                "{precision:?}: {name} moved while frozen"
            );
        }
        assert_ne!(
            before["head.1.weight"], after["head.1.weight"],
            "{precision:?}: the head trains"
        );
        // Only the head has gradients.
        assert_eq!(
            seen.grad_names,
            ["head.1.weight", "head.1.bias"],
            "{precision:?}"
        );
    }
}

#[test]
fn freezing_a_batch_norm_alone_trains_the_layers_before_it() {
    let _one = serial::one_at_a_time();
    for precision in [Precision::F32, Precision::Mixed16] {
        seed_everything(3);
        let mut net = Net::new(false, false);
        let before = values(&net);
        fit_in(precision, &mut net, 2, Some("body.1"), None)
            .0
            .unwrap();
        let after = values(&net);
        assert_eq!(before["body.1.running_mean"], after["body.1.running_mean"]);
        assert_eq!(before["body.1.weight"], after["body.1.weight"]);
        assert_ne!(
            before["body.0.weight"], after["body.0.weight"],
            "{precision:?}: gradients pass the frozen norm"
        );
    }
}

#[test]
fn backbone_finetuning_unfreezes_at_its_epoch_at_a_growing_rate() {
    let _one = serial::one_at_a_time();
    seed_everything(5);
    let mut net = Net::new(true, false);
    let start = values(&net);
    let cb = BackboneFinetuning::new("body", 2).train_bn(false);
    let (out, seen) = fit(&mut net, 5, None, Some(cb));
    out.unwrap();
    let conv = |epoch: usize| seen.tensors[epoch]["body.0.weight"].clone();
    assert_eq!(conv(0), start["body.0.weight"], "frozen in epoch 0");
    assert_eq!(conv(1), start["body.0.weight"], "frozen in epoch 1");
    assert_ne!(conv(2), conv(1), "trains from epoch 2 on");
    assert_ne!(conv(3), conv(2));
    let stats = |epoch: usize| seen.tensors[epoch]["body.1.running_mean"].clone();
    assert_eq!(
        stats(1),
        start["body.1.running_mean"],
        "train_bn(false): statistics kept"
    );
    assert_ne!(stats(2), stats(1));
    // A tenth of the head's 0.1 at epoch 2, then ×1.5 per epoch.
    let lr: Vec<f64> = seen.backbone_lr.iter().map(|l| l.unwrap()).collect();
    for (got, want) in lr[2..].iter().zip([0.01, 0.015, 0.0225]) {
        assert!((got - want).abs() < 1e-12, "{lr:?}");
    }
}

#[test]
fn backbone_finetuning_trains_batch_norms_while_frozen_by_default() {
    let _one = serial::one_at_a_time();
    seed_everything(5);
    let mut net = Net::new(true, false);
    let start = values(&net);
    let (out, seen) = fit(&mut net, 1, None, Some(BackboneFinetuning::new("body", 1)));
    out.unwrap();
    assert_eq!(seen.tensors[0]["body.0.weight"], start["body.0.weight"]);
    assert_ne!(seen.tensors[0]["body.1.weight"], start["body.1.weight"]);
    assert_ne!(
        seen.tensors[0]["body.1.running_mean"],
        start["body.1.running_mean"]
    );
}

#[test]
fn mistakes_are_named() {
    let _one = serial::one_at_a_time();
    let mut net = Net::new(false, false);
    let err = fit(&mut net, 1, Some("neck"), None)
        .0
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("`neck` is no field of Net") && err.contains("body, head"),
        "{err}"
    );

    let mut net = Net::new(false, false);
    let cb = BackboneFinetuning::new("body", 1);
    let err = fit(&mut net, 1, None, Some(cb)).0.unwrap_err().to_string();
    assert!(
        err.contains("no parameter group of exactly `body`")
            && err.contains("Group::of([\"body\"])"),
        "{err}"
    );
}

/// Unfreezes the body at epoch 1 and records its weights after every batch.
struct Unfreezes(Rc<RefCell<Vec<Vec<f32>>>>);

impl Callback for Unfreezes {
    fn on_train_epoch_start(&mut self, trainer: &mut TrainerView) {
        match trainer.current_epoch() {
            0 => trainer.freeze("body"),
            _ => trainer.unfreeze("body"),
        }
    }
    fn with_weights(&mut self, trainer: &mut TrainerView, at: At, weights: &mut dyn Weights) {
        if at == At::TrainBatchEnd {
            match weights.values("body.0.weight") {
                Ok(v) => self.0.borrow_mut().push(v),
                Err(e) => trainer.fail(e),
            }
        }
    }
}

#[test]
fn an_unfrozen_parameter_counts_its_steps_from_its_first() {
    let _one = serial::one_at_a_time();
    seed_everything(7);
    let mut net = Net::new(false, true);
    let seen = Rc::new(RefCell::new(Vec::new()));
    let mut trainer = quiet::trainer()
        .max_epochs(2)
        .callback(Unfreezes(seen.clone()))
        .build()
        .unwrap();
    let train = DataLoader::new(InMemoryDataset::new(samples(16)), 8);
    trainer.fit_loaders(&mut net, train, None).unwrap();
    // Two batches frozen, then Adam's first step of the body: bias-corrected, each weight
    // moves by the rate (|m̂ / √v̂| = 1 on a first step), as PyTorch's step 1 of a new group.
    let seen = seen.borrow();
    assert_eq!(seen[0], seen[1], "frozen in epoch 0");
    for (before, after) in seen[1].iter().zip(&seen[2]) {
        let moved = (after - before).abs();
        assert!(
            (moved - 0.01).abs() < 1e-4,
            "moved {moved}, not the rate 0.01"
        );
    }
}

//! fulmen's fused `BatchNorm2D` against PyTorch and against finite differences.
//!
//! `tests/fixtures/batchnorm2d.json` holds torch 2.15's `nn.BatchNorm2d` training step (output,
//! gradients, running statistics) and evaluation output for fixed inputs (`batchnorm2d.py`
//! beside it made it).

#[path = "support/quiet.rs"]
mod quiet;

use fulmen::prelude::*;
use fulmen::serde_json::Value;

#[path = "support/fixtures.rs"]
mod fixtures;
use fixtures::{dims, floats};

fn close(got: &[f32], want: &[f32], what: &str) {
    fixtures::close(got, want, 1e-4, what)
}

fn shape4(v: &Value) -> (usize, Const<4>, usize, usize) {
    let s = dims(v);
    assert_eq!(s[1], 4);
    (s[0], Const, s[2], s[3])
}

#[module]
struct Norm {
    bn: BatchNorm2D<4>,
}

#[test]
fn training_and_evaluation_match_pytorch() {
    let case: Value =
        fulmen::serde_json::from_str(include_str!("fixtures/batchnorm2d.json")).unwrap();
    let dev = Cpu::default();
    let mut norm = Norm::build(&dev);
    norm.bn.weight.copy_from(&floats(&case["weight"]));
    norm.bn.bias.copy_from(&floats(&case["bias"]));
    let x: Tensor<(usize, Const<4>, usize, usize), f32, Cpu> =
        dev.tensor_from_vec(floats(&case["x"]), shape4(&case["x_shape"]));
    let dy = dev.tensor_from_vec(floats(&case["dy"]), shape4(&case["x_shape"]));

    let y = norm.bn.forward_mut(x.clone().traced(Gradients::leaky()));
    close(&y.as_vec(), &floats(&case["y"]), "y");
    let grads = (y * dy).sum().backward();
    close(&grads.get(&x).as_vec(), &floats(&case["dx"]), "dx");
    close(
        &grads.get(&norm.bn.weight).as_vec(),
        &floats(&case["dweight"]),
        "dweight",
    );
    close(
        &grads.get(&norm.bn.bias).as_vec(),
        &floats(&case["dbias"]),
        "dbias",
    );
    close(
        &norm.bn.running_mean.as_vec(),
        &floats(&case["running_mean"]),
        "running_mean",
    );
    close(
        &norm.bn.running_var.as_vec(),
        &floats(&case["running_var"]),
        "running_var (unbiased)",
    );

    let x_eval = dev.tensor_from_vec(floats(&case["x_eval"]), shape4(&case["x_eval_shape"]));
    close(
        &norm.bn.forward(x_eval).as_vec(),
        &floats(&case["y_eval"]),
        "y_eval",
    );
}

type Bn = fulmen::layers::batchnorm2d::modules::BatchNorm2D<4, f64, Cpu>;

#[test]
fn gradients_match_finite_differences() {
    let dev = Cpu::seed_from_u64(5);
    let mut bn: Bn = Norm::build(&dev).bn;
    bn.weight = dev.sample_normal();
    bn.bias = dev.sample_normal();
    let shape = (3, Const::<4>, 2, 3);
    let x: Tensor<(usize, Const<4>, usize, usize), f64, Cpu> = dev.sample_normal_like(&shape);
    // A loss that weighs every output differently (a plain sum of a batch norm's output has
    // no gradient for its input).
    let weights: Vec<f64> = (0..x.shape().num_elements())
        .map(|i| ((i * 7) % 11) as f64 - 5.0)
        .collect();
    let weights = dev.tensor_from_vec(weights, shape);
    let probe = |bn: &Bn, x: Vec<f64>| -> f64 {
        let mut bn = bn.clone();
        let x = dev.tensor_from_vec(x, shape);
        let y = bn.forward_mut(x.traced(bn.alloc_grads()));
        (y * weights.clone()).sum::<Rank0, _>().array()
    };
    let y = bn.clone().forward_mut(x.clone().traced(Gradients::leaky()));
    let grads = (y * weights.clone()).sum().backward();
    let eps = 1e-6;
    let check = |analytic: Vec<f64>, values: Vec<f64>, f: &dyn Fn(Vec<f64>) -> f64, what: &str| {
        for (i, a) in analytic.iter().enumerate() {
            let (mut up, mut down) = (values.clone(), values.clone());
            up[i] += eps;
            down[i] -= eps;
            let n = (f(up) - f(down)) / (2.0 * eps);
            assert!(
                (a - n).abs() < 1e-5 * (1.0 + n.abs()),
                "{what}[{i}]: {a} vs {n}"
            );
        }
    };
    check(grads.get(&x).as_vec(), x.as_vec(), &|v| probe(&bn, v), "dx");
    let with = |set: &dyn Fn(&mut Bn, Vec<f64>), v: Vec<f64>| {
        let mut b = bn.clone();
        set(&mut b, v);
        probe(&b, x.as_vec())
    };
    check(
        grads.get(&bn.weight).as_vec(),
        bn.weight.as_vec(),
        &|v| with(&|b, v| b.weight.copy_from(&v), v),
        "dweight",
    );
    check(
        grads.get(&bn.bias).as_vec(),
        bn.bias.as_vec(),
        &|v| with(&|b, v| b.bias.copy_from(&v), v),
        "dbias",
    );
}

#[test]
fn one_value_per_channel_is_refused_naming_the_layer() {
    let dev = Cpu::default();
    let mut norm = Norm::<f32, Cpu>::build(&dev);
    let x: Tensor<(usize, Const<4>, usize, usize), f32, Cpu> = dev.zeros_like(&(1, Const, 1, 1));
    let err = norm
        .bn
        .train_forward(x.leaky_traced())
        .unwrap_err()
        .to_string();
    assert!(err.contains("BatchNorm2D"), "{err}");
    assert!(err.contains("more than one value per channel"), "{err}");
}

#[lightning_module]
struct TinyBnNet {
    conv: fulmen::layers::Conv2DNoBias<3, 4, 3, 1, 1>,
    bn: BatchNorm2D<4>,
    head: Linear<4, 2>,
}

#[lightning_module]
impl TinyBnNet {
    fn training_step(
        &mut self,
        (x, y): fulmen::data::ImageBatch<3, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let h = self.bn.forward_mut(self.conv.forward(ctx.trace(x))).relu();
        let logits = self
            .head
            .forward(h.mean::<(usize, Const<4>), Axes2<2, 3>>());
        cross_entropy_with_logits_loss(logits, y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.01)
    }
}

/// The running statistics after two epochs of 4 batches in `precision`, and the batches
/// counted.
fn running_stats(precision: &str) -> (Vec<f32>, Vec<f32>, u64) {
    use fulmen::data::Image;
    seed_everything(7);
    let samples: Vec<(Image<3>, Class<2>)> = (0..32)
        .map(|i| {
            let pixels = (0..3 * 5 * 5)
                .map(|p| ((i * 31 + p * 7) % 17) as f32 / 4.0 - 1.0)
                .collect();
            (
                Image::new(pixels, 5, 5).unwrap(),
                Class::new(i % 2).unwrap(),
            )
        })
        .collect();
    let loader = DataLoader::new(InMemoryDataset::new(samples), 8);
    let mut model = TinyBnNet::new();
    quiet::trainer()
        .max_epochs(2)
        .precision(precision.parse().unwrap())
        .build()
        .unwrap()
        .fit_loaders(&mut model, loader, None)
        .unwrap();
    (
        model.bn.running_mean.as_vec(),
        model.bn.running_var.as_vec(),
        model.bn.num_batches_tracked,
    )
}

#[test]
fn running_statistics_survive_every_precision() {
    let (mean, var, counted) = running_stats("32-true");
    assert!(mean.iter().all(|m| *m != 0.0) && var.iter().all(|v| *v != 1.0));
    assert_eq!(counted, 8);
    for precision in ["64-true", "16-mixed"] {
        let (m, v, counted) = running_stats(precision);
        assert_eq!(counted, 8, "{precision}: the batches counted");
        for (got, want) in m.iter().chain(&v).zip(mean.iter().chain(&var)) {
            assert!(
                (got - want).abs() < 2e-2 * (1.0 + want.abs()),
                "{precision}: running statistic {got}, 32-true has {want}"
            );
        }
    }
}

#[path = "support/python.rs"]
mod python;

/// Trains `Norm` for `steps` batches through `forward_mut`, as a training step does.
fn trained_norm(steps: usize) -> Norm<f32, Cpu> {
    let dev = Cpu::seed_from_u64(3);
    let mut m = Norm::<f32, Cpu>::build(&dev);
    m.bn.epsilon = 1e-3;
    for _ in 0..steps {
        let x: Tensor<(usize, Const<4>, usize, usize), f32, Cpu> =
            dev.sample_normal_like(&(2, Const, 3, 3));
        let _ = m.bn.forward_mut(x.leaky_traced());
    }
    m
}

#[test]
fn a_checkpoint_has_pytorchs_keys_counts_batches_and_keeps_settings_in_its_header() {
    use fulmen::checkpoint::Checkpoint;
    let model = trained_norm(3);
    assert_eq!(model.bn.num_batches_tracked, 3);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("norm.ckpt");
    Checkpoint::of_module(&model, "Norm")
        .unwrap()
        .write(&path)
        .unwrap();
    let ckpt = Checkpoint::read(&path).unwrap();
    let names: Vec<&str> = ckpt.tensor_names().collect();
    assert_eq!(
        names,
        [
            "bn.bias",
            "bn.num_batches_tracked",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight"
        ]
    );
    assert_eq!(ckpt.tensor("bn.num_batches_tracked").unwrap(), [3.0]);
    // Loading restores the count and the settings (from the header) with the statistics.
    let mut fresh = Norm::<f32, Cpu>::build(&Cpu::default());
    ckpt.load_weights(&mut fresh).unwrap();
    assert_eq!(fresh.bn.num_batches_tracked, 3);
    assert_eq!(
        fresh.bn.epsilon, 1e-3,
        "exactly: the header holds it as f64"
    );
    assert_eq!(fresh.bn.running_var.as_vec(), model.bn.running_var.as_vec());

    // As PyTorch stores it: an int64 scalar beside float32 tensors.
    let Some(python) = python::with_module("safetensors.numpy") else {
        return;
    };
    let script =
        "import sys\nfrom safetensors.numpy import load_file\nw = load_file(sys.argv[1])\n\
        t = w['bn.num_batches_tracked']\nprint(t.dtype, t.shape, int(t), sorted(w))\n";
    let out = std::process::Command::new(&python)
        .args(["-c", script])
        .arg(&path)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        text.trim(),
        "int64 () 3 ['bn.bias', 'bn.num_batches_tracked', 'bn.running_mean', 'bn.running_var', 'bn.weight']"
    );
}

//! `Fused<T>` against the tuple `T` it fuses: the same tensor names (a checkpoint of one loads
//! into the other), and the same outputs, gradients and running statistics, bit for bit.

use fulmen::layers::{BatchNorm2D, Conv2DNoBias, Fused};
use fulmen::prelude::*;

type Layers = (
    Conv2DNoBias<3, 8, 3, 1, 1>,
    BatchNorm2D<8>,
    ReLU,
    (Conv2DNoBias<8, 16, 3, 2, 1>, BatchNorm2D<16>),
);

#[module]
struct Plain {
    net: Layers,
}

#[module]
struct Fast {
    net: Fused<Layers>,
}

type Imgs<const C: usize> = Tensor<(usize, Const<C>, usize, usize), f32, Cpu>;

fn bits(t: &[f32]) -> Vec<u32> {
    t.iter().map(|v| v.to_bits()).collect()
}

#[test]
fn fused_layers_train_bit_for_bit_as_the_tuple_and_share_its_checkpoints() {
    let dev = Cpu::seed_from_u64(3);
    let mut plain = Plain::build(&dev);
    let mut fast = Fast::build(&dev);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let path = dir.path().join("plain.safetensors");
    plain.save_safetensors(&path).expect("saved");
    fast.load_safetensors(&path)
        .expect("the fused module has the tuple's tensor names");

    let x: Imgs<3> = dev.sample_normal_like(&(6, Const, 11, 13));
    // Output weights that differ per element, so that no gradient cancels.
    let y_plain = plain.net.forward_mut(x.clone().leaky_traced());
    let y_fast = fast.net.forward_mut(x.clone().leaky_traced());
    assert_eq!(y_plain.shape(), y_fast.shape());
    assert_eq!(bits(&y_plain.as_vec()), bits(&y_fast.as_vec()));
    let n = y_plain.shape().num_elements();
    let w: Imgs<16> = dev.tensor_from_vec(
        (0..n).map(|i| (i % 7) as f32 - 2.0).collect(),
        *y_plain.shape(),
    );
    let g_plain = (y_plain * w.clone()).sum::<Rank0, _>().backward();
    let g_fast = (y_fast * w).sum::<Rank0, _>().backward();

    let (p, f) = (&plain.net, &fast.net.0);
    let pairs = [
        ("x", g_plain.get(&x).as_vec(), g_fast.get(&x).as_vec()),
        (
            "0.weight",
            g_plain.get(&p.0.weight).as_vec(),
            g_fast.get(&f.0.weight).as_vec(),
        ),
        (
            "1.weight",
            g_plain.get(&p.1.weight).as_vec(),
            g_fast.get(&f.1.weight).as_vec(),
        ),
        (
            "1.bias",
            g_plain.get(&p.1.bias).as_vec(),
            g_fast.get(&f.1.bias).as_vec(),
        ),
        (
            "3.0.weight",
            g_plain.get(&p.3 .0.weight).as_vec(),
            g_fast.get(&f.3 .0.weight).as_vec(),
        ),
        (
            "3.1.weight",
            g_plain.get(&p.3 .1.weight).as_vec(),
            g_fast.get(&f.3 .1.weight).as_vec(),
        ),
        (
            "3.1.bias",
            g_plain.get(&p.3 .1.bias).as_vec(),
            g_fast.get(&f.3 .1.bias).as_vec(),
        ),
    ];
    for (name, a, b) in pairs {
        assert!(a.iter().any(|v| *v != 0.0), "{name}: a gradient to compare");
        assert_eq!(bits(&a), bits(&b), "gradient of {name}");
    }
    for (a, b) in [
        (&p.1.running_mean, &f.1.running_mean),
        (&p.1.running_var, &f.1.running_var),
    ] {
        assert_eq!(bits(&a.as_vec()), bits(&b.as_vec()), "running statistics");
    }
    assert_eq!(
        bits(&p.3 .1.running_var.as_vec()),
        bits(&f.3 .1.running_var.as_vec())
    );

    // Evaluation runs the tuple itself.
    let e: Imgs<3> = dev.sample_normal_like(&(2, Const, 9, 9));
    assert_eq!(
        bits(&plain.net.forward(e.clone()).as_vec()),
        bits(&fast.net.forward(e).as_vec())
    );
}

#[test]
fn a_fused_layer_refusing_its_input_names_the_layer() {
    let dev = Cpu::default();
    let mut fast = Fast::build(&dev);
    // One value per channel: batch norm cannot train on it.
    let x: Imgs<3> = dev.sample_normal_like(&(1, Const, 1, 1));
    let err = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        fast.net.forward_mut(x.leaky_traced())
    }))
    .expect_err("refused");
    let msg = err.downcast_ref::<String>().cloned().unwrap_or_default();
    assert!(msg.contains("BatchNorm2D"), "{msg}");
    assert!(msg.contains("more than one value per channel"), "{msg}");
}

type Stage = (
    fulmen::layers::ResidualReLU<(
        (Conv2DNoBias<8, 8, 3, 1, 1>, BatchNorm2D<8>),
        ReLU,
        (Conv2DNoBias<8, 8, 3, 1, 1>, BatchNorm2D<8>),
    )>,
    fulmen::layers::GeneralizedResidualReLU<
        (
            (Conv2DNoBias<8, 16, 3, 2, 1>, BatchNorm2D<16>),
            ReLU,
            (Conv2DNoBias<16, 16, 3, 1, 1>, BatchNorm2D<16>),
        ),
        (Conv2DNoBias<8, 16, 1, 2, 0>, BatchNorm2D<16>),
    >,
);

#[module]
struct PlainStage {
    net: Stage,
}

#[module]
struct FastStage {
    net: Fused<Stage>,
}

/// A whole stage of residual blocks as one op: one SGD step leaves every tensor (weights and
/// running statistics) bit for bit as the plain stage's, and the input's gradient too.
#[test]
fn a_fused_residual_stage_steps_bit_for_bit_as_the_plain_one() {
    let dev = Cpu::seed_from_u64(8);
    let mut plain = PlainStage::build(&dev);
    let mut fast = FastStage::build(&dev);
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (a, b) = (dir.path().join("a"), dir.path().join("b"));
    plain.save_safetensors(&a).expect("saved");
    fast.load_safetensors(&a).expect("the same names");
    let before = std::fs::read(&a).expect("read");

    let x: Imgs<8> = dev.sample_normal_like(&(4, Const, 9, 10));
    let step = |y: fulmen::layers::Images<16, f32, Cpu, OwnedTape<f32, Cpu>>| {
        let n = y.shape().num_elements();
        let w: Imgs<16> =
            dev.tensor_from_vec((0..n).map(|i| (i % 5) as f32 - 1.0).collect(), *y.shape());
        (y * w).sum::<Rank0, _>().backward()
    };
    let mut g_plain = step(plain.net.forward_mut(x.clone().leaky_traced()));
    let mut g_fast = step(fast.net.forward_mut(x.clone().leaky_traced()));
    assert_eq!(
        bits(&g_plain.get(&x).as_vec()),
        bits(&g_fast.get(&x).as_vec()),
        "the input's gradient"
    );
    let sgd = || fulmen::optim::Optimizer::<f32>::new(Optim::sgd(0.1)).expect("valid settings");
    sgd().step(&mut plain, &mut g_plain).expect("a step");
    sgd().step(&mut fast, &mut g_fast).expect("a step");
    plain.save_safetensors(&a).expect("saved");
    fast.save_safetensors(&b).expect("saved");
    let after = std::fs::read(&a).expect("read");
    assert_ne!(before, after, "the step moved the weights");
    assert_eq!(
        after,
        std::fs::read(&b).expect("read"),
        "every tensor after one step"
    );
}

//! The stable-Rust 2-D convolution against PyTorch and against finite differences.
//!
//! `tests/fixtures/conv2d.json` holds torch 2.15's `F.conv2d` outputs and gradients for fixed
//! inputs (`conv2d.py` beside it made it): padding, stride on a non-square input, dilation,
//! groups, depthwise, a 1×1 downsample without bias and a 7×7 stem.

use fulmen::layers::{conv2d, ConvOptions, Dyn4};
use fulmen::prelude::*;
use fulmen::serde_json::Value;

#[path = "support/fixtures.rs"]
mod fixtures;
use fixtures::{dims, floats};
#[path = "support/instruction_sets.rs"]
mod instruction_sets;

fn close(got: &[f32], want: &[f32], what: &str) {
    fixtures::close(got, want, 1e-4, what)
}

fn shape4(v: &Value) -> (usize, usize, usize, usize) {
    let s = dims(v);
    (s[0], s[1], s[2], s[3])
}

#[test]
fn forward_and_gradients_match_pytorch() {
    let cases: Value = fulmen::serde_json::from_str(include_str!("fixtures/conv2d.json")).unwrap();
    let dev = Cpu::default();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let opts = ConvOptions {
            stride: case["stride"].as_u64().unwrap() as usize,
            padding: case["padding"].as_u64().unwrap() as usize,
            dilation: case["dilation"].as_u64().unwrap() as usize,
            groups: case["groups"].as_u64().unwrap() as usize,
        };
        let x: Dyn4<f32> = dev.tensor_from_vec(floats(&case["x"]), shape4(&case["x_shape"]));
        let w: Dyn4<f32> = dev.tensor_from_vec(floats(&case["w"]), shape4(&case["w_shape"]));
        let b = case["b"]
            .as_array()
            .map(|_| dev.tensor_from_vec(floats(&case["b"]), (shape4(&case["w_shape"]).0,)));
        let y_shape = shape4(&case["y_shape"]);
        let dy: Dyn4<f32> = dev.tensor_from_vec(floats(&case["dy"]), y_shape);

        let grads = Gradients::leaky();
        let y = conv2d(x.clone().traced(grads), &w, b.as_ref(), opts).unwrap();
        assert_eq!(*y.shape(), y_shape, "{name}: output shape");
        close(&y.as_vec(), &floats(&case["y"]), &format!("{name} y"));
        // d(sum(y · dy))/dy = dy: backward hands PyTorch's dy to the convolution.
        let grads = (y * dy).sum().backward();
        close(
            &grads.get(&x).as_vec(),
            &floats(&case["dx"]),
            &format!("{name} dx"),
        );
        close(
            &grads.get(&w).as_vec(),
            &floats(&case["dw"]),
            &format!("{name} dw"),
        );
        if let Some(b) = &b {
            close(
                &grads.get(b).as_vec(),
                &floats(&case["db"]),
                &format!("{name} db"),
            );
        }
    }
}

#[test]
fn gradients_match_finite_differences() {
    // One case per way the kernel lays out its columns: im2col (stride 2, groups), the padded
    // image (stride 1, dilation), the image itself (1×1).
    let cases = [(3, (2, 1, 1, 2)), (3, (1, 2, 2, 1)), (1, (1, 0, 1, 1))];
    for (k, (stride, padding, dilation, groups)) in cases {
        let opts = ConvOptions {
            stride,
            padding,
            dilation,
            groups,
        };
        finite_differences(k, opts);
    }
}

fn finite_differences(k: usize, opts: ConvOptions) {
    let dev = Cpu::seed_from_u64(3);
    // Five images: the kernel multiplies several small ones side by side.
    let x: Dyn4<f64> = dev.sample_normal_like(&(5, 4, 6, 5));
    let w: Dyn4<f64> = dev.sample_normal_like(&(2, 4 / opts.groups, k, k));
    let b: Tensor<(usize,), f64, Cpu> = dev.sample_normal_like(&(2,));
    // A loss that weighs every output differently, so that no gradient cancels by symmetry.
    let probe = |x: &Dyn4<f64>, w: &Dyn4<f64>, b: &Tensor<(usize,), f64, Cpu>| -> f64 {
        let y = conv2d(x.clone(), w, Some(b), opts).unwrap();
        y.as_vec()
            .iter()
            .enumerate()
            .map(|(i, v)| v * ((i % 7) as f64 - 3.0))
            .sum()
    };
    let y = conv2d(x.clone().traced(Gradients::leaky()), &w, Some(&b), opts).unwrap();
    let weights: Vec<f64> = (0..y.shape().0 * y.shape().1 * y.shape().2 * y.shape().3)
        .map(|i| (i % 7) as f64 - 3.0)
        .collect();
    let weights: Dyn4<f64> = dev.tensor_from_vec(weights, *y.shape());
    let grads = (y * weights).sum().backward();
    let eps = 1e-6;
    let numeric = |values: &[f64], rebuild: &dyn Fn(Vec<f64>) -> f64| -> Vec<f64> {
        (0..values.len())
            .map(|i| {
                let mut up = values.to_vec();
                up[i] += eps;
                let mut down = values.to_vec();
                down[i] -= eps;
                (rebuild(up) - rebuild(down)) / (2.0 * eps)
            })
            .collect()
    };
    let check = |analytic: Vec<f64>, numeric: Vec<f64>, what: &str| {
        for (i, (a, n)) in analytic.iter().zip(&numeric).enumerate() {
            assert!(
                (a - n).abs() < 1e-6 * (1.0 + n.abs()),
                "{what}[{i}] with {opts:?}: {a} vs {n}"
            );
        }
    };
    let shape_x = *x.shape();
    check(
        grads.get(&x).as_vec(),
        numeric(&x.as_vec(), &|v| {
            probe(&dev.tensor_from_vec(v, shape_x), &w, &b)
        }),
        "dx",
    );
    let shape_w = *w.shape();
    check(
        grads.get(&w).as_vec(),
        numeric(&w.as_vec(), &|v| {
            probe(&x, &dev.tensor_from_vec(v, shape_w), &b)
        }),
        "dw",
    );
    check(
        grads.get(&b).as_vec(),
        numeric(&b.as_vec(), &|v| {
            probe(&x, &w, &dev.tensor_from_vec(v, (2,)))
        }),
        "db",
    );
}

#[test]
fn impossible_geometry_is_an_error_naming_it() {
    let dev = Cpu::default();
    let x: Dyn4<f32> = dev.zeros_like(&(1, 3, 2, 2));
    let w: Dyn4<f32> = dev.zeros_like(&(4, 3, 3, 3));
    let err = conv2d(x.clone(), &w, None, ConvOptions::default())
        .unwrap_err()
        .to_string();
    assert!(err.contains("kernel_size") && err.contains("2×2"), "{err}");
    let grouped = ConvOptions {
        groups: 2,
        padding: 1,
        ..ConvOptions::default()
    };
    let err = conv2d(x, &w, None, grouped).unwrap_err().to_string();
    assert!(err.contains("groups"), "{err}");
}

#[lightning_module]
struct TinyCnn {
    conv1: fulmen::layers::Conv2D<3, 8, 3, 1, 1>,
    conv2: fulmen::layers::Conv2DNoBias<8, 4, 3, 2, 1, 2>,
    bn: BatchNorm2D<4>,
}

#[lightning_module]
impl TinyCnn {
    fn training_step(
        &mut self,
        (x, y): (Tensor<(usize, Const<3>, usize, usize), E, D>, Labels<4, D>),
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let h = self.conv2.forward(self.conv1.forward(ctx.trace(x)).relu());
        let logits = self
            .bn
            .forward_mut(h)
            .mean::<(usize, Const<4>), Axes2<2, 3>>();
        cross_entropy_with_logits_loss(logits, y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1).momentum(0.9)
    }
}

#[test]
fn conv_layers_work_inside_a_lightning_module() {
    let model = TinyCnn::new();
    // conv1 weight and bias, conv2 weight (no bias), the batch norm's scale and shift.
    assert_eq!(
        model.num_trainable_params(),
        3 * 8 * 9 + 8 + 8 * 4 * 9 + 4 + 4
    );
    let bound = 1.0 / ((3 * 9) as f32).sqrt();
    assert!(model.conv1.weight.as_vec().iter().all(|w| w.abs() <= bound));
    let dev = Cpu::seed_from_u64(0);
    let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
        dev.sample_normal_like(&(2, Const, 9, 7));
    let h = model
        .conv2
        .forward(model.conv1.forward(x.traced(model.alloc_grads())).relu());
    // conv2: span 2·(3-1)+1 = 5; (9 + 2 - 5)/2 + 1 = 4 rows, (7 + 2 - 5)/2 + 1 = 3 columns.
    assert_eq!(
        *h.shape(),
        (2, Const::<4>, 4, 3),
        "stride 2, dilation 2, padding 1"
    );
    let grads = h.mean().backward();
    for g in [
        grads.get(&model.conv1.weight).as_vec(),
        grads.get(&model.conv2.weight).as_vec(),
    ] {
        assert!(g.iter().any(|v| *v != 0.0), "gradients reach both layers");
    }
    let names: Vec<String> = fulmen::checkpoint::Checkpoint::of_module(&model, "TinyCnn")
        .unwrap()
        .tensor_names()
        .map(String::from)
        .collect();
    // PyTorch's state_dict keys, so that `load_state_dict(strict=True)` takes the file.
    assert_eq!(
        names,
        [
            "bn.bias",
            "bn.num_batches_tracked",
            "bn.running_mean",
            "bn.running_var",
            "bn.weight",
            "conv1.bias",
            "conv1.weight",
            "conv2.weight"
        ]
    );
}

#[module]
struct Grouped {
    grouped: fulmen::layers::Conv2D<4, 6, 3, 1, 1, 1, 2>,
    depthwise: fulmen::layers::DepthwiseConv2D<6, 3, 2, 1>,
}

#[test]
fn grouped_layers_have_pytorchs_weight_shape_and_compute_the_grouped_op() {
    let dev = Cpu::seed_from_u64(9);
    let net = Grouped::<f32, Cpu>::build(&dev);
    assert_eq!(
        net.grouped.weight.shape().concrete(),
        [6, 2, 3, 3],
        "[OUT, IN / groups, K, K]"
    );
    assert_eq!(net.depthwise.weight.shape().concrete(), [6, 1, 3, 3]);
    let bound = 1.0 / ((2 * 9) as f32).sqrt();
    assert!(net.grouped.weight.as_vec().iter().all(|w| w.abs() <= bound));
    let x: Tensor<(usize, Const<4>, usize, usize), f32, Cpu> =
        dev.sample_normal_like(&(2, Const, 5, 5));
    let y = net.depthwise.forward(net.grouped.forward(x.clone()));
    let by_op = |x: Dyn4<f32>, w: Dyn4<f32>, b, groups, stride| {
        let opts = ConvOptions {
            stride,
            padding: 1,
            dilation: 1,
            groups,
        };
        conv2d(x, &w, Some(&b), opts).unwrap()
    };
    let realize = |t: Tensor<(Const<6>, Const<2>, Const<3>, Const<3>), f32, Cpu>| {
        t.realize::<(usize, usize, usize, usize)>()
    };
    let h = by_op(
        x.realize(),
        realize(net.grouped.weight.clone()),
        net.grouped.bias.clone().realize(),
        2,
        1,
    );
    let want = by_op(
        h,
        net.depthwise.weight.clone().realize(),
        net.depthwise.bias.clone().realize(),
        6,
        2,
    );
    assert_eq!(y.as_vec(), want.as_vec());
    assert_eq!(y.shape().2, 3, "stride 2");
}

/// f32 convolutions take the fastest kernel the CPU has (AVX-512 implicit GEMM where present);
/// f64 ones the portable im2col kernel that the PyTorch fixtures and finite differences check.
/// The two agree on outputs and all gradients across the geometries that choose the paths:
/// stride 1 with and without padding, 1×1, strided, dilated, odd sizes, channel counts that
/// do not fill a tile, reductions deeper than one pass, more images than threads, products
/// over several images whose strips cut a row, padding wider than the kernel (portable path)
/// and groups.
#[test]
fn f32_kernels_agree_with_the_f64_kernel_across_geometries() {
    // (batch, c_in, c_out, h, w, k, stride, padding, dilation, groups)
    let cases = [
        (3, 16, 16, 32, 32, 3, 1, 1, 1, 1),
        (2, 3, 16, 9, 7, 3, 1, 1, 1, 1),
        (3, 5, 11, 6, 13, 3, 1, 0, 1, 1),
        (5, 4, 9, 8, 8, 1, 1, 0, 1, 1),
        (2, 4, 8, 9, 9, 3, 2, 1, 1, 1),
        (3, 4, 12, 8, 10, 1, 2, 0, 1, 1),
        (1, 3, 10, 15, 15, 7, 2, 3, 1, 1),
        (2, 6, 7, 10, 9, 3, 1, 2, 2, 1),
        (2, 4, 6, 7, 7, 5, 1, 2, 1, 1),
        (9, 20, 40, 5, 5, 3, 1, 1, 1, 1),
        (1, 600, 8, 4, 4, 3, 1, 1, 1, 1),
        (1, 8, 600, 4, 4, 3, 1, 1, 1, 1),
        (2, 300, 9, 5, 5, 3, 2, 1, 1, 1),
        (2, 3, 5, 11, 9, 3, 3, 2, 2, 1),
        (2, 4, 6, 10, 10, 5, 2, 2, 1, 1),
        (3, 2, 4, 7, 6, 2, 2, 0, 1, 1),
        (1, 3, 5, 6, 6, 3, 1, 3, 1, 1),
        (2, 4, 6, 6, 6, 3, 1, 1, 1, 2),
        // Several images' output rows in one packed product (64 rows or more), its strips
        // cut inside a row, with reductions deeper than one pass: 3×3 and 1×1, both ways.
        (6, 70, 66, 11, 13, 3, 1, 1, 1, 1),
        (16, 600, 24, 6, 6, 1, 1, 0, 1, 1),
        (16, 24, 80, 6, 6, 1, 1, 0, 1, 1),
        // A weight gradient as one product (128 output channels or more) over images of 25
        // pixels: the taps' 8 × 8 blocks and their edges.
        (3, 10, 130, 5, 5, 3, 1, 1, 1, 1),
    ];
    let dev = Cpu::seed_from_u64(7);
    for (n, c_in, c_out, h, w, k, stride, padding, dilation, groups) in cases {
        let what = format!("{n}x{c_in}x{h}x{w} -> {c_out}, {k}x{k} stride {stride} padding {padding} dilation {dilation} groups {groups}");
        let opts = ConvOptions {
            stride,
            padding,
            dilation,
            groups,
        };
        let x64: Dyn4<f64> = dev.sample_normal_like(&(n, c_in, h, w));
        let w64: Dyn4<f64> = dev.sample_normal_like(&(c_out, c_in / groups, k, k));
        let b64: Tensor<(usize,), f64, Cpu> = dev.sample_normal_like(&(c_out,));
        let y64 = conv2d(
            x64.clone().traced(Gradients::leaky()),
            &w64,
            Some(&b64),
            opts,
        )
        .unwrap();
        let dy64: Dyn4<f64> = dev.sample_normal_like(y64.shape());
        let grads64 = (y64 * dy64.clone()).sum().backward();

        let to32 = |t: &Dyn4<f64>| -> Dyn4<f32> {
            dev.tensor_from_vec(t.as_vec().iter().map(|&v| v as f32).collect(), *t.shape())
        };
        let (x32, w32, dy32) = (to32(&x64), to32(&w64), to32(&dy64));
        let b32: Tensor<(usize,), f32, Cpu> =
            dev.tensor_from_vec(b64.as_vec().iter().map(|&v| v as f32).collect(), (c_out,));
        let y32 = conv2d(
            x32.clone().traced(Gradients::leaky()),
            &w32,
            Some(&b32),
            opts,
        )
        .unwrap();
        let y32_values = y32.as_vec();
        let grads32 = (y32 * dy32).sum().backward();

        let near = |got: Vec<f32>, want: Vec<f64>, part: &str| {
            assert_eq!(got.len(), want.len(), "{what}: {part} length");
            let scale = want.iter().fold(0f64, |m, v| m.max(v.abs()));
            for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                assert!(
                    (*g as f64 - w).abs() <= 1e-5 * (1.0 + scale) + 1e-4 * w.abs(),
                    "{what}: {part}[{i}] is {g} in f32, {w} in f64"
                );
            }
        };
        let y64_values = conv2d(x64.clone(), &w64, Some(&b64), opts)
            .unwrap()
            .as_vec();
        near(y32_values, y64_values, "y");
        near(grads32.get(&x32).as_vec(), grads64.get(&x64).as_vec(), "dx");
        near(grads32.get(&w32).as_vec(), grads64.get(&w64).as_vec(), "dw");
        near(grads32.get(&b32).as_vec(), grads64.get(&b64).as_vec(), "db");
    }
    instruction_sets::again_on_narrower_instruction_sets(
        "f32_kernels_agree_with_the_f64_kernel_across_geometries",
    );
}

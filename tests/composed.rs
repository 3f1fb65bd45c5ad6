//! The layers' op families computed by the composed kernels (`fulmen::kernels::Composed`, what
//! CUDA runs) agree with the host kernels (what the CPU runs, themselves checked against
//! PyTorch) in values and in every gradient, in f64 on the CPU, so that the GPU path is checked
//! in every CI run. Each test runs one function generic over the implementation, once with each.

use fulmen::kernels::{Composed, Conv, Dense, Host, Norm, Pool};
use fulmen::layers::{ConvGeom, ConvOptions, Dyn4, Images, PoolKind};
use fulmen::prelude::*;

#[path = "support/instruction_sets.rs"]
mod instruction_sets;

fn close(got: &[f64], want: &[f64], what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: lengths");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= 1e-9 * (1.0 + w.abs()),
            "{what}[{i}]: {g} vs {w}"
        );
    }
}

/// A weighted sum of the output (weights from a fixed pattern), whose gradient reaches every
/// input with a different value.
fn probe<S: Shape, T: Tape<f64, Cpu>>(y: Tensor<S, f64, Cpu, T>) -> Tensor<Rank0, f64, Cpu, T> {
    let n = y.shape().num_elements();
    let w: Vec<f64> = (0..n).map(|i| ((i * 37) % 11) as f64 / 7.0 - 0.6).collect();
    let w = y.device().tensor_from_vec(w, *y.shape());
    (y * w).sum()
}

#[test]
fn convolution_matches_the_host_kernel() {
    let dev = Cpu::seed_from_u64(4);
    // (batch, in, h, w, out, kernel, stride, padding, dilation, bias)
    let cases = [
        (2, 3, 7, 6, 4, 3, 1, 1, 1, true),
        (2, 3, 9, 8, 5, 3, 2, 1, 1, false),
        (3, 4, 5, 5, 6, 1, 1, 0, 1, true),
        (2, 4, 7, 7, 3, 1, 2, 0, 1, false),
        (1, 3, 12, 11, 2, 7, 2, 3, 1, false),
        (2, 2, 9, 9, 3, 3, 1, 2, 2, true),
    ];
    for (n, c, h, w, oc, k, s, p, d, with_bias) in cases {
        let what = format!("conv {n}x{c}x{h}x{w} -> {oc}, k{k} s{s} p{p} d{d}");
        let x: Dyn4<f64, Cpu> = dev.sample_normal_like(&(n, c, h, w));
        let weight: Dyn4<f64, Cpu> = dev.sample_normal_like(&(oc, c, k, k));
        let bias: Tensor<(usize,), f64, Cpu> = dev.sample_normal_like(&(oc,));
        let bias = with_bias.then_some(&bias);
        let opts = ConvOptions {
            stride: s,
            padding: p,
            dilation: d,
            groups: 1,
        };
        let geom = ConvGeom {
            batch: n,
            c_in: c,
            h,
            w,
            c_out: oc,
            k,
            stride: s,
            padding: p,
            dilation: d,
            groups: 1,
        };
        assert_eq!(geom.options(), opts);
        let host = Host::conv2d(x.clone().leaky_traced(), &weight, bias, &geom).expect("host");
        let ours = Composed::conv2d(x.clone().leaky_traced(), &weight, bias, &geom).expect("ours");
        assert_eq!(host.shape(), ours.shape(), "{what}");
        close(&ours.as_vec(), &host.as_vec(), &what);
        let (gh, go) = (probe(host).backward(), probe(ours).backward());
        close(
            &go.get(&x).as_vec(),
            &gh.get(&x).as_vec(),
            &format!("{what} dx"),
        );
        close(
            &go.get(&weight).as_vec(),
            &gh.get(&weight).as_vec(),
            &format!("{what} dw"),
        );
        if let Some(b) = bias {
            close(
                &go.get(b).as_vec(),
                &gh.get(b).as_vec(),
                &format!("{what} db"),
            );
        }
    }
}

#[test]
fn pooling_matches_the_host_kernel() {
    let dev = Cpu::seed_from_u64(5);
    // (kind, kernel, stride, padding, h, w)
    let cases = [
        (PoolKind::Max, 2, 2, 0, 8, 6),
        (PoolKind::Max, 3, 2, 1, 9, 7),
        (PoolKind::Avg, 2, 2, 0, 6, 6),
        (PoolKind::Avg, 3, 1, 1, 5, 7),
    ];
    for (kind, k, s, p, h, w) in cases {
        let what = format!("{kind:?} pool k{k} s{s} p{p} on {h}x{w}");
        let x: Images<3, f64, Cpu> = dev.sample_normal_like(&(2, Const, h, w));
        let host = Host::pool2d(x.clone().leaky_traced(), kind, k, s, p).expect("host pool");
        let ours = Composed::pool2d(x.clone().leaky_traced(), kind, k, s, p).expect("our pool");
        assert_eq!(host.shape(), ours.shape(), "{what}");
        close(&ours.as_vec(), &host.as_vec(), &what);
        let (gh, go) = (probe(host).backward(), probe(ours).backward());
        close(
            &go.get(&x).as_vec(),
            &gh.get(&x).as_vec(),
            &format!("{what} dx"),
        );
    }
    for (h, w, oh, ow) in [(7, 5, 3, 2), (4, 4, 1, 1), (3, 5, 6, 7)] {
        let what = format!("adaptive {h}x{w} -> {oh}x{ow}");
        let x: Images<2, f64, Cpu> = dev.sample_normal_like(&(3, Const, h, w));
        let host = Host::adaptive_avg_pool2d(x.clone().leaky_traced(), oh, ow).expect("host");
        let ours = Composed::adaptive_avg_pool2d(x.clone().leaky_traced(), oh, ow).expect("ours");
        close(&ours.as_vec(), &host.as_vec(), &what);
        let (gh, go) = (probe(host).backward(), probe(ours).backward());
        close(
            &go.get(&x).as_vec(),
            &gh.get(&x).as_vec(),
            &format!("{what} dx"),
        );
    }
}

#[test]
fn batch_norm_matches_the_host_kernel() {
    let dev = Cpu::seed_from_u64(6);
    let mut bn: fulmen::layers::batchnorm2d::modules::BatchNorm2D<4, f64, Cpu> =
        BuildModule::build(&dev);
    bn.weight = dev.sample_normal();
    bn.bias = dev.sample_normal();
    let x: Images<4, f64, Cpu> = dev.sample_normal_like(&(3, Const, 5, 6));
    let x = x * 2.0 + 0.5;
    let train = |kernels: &str| {
        let x = x.clone().leaky_traced();
        let (y, mean, var) = match kernels {
            "host" => Host::batch_norm_train(x, &bn.weight, &bn.bias, bn.epsilon),
            _ => Composed::batch_norm_train(x, &bn.weight, &bn.bias, bn.epsilon),
        }
        .expect("batch norm");
        let y_values = y.as_vec();
        (y_values, mean.as_vec(), var.as_vec(), probe(y).backward())
    };
    let (host, host_mean, host_var, gh) = train("host");
    let (ours, mean, var, go) = train("composed");
    close(&ours, &host, "train y");
    close(&mean, &host_mean, "batch mean");
    close(&var, &host_var, "batch variance (biased)");
    let m = (3 * 5 * 6) as f64;
    let values = x.as_vec();
    let want_mean = (0..3 * 30)
        .map(|i| values[(i / 30) * 120 + i % 30])
        .sum::<f64>()
        / m;
    assert!(
        (host_mean[0] - want_mean).abs() < 1e-9,
        "the first channel's mean"
    );
    close(&go.get(&x).as_vec(), &gh.get(&x).as_vec(), "train dx");
    close(
        &go.get(&bn.weight).as_vec(),
        &gh.get(&bn.weight).as_vec(),
        "dweight",
    );
    close(
        &go.get(&bn.bias).as_vec(),
        &gh.get(&bn.bias).as_vec(),
        "dbias",
    );
    // The layer moves its running statistics 10% of the way to the batch's, the variance
    // unbiased, whichever kernels computed them.
    let mut layer = bn.clone();
    layer
        .train_forward(x.clone().leaky_traced())
        .expect("the layer");
    let want_mean: Vec<f64> = mean.iter().map(|v| 0.1 * v).collect();
    let want_var: Vec<f64> = var.iter().map(|v| 0.9 + 0.1 * v * m / (m - 1.0)).collect();
    close(&layer.running_mean.as_vec(), &want_mean, "running mean");
    close(&layer.running_var.as_vec(), &want_var, "running variance");

    let stats: Tensor<Rank1<4>, f64, Cpu> = dev.tensor([0.5, -0.25, 1.0, 2.0]);
    let var: Tensor<Rank1<4>, f64, Cpu> = dev.tensor([1.5, 0.25, 2.0, 0.75]);
    let eval_host = Host::batch_norm_eval(x.clone(), &stats, &var, &bn.weight, &bn.bias, 1e-5)
        .expect("host eval");
    let eval_ours = Composed::batch_norm_eval(x, &stats, &var, &bn.weight, &bn.bias, 1e-5)
        .expect("composed eval");
    close(&eval_ours.as_vec(), &eval_host.as_vec(), "eval y");
}

/// In half precision (16-mixed's `AMP<f16>`: f16 storage) a channel's statistics over a CIFAR
/// batch (128 images of 32×32, 131,072 values) stay finite and close to f64's: one sum over
/// all of them would pass f16's largest value, 65,504, on its way to the mean square.
#[test]
fn batch_norm_statistics_stay_finite_in_half_precision() {
    type H = fulmen::device::Half;
    let dev = Cpu::seed_from_u64(7);
    let x: Images<2, f64, Cpu> = dev.sample_normal_like(&(128, Const, 32, 32));
    let x = x * 3.0 + 1.5;
    let values = x.as_vec();
    let half: Images<2, H, Cpu> = dev.tensor_from_vec(
        values
            .iter()
            .map(|v| fulmen::dfdx::dtypes::AMP(fulmen::dfdx::dtypes::f16::from_f64(*v)))
            .collect(),
        *x.shape(),
    );
    let weight: Tensor<Rank1<2>, H, Cpu> = dev.ones();
    let bias: Tensor<Rank1<2>, H, Cpu> = dev.zeros();
    let (y, mean, var) =
        Composed::batch_norm_train(half.leaky_traced(), &weight, &bias, 1e-5).expect("composed");
    let per_channel = 128 * 32 * 32;
    for c in 0..2 {
        let of_c = |b: usize| &values[(b * 2 + c) * 1024..(b * 2 + c + 1) * 1024];
        let want_mean = (0..128).flat_map(of_c).sum::<f64>() / per_channel as f64;
        let want_var = (0..128)
            .flat_map(of_c)
            .map(|v| (v - want_mean).powi(2))
            .sum::<f64>()
            / per_channel as f64;
        let (got_mean, got_var) = (mean.as_vec()[c].0.to_f64(), var.as_vec()[c].0.to_f64());
        assert!(
            (got_mean - want_mean).abs() < 1e-2,
            "mean {got_mean} vs {want_mean}"
        );
        assert!(
            (got_var / want_var - 1.0).abs() < 1e-2,
            "var {got_var} vs {want_var}"
        );
    }
    assert!(y.as_vec().iter().all(|v| v.0.is_finite()), "y is finite");
}

/// In half precision a convolution's bias is spread as batch norm's shift is (its gradient is a
/// matrix product, where a broadcast's would be a reduction that is slow in f16 on CUDA): the
/// output and the bias gradient agree with f64.
#[test]
fn a_convolution_bias_in_half_precision_gets_its_gradient() {
    type H = fulmen::device::Half;
    let half = |v: f64| fulmen::dfdx::dtypes::AMP(fulmen::dfdx::dtypes::f16::from_f64(v));
    let dev = Cpu::seed_from_u64(9);
    let (n, c, side, oc) = (8, 3, 16, 2);
    let x: Dyn4<f64, Cpu> = dev.sample_normal_like(&(n, c, side, side));
    let weight: Dyn4<f64, Cpu> = dev.sample_normal_like(&(oc, c, 1, 1));
    let bias: Tensor<(usize,), f64, Cpu> = dev.tensor_from_vec(vec![0.25, -1.5], (oc,));
    let in_half = |t: &Dyn4<f64, Cpu>| -> Dyn4<H, Cpu> {
        dev.tensor_from_vec(t.as_vec().into_iter().map(half).collect(), *t.shape())
    };
    let bias_h: Tensor<(usize,), H, Cpu> =
        dev.tensor_from_vec(bias.as_vec().into_iter().map(half).collect(), (oc,));
    let geom = ConvGeom {
        batch: n,
        c_in: c,
        h: side,
        w: side,
        c_out: oc,
        k: 1,
        stride: 1,
        padding: 0,
        dilation: 1,
        groups: 1,
    };
    let want =
        Composed::conv2d(x.clone().leaky_traced(), &weight, Some(&bias), &geom).expect("f64");
    let got = Composed::conv2d(
        in_half(&x).leaky_traced(),
        &in_half(&weight),
        Some(&bias_h),
        &geom,
    )
    .expect("half");
    let (w_vals, g_vals) = (want.as_vec(), got.as_vec());
    for (w, g) in w_vals.iter().zip(&g_vals) {
        assert!(
            (g.0.to_f64() - w).abs() < 2e-2 * (1.0 + w.abs()),
            "{g:?} vs {w}"
        );
    }
    // The mean of the output: each bias value's gradient is its share of the pixels, 1/oc.
    let grads = got.mean().backward();
    for g in grads.get(&bias_h).as_vec() {
        let g = g.0.to_f64();
        assert!((g - 1.0 / oc as f64).abs() < 1e-3, "bias gradient {g}");
    }
}

/// The dense layer in f32, where the host kernels multiply on AVX-512 or AVX2 (on a CPU
/// without them both sides are dfdx's ops), against dfdx's ops: values and every gradient, on
/// every instruction set.
#[test]
fn the_dense_layer_matches_dfdx() {
    fn case<const I: usize, const O: usize>(batch: usize, dev: &Cpu) {
        let what = format!("linear {batch}x{I} -> {O}");
        let x: Tensor<(usize, Const<I>), f32, Cpu> = dev.sample_normal_like(&(batch, Const));
        let w: Tensor<Rank2<O, I>, f32, Cpu> = dev.sample_normal();
        let b: Tensor<Rank1<O>, f32, Cpu> = dev.sample_normal();
        for bias in [Some(&b), None] {
            let host = Host::linear(x.clone().leaky_traced(), &w, bias).expect("host");
            let ours = Composed::linear(x.clone().leaky_traced(), &w, bias).expect("ours");
            let widen = |v: Vec<f32>| v.into_iter().map(f64::from).collect::<Vec<_>>();
            let near = |got: Vec<f32>, want: Vec<f32>, part: &str| {
                let (got, want) = (widen(got), widen(want));
                assert_eq!(got.len(), want.len());
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    let tol = 2e-5 * (1.0 + w.abs()) * (I.max(batch) as f64).sqrt();
                    assert!((g - w).abs() <= tol, "{what} {part}[{i}]: {g} vs {w}");
                }
            };
            near(host.as_vec(), ours.as_vec(), "y");
            let probe32 = |y: Tensor<(usize, Const<O>), f32, Cpu, OwnedTape<f32, Cpu>>| {
                let n = y.shape().num_elements();
                let p: Vec<f32> = (0..n).map(|i| ((i * 37) % 11) as f32 / 7.0 - 0.6).collect();
                let p = y.device().tensor_from_vec(p, *y.shape());
                (y * p).sum()
            };
            let (gh, go) = (probe32(host).backward(), probe32(ours).backward());
            near(gh.get(&x).as_vec(), go.get(&x).as_vec(), "dx");
            near(gh.get(&w).as_vec(), go.get(&w).as_vec(), "dw");
            if bias.is_some() {
                near(gh.get(&b).as_vec(), go.get(&b).as_vec(), "db");
            }
        }
    }
    let dev = Cpu::seed_from_u64(9);
    case::<3, 1>(1, &dev);
    case::<70, 50>(37, &dev);
    case::<784, 256>(512, &dev);
    case::<256, 10>(64, &dev);
    instruction_sets::again_on_narrower_instruction_sets("the_dense_layer_matches_dfdx");
}

/// fulmen's `Linear` (the prelude's) draws its weights as dfdx's did, so that a seed builds
/// the model it built before, and computes what dfdx's does on every input it takes.
#[test]
fn the_dense_layer_starts_and_computes_as_dfdxs() {
    let ours: fulmen::layers::linear::modules::Linear<5, 3, f32, Cpu> =
        BuildModule::build(&Cpu::seed_from_u64(3));
    let theirs: fulmen::dfdx::nn::modules::Linear<5, 3, f32, Cpu> =
        BuildModule::build(&Cpu::seed_from_u64(3));
    assert_eq!(ours.weight.array(), theirs.weight.array());
    assert_eq!(ours.bias.array(), theirs.bias.array());
    let near = |a: Vec<f32>, b: Vec<f32>, what: &str| {
        assert_eq!(a.len(), b.len(), "{what}");
        for (va, vb) in a.iter().zip(&b) {
            assert!((va - vb).abs() < 1e-5, "{what}: {va} vs {vb}");
        }
    };
    let dev = Cpu::seed_from_u64(1);
    // Every input dfdx's layer takes: a batch of rows, one row, a batch of sequences (the
    // last two reshaped into rows), with the gradients of the input and the weight.
    let x: Tensor<Rank2<4, 5>, f32, Cpu> = dev.sample_normal();
    near(
        ours.forward(x.clone()).as_vec(),
        theirs.forward(x).as_vec(),
        "rows",
    );
    let x: Tensor<Rank1<5>, f32, Cpu> = dev.sample_normal();
    near(
        ours.forward(x.clone()).as_vec(),
        theirs.forward(x).as_vec(),
        "a row",
    );
    let x: Tensor<(usize, usize, Const<5>), f32, Cpu> = dev.sample_normal_like(&(2, 3, Const));
    let y = ours.forward(x.clone().leaky_traced());
    let want = theirs.forward(x.clone().leaky_traced());
    assert_eq!(y.shape(), &(2, 3, Const::<3>));
    near(y.as_vec(), want.as_vec(), "sequences");
    let (g, gw) = (y.square().sum().backward(), want.square().sum().backward());
    near(g.get(&x).as_vec(), gw.get(&x).as_vec(), "sequences dx");
    near(
        g.get(&ours.weight).as_vec(),
        gw.get(&theirs.weight).as_vec(),
        "sequences dW",
    );
}

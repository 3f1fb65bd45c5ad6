//! The GPU suite's part for cuDNN (`fulmen::kernels::cudnn`): which cuDNN the run loads, its
//! convolutions against the composed ones (dfdx's gather and cuBLAS product) on the same GPU in
//! f32 and f16, and its batch norms against the composed ones in f32 and f64: values,
//! statistics and every gradient. A `GPU-CHECK` line each.

use fulmen::device::Half;
use fulmen::kernels::cudnn;
use fulmen::layers::{conv2d, ConvOptions};
use fulmen::prelude::*;

use super::skips_without_cuda;

type Dyn4<E, T = NoneTape> = Tensor<(usize, usize, usize, usize), E, Cuda, T>;

/// The largest difference between `a` and `b`, relative to the largest magnitude in `a`.
fn relative(a: &[f64], b: &[f64]) -> f64 {
    let scale = a.iter().fold(f64::MIN_POSITIVE, |m, v| m.max(v.abs()));
    let diff = a
        .iter()
        .zip(b)
        .fold(0.0f64, |m, (x, y)| m.max((x - y).abs()));
    assert_eq!(a.len(), b.len());
    diff / scale
}

/// One convolution: `[n, c_in, hw, hw]` images, `c_out` channels of `k`×`k`, the options, a
/// bias or not, and whether the images and the weight are permuted views (not contiguous).
type Case = (usize, usize, usize, usize, usize, ConvOptions, bool, bool);

fn opts(stride: usize, padding: usize, dilation: usize, groups: usize) -> ConvOptions {
    ConvOptions {
        stride,
        padding,
        dilation,
        groups,
    }
}

/// The geometries of the ResNets (the CIFAR and ImageNet stems, 3×3 and strided, 1×1 and
/// strided 1×1 projections) and the others fulmen's layers take (dilation, groups, odd sizes,
/// views).
fn cases() -> Vec<Case> {
    vec![
        (4, 3, 32, 64, 3, opts(1, 1, 1, 1), false, false),
        (2, 3, 33, 16, 7, opts(2, 3, 1, 1), false, false),
        (4, 64, 16, 64, 3, opts(1, 1, 1, 1), false, false),
        (4, 64, 16, 128, 3, opts(2, 1, 1, 1), false, false),
        (4, 64, 16, 256, 1, opts(1, 0, 1, 1), false, false),
        (4, 64, 16, 128, 1, opts(2, 0, 1, 1), false, false),
        (3, 8, 13, 12, 3, opts(1, 2, 2, 1), true, false),
        (3, 8, 11, 8, 3, opts(1, 1, 1, 4), true, false),
        (2, 5, 9, 7, 5, opts(3, 0, 1, 1), true, false),
        (4, 64, 16, 64, 3, opts(1, 1, 1, 1), false, true),
        (3, 8, 11, 8, 3, opts(1, 1, 1, 4), true, true),
    ]
}

/// The output and the gradients of the input, weight and bias of `sum(y²)` for `case`, in
/// `E`, with cuDNN or without.
fn run<E: FloatDtype>(dev: &Cuda, case: Case, with_cudnn: bool) -> [Vec<f64>; 4]
where
    Cuda: TrainDevice<E>,
{
    let (n, c_in, hw, c_out, k, o, bias, views) = case;
    cudnn::set_enabled(with_cudnn);
    let seeded = Cpu::seed_from_u64(7);
    let on = |shape: (usize, usize, usize, usize)| -> Dyn4<E> {
        let t: Tensor<(usize, usize, usize, usize), f32, Cpu> = seeded.sample_normal_like(&shape);
        t.to_device(dev).to_dtype::<E>()
    };
    let (x, w) = match views {
        false => (on((n, c_in, hw, hw)), on((c_out, c_in / o.groups, k, k))),
        // Channels last, and the weight's taps first: the same values, other strides.
        true => (
            on((n, hw, hw, c_in)).permute::<_, Axes4<0, 3, 1, 2>>(),
            on((k, k, c_in / o.groups, c_out)).permute::<_, Axes4<3, 2, 0, 1>>(),
        ),
    };
    let b: Tensor<(usize,), E, Cuda> = on((c_out, 1, 1, 1)).reshape_like(&(c_out,));
    let y = conv2d(x.clone().leaky_traced(), &w, bias.then_some(&b), o).expect("convolves");
    let out = y.as_vec();
    let grads = y.square().sum::<Rank0, _>().backward();
    let f64s = |v: Vec<E>| {
        v.into_iter()
            .map(|v| v.to_f64().unwrap_or(f64::NAN))
            .collect()
    };
    let gb = if bias {
        f64s(grads.get(&b).as_vec())
    } else {
        Vec::new()
    };
    cudnn::set_enabled(true);
    [
        f64s(out),
        f64s(grads.get(&x).as_vec()),
        f64s(grads.get(&w).as_vec()),
        gb,
    ]
}

/// Each case's worst relative difference, values and gradients, in `E`.
fn worst<E: FloatDtype>(dev: &Cuda) -> (f64, f64)
where
    Cuda: TrainDevice<E>,
{
    let (mut out, mut grad) = (0.0f64, 0.0f64);
    for case in cases() {
        let [y0, gx0, gw0, gb0] = run::<E>(dev, case, false);
        let [y1, gx1, gw1, gb1] = run::<E>(dev, case, true);
        out = out.max(relative(&y0, &y1));
        for (a, b) in [(gx0, gx1), (gw0, gw1), (gb0, gb1)] {
            if !a.is_empty() {
                grad = grad.max(relative(&a, &b));
            }
        }
    }
    (out, grad)
}

#[test]
fn cudnn_convolutions_match_the_composed_ones() {
    if skips_without_cuda() {
        return;
    }
    let v =
        cudnn::version().expect("cuDNN loads (scripts/gpu-check.sh puts PyTorch's on the path)");
    println!("GPU-CHECK cudnn {v}");
    let dev = Cuda::seed_from_u64(0);
    let (out, grad) = worst::<f32>(&dev);
    println!("GPU-CHECK cudnn_conv_f32 out_rel={out:.2e} grad_rel={grad:.2e}");
    let (out16, grad16) = worst::<Half>(&dev);
    println!("GPU-CHECK cudnn_conv_f16 out_rel={out16:.2e} grad_rel={grad16:.2e}");
    assert!(
        out < 1e-5 && grad < 1e-5,
        "f32: values {out:.2e}, gradients {grad:.2e} apart"
    );
    assert!(
        out16 < 5e-3 && grad16 < 5e-3,
        "f16: values {out16:.2e}, gradients {grad16:.2e} apart"
    );
}

#[test]
fn a_missing_cudnn_is_named_when_a_convolution_needs_it() {
    // Its own process (scripts/gpu-check.sh runs each test alone): cuDNN is loaded once.
    std::env::set_var(cudnn::LIBRARY_ENV, "/no/such/libcudnn.so.9");
    let Err(e) = cudnn::version() else {
        panic!("loaded a cuDNN that does not exist");
    };
    let e = e.to_string();
    println!("GPU-CHECK missing_cudnn named");
    assert!(
        e.contains("/no/such/libcudnn.so.9") && e.contains("nvidia-cudnn-cu13"),
        "{e}"
    );
    if skips_without_cuda() {
        return;
    }
    // A convolution says so too, and how to convolve without cuDNN.
    let dev = Cuda::seed_from_u64(0);
    let x: Dyn4<f32> = dev.sample_normal_like(&(1, 3, 8, 8));
    let w: Dyn4<f32> = dev.sample_normal_like(&(4, 3, 3, 3));
    let Err(e) = conv2d(x, &w, None, ConvOptions::default()) else {
        panic!("convolved without cuDNN");
    };
    assert!(e.to_string().contains("FULMEN_CUDNN=0"), "{e}");
}

type Images<E, T = NoneTape> = Tensor<(usize, Const<16>, usize, usize), E, Cuda, T>;

/// A batch norm of `[5, 16, 9, 7]` images in `E`, training then evaluation, by `K`: the
/// output, the batch's mean and variance, the gradients of the input, weight and bias of
/// `Σ y·r` (`r` fixed), and the evaluation's output by those statistics.
fn normalized<E: FloatDtype, K: fulmen::kernels::Norm<E, Cuda>>(dev: &Cuda) -> [Vec<f64>; 7]
where
    Cuda: TrainDevice<E>,
{
    let seeded = Cpu::seed_from_u64(11);
    let shape = (5, Const::<16>, 9, 7);
    let on = |t: Tensor<(usize, Const<16>, usize, usize), f32, Cpu>| -> Images<E> {
        t.to_device(dev).to_dtype::<E>()
    };
    let x = on(seeded.sample_normal_like(&shape) * 3.0 + 1.0);
    let r = on(seeded.sample_normal_like(&shape));
    let param = |offset: f32| -> Tensor<Rank1<16>, E, Cuda> {
        let t: Tensor<Rank1<16>, f32, Cpu> = seeded.sample_normal();
        (t + offset).to_device(dev).to_dtype::<E>()
    };
    let (w, b) = (param(1.0), param(0.0));
    let (y, mean, var) =
        K::batch_norm_train(x.clone().leaky_traced(), &w, &b, 1e-5).expect("trains");
    let out = y.as_vec();
    let grads = (y * r).sum::<Rank0, _>().backward();
    let eval = K::batch_norm_eval(x.clone(), &mean, &var, &w, &b, 1e-5).expect("evaluates");
    let f64s = |v: Vec<E>| {
        v.into_iter()
            .map(|v| v.to_f64().unwrap_or(f64::NAN))
            .collect()
    };
    [
        f64s(out),
        f64s(mean.as_vec()),
        f64s(var.as_vec()),
        f64s(grads.get(&x).as_vec()),
        f64s(grads.get(&w).as_vec()),
        f64s(grads.get(&b).as_vec()),
        f64s(eval.as_vec()),
    ]
}

#[test]
fn cudnn_batch_norms_match_the_composed_ones() {
    if skips_without_cuda() {
        return;
    }
    use fulmen::kernels::{cudnn::Cudnn, Composed};
    let dev = Cuda::seed_from_u64(0);
    let worst = |a: [Vec<f64>; 7], b: [Vec<f64>; 7]| {
        a.iter()
            .zip(&b)
            .map(|(a, b)| relative(a, b))
            .fold(0.0f64, f64::max)
    };
    let f32_err = worst(
        normalized::<f32, Composed>(&dev),
        normalized::<f32, Cudnn>(&dev),
    );
    let f64_err = worst(
        normalized::<f64, Composed>(&dev),
        normalized::<f64, Cudnn>(&dev),
    );
    println!("GPU-CHECK cudnn_batch_norm f32_rel={f32_err:.2e} f64_rel={f64_err:.2e}");
    assert!(f32_err < 1e-5, "f32: {f32_err:.2e} apart");
    assert!(f64_err < 1e-12, "f64: {f64_err:.2e} apart");
}

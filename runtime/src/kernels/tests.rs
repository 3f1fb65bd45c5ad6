//! The implementations against each other, each test generic over the implementation: the
//! optimizer steps give the same bits, the gradient sums the same numbers, 16-mixed's unscaling
//! the same gradients. (The layers' families are compared in `tests/composed.rs`.)

use dfdx::nn::builders::Linear;
use dfdx::nn::{BuildOnDevice, Module, ToDtype, ZeroGrads};
use dfdx::shapes::{Rank0, Rank1, Rank2};
use dfdx::tensor::{AsArray, Cpu, Gradients, SampleTensor, Tensor, TensorFrom, Trace, ZerosTensor};
use dfdx::tensor_ops::{Backward, SumTo};
use num_traits::FromPrimitive;

use super::{Composed, Flat, GradSum, Host, Reduce, Step, StepRule, Total, Unscale};
use crate::device::{Half, HostAccess};
use crate::optim::{Clip, Optim};
use crate::walk::{self, Tensors};
use crate::FloatDtype;

fn settings() -> Vec<Optim> {
    vec![
        Optim::sgd(0.1),
        Optim::sgd(0.1)
            .momentum(0.9)
            .dampening(0.25)
            .weight_decay(0.01),
        Optim::sgd(0.05)
            .momentum(0.8)
            .nesterov(true)
            .weight_decay(0.1),
        Optim::adam(0.01),
        Optim::adam(0.02).weight_decay(0.1).betas(0.8, 0.95),
        Optim::adamw(0.01).weight_decay(0.3),
        Optim::rmsprop(0.01),
        Optim::rmsprop(0.01)
            .centered(true)
            .momentum(0.5)
            .weight_decay(0.05),
    ]
}

/// Four steps of `o` by the kernels `K` on a 3×4 parameter, its gradients clipped by `clip`:
/// the parameter and the buffers after each step.
fn steps<E: FloatDtype, K: Step<E, Cpu>>(o: &Optim, clip: Clip) -> Vec<Vec<Vec<E>>>
where
    Cpu: HostAccess<E>,
{
    let dev = Cpu::default();
    let at = |i: usize, k: usize| E::from(((i * 7 + k * 5) % 13) as f64 / 6.5 - 0.9).unwrap();
    let mut param: Tensor<Rank2<3, 4>, E, Cpu> =
        dev.tensor((0..12).map(|i| at(i, 0)).collect::<Vec<_>>());
    let kept = StepRule::buffers(o).len();
    let mut buffers: Vec<Flat<E, Cpu>> = (0..kept).map(|_| dev.zeros_like(&(12,))).collect();
    let (mut scratch, mut after) = (Vec::new(), Vec::new());
    for step in 1..=4u64 {
        let rule = StepRule {
            config: o,
            step,
            clip,
        };
        let g: Vec<E> = (0..12).map(|i| at(i, step as usize)).collect();
        let mut grads = Gradients::leaky();
        Cpu::with_grad(&param, &mut grads, |s| s.copy_from_slice(&g)).unwrap();
        K::step(rule, &mut param, &mut grads, &mut buffers, &mut scratch).unwrap();
        let mut state = vec![param.as_vec()];
        state.extend(buffers.iter().map(|b| b.as_vec()));
        after.push(state);
    }
    after
}

#[test]
fn the_composed_steps_give_the_host_steps_bits() {
    fn agree<E: FloatDtype>()
    where
        Cpu: HostAccess<E>,
    {
        for o in settings() {
            for clip in [Clip::None, Clip::Scale(0.37), Clip::Clamp(0.2)] {
                let host = steps::<E, Host>(&o, clip);
                assert_eq!(
                    host,
                    steps::<E, Composed>(&o, clip),
                    "{o:?} clipped {clip:?}"
                );
                assert_ne!(host[0][0], host[3][0], "{o:?}: the parameter moved");
            }
        }
    }
    agree::<f32>();
    agree::<f64>();
}

#[test]
fn a_parameter_without_a_gradient_steps_by_weight_decay_alone() {
    fn step<K: Step<f32, Cpu>>() -> [[f32; 2]; 1] {
        let dev = Cpu::default();
        let o = Optim::sgd(0.1).weight_decay(0.5);
        let rule = StepRule {
            config: &o,
            step: 1,
            clip: Clip::None,
        };
        let mut p: Tensor<Rank2<1, 2>, f32, Cpu> = dev.tensor([[1.0, -2.0]]);
        let mut buffers = vec![dev.zeros_like(&(2,))];
        let mut grads = Gradients::leaky();
        K::step(rule, &mut p, &mut grads, &mut buffers, &mut Vec::new()).unwrap();
        p.array()
    }
    assert_eq!(step::<Host>(), [[0.95, -1.9]]);
    assert_eq!(step::<Composed>(), [[0.95, -1.9]]);
}

/// `what` of the gradient `g` of a parameter of `g.len()` values, by the kernels `K`.
fn sum<E: FloatDtype, K: Reduce<E, Cpu>>(what: GradSum, g: &[E]) -> f64
where
    Cpu: HostAccess<E>,
{
    let p: Tensor<(usize,), E, Cpu> = Cpu::default().zeros_like(&(g.len(),));
    let mut grads = Gradients::leaky();
    Cpu::with_grad(&p, &mut grads, |s| s.copy_from_slice(g)).unwrap();
    let mut total = Total::default();
    K::grad_sum(what, &p, &mut grads, &mut total).unwrap();
    total.value()
}

#[test]
fn the_sums_of_squares_agree() {
    let g: Vec<f32> = (0..37 * 29).map(|i| (i % 17) as f32 / 3.0 - 2.5).collect();
    let (host, ops) = (
        sum::<f32, Host>(GradSum::Squares, &g),
        sum::<f32, Composed>(GradSum::Squares, &g),
    );
    assert!((host - ops).abs() <= 1e-5 * host, "{host} vs {ops}");
    assert_eq!(sum::<f32, Composed>(GradSum::Squares, &[0.0; 5]), 0.0);
}

#[test]
fn a_nan_or_an_infinity_anywhere_is_found() {
    fn found<K: Reduce<f32, Cpu>>() {
        for (bad, finite) in [
            (None, true),
            (Some(f32::NAN), false),
            (Some(f32::INFINITY), false),
        ] {
            let mut g = vec![f32::MAX; 15];
            if let Some(v) = bad {
                g[11] = v;
            }
            let probe = sum::<f32, K>(GradSum::FiniteProbe, &g);
            assert_eq!(probe.is_finite(), finite, "{bad:?}");
        }
    }
    found::<Host>();
    found::<Composed>();
}

/// Half precision sums in f32: a norm of 1,200 (Σ g² = 1.44e6, past f16's largest value)
/// comes out, an infinity is found, and large finite values are finite.
#[test]
fn half_precision_sums_neither_overflow_nor_miss_an_infinity() {
    fn check<K: Reduce<Half, Cpu>>(tolerance: f64) {
        let half = |v: f32| Half::from_f32(v).unwrap_or_default();
        let got = sum::<Half, K>(GradSum::Squares, &[half(300.0); 16]);
        assert!((got / 1.44e6 - 1.0).abs() < tolerance, "{got}");
        let mut g = [half(60000.0); 16];
        assert_eq!(sum::<Half, K>(GradSum::FiniteProbe, &g), 0.0);
        g[5] = half(f32::INFINITY);
        assert!(sum::<Half, K>(GradSum::FiniteProbe, &g).is_nan());
    }
    check::<Host>(1e-6);
    check::<Composed>(1e-3);
}

type Net = (Linear<3, 4>, Linear<4, 2>);
type Built<E> = <Net as BuildOnDevice<Cpu, E>>::Built;

/// A small net, its half copy, and the half copy's gradients of a loss scaled by 1024.
fn scaled() -> (Built<f32>, Built<Half>, Gradients<Half, Cpu>) {
    let dev = Cpu::default();
    let m = Net::build_on_device(&dev);
    let half = m.to_dtype::<Half>();
    let x: Tensor<(usize, dfdx::shapes::Const<3>), Half, Cpu> =
        dev.sample_normal_like(&(5, dfdx::shapes::Const));
    let y = half.forward(x.traced(half.alloc_grads()));
    let g = (y.square().sum::<Rank0, _>() * Half::from_f64(1024.0).expect("f16")).backward();
    (m, half, g)
}

/// Gradients already accumulated in f32, as after an earlier micro-batch.
fn earlier(m: &Built<f32>) -> Gradients<f32, Cpu> {
    let x: Tensor<(usize, dfdx::shapes::Const<3>), f32, Cpu> =
        Cpu::default().sample_normal_like(&(2, dfdx::shapes::Const));
    m.forward(x.traced(m.alloc_grads()))
        .sum::<Rank0, _>()
        .backward()
}

/// Every trainable gradient of `m`.
fn all(m: &Built<f32>, g: &mut Gradients<f32, Cpu>) -> Vec<Vec<f32>> {
    let mut out = Vec::new();
    walk::read(m, |_, item| match item {
        walk::Item::Tensor {
            tensor,
            trainable: true,
        } => tensor.with_grad(g, &mut |g| out.push(g.to_vec())),
        _ => Ok(()),
    })
    .unwrap();
    out
}

/// The f32 gradients after unscaling by the kernels `K`, and whether they were all finite.
fn unscaled<K: Unscale<Cpu>>(
    m: &Built<f32>,
    half: &Built<Half>,
    hg: &mut Gradients<Half, Cpu>,
) -> (Vec<Vec<f32>>, bool) {
    let mut grads = earlier(m);
    let finite = K::unscale(
        &Tensors(half),
        hg,
        &Tensors(m),
        &mut grads,
        1.0 / 1024.0,
        &mut Vec::new(),
    )
    .unwrap();
    (all(m, &mut grads), finite)
}

#[test]
fn unscaling_adds_the_same_gradients_on_the_host_and_on_the_device() {
    let (m, half, mut hg) = scaled();
    let before = all(&m, &mut earlier(&m));
    let (host, finite) = unscaled::<Host>(&m, &half, &mut hg);
    assert!(finite);
    assert_eq!(
        (host.clone(), true),
        unscaled::<Composed>(&m, &half, &mut hg),
        "the same bits"
    );
    assert_ne!(host, before, "the half gradients were added");
}

#[test]
fn a_non_finite_half_gradient_adds_nothing() {
    let (m, half, mut hg) = scaled();
    let bias: &Tensor<Rank1<2>, Half, Cpu> = &half.1.bias;
    Cpu::with_grad(bias, &mut hg, |g| {
        g[1] = Half::from_f64(f64::INFINITY).expect("f16")
    })
    .unwrap();
    let before = all(&m, &mut earlier(&m));
    assert_eq!(
        unscaled::<Host>(&m, &half, &mut hg),
        (before.clone(), false)
    );
    assert_eq!(unscaled::<Composed>(&m, &half, &mut hg), (before, false));
}

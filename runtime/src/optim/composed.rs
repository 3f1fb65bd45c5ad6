//! The update rules of [`super::rules`] written with dfdx's tensor ops, for devices where the
//! host rules would copy every parameter, gradient and buffer to the host and back each step
//! (CUDA, [`TrainDevice::host_kernels`] false). Each op is one of the host rule's, in its
//! order, so on the CPU both give the same bits (the tests below). The parameter is changed in
//! place by dfdx's `axpy` (`p·keep − update·scale`), so it keeps its identity; so are the
//! buffers and the gradient copy wherever the rule is `a·x + b·y` (one op instead of three,
//! and no new buffer: on CUDA each op is a launch and an allocation, per tensor). The
//! gradients' reductions for clipping and the anomaly check are here too.

use dfdx::shapes::{HasShape, Rank0, Shape};
use dfdx::tensor::{Gradients, OwnedTape, Tape, Tensor};
use dfdx::tensor_ops::{ReshapeTo, SumTo, TryAdd, TryDiv, TryMatMul, TryMul, TrySub};

use super::grads::GradSum;
use super::rules::StepRule;
use super::{Clip, Optim, OptimKind};
use crate::device::is_half;
use crate::{Error, FloatDtype, Result, TrainDevice};

type Flat<E, D> = Tensor<(usize,), E, D>;

fn dev_err(e: impl std::fmt::Debug) -> Error {
    Error::Device(format!("a gradient or optimizer op on the device: {e:?}"))
}

/// One step of `param` from its gradient in `grads` (zeros if it has none), clipped first,
/// with the rule's buffers ([`super::rules::buffers`]' order).
pub(crate) fn step<S: Shape, E: FloatDtype, D: TrainDevice<E>>(
    rule: StepRule<'_>,
    param: &mut Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
    buffers: &mut [Flat<E, D>],
) -> Result<()> {
    let (o, step) = (rule.config, rule.step);
    let n = param.shape().num_elements();
    let g = clipped(gradient(param, grads)?, rule.clip).map_err(dev_err)?;
    // Shares the parameter's values; dropped before the parameter is written.
    let p: Flat<E, D> = param.clone().try_reshape_like(&(n,)).map_err(dev_err)?;
    let (keep, update, scale) = match o.kind {
        OptimKind::Sgd => sgd(o, step, p, g, buffers),
        OptimKind::Adam | OptimKind::AdamW => adam(o, step, p, g, buffers),
        OptimKind::RmsProp => rmsprop(o, p, g, buffers),
    }
    .map_err(dev_err)?;
    let update = update.try_reshape_like(param.shape()).map_err(dev_err)?;
    param.try_axpy(keep, &update, -scale).map_err(dev_err)
}

/// `param`'s gradient in `grads` (zeros if it has none), flat: a copy, where it lives.
pub(crate) fn gradient<S: Shape, E: FloatDtype, D: TrainDevice<E>>(
    param: &Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
) -> Result<Flat<E, D>> {
    let n = param.shape().num_elements();
    grads.try_alloc_for(param).map_err(dev_err)?;
    grads.get(param).try_reshape_like(&(n,)).map_err(dev_err)
}

/// `⟨param, g⟩` on a tape of its own, as a product `[1, n] · [n, 1]`: its backward adds `g`
/// times the result's gradient into `param`'s gradient with one matrix product on the device
/// (dfdx has no other way to add a tensor into a gradient buffer).
pub(crate) fn dot<S: Shape, E: FloatDtype, D: TrainDevice<E>>(
    param: &Tensor<S, E, D>,
    g: Flat<E, D>,
) -> Result<Tensor<Rank0, E, D, OwnedTape<E, D>>> {
    let n = param.shape().num_elements();
    let p = param.clone().retaped::<OwnedTape<E, D>>();
    p.try_reshape_like(&(n,))
        .and_then(|p| inner(p, g))
        .map_err(dev_err)
}

/// [`Clip::apply`].
fn clipped<E: FloatDtype, D: TrainDevice<E>>(
    g: Flat<E, D>,
    clip: Clip,
) -> std::result::Result<Flat<E, D>, D::Err> {
    match clip {
        Clip::None => Ok(g),
        Clip::Scale(coef) => g.try_mul(E::from(coef).unwrap_or_else(E::one)),
        Clip::Clamp(c) => g.try_clamp(-c, c),
    }
}

/// `⟨a, b⟩` as a product `[1, n] · [n, 1]` (on `a`'s tape).
fn inner<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    a: Tensor<(usize,), E, D, T>,
    b: Flat<E, D>,
) -> std::result::Result<Tensor<Rank0, E, D, T>, D::Err> {
    let n = a.shape().0;
    a.try_reshape_like(&(1, n))?
        .try_matmul(b.try_reshape_like(&(n, 1))?)?
        .try_reshape_like(&())
}

/// What a half-precision gradient is scaled by before its squares are summed: the sum then
/// fits f16 (largest value 65,504) up to a norm of 65,536, where unscaled it would overflow at
/// 256. It underflows below a norm of about 0.06, where a norm is too small to clip anyway.
const HALF_SQUARES_SCALE: f64 = 1.0 / 256.0;

/// `what` of `param`'s gradient (zeros if it has none), reduced where it lives: `(sum, unit)`,
/// the sum in units of `unit` (scaled for half precision's squares, [`HALF_SQUARES_SCALE`]).
pub(crate) fn grad_sum<S: Shape, E: FloatDtype, D: TrainDevice<E>>(
    what: GradSum,
    param: &Tensor<S, E, D>,
    grads: &mut Gradients<E, D>,
) -> Result<(Tensor<Rank0, E, D>, f64)> {
    let g = gradient(param, grads)?;
    if what == GradSum::FiniteProbe {
        return Ok((finite_probe(g)?, 1.0));
    }
    // Half precision: a product (see `is_half`).
    if is_half::<E>() {
        let g = g.try_mul(c::<E>(HALF_SQUARES_SCALE)).map_err(dev_err)?;
        let sum = inner(g.clone(), g).map_err(dev_err)?;
        return Ok((sum, HALF_SQUARES_SCALE.powi(-2)));
    }
    let sum = g.try_square().and_then(|g| g.try_sum()).map_err(dev_err)?;
    Ok((sum, 1.0))
}

/// The sum of `g·0`, on `g`'s device: 0 exactly when every value of `g` is finite, NaN
/// otherwise (unlike a sum of squares, which overflows on large finite values). Probes add
/// up, so many tensors are checked with one number. In half precision, `⟨g, g·0⟩`.
pub(crate) fn finite_probe<E: FloatDtype, D: TrainDevice<E>>(
    g: Flat<E, D>,
) -> Result<Tensor<Rank0, E, D>> {
    let zeros = g.clone().try_mul(E::zero()).map_err(dev_err)?;
    if is_half::<E>() {
        return inner(g, zeros).map_err(dev_err);
    }
    zeros.try_sum().map_err(dev_err)
}

/// `(keep, update, scale)`: the parameter becomes `p·keep − update·scale`.
type Rule<E, D> = std::result::Result<(f64, Flat<E, D>, f64), <D as dfdx::tensor::HasErr>::Err>;

fn c<E: FloatDtype>(x: f64) -> E {
    E::from(x).unwrap_or_else(E::nan)
}

/// The gradient with L2 weight decay added (`d += wd * p`).
fn decayed<E: FloatDtype, D: TrainDevice<E>>(
    o: &Optim,
    p: &Flat<E, D>,
    mut g: Flat<E, D>,
) -> std::result::Result<Flat<E, D>, D::Err> {
    if o.weight_decay != 0.0 {
        g.try_axpy(1.0, p, o.weight_decay)?;
    }
    Ok(g)
}

/// [`super::rules::sgd`].
fn sgd<E: FloatDtype, D: TrainDevice<E>>(
    o: &Optim,
    step: u64,
    p: Flat<E, D>,
    g: Flat<E, D>,
    buffers: &mut [Flat<E, D>],
) -> Rule<E, D> {
    let mut d = decayed(o, &p, g)?;
    drop(p);
    if o.momentum != 0.0 {
        let b = &mut buffers[0];
        if step == 1 {
            *b = d.clone();
        } else {
            b.try_axpy(o.momentum, &d, 1.0 - o.dampening)?;
        }
        if o.nesterov {
            d.try_axpy(1.0, b, o.momentum)?;
        } else {
            d = b.clone();
        }
    }
    Ok((1.0, d, o.lr))
}

/// [`super::rules::adam`].
fn adam<E: FloatDtype, D: TrainDevice<E>>(
    o: &Optim,
    step: u64,
    p: Flat<E, D>,
    g: Flat<E, D>,
    buffers: &mut [Flat<E, D>],
) -> Rule<E, D> {
    let (b1, b2) = o.betas;
    let bias_correction1 = 1.0 - b1.powf(step as f64);
    let bias_correction2 = 1.0 - b2.powf(step as f64);
    let decoupled = o.kind == OptimKind::AdamW;
    let (keep, g) = if decoupled {
        (1.0 - o.lr * o.weight_decay, g)
    } else {
        (1.0, decayed(o, &p, g)?)
    };
    drop(p);
    let (m, v) = buffers.split_at_mut(1);
    let (m, v) = (&mut m[0], &mut v[0]);
    // exp_avg.lerp_(grad, 1 - beta1)
    m.try_axpy(1.0, &g.clone().try_sub(m.clone())?, 1.0 - b1)?;
    let squared = g.clone().try_mul(c::<E>(1.0 - b2))?.try_mul(g)?;
    v.try_axpy(b2, &squared, 1.0)?;
    let denom = v
        .clone()
        .try_sqrt()?
        .try_div(c::<E>(bias_correction2.sqrt()))?
        .try_add(c::<E>(o.eps))?;
    let update = m.clone().try_div(denom)?;
    Ok((keep, update, o.lr / bias_correction1))
}

/// [`super::rules::rmsprop`].
fn rmsprop<E: FloatDtype, D: TrainDevice<E>>(
    o: &Optim,
    p: Flat<E, D>,
    g: Flat<E, D>,
    buffers: &mut [Flat<E, D>],
) -> Rule<E, D> {
    let g = decayed(o, &p, g)?;
    drop(p);
    let (sa, rest) = buffers.split_at_mut(1);
    let (mb, ga) = rest.split_at_mut(1);
    let (sa, mb, ga) = (&mut sa[0], &mut mb[0], &mut ga[0]);
    let one_minus_alpha = c::<E>(1.0 - o.alpha);
    let squared = g.clone().try_mul(one_minus_alpha)?.try_mul(g.clone())?;
    sa.try_axpy(o.alpha, &squared, 1.0)?;
    let avg = if o.centered {
        ga.try_axpy(1.0, &g.clone().try_sub(ga.clone())?, 1.0 - o.alpha)?;
        let variance = sa.clone().try_sub(ga.clone().try_mul(ga.clone())?)?;
        variance.try_sqrt()?.try_add(c::<E>(o.eps))?
    } else {
        sa.clone().try_sqrt()?.try_add(c::<E>(o.eps))?
    };
    let update = if o.momentum > 0.0 {
        mb.try_axpy(o.momentum, &g.try_div(avg)?, 1.0)?;
        mb.clone()
    } else {
        g.try_div(avg)?
    };
    Ok((1.0, update, o.lr))
}

#[cfg(test)]
mod tests {
    use dfdx::shapes::Rank2;
    use dfdx::tensor::{AsArray, Cpu, TensorFrom, ZerosTensor};

    use super::*;

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

    /// Four steps of `o` on a 3×4 parameter, its gradients clipped by `clip`, through the
    /// CPU's host rules and through the tensor ops: the same parameter and buffers, bit for
    /// bit.
    fn agree<E: FloatDtype>(o: &Optim, clip: Clip)
    where
        Cpu: TrainDevice<E>,
    {
        let dev = Cpu::default();
        let at = |i: usize, k: usize| E::from(((i * 7 + k * 5) % 13) as f64 / 6.5 - 0.9).unwrap();
        let p0: Vec<E> = (0..12).map(|i| at(i, 0)).collect();
        let mut host: Tensor<Rank2<3, 4>, E, Cpu> = dev.tensor(p0.clone());
        let mut ops: Tensor<Rank2<3, 4>, E, Cpu> = dev.tensor(p0.clone());
        let zeros = || -> Vec<Flat<E, Cpu>> {
            let kept = super::super::rules::buffers(o).len();
            (0..kept).map(|_| dev.zeros_like(&(12,))).collect()
        };
        let (mut host_buffers, mut ops_buffers, mut scratch) = (zeros(), zeros(), Vec::new());
        for step in 1..=4u64 {
            let rule = StepRule {
                config: o,
                step,
                clip,
            };
            let g: Vec<E> = (0..12).map(|i| at(i, step as usize)).collect();
            let mut grads = Gradients::leaky();
            Cpu::with_grad(&host, &mut grads, |s| s.copy_from_slice(&g)).unwrap();
            super::super::rules::step(rule, &mut host, &mut grads, &mut host_buffers, &mut scratch)
                .unwrap();
            let mut grads = Gradients::leaky();
            Cpu::with_grad(&ops, &mut grads, |s| s.copy_from_slice(&g)).unwrap();
            super::step(rule, &mut ops, &mut grads, &mut ops_buffers).unwrap();
            let what = format!("{o:?} clipped {clip:?}");
            assert_eq!(
                host.array(),
                ops.array(),
                "{what}: parameter after step {step}"
            );
            for (h, t) in host_buffers.iter().zip(&ops_buffers) {
                assert_eq!(h.as_vec(), t.as_vec(), "{what}: buffers after step {step}");
            }
        }
        assert_ne!(host.as_vec(), p0);
    }

    #[test]
    fn the_tensor_ops_give_the_host_rules_bits() {
        for o in settings() {
            for clip in [Clip::None, Clip::Scale(0.37), Clip::Clamp(0.2)] {
                agree::<f32>(&o, clip);
                agree::<f64>(&o, clip);
            }
        }
    }

    #[test]
    fn a_parameter_without_a_gradient_steps_as_on_the_host() {
        let dev = Cpu::default();
        let o = Optim::sgd(0.1).weight_decay(0.5);
        let rule = StepRule {
            config: &o,
            step: 1,
            clip: Clip::None,
        };
        let mut p: Tensor<Rank2<1, 2>, f32, Cpu> = dev.tensor([[1.0, -2.0]]);
        let mut buffers = vec![dev.zeros_like(&(2,))];
        super::step(rule, &mut p, &mut Gradients::leaky(), &mut buffers).unwrap();
        assert_eq!(p.array(), [[0.95, -1.9]]);
    }

    #[test]
    fn the_sum_of_squares_follows_the_host_one() {
        let dev = Cpu::default();
        let p: Tensor<Rank2<37, 29>, f32, Cpu> = dev.zeros();
        let g: Vec<f32> = (0..37 * 29).map(|i| (i % 17) as f32 / 3.0 - 2.5).collect();
        let mut grads = Gradients::leaky();
        Cpu::with_grad(&p, &mut grads, |s| s.copy_from_slice(&g)).unwrap();
        let host = crate::optim::grads::sum_of_squares(&g);
        let (sum, unit) = grad_sum(GradSum::Squares, &p, &mut grads).unwrap();
        let ops = f64::from(sum.array()) * unit;
        assert!((host - ops).abs() <= 1e-5 * host, "{host} vs {ops}");
        let (empty, _) = grad_sum(GradSum::Squares, &p, &mut Gradients::leaky()).unwrap();
        assert_eq!(empty.array(), 0.0, "a parameter without a gradient");
    }

    #[test]
    fn a_nan_or_an_infinity_anywhere_is_found() {
        let dev = Cpu::default();
        let p: Tensor<Rank2<3, 5>, f32, Cpu> = dev.zeros();
        let huge = f32::MAX;
        for (bad, want) in [
            (None, true),
            (Some(f32::NAN), false),
            (Some(f32::INFINITY), false),
        ] {
            let mut g = vec![huge; 15];
            if let Some(v) = bad {
                g[11] = v;
            }
            let mut grads = Gradients::leaky();
            Cpu::with_grad(&p, &mut grads, |s| s.copy_from_slice(&g)).unwrap();
            let probe = finite_probe(gradient(&p, &mut grads).unwrap()).unwrap();
            assert_eq!(probe.array().is_finite(), want, "{bad:?}");
        }
    }

    /// Half precision sums as products, scaled: a norm of 1,200 (Σ g² = 1.44e6, past f16's
    /// largest value) comes out, and an infinity is found.
    #[test]
    fn half_precision_sums_neither_overflow_nor_miss_an_infinity() {
        use crate::device::Half;
        use dfdx::shapes::Rank1;
        use num_traits::FromPrimitive;
        let half = |v: f32| Half::from_f32(v).unwrap_or_default();
        let dev = Cpu::default();
        let p: Tensor<Rank1<16>, Half, Cpu> = dev.zeros();
        let mut grads = Gradients::leaky();
        Cpu::with_grad(&p, &mut grads, |g| g.fill(half(300.0))).unwrap();
        let (sum, unit) = grad_sum(GradSum::Squares, &p, &mut grads).unwrap();
        let got = sum.array().0.to_f64() * unit;
        assert!((got / 1.44e6 - 1.0).abs() < 1e-3, "{got}");
        let host = crate::optim::grads::sum_of_squares(&[half(300.0); 16]);
        assert!(
            (host / 1.44e6 - 1.0).abs() < 1e-6,
            "the host's lanes: {host}"
        );
        Cpu::with_grad(&p, &mut grads, |g| g[5] = half(f32::INFINITY)).unwrap();
        let probe = finite_probe(gradient(&p, &mut grads).unwrap()).unwrap();
        assert!(probe.array().0.to_f64().is_nan());
        let mut grads = Gradients::leaky();
        Cpu::with_grad(&p, &mut grads, |g| g.fill(half(60000.0))).unwrap();
        let probe = finite_probe(gradient(&p, &mut grads).unwrap()).unwrap();
        assert_eq!(
            probe.array().0.to_f64(),
            0.0,
            "large finite values are finite"
        );
    }
}

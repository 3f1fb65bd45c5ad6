//! The optimizers' update rules of [`crate::kernels::host`] written with dfdx's tensor ops,
//! for devices where the host rules would copy every parameter, gradient and buffer to the
//! host and back each step. Each op is one of the host rule's, in its order, so on the CPU both
//! give the same bits (the tests below). The parameter is changed in place by dfdx's `axpy`
//! (`p·keep − update·scale`), so it keeps its identity; so are the buffers and the gradient
//! copy wherever the rule is `a·x + b·y` (one op instead of three, and no new buffer: on CUDA
//! each op is a launch and an allocation, per tensor).

use dfdx::tensor::Gradients;
use dfdx::tensor_ops::{TryAdd, TryDiv, TryMul, TrySub};

use super::Composed;
use crate::device::{of_f64, FloatDtype, HostAccess};
use crate::kernels::{Flat, Scratch, Step, StepRule};
use crate::optim::{Clip, Optim, OptimKind};
use crate::walk::AnyTensorMut;
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Step<E, D> for Composed {
    /// The rule as dfdx ops where the parameter lives (`scratch` is not used).
    fn step(
        rule: StepRule<'_>,
        param: &mut dyn AnyTensorMut<E, D>,
        grads: &mut Gradients<E, D>,
        buffers: &mut [Flat<E, D>],
        _scratch: &mut Scratch<E>,
    ) -> Result<()> {
        let (o, step) = (rule.config, rule.step);
        let g = clipped(param.grad_flat(grads)?, rule.clip)?;
        // Shares the parameter's values; dropped before the parameter is written.
        let p = param.flat()?;
        let (keep, update, scale) = match o.kind {
            OptimKind::Sgd => sgd(o, step, p, g, buffers),
            OptimKind::Adam | OptimKind::AdamW => adam(o, step, p, g, buffers),
            OptimKind::RmsProp => rmsprop(o, p, g, buffers),
        }?;
        param.axpy(keep, update, -scale)
    }
}

/// [`Clip::apply`].
fn clipped<E: FloatDtype, D: HostAccess<E>>(
    g: Flat<E, D>,
    clip: Clip,
) -> std::result::Result<Flat<E, D>, D::Err> {
    match clip {
        Clip::None => Ok(g),
        Clip::Scale(coef) => g.try_mul(E::from(coef).unwrap_or_else(E::one)),
        Clip::Clamp(c) => g.try_clamp(-c, c),
    }
}

/// `(keep, update, scale)`: the parameter becomes `p·keep − update·scale`.
type Rule<E, D> = std::result::Result<(f64, Flat<E, D>, f64), <D as dfdx::tensor::HasErr>::Err>;

/// The gradient with L2 weight decay added (`d += wd * p`).
fn decayed<E: FloatDtype, D: HostAccess<E>>(
    o: &Optim,
    p: &Flat<E, D>,
    mut g: Flat<E, D>,
) -> std::result::Result<Flat<E, D>, D::Err> {
    if o.weight_decay != 0.0 {
        g.try_axpy(1.0, p, o.weight_decay)?;
    }
    Ok(g)
}

/// SGD (see the host rule).
fn sgd<E: FloatDtype, D: HostAccess<E>>(
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

/// Adam and AdamW (see the host rule).
fn adam<E: FloatDtype, D: HostAccess<E>>(
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
    let squared = g.clone().try_mul(of_f64::<E>(1.0 - b2))?.try_mul(g)?;
    v.try_axpy(b2, &squared, 1.0)?;
    let denom = v
        .clone()
        .try_sqrt()?
        .try_div(of_f64::<E>(bias_correction2.sqrt()))?
        .try_add(of_f64::<E>(o.eps))?;
    let update = m.clone().try_div(denom)?;
    Ok((keep, update, o.lr / bias_correction1))
}

/// RMSprop (see the host rule).
fn rmsprop<E: FloatDtype, D: HostAccess<E>>(
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
    let one_minus_alpha = of_f64::<E>(1.0 - o.alpha);
    let squared = g.clone().try_mul(one_minus_alpha)?.try_mul(g.clone())?;
    sa.try_axpy(o.alpha, &squared, 1.0)?;
    let avg = if o.centered {
        ga.try_axpy(1.0, &g.clone().try_sub(ga.clone())?, 1.0 - o.alpha)?;
        let variance = sa.clone().try_sub(ga.clone().try_mul(ga.clone())?)?;
        variance.try_sqrt()?.try_add(of_f64::<E>(o.eps))?
    } else {
        sa.clone().try_sqrt()?.try_add(of_f64::<E>(o.eps))?
    };
    let update = if o.momentum > 0.0 {
        mb.try_axpy(o.momentum, &g.try_div(avg)?, 1.0)?;
        mb.clone()
    } else {
        g.try_div(avg)?
    };
    Ok((1.0, update, o.lr))
}

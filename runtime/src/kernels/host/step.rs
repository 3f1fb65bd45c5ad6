//! The optimizers' update rules on host values, one function each, in the order of operations
//! of PyTorch's documented algorithms (the single-tensor `for` implementations of
//! `torch.optim`). The composed kernels ([`crate::kernels::composed`]) do the same ops in the
//! same order, so on the CPU both give the same bits.

use dfdx::tensor::Gradients;
use rayon::prelude::*;

use super::buf::Buf;
use super::Host;
use crate::device::{of_f64, FloatDtype, HostAccess};
use crate::kernels::{Flat, Scratch, Step, StepRule};
use crate::optim::{Optim, OptimKind};
use crate::walk::AnyTensorMut;
use crate::Result;

impl<E: FloatDtype, D: HostAccess<E>> Step<E, D> for Host {
    /// The gradient clipped in place, then the rule on the parameter's values and `buffers`,
    /// read in place on the CPU: each chunk is copied into its new values and updated there,
    /// across rayon's threads (the copies are the reads the rule makes anyway). The new
    /// parameter values are written back; the buffers' become the buffers.
    fn step(
        rule: StepRule<'_>,
        param: &mut dyn AnyTensorMut<E, D>,
        grads: &mut Gradients<E, D>,
        buffers: &mut [Flat<E, D>],
        scratch: &mut Scratch<E>,
    ) -> Result<()> {
        let n = param.num_values();
        let values = match param.host_values() {
            Some(values) => values,
            None => Buf::from(param.values()),
        };
        let olds: Vec<Buf<E>> = buffers
            .iter()
            .map(|b| Buf::of_tensor(b).unwrap_or_else(|| Buf::from(b.as_vec())))
            .collect();
        // The parameter's new values: scratch, grown only (resized to each parameter's length
        // in turn, a large one's were zeroed again every step). The buffers' new values: their
        // next tensors.
        scratch.resize_with(1, Vec::new);
        if scratch[0].len() < n {
            scratch[0].resize(n, E::zero());
        }
        let new = &mut scratch[0][..n];
        let mut news: Vec<Vec<E>> = olds.iter().map(|_| vec![E::zero(); n]).collect();
        param.with_grad(grads, &mut |g| {
            rule.clip.apply(g);
            let mut outs: Vec<&mut [E]> = news.iter_mut().map(|v| &mut v[..]).collect();
            let ins: Vec<&[E]> = olds.iter().map(|b| &b[..]).collect();
            apply_all(rule, (&values, &mut *new), g, (&ins, &mut outs));
        })?;
        drop((values, olds));
        param.set_values(new);
        for (buffer, values) in buffers.iter_mut().zip(news) {
            *buffer = buffer.device().try_tensor_from_vec(values, (n,))?;
        }
        Ok(())
    }
}

/// Values per chunk of a rule spread over rayon's threads.
const CHUNK: usize = 1 << 15;

/// [`apply`] over the whole parameter, its values `p.0` and buffers `b.0` copied into `p.1`
/// and `b.1` first: chunk by chunk, across rayon's threads when it is large (each value's
/// update reads only its own values, so the bits are the same).
fn apply_all<E: FloatDtype>(
    rule: StepRule<'_>,
    (p, new): (&[E], &mut [E]),
    g: &[E],
    (buffers, news): (&[&[E]], &mut [&mut [E]]),
) {
    let one = |(p, new, g, buffers, mut news): Chunk<'_, E>| {
        new.copy_from_slice(p);
        for (n, b) in news.iter_mut().zip(&buffers) {
            n.copy_from_slice(b);
        }
        apply(rule, new, g, &mut news);
    };
    if p.len() < 2 * CHUNK || rayon::current_num_threads() == 1 {
        return one((
            p,
            new,
            g,
            buffers.to_vec(),
            news.iter_mut().map(|b| &mut **b).collect(),
        ));
    }
    let mut ins: Vec<_> = buffers.iter().map(|b| b.chunks(CHUNK)).collect();
    let mut outs: Vec<_> = news.iter_mut().map(|b| b.chunks_mut(CHUNK)).collect();
    let expect = "every buffer is as long as its parameter";
    let parts: Vec<Chunk<'_, E>> = p
        .chunks(CHUNK)
        .zip(new.chunks_mut(CHUNK))
        .zip(g.chunks(CHUNK))
        .map(|((p, new), g)| {
            let ins = ins.iter_mut().map(|c| c.next().expect(expect)).collect();
            let outs = outs.iter_mut().map(|c| c.next().expect(expect)).collect();
            (p, new, g, ins, outs)
        })
        .collect();
    parts.into_par_iter().for_each(one);
}

/// A chunk of a parameter's values and their new values, of its gradient, and of each of
/// its buffers and their new values.
type Chunk<'a, E> = (
    &'a [E],
    &'a mut [E],
    &'a [E],
    Vec<&'a [E]>,
    Vec<&'a mut [E]>,
);

/// `rule`'s update of values `p` of a parameter, from their gradient `g` (clipped already),
/// with the same values of its buffers.
fn apply<E: FloatDtype>(rule: StepRule<'_>, p: &mut [E], g: &[E], buffers: &mut [&mut [E]]) {
    use OptimKind::*;
    let (config, step) = (rule.config, rule.step);
    match (config.kind, buffers) {
        (Sgd, [b, ..]) => sgd(config, step, p, g, b),
        (Adam | AdamW, [m, v, ..]) => adam(config, step, p, g, m, v),
        (RmsProp, [sa, mb, ga, ..]) => rmsprop(config, p, g, sa, mb, ga),
        _ => debug_assert!(false, "the optimizer makes every buffer of the rule first"),
    }
}

/// `torch.optim.SGD`.
fn sgd<E: FloatDtype>(o: &Optim, step: u64, p: &mut [E], g: &[E], buf: &mut [E]) {
    let (lr, wd, mu, damp) = (
        of_f64::<E>(o.lr),
        of_f64::<E>(o.weight_decay),
        of_f64::<E>(o.momentum),
        of_f64::<E>(1.0 - o.dampening),
    );
    for ((p, &g), b) in p.iter_mut().zip(g).zip(buf.iter_mut()) {
        let mut d = g;
        if o.weight_decay != 0.0 {
            d += wd * *p;
        }
        if o.momentum != 0.0 {
            *b = if step == 1 { d } else { *b * mu + damp * d };
            d = if o.nesterov { d + mu * *b } else { *b };
        }
        *p -= lr * d;
    }
}

/// `torch.optim.Adam` (L2 weight decay) and `torch.optim.AdamW` (decoupled weight decay).
fn adam<E: FloatDtype>(o: &Optim, step: u64, p: &mut [E], g: &[E], m: &mut [E], v: &mut [E]) {
    let (b1, b2) = o.betas;
    let bias_correction1 = 1.0 - b1.powf(step as f64);
    let bias_correction2 = 1.0 - b2.powf(step as f64);
    let step_size: E = of_f64(o.lr / bias_correction1);
    let bc2_sqrt: E = of_f64(bias_correction2.sqrt());
    let (one_minus_b1, b2e, one_minus_b2, eps) = (
        of_f64::<E>(1.0 - b1),
        of_f64::<E>(b2),
        of_f64::<E>(1.0 - b2),
        of_f64::<E>(o.eps),
    );
    let decoupled = o.kind == OptimKind::AdamW;
    let (wd, decay): (E, E) = (of_f64(o.weight_decay), of_f64(1.0 - o.lr * o.weight_decay));
    for (((p, &g), m), v) in p.iter_mut().zip(g).zip(m.iter_mut()).zip(v.iter_mut()) {
        let mut g = g;
        if decoupled {
            *p *= decay;
        } else if o.weight_decay != 0.0 {
            g += wd * *p;
        }
        *m = *m + one_minus_b1 * (g - *m); // exp_avg.lerp_(grad, 1 - beta1)
        *v = *v * b2e + one_minus_b2 * g * g;
        let denom = v.sqrt() / bc2_sqrt + eps;
        *p -= step_size * (*m / denom);
    }
}

/// `torch.optim.RMSprop`.
fn rmsprop<E: FloatDtype>(
    o: &Optim,
    p: &mut [E],
    g: &[E],
    square_avg: &mut [E],
    momentum_buf: &mut [E],
    grad_avg: &mut [E],
) {
    let (lr, wd, alpha, one_minus_alpha, eps, mu) = (
        of_f64::<E>(o.lr),
        of_f64::<E>(o.weight_decay),
        of_f64::<E>(o.alpha),
        of_f64::<E>(1.0 - o.alpha),
        of_f64::<E>(o.eps),
        of_f64::<E>(o.momentum),
    );
    for (i, (p, &g)) in p.iter_mut().zip(g).enumerate() {
        let mut g = g;
        if o.weight_decay != 0.0 {
            g += wd * *p;
        }
        let sa = &mut square_avg[i];
        *sa = *sa * alpha + one_minus_alpha * g * g;
        let avg = if o.centered {
            let ga = &mut grad_avg[i];
            *ga = *ga + one_minus_alpha * (g - *ga);
            (*sa - *ga * *ga).sqrt() + eps
        } else {
            sa.sqrt() + eps
        };
        if o.momentum > 0.0 {
            let b = &mut momentum_buf[i];
            *b = *b * mu + g / avg;
            *p -= lr * *b;
        } else {
            *p -= lr * (g / avg);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::optim::Clip;

    /// A parameter large enough to be stepped in chunks across threads, each chunk copied into
    /// its new values first, gets the bits it gets stepped whole in place, under every rule.
    #[test]
    fn chunked_steps_are_the_whole_steps() {
        let n = 5 * CHUNK + 17;
        let values = |seed: usize| -> Vec<f32> {
            (0..n)
                .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 500.0 - 1.0)
                .collect()
        };
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(3)
            .build()
            .expect("a pool");
        for config in [
            Optim::sgd(0.1).momentum(0.9).weight_decay(0.01),
            Optim::adam(1e-3).weight_decay(0.01),
            Optim::adamw(1e-3).weight_decay(0.01),
            Optim::rmsprop(1e-2).momentum(0.5).centered(true),
        ] {
            let rule = StepRule {
                config: &config,
                step: 3,
                clip: Clip::None,
            };
            let g = values(1);
            let (old_p, old_buffers) = (values(2), vec![values(3), values(4), values(5)]);
            let ins: Vec<&[f32]> = old_buffers.iter().map(|b| &b[..]).collect();
            let (mut p, mut buffers) = (vec![f32::NAN; n], vec![vec![f32::NAN; n]; 3]);
            let mut chunked: Vec<&mut [f32]> = buffers.iter_mut().map(|b| &mut b[..]).collect();
            pool.install(|| apply_all(rule, (&old_p, &mut p), &g, (&ins, &mut chunked)));
            let (mut whole_p, mut whole_buffers) = (old_p.clone(), old_buffers.clone());
            let mut whole: Vec<&mut [f32]> = whole_buffers.iter_mut().map(|b| &mut b[..]).collect();
            apply(rule, &mut whole_p, &g, &mut whole);
            // Bits, not values: a negative square average makes NaNs, which must match too.
            let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
            assert_eq!(bits(&p), bits(&whole_p), "{:?}: values", config.kind);
            for (b, w) in buffers.iter().zip(&whole_buffers) {
                assert_eq!(bits(b), bits(w), "{:?}: buffers", config.kind);
            }
        }
    }
}

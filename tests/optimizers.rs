//! fulmen's optimizers against PyTorch's documented update rules, worked out by hand in f64
//! for a parameter vector and gradient sequence (f32 results compared to 1e-6 relative).

use fulmen::optim::Optimizer;
use fulmen::prelude::*;

#[module]
struct One {
    layer: UnbiasedLinear<2, 1>,
}

/// Runs one step of `config` per entry of `grads` on the weight `[p0, p1]`, each gradient
/// fed through a loss whose gradient is exactly that; returns the weights after each step.
fn run(config: Optim, p0: [f32; 2], grads: &[[f32; 2]]) -> Vec<[f32; 2]> {
    let dev = Cpu::default();
    let mut m: One<f32, Cpu> = BuildModule::build(&dev);
    m.layer.weight = dev.tensor([p0]);
    let mut opt = Optimizer::<f32>::new(config).unwrap();
    let mut out = Vec::new();
    for g in grads {
        // loss = w · g, so d loss / d w = g exactly.
        let x = dev.tensor([g[0], g[1]]);
        let mut gr = m.alloc_grads();
        let w = m.layer.weight.trace(gr);
        let loss = (w.reshape::<Rank1<2>>() * x).sum();
        gr = loss.backward();
        opt.step(&mut m, &mut gr).unwrap();
        let w = m.layer.weight.array()[0];
        out.push(w);
    }
    out
}

fn close(a: f32, b: f64) {
    assert!(
        ((a as f64) - b).abs() <= 1e-6 * b.abs().max(1.0),
        "{a} vs {b}"
    );
}

const GRADS: [[f32; 2]; 3] = [[0.5, -1.0], [0.25, 2.0], [-0.75, 0.5]];

#[test]
fn sgd_momentum_dampening_weight_decay() {
    let (lr, mu, damp, wd) = (0.1, 0.9, 0.2, 0.01);
    let got = run(
        Optim::sgd(lr).momentum(mu).dampening(damp).weight_decay(wd),
        [1.0, -2.0],
        &GRADS,
    );
    let mut p = [1.0f64, -2.0];
    let mut buf = [0.0f64; 2];
    for (t, g) in GRADS.iter().enumerate() {
        for i in 0..2 {
            let d = g[i] as f64 + wd * p[i];
            buf[i] = if t == 0 {
                d
            } else {
                mu * buf[i] + (1.0 - damp) * d
            };
            p[i] -= lr * buf[i];
        }
        close(got[t][0], p[0]);
        close(got[t][1], p[1]);
    }
}

#[test]
fn sgd_nesterov() {
    let (lr, mu) = (0.05, 0.8);
    let got = run(
        Optim::sgd(lr).momentum(mu).nesterov(true),
        [0.3, 0.7],
        &GRADS,
    );
    let mut p = [0.3f64, 0.7];
    let mut buf = [0.0f64; 2];
    for (t, g) in GRADS.iter().enumerate() {
        for i in 0..2 {
            let d = g[i] as f64;
            buf[i] = if t == 0 { d } else { mu * buf[i] + d };
            p[i] -= lr * (d + mu * buf[i]);
        }
        close(got[t][0], p[0]);
        close(got[t][1], p[1]);
    }
}

fn adam_reference(decoupled: bool, lr: f64, wd: f64, p0: [f64; 2]) -> Vec<[f64; 2]> {
    let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
    let (mut p, mut m, mut v) = (p0, [0.0f64; 2], [0.0f64; 2]);
    let mut out = Vec::new();
    for (t, g) in GRADS.iter().enumerate() {
        let step = (t + 1) as i32;
        for i in 0..2 {
            let mut g = g[i] as f64;
            if decoupled {
                p[i] *= 1.0 - lr * wd;
            } else {
                g += wd * p[i];
            }
            m[i] = b1 * m[i] + (1.0 - b1) * g;
            v[i] = b2 * v[i] + (1.0 - b2) * g * g;
            let m_hat = m[i] / (1.0 - b1.powi(step));
            let v_hat = v[i] / (1.0 - b2.powi(step));
            p[i] -= lr * m_hat / (v_hat.sqrt() + eps);
        }
        out.push(p);
    }
    out
}

#[test]
fn adam_with_l2_weight_decay() {
    let got = run(Optim::adam(0.01).weight_decay(0.1), [1.0, -2.0], &GRADS);
    for (g, e) in got
        .iter()
        .zip(adam_reference(false, 0.01, 0.1, [1.0, -2.0]))
    {
        close(g[0], e[0]);
        close(g[1], e[1]);
    }
}

#[test]
fn adamw_decouples_weight_decay() {
    let got = run(Optim::adamw(0.01).weight_decay(0.1), [1.0, -2.0], &GRADS);
    let expected = adam_reference(true, 0.01, 0.1, [1.0, -2.0]);
    for (g, e) in got.iter().zip(&expected) {
        close(g[0], e[0]);
        close(g[1], e[1]);
    }
    // And it is not the L2 rule.
    let l2 = adam_reference(false, 0.01, 0.1, [1.0, -2.0]);
    assert!((expected[2][1] - l2[2][1]).abs() > 1e-5);
}

#[test]
fn rmsprop_centered_with_momentum() {
    let (lr, alpha, eps, mu) = (0.01f64, 0.99f64, 1e-8f64, 0.5f64);
    let got = run(
        Optim::rmsprop(lr).centered(true).momentum(mu),
        [0.5, 1.5],
        &GRADS,
    );
    let (mut p, mut sq, mut ga, mut buf) = ([0.5f64, 1.5], [0.0f64; 2], [0.0f64; 2], [0.0f64; 2]);
    for (t, g) in GRADS.iter().enumerate() {
        for i in 0..2 {
            let g = g[i] as f64;
            sq[i] = alpha * sq[i] + (1.0 - alpha) * g * g;
            ga[i] = alpha * ga[i] + (1.0 - alpha) * g;
            let avg = (sq[i] - ga[i] * ga[i]).sqrt() + eps; // eps outside the root, as PyTorch
            buf[i] = mu * buf[i] + g / avg;
            p[i] -= lr * buf[i];
        }
        close(got[t][0], p[0]);
        close(got[t][1], p[1]);
    }
}

#[test]
fn rmsprop_plain() {
    let (lr, alpha, eps) = (0.01f64, 0.99f64, 1e-8f64);
    let got = run(Optim::rmsprop(lr), [0.5, 1.5], &GRADS);
    let (mut p, mut sq) = ([0.5f64, 1.5], [0.0f64; 2]);
    for (t, g) in GRADS.iter().enumerate() {
        for i in 0..2 {
            let g = g[i] as f64;
            sq[i] = alpha * sq[i] + (1.0 - alpha) * g * g;
            p[i] -= lr * g / (sq[i].sqrt() + eps);
        }
        close(got[t][0], p[0]);
        close(got[t][1], p[1]);
    }
}

#[test]
fn learning_rate_changes_take_effect_and_state_is_kept_per_parameter() {
    let dev = Cpu::default();
    let mut m: One<f32, Cpu> = BuildModule::build(&dev);
    m.layer.weight = dev.tensor([[1.0, 1.0]]);
    let mut opt = Optimizer::<f32>::new(Optim::sgd(0.5).momentum(0.9)).unwrap();
    let mut grads = m.alloc_grads();
    let w = m.layer.weight.trace(grads);
    grads = w.sum().backward();
    opt.step(&mut m, &mut grads).unwrap();
    assert_eq!(m.layer.weight.array(), [[0.5, 0.5]]);
    assert_eq!(opt.buffers("layer.weight").unwrap()[0], vec![1.0, 1.0]);
    opt.set_lr(0.0).unwrap();
    opt.step(&mut m, &mut grads).unwrap();
    assert_eq!(
        m.layer.weight.array(),
        [[0.5, 0.5]],
        "lr 0 leaves the weights"
    );
    assert!(opt.set_lr(f64::NAN).is_err());
}

#[test]
fn invalid_settings_are_refused_naming_the_setting() {
    for (config, setting) in [
        (Optim::sgd(-1.0), "lr"),
        (Optim::sgd(0.1).nesterov(true), "nesterov"),
        (Optim::adam(0.1).betas(1.0, 0.9), "betas.0"),
        (Optim::adam(0.1).eps(-1.0), "eps"),
        (
            Optim::rmsprop(0.1).weight_decay(f64::INFINITY),
            "weight_decay",
        ),
    ] {
        let err = Optimizer::<f32>::new(config).unwrap_err().to_string();
        assert!(err.contains(&format!("`{setting}`")), "{err}");
    }
}

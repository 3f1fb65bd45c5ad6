//! FULL_SHARD in one process (a world of one): the units' gathers, recomputed backwards and
//! reduce-scatters give the gradients the layers give without them, bit for bit.

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use dfdx::nn::builders::{DropoutOneIn, Linear, ReLU, Tanh};
use dfdx::nn::{BuildModule, Module, ModuleMut};
use dfdx::shapes::{Rank0, Rank2};
use dfdx::tensor::{AsArray, Cpu, Gradients, SampleTensor, Tensor, Trace};
use dfdx::tensor_ops::{Backward, MeanTo};

use super::{within, FullShard, Unshard};
use crate::distributed::Single;
use crate::layers::Unit;
use crate::walk::{self, Tensors};
use crate::Spec;

/// Units at the top, nested, and parameters outside every unit.
type Net = (
    Unit<(Linear<4, 8>, ReLU)>,
    Unit<(Linear<8, 8>, Tanh, Unit<Linear<8, 3>>)>,
    Linear<3, 2>,
);
type Built = <Net as Spec>::Module<f64, Cpu>;

/// Every trainable gradient of `m` in `g`, by name.
fn by_name(m: &Built, g: &mut Gradients<f64, Cpu>) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    walk::each_grad(m, g, |name, v| out.push((name.to_string(), v.to_vec()))).expect("gradients");
    out
}

/// Every trainable tensor of `m`, by name.
fn values(m: &Built) -> Vec<(String, Vec<f64>)> {
    let mut out = Vec::new();
    walk::Params::each(&Tensors(m), &mut |name, t| {
        out.push((name.to_string(), t.values()));
        Ok(())
    })
    .expect("values");
    out
}

#[test]
fn units_gather_recompute_and_scatter_the_gradients_of_the_plain_layers() {
    let dev = Cpu::default();
    let mut net = Built::try_build(&dev).expect("built");
    let plain = net.clone();
    let x: Tensor<Rank2<5, 4>, f64, Cpu> = dev.sample_normal();

    let y = plain.forward(x.clone().leaky_traced());
    let want_loss = y.square().mean::<Rank0, _>();
    let want_value = want_loss.array();
    let mut want = want_loss.backward();
    let want = by_name(&plain, &mut want);

    let run = Rc::new(RefCell::new(
        FullShard::new(&mut net, Arc::new(Single)).expect("sharded"),
    ));
    assert!(
        values(&net)
            .iter()
            .all(|(_, v)| v.iter().all(|x| x.is_nan())),
        "between steps every parameter is a placeholder"
    );
    run.borrow().gather_roots(&mut net).expect("roots");
    let (value, mut grads) = within(&run, || {
        let loss = net
            .forward_mut(x.clone().leaky_traced())
            .square()
            .mean::<Rank0, _>();
        (loss.array(), loss.backward())
    });
    run.borrow_mut()
        .scatter_root_grads(&net, &mut grads)
        .expect("root gradients");
    run.borrow().release_roots(&mut net).expect("released");
    assert_eq!(value, want_value);
    let local = run.borrow_mut().local_grads().expect("local");
    let got: Vec<(String, Vec<f64>)> = run
        .borrow()
        .unflatten(&local, true)
        .expect("unflattened")
        .into_iter()
        .map(|(name, mut v)| (name, v.remove(0)))
        .collect();
    assert_eq!(got, want);

    // Evaluation gathers each unit into a copy; the whole parameters come back at the end.
    run.borrow().gather_roots(&mut net).expect("roots");
    let y_eval = within(&run, || net.forward(x.clone()));
    run.borrow().release_roots(&mut net).expect("released");
    assert_eq!(y_eval.array(), plain.forward(x).array());
    // A checkpoint's unshard and reshard, twice, then the end of the fit's.
    let checkpoint = Unshard::Checkpoint { here: true };
    for _ in 0..2 {
        run.borrow_mut()
            .unshard(&mut net, checkpoint)
            .expect("unsharded");
        assert_eq!(values(&net), values(&plain));
        run.borrow_mut().reshard(&mut net).expect("resharded");
        assert!(values(&net)
            .iter()
            .all(|(_, v)| v.iter().all(|x| x.is_nan())));
    }
    // One asked for inside a step leaves the top-level fields' gathered parameters (the
    // step's tape holds them) as they are.
    run.borrow().gather_roots(&mut net).expect("roots");
    run.borrow_mut()
        .unshard(&mut net, checkpoint)
        .expect("unsharded");
    run.borrow_mut().reshard(&mut net).expect("resharded");
    for (name, v) in values(&net) {
        let root = name.starts_with("2.");
        assert_eq!(v.iter().all(|x| x.is_finite()), root, "{name}");
    }
    run.borrow().release_roots(&mut net).expect("released");
    // Another rank's checkpoint: this rank helps gather and keeps nothing.
    run.borrow_mut()
        .unshard(&mut net, Unshard::Checkpoint { here: false })
        .expect("helped");
    assert!(values(&net)
        .iter()
        .all(|(_, v)| v.iter().all(|x| x.is_nan())));
    run.borrow_mut()
        .unshard(&mut net, Unshard::End)
        .expect("unsharded");
    assert_eq!(values(&net), values(&plain));
}

#[test]
fn a_unit_whose_recomputation_draws_other_random_numbers_is_named() {
    type Random = (Unit<(Linear<4, 8>, DropoutOneIn<2>)>, Linear<8, 2>);
    let dev = Cpu::default();
    let mut net = <Random as Spec>::Module::<f64, Cpu>::try_build(&dev).expect("built");
    let run = Rc::new(RefCell::new(
        FullShard::new(&mut net, Arc::new(Single)).expect("sharded"),
    ));
    let x: Tensor<Rank2<16, 4>, f64, Cpu> = dev.sample_normal();
    run.borrow().gather_roots(&mut net).expect("roots");
    let failed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
        within(&run, || {
            let loss = net
                .forward_mut(x.leaky_traced())
                .square()
                .mean::<Rank0, _>();
            loss.backward()
        })
    }));
    let message = failed
        .err()
        .and_then(|p| p.downcast_ref::<String>().cloned())
        .expect("the backward stops");
    assert!(message.contains("unit `0.0`"), "{message}");
    assert!(message.contains("dropout"), "{message}");
}

//! A step's inputs (`fulmen::inputs`): the batch a step traces gets no gradient computed, and
//! the parameters' gradients are what they were; a traced parameter and a tensor the step made
//! keep theirs.

use fulmen::inputs::Recording;
use fulmen::layers::linear::modules::Linear;
use fulmen::prelude::*;

type Layer = Linear<4, 4, f32, Cpu>;

/// The gradients of a weighted sum of `model(x)` (every gradient kept: `Gradients::leaky`).
fn grads_of(
    model: &Layer,
    x: Tensor<Rank2<6, 4>, f32, Cpu, OwnedTape<f32, Cpu>>,
) -> Gradients<f32, Cpu> {
    let y = model.forward(x);
    let w: Tensor<Rank2<6, 4>, f32, Cpu> = y.device().tensor_from_vec(
        (0..24).map(|i| (i % 7) as f32 - 3.0).collect(),
        (Const, Const),
    );
    (y * w).sum().backward()
}

#[test]
fn a_steps_input_gets_no_gradient_and_the_parameters_the_same_ones() {
    let dev = Cpu::seed_from_u64(4);
    let model: Layer = BuildModule::build(&dev);
    let x: Tensor<Rank2<6, 4>, f32, Cpu> = dev.sample_normal();

    let mut plain = grads_of(&model, x.clone().traced(Gradients::leaky()));
    let step = Recording::start(&model, &dev).expect("the model's tensors");
    let mut recorded = grads_of(&model, step.trace(x.clone(), Gradients::leaky()));
    drop(step);

    let same = |ours: Vec<f32>, theirs: Vec<f32>, name: &str| {
        assert_eq!(ours, theirs, "{name}: the same gradient");
    };
    same(
        recorded.get(&model.weight).as_vec(),
        plain.get(&model.weight).as_vec(),
        "weight",
    );
    same(
        recorded.get(&model.bias).as_vec(),
        plain.get(&model.bias).as_vec(),
        "bias",
    );
    assert!(
        plain
            .get_or_alloc_mut(&x)
            .unwrap()
            .iter()
            .any(|&g| g != 0.0),
        "without a recording the input's gradient is computed"
    );
    assert!(
        recorded
            .get_or_alloc_mut(&x)
            .unwrap()
            .iter()
            .all(|&g| g == 0.0),
        "a recorded input's gradient is not computed"
    );
}

#[test]
fn a_traced_parameter_and_a_tensor_the_step_made_keep_their_gradients() {
    let dev = Cpu::seed_from_u64(5);
    let model: Layer = BuildModule::build(&dev);
    let x: Tensor<Rank2<6, 4>, f32, Cpu> = dev.sample_normal();

    // A parameter as the input: its gradient includes the input's part.
    let rows = |w: Tensor<Rank2<4, 4>, f32, Cpu, OwnedTape<f32, Cpu>>| {
        let y = model.forward(w);
        y.square().sum().backward()
    };
    let plain = rows(model.weight.clone().traced(Gradients::leaky()));
    let step = Recording::start(&model, &dev).expect("the model's tensors");
    let recorded = rows(step.trace(model.weight.clone(), Gradients::leaky()));
    drop(step);
    assert_eq!(
        recorded.get(&model.weight).as_vec(),
        plain.get(&model.weight).as_vec(),
        "a traced parameter's gradient"
    );

    // A tensor made during the step (a GAN's generated images, traced again): its gradient.
    let step = Recording::start(&model, &dev).expect("the model's tensors");
    let made = x.clone() * 2.0;
    let mut grads = grads_of(&model, step.trace(made.clone(), Gradients::leaky()));
    drop(step);
    assert!(
        grads
            .get_or_alloc_mut(&made)
            .unwrap()
            .iter()
            .any(|&g| g != 0.0),
        "what the step made keeps its gradient"
    );
}

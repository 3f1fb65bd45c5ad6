//! A step's inputs (`fulmen::inputs`): the batch a step traces gets no gradient computed, and
//! the parameters' gradients are what they were; the batch traced again by other means, a
//! traced parameter and a tensor the step made keep theirs.

use fulmen::inputs::Recording;
use fulmen::layers::linear::modules::Linear;
use fulmen::prelude::*;

type Layer = Linear<4, 4, f32, Cpu>;
type Traced<S> = Tensor<S, f32, Cpu, OwnedTape<f32, Cpu>>;

/// The gradients of a weighted sum of `model(x)` (every gradient kept: `Gradients::leaky`).
fn grads_of(model: &Layer, x: Traced<Rank2<6, 4>>) -> Gradients<f32, Cpu> {
    let y = model.forward(x);
    let w: Tensor<Rank2<6, 4>, f32, Cpu> = y.device().tensor_from_vec(
        (0..24).map(|i| (i % 7) as f32 - 3.0).collect(),
        (Const, Const),
    );
    (y * w).sum().backward()
}

/// `t` and a handle to it without its tape (the same id), to read its gradient by.
fn with_handle<S: Shape>(t: Traced<S>) -> (Traced<S>, Tensor<S, f32, Cpu>) {
    let (t, tape) = t.split_tape();
    (t.clone().put_tape(tape), t)
}

fn nonzero(grads: &mut Gradients<f32, Cpu>, t: &Tensor<Rank2<6, 4>, f32, Cpu>) -> bool {
    let g = grads.get_or_alloc_mut(t).expect("a gradient buffer");
    g.iter().any(|&v| v != 0.0)
}

#[test]
fn a_steps_input_gets_no_gradient_and_the_parameters_the_same_ones() {
    let dev = Cpu::seed_from_u64(4);
    let model: Layer = BuildModule::build(&dev);
    let x: Tensor<Rank2<6, 4>, f32, Cpu> = dev.sample_normal();

    let (traced, plain_x) = with_handle(x.clone().traced(Gradients::leaky()));
    let mut plain = grads_of(&model, traced);
    let step = Recording::start(&model, &dev).expect("the model's tensors");
    let (traced, input) = with_handle(step.trace(x.clone(), Gradients::leaky()));
    assert_eq!(input.as_vec(), x.as_vec(), "the input's values");
    let mut recorded = grads_of(&model, traced);
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
        nonzero(&mut plain, &plain_x),
        "unrecorded: the input's gradient"
    );
    // The dense layer skips it where fulmen's own kernels compute it (dfdx's ops elsewhere).
    if fulmen::kernels::instruction_set().is_some() {
        assert!(
            !nonzero(&mut recorded, &input),
            "a recorded input's gradient"
        );
    }
}

#[test]
fn what_is_not_the_steps_input_keeps_its_gradient() {
    let dev = Cpu::seed_from_u64(5);
    let model: Layer = BuildModule::build(&dev);
    let x: Tensor<Rank2<6, 4>, f32, Cpu> = dev.sample_normal();
    let step = Recording::start(&model, &dev).expect("the model's tensors");

    // The batch traced again by other means in the same step (an adversarial example).
    let _ = grads_of(&model, step.trace(x.clone(), Gradients::leaky()));
    let mut grads = grads_of(&model, x.clone().traced(Gradients::leaky()));
    assert!(nonzero(&mut grads, &x), "the batch traced by dfdx");

    // A tensor made during the step (a GAN's generated images, traced again).
    let made = x.clone() * 2.0;
    let mut grads = grads_of(&model, step.trace(made.clone(), Gradients::leaky()));
    assert!(nonzero(&mut grads, &made), "what the step made");

    // A parameter as the input: its gradient includes the input's part.
    let rows = |w: Traced<Rank2<4, 4>>| model.forward(w).square().sum().backward();
    let recorded = rows(step.trace(model.weight.clone(), Gradients::leaky()));
    drop(step);
    let plain = rows(model.weight.clone().traced(Gradients::leaky()));
    assert_eq!(
        recorded.get(&model.weight).as_vec(),
        plain.get(&model.weight).as_vec(),
        "a traced parameter's gradient"
    );
}

#[test]
fn a_recording_inside_a_step_puts_the_steps_back_when_it_ends() {
    if fulmen::kernels::instruction_set().is_none() {
        return; // dfdx's ops compute every gradient: nothing to tell apart
    }
    let dev = Cpu::seed_from_u64(6);
    let model: Layer = BuildModule::build(&dev);
    let x: Tensor<Rank2<6, 4>, f32, Cpu> = dev.sample_normal();
    let outer = Recording::start(&model, &dev).expect("the model's tensors");
    drop(Recording::start(&model, &dev).expect("the model's tensors"));
    let (traced, input) = with_handle(outer.trace(x.clone(), Gradients::leaky()));
    let mut grads = grads_of(&model, traced);
    drop(outer);
    assert!(
        !nonzero(&mut grads, &input),
        "the outer step's input, still recorded"
    );
}

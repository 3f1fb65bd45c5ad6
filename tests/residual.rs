//! The fused residual add + ReLU of ResNet blocks, and fulmen's threaded ReLU, against dfdx's
//! ops.

use fulmen::layers::{add_relu, relu, BatchNorm2D, Conv2DNoBias, ResidualReLU};
use fulmen::prelude::*;

type Imgs = Tensor<(usize, Const<3>, usize, usize), f64, Cpu>;

#[test]
fn add_relu_matches_add_then_relu_in_values_and_gradients() {
    let dev = Cpu::seed_from_u64(4);
    let a: Imgs = dev.sample_normal_like(&(5, Const, 7, 9));
    let b: Imgs = dev.sample_normal_like(&(5, Const, 7, 9));
    // Weights that differ per element, so that no gradient cancels.
    let n = a.shape().num_elements();
    let w: Imgs = dev.tensor_from_vec((0..n).map(|i| (i % 5) as f64 - 1.5).collect(), *a.shape());

    let fused = add_relu(a.clone().leaky_traced(), b.clone().leaky_traced()).unwrap();
    let plain = (a.clone().leaky_traced() + b.clone().leaky_traced()).relu();
    assert_eq!(fused.as_vec(), plain.as_vec());
    let g_fused = (fused * w.clone()).sum::<Rank0, _>().backward();
    let g_plain = (plain * w).sum::<Rank0, _>().backward();
    assert_eq!(g_fused.get(&a).as_vec(), g_plain.get(&a).as_vec());
    assert_eq!(g_fused.get(&b).as_vec(), g_plain.get(&b).as_vec());
}

#[test]
fn threaded_relu_matches_dfdxs_in_values_and_gradients() {
    let dev = Cpu::seed_from_u64(5);
    // Large enough for the threaded kernel (small tensors go through dfdx's op), with exact
    // zeros, where the gradient is zero.
    let x: Imgs = dev.sample_normal_like(&(40, Const, 17, 19));
    let n = x.shape().num_elements();
    let x: Imgs = dev.tensor_from_vec(
        x.as_vec()
            .iter()
            .enumerate()
            .map(|(i, &v)| if i % 11 == 0 { 0.0 } else { v })
            .collect(),
        *x.shape(),
    );
    let w: Imgs = dev.tensor_from_vec((0..n).map(|i| (i % 5) as f64 - 1.5).collect(), *x.shape());
    let ours = relu(x.clone().leaky_traced()).unwrap();
    let dfdx = x.clone().leaky_traced().relu();
    assert_eq!(ours.as_vec(), dfdx.as_vec());
    let g_ours = (ours * w.clone()).sum::<Rank0, _>().backward();
    let g_dfdx = (dfdx * w).sum::<Rank0, _>().backward();
    assert_eq!(g_ours.get(&x).as_vec(), g_dfdx.get(&x).as_vec());
    // The layer in a model is the same op.
    let layer = ReLU.forward(x.clone());
    assert_eq!(layer.as_vec(), x.relu().as_vec());
}

#[test]
fn branches_of_different_shapes_are_an_error() {
    let dev = Cpu::default();
    let a: Imgs = dev.zeros_like(&(2, Const, 4, 4));
    let b: Imgs = dev.zeros_like(&(2, Const, 4, 5));
    let err = add_relu(a, b).unwrap_err().to_string();
    assert!(
        err.contains("residual") && err.contains("agree in shape"),
        "{err}"
    );
}

#[module]
struct Block {
    block: ResidualReLU<(Conv2DNoBias<3, 3, 3, 1, 1>, BatchNorm2D<3>)>,
}

#[test]
fn the_block_computes_relu_of_branch_plus_input_and_its_gradients() {
    let dev = Cpu::seed_from_u64(2);
    let mut block = Block::<f64, Cpu>::build(&dev);
    let x: Imgs = dev.sample_normal_like(&(4, Const, 5, 5));
    let mut reference = block.block.0.clone();
    let y = block
        .block
        .forward_mut(x.clone().traced(block.alloc_grads()));
    let want = (reference.forward_mut(x.clone().traced(block.alloc_grads())) + x.clone()).relu();
    assert_eq!(y.as_vec(), want.as_vec());
    // The clone shares the tensors' ids, so each run's gradients are read by the same keys.
    let weight = &block.block.0 .0.weight;
    let fused = y.sum::<Rank0, _>().backward().get(weight).as_vec();
    let plain = want.sum::<Rank0, _>().backward().get(weight).as_vec();
    assert!(fused.iter().any(|v| *v != 0.0));
    assert_eq!(fused, plain, "the branch's weight gradient is dfdx's");
    let names: Vec<String> = fulmen::checkpoint::Checkpoint::of_module(&block, "Block")
        .unwrap()
        .tensor_names()
        .map(String::from)
        .filter(|n| n.ends_with("weight"))
        .collect();
    assert_eq!(
        names,
        ["block.0.0.weight", "block.0.1.weight"],
        "dfdx's names"
    );
}

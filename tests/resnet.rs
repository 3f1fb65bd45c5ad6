//! The ResNet builders have exactly torchvision's trainable parameter counts
//! (`sum(p.numel() for p in resnetXX(num_classes=10).parameters())`, torch 2.15 /
//! torchvision of the same release), and run forward and backward.

use fulmen::models::resnet::{CifarResNet50, ResNet18, ResNet34, ResNet50, SmallResNet};
use fulmen::prelude::*;

#[module]
struct R18 {
    net: ResNet18<10>,
}
#[module]
struct R34 {
    net: ResNet34<10>,
}
#[module]
struct R50 {
    net: ResNet50<10>,
}
#[module]
struct CifarR50 {
    net: CifarResNet50<10>,
}
#[module]
struct Small {
    net: SmallResNet<10>,
}

#[test]
fn parameter_counts_match_torchvision() {
    let dev = Cpu::default();
    let r18: R18 = BuildModule::build(&dev);
    assert_eq!(r18.num_trainable_params(), 11_181_642);
    let r34: R34 = BuildModule::build(&dev);
    assert_eq!(r34.num_trainable_params(), 21_289_802);
    let r50: R50 = BuildModule::build(&dev);
    assert_eq!(r50.num_trainable_params(), 23_528_522);
    // torchvision's resnet50 with conv1 = 3×3 stride 1 and no max pool.
    let cifar: CifarR50 = BuildModule::build(&dev);
    assert_eq!(cifar.num_trainable_params(), 23_520_842);
    // The throughput benchmark's small ResNet (benches/models.rs builds the same in PyTorch).
    let small: Small = BuildModule::build(&dev);
    assert_eq!(small.num_trainable_params(), 78_042);
}

#[test]
fn resnet18_runs_forward_and_backward() {
    let dev = Cpu::seed_from_u64(0);
    let mut m: R18 = BuildModule::build(&dev);
    let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
        dev.sample_normal_like(&(2, Const, 32, 32));
    // Training mode: batch norm on batch statistics.
    let logits = m.net.forward_mut(x.clone().traced(m.alloc_grads()));
    assert_eq!(*logits.shape(), (2, Const::<10>));
    let grads = logits.square().mean().backward();
    let stem = grads.get(&m.net.0 .0.weight).as_vec();
    assert!(stem.iter().any(|g| *g != 0.0), "gradients reach the stem");
    // Evaluation: running statistics, no tape.
    let eval = m.net.forward(x);
    assert!(eval.as_vec().iter().all(|v| v.is_finite()));
}

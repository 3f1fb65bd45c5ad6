//! ResNets (He et al., torchvision's v1.5: the stride on the 3×3 convolution) as layer
//! specifications built from fulmen's [`Conv2DNoBias`], [`BatchNorm2D`], [`ReLU`],
//! [`MaxPool2D`], [`ResidualReLU`], [`GeneralizedResidualReLU`] and dfdx's `AvgPoolGlobal`,
//! `Linear`. The bodies and each block's branches are [`Fused`]: on the CPU a body trains as
//! one op, and only its output becomes a dfdx tensor. Each block is a [`Unit`]: under
//! `strategy("fsdp")` it gathers its parameters only while it runs (the stem and head are
//! gathered for the whole step).
//!
//! Channel counts are checked at compile time: the blocks of a stage must agree on them. Two
//! stems: [`ImageNetStem`] (7×7 stride-2 convolution and a 3×3 stride-2 max pool) and
//! [`CifarStem`] (3×3 convolution, no pool).
//!
//! ```
//! use fulmen::models::resnet::ResNet50;
//! use fulmen::prelude::*;
//!
//! #[module]
//! struct Classifier {
//!     net: ResNet50<10>,
//! }
//! ```

use dfdx::nn::builders::AvgPoolGlobal;

use crate::layers::{
    BatchNorm2D, Conv2DNoBias, Fused, GeneralizedResidualReLU, Linear, MaxPool2D, ReLU,
    ResidualReLU, Unit,
};

/// 7×7 convolution with stride 2 to 64 channels, batch norm, ReLU, 3×3 max pool with stride 2.
pub type ImageNetStem = (
    Conv2DNoBias<3, 64, 7, 2, 3>,
    BatchNorm2D<64>,
    ReLU,
    MaxPool2D<3, 2, 1>,
);

/// 3×3 convolution to 64 channels, batch norm, ReLU: the stem for 32×32 images.
pub type CifarStem = Fused<(Conv2DNoBias<3, 64, 3, 1, 1>, BatchNorm2D<64>, ReLU)>;

/// Convolution without bias, then batch norm.
pub type ConvBn<const IN: usize, const OUT: usize, const K: usize, const S: usize, const P: usize> =
    (Conv2DNoBias<IN, OUT, K, S, P>, BatchNorm2D<OUT>);

/// BasicBlock (ResNet-18/34) keeping size and channels: two 3×3 convolutions, identity
/// shortcut.
pub type BasicBlock<const C: usize> =
    ResidualReLU<Fused<(ConvBn<C, C, 3, 1, 1>, ReLU, ConvBn<C, C, 3, 1, 1>)>>;

/// BasicBlock that changes channels or size: the shortcut is a strided 1×1 convolution.
pub type BasicBlockDown<const IN: usize, const OUT: usize, const S: usize> =
    GeneralizedResidualReLU<
        Fused<(ConvBn<IN, OUT, 3, S, 1>, ReLU, ConvBn<OUT, OUT, 3, 1, 1>)>,
        Fused<ConvBn<IN, OUT, 1, S, 0>>,
    >;

/// Bottleneck (ResNet-50): 1×1 down to `MID`, 3×3, 1×1 up to `OUT = 4·MID`; identity shortcut.
pub type Bottleneck<const OUT: usize, const MID: usize> = ResidualReLU<
    Fused<(
        (ConvBn<OUT, MID, 1, 1, 0>, ReLU),
        (ConvBn<MID, MID, 3, 1, 1>, ReLU),
        ConvBn<MID, OUT, 1, 1, 0>,
    )>,
>;

/// The first Bottleneck of a stage: stride `S` on the 3×3, a strided 1×1 shortcut.
pub type BottleneckDown<const IN: usize, const MID: usize, const OUT: usize, const S: usize> =
    GeneralizedResidualReLU<
        Fused<(
            (ConvBn<IN, MID, 1, 1, 0>, ReLU),
            (ConvBn<MID, MID, 3, S, 1>, ReLU),
            ConvBn<MID, OUT, 1, 1, 0>,
        )>,
        Fused<ConvBn<IN, OUT, 1, S, 0>>,
    >;

/// Global average pool and the classifier.
pub type Head<const C: usize, const CLASSES: usize> = (AvgPoolGlobal, Linear<C, CLASSES>);

/// The four BasicBlock stages of ResNet-18 (2, 2, 2, 2 blocks).
pub type ResNet18Body = Fused<(
    (Unit<BasicBlock<64>>, Unit<BasicBlock<64>>),
    (Unit<BasicBlockDown<64, 128, 2>>, Unit<BasicBlock<128>>),
    (Unit<BasicBlockDown<128, 256, 2>>, Unit<BasicBlock<256>>),
    (Unit<BasicBlockDown<256, 512, 2>>, Unit<BasicBlock<512>>),
)>;

/// The four BasicBlock stages of ResNet-34 (3, 4, 6, 3 blocks).
pub type ResNet34Body = Fused<(
    (
        Unit<BasicBlock<64>>,
        Unit<BasicBlock<64>>,
        Unit<BasicBlock<64>>,
    ),
    (
        Unit<BasicBlockDown<64, 128, 2>>,
        Unit<BasicBlock<128>>,
        Unit<BasicBlock<128>>,
        Unit<BasicBlock<128>>,
    ),
    (
        (
            Unit<BasicBlockDown<128, 256, 2>>,
            Unit<BasicBlock<256>>,
            Unit<BasicBlock<256>>,
        ),
        (
            Unit<BasicBlock<256>>,
            Unit<BasicBlock<256>>,
            Unit<BasicBlock<256>>,
        ),
    ),
    (
        Unit<BasicBlockDown<256, 512, 2>>,
        Unit<BasicBlock<512>>,
        Unit<BasicBlock<512>>,
    ),
)>;

/// ResNet-18 with the ImageNet stem.
pub type ResNet18<const CLASSES: usize> = (ImageNetStem, ResNet18Body, Head<512, CLASSES>);
/// ResNet-18 with the CIFAR stem.
pub type CifarResNet18<const CLASSES: usize> = (CifarStem, ResNet18Body, Head<512, CLASSES>);
/// ResNet-34 with the ImageNet stem.
pub type ResNet34<const CLASSES: usize> = (ImageNetStem, ResNet34Body, Head<512, CLASSES>);
/// ResNet-34 with the CIFAR stem.
pub type CifarResNet34<const CLASSES: usize> = (CifarStem, ResNet34Body, Head<512, CLASSES>);

/// The small CIFAR ResNet of fulmen's throughput benchmark (78,042 parameters with 10
/// classes): a 3×3 stem to 16 channels, BasicBlocks at 16, 32 (stride 2) and 64 (stride 2),
/// global average pooling, a linear layer.
pub type SmallResNet<const CLASSES: usize> = (
    Fused<(Conv2DNoBias<3, 16, 3, 1, 1>, BatchNorm2D<16>, ReLU)>,
    Fused<(
        Unit<BasicBlock<16>>,
        Unit<BasicBlockDown<16, 32, 2>>,
        Unit<BasicBlockDown<32, 64, 2>>,
    )>,
    Head<64, CLASSES>,
);

/// ResNet-50 with the ImageNet stem: torchvision's `resnet50(num_classes=CLASSES)`.
pub type ResNet50<const CLASSES: usize> = (ImageNetStem, ResNet50Body, Head<2048, CLASSES>);

/// ResNet-50 with the CIFAR stem (3×3 convolution, no max pool) for 32×32 images.
pub type CifarResNet50<const CLASSES: usize> = (CifarStem, ResNet50Body, Head<2048, CLASSES>);

/// The four Bottleneck stages of ResNet-50 (3, 4, 6, 3 blocks).
pub type ResNet50Body = Fused<(
    (
        Unit<BottleneckDown<64, 64, 256, 1>>,
        Unit<Bottleneck<256, 64>>,
        Unit<Bottleneck<256, 64>>,
    ),
    (
        Unit<BottleneckDown<256, 128, 512, 2>>,
        Unit<Bottleneck<512, 128>>,
        Unit<Bottleneck<512, 128>>,
        Unit<Bottleneck<512, 128>>,
    ),
    (
        (
            Unit<BottleneckDown<512, 256, 1024, 2>>,
            Unit<Bottleneck<1024, 256>>,
            Unit<Bottleneck<1024, 256>>,
        ),
        (
            Unit<Bottleneck<1024, 256>>,
            Unit<Bottleneck<1024, 256>>,
            Unit<Bottleneck<1024, 256>>,
        ),
    ),
    (
        Unit<BottleneckDown<1024, 512, 2048, 2>>,
        Unit<Bottleneck<2048, 512>>,
        Unit<Bottleneck<2048, 512>>,
    ),
)>;

//! `Conv2D<IN, OUT, K, STRIDE, PADDING, DILATION, IN_PER_GROUP>`: a 2-D convolution layer with
//! bias for `#[module]` and `#[lightning_module]` structs. Channel counts are compile-time
//! constants — a layer reading 64 channels after one writing 32 does not compile — while height
//! and width are run-time.
//!
//! Groups are given by the input channels each group reads, `IN_PER_GROUP` (default `IN`: one
//! group), because that is the weight's second dimension, `[OUT, IN / groups, K, K]`, and
//! stable Rust cannot compute it from a group count: PyTorch's `groups=g` is
//! `IN_PER_GROUP = IN / g`, and [`DepthwiseConv2D`] is `IN_PER_GROUP = 1`. A value that does not
//! divide the channels fails to build.
//!
//! ```
//! use fulmen::layers::Conv2D;
//! use fulmen::prelude::*;
//!
//! #[module]
//! struct Stem {
//!     conv: Conv2D<3, 16, 3, 1, 1>, // 3 → 16 channels, 3×3, stride 1, padding 1
//! }
//!
//! let stem = Stem::build(&Cpu::default());
//! let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> = Cpu::default().zeros_like(&(2, Const, 32, 32));
//! let y = stem.conv.forward(x);
//! assert_eq!(y.shape().2, 32);
//! ```
//!
//! Weights start as PyTorch's `nn.Conv2d` does: uniform in ±1/√fan_in, fan_in =
//! IN_PER_GROUP·K².

use dfdx::nn::{Module, ModuleVisitor, NonMutableModule, TensorCollection, TensorOptions};
use dfdx::shapes::{Const, Dtype, HasShape, Shape};
use dfdx::tensor::{Tape, Tensor};
use dfdx::tensor_ops::Device;
use rand_distr::Uniform;

use super::or_panic;
use crate::kernels::{Conv, Describe, Op};
use crate::shapes::{realize, ConvGeom, ConvOptions, Dyn4};
use crate::{FloatDtype, Result, TrainDevice};

/// `x` convolved with `weight` (PyTorch's `conv2d`, cross-correlation), plus `bias`; an error
/// names a weight, bias or input that does not fit. Differentiable: with a tape on `x`,
/// backward fills the gradients of `x`, `weight` and `bias`.
///
/// ```
/// use fulmen::layers::{conv2d, ConvOptions};
/// use fulmen::prelude::*;
///
/// let dev = Cpu::default();
/// let x: Tensor<(usize, usize, usize, usize), f32, Cpu> = dev.sample_normal_like(&(2, 3, 8, 8));
/// let w: Tensor<(usize, usize, usize, usize), f32, Cpu> = dev.sample_normal_like(&(4, 3, 3, 3));
/// let y = conv2d(x, &w, None, ConvOptions { stride: 2, padding: 1, ..Default::default() })?;
/// assert_eq!(*y.shape(), (2, 4, 4, 4));
/// # Ok::<(), fulmen::Error>(())
/// ```
pub fn conv2d<E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>(
    x: Dyn4<E, D, T>,
    weight: &Dyn4<E, D>,
    bias: Option<&Tensor<(usize,), E, D>>,
    opts: ConvOptions,
) -> Result<Dyn4<E, D, T>> {
    let bias_len = bias.map(|b| b.shape().0);
    let g = ConvGeom::of(x.shape().concrete(), *weight.shape(), bias_len, opts)?;
    D::Kernels::conv2d(x, weight, bias, &g)
}

/// PyTorch's bound: 1/√(fan_in), fan_in = (IN / groups)·K².
fn bound<E: FloatDtype>(c_in: usize, k: usize) -> E {
    E::one() / E::from(c_in * k * k).unwrap_or_else(E::one).sqrt()
}

/// The tensor types of the layers, by field name.
/// `[OUT, IN / groups, K, K]`, PyTorch's layout; `G` is the input channels per group.
type Weight<const G: usize, const OUT: usize, const K: usize, E, D> =
    Tensor<(Const<OUT>, Const<G>, Const<K>, Const<K>), E, D>;
type Bias<const OUT: usize, E, D> = Tensor<(Const<OUT>,), E, D>;

/// One convolution layer: its specification type and dfdx's plumbing for its module, whose
/// tensor fields (`weight`, and `bias` when it has one) are declared in [`modules`].
macro_rules! conv_layer {
    ($(#[$doc:meta])* $name:ident { $($field:ident),+ }) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq)]
        pub struct $name<
            const IN: usize,
            const OUT: usize,
            const K: usize,
            const STRIDE: usize = 1,
            const PADDING: usize = 0,
            const DILATION: usize = 1,
            const IN_PER_GROUP: usize = IN,
        >;

        impl<const IN: usize, const OUT: usize, const K: usize, const S: usize, const P: usize, const L: usize, const G: usize>
            crate::Spec for $name<IN, OUT, K, S, P, L, G>
        {
            type Module<E: Dtype, D: Device<E>> = modules::$name<IN, OUT, K, S, P, L, G, E, D>;
        }

        impl<const IN: usize, const OUT: usize, const K: usize, const S: usize, const P: usize, const L: usize, const G: usize, E: Dtype, D: Device<E>>
            modules::$name<IN, OUT, K, S, P, L, G, E, D>
        {
            fn bias(&self) -> Option<&Bias<OUT, E, D>> {
                conv_layer!(@bias self $($field)+)
            }
        }

        impl<const IN: usize, const OUT: usize, const K: usize, const S: usize, const P: usize, const L: usize, const G: usize, E: FloatDtype, D: Device<E>>
            TensorCollection<E, D> for modules::$name<IN, OUT, K, S, P, L, G, E, D>
        {
            type To<E2: Dtype, D2: Device<E2>> = modules::$name<IN, OUT, K, S, P, L, G, E2, D2>;

            fn iter_tensors<V: ModuleVisitor<Self, E, D>>(
                visitor: &mut V,
            ) -> Result<Option<Self::To<V::E2, V::D2>>, V::Err> {
                visitor.visit_fields(
                    ($(
                        Self::tensor(
                            stringify!($field),
                            |s| &s.$field,
                            |s| &mut s.$field,
                            TensorOptions::reset_with(|t| {
                                let b = bound::<E>(G, K);
                                t.try_fill_with_distr(Uniform::new(-b, b))
                            }),
                        ),
                    )+),
                    |($($field,)+)| modules::$name { $($field),+ },
                )
            }
        }

        impl<const IN: usize, const OUT: usize, const K: usize, const S: usize, const P: usize, const L: usize, const G: usize, E: Dtype, D: Device<E>>
            NonMutableModule for modules::$name<IN, OUT, K, S, P, L, G, E, D>
        {
        }

        impl<const IN: usize, const OUT: usize, const K: usize, const S: usize, const P: usize, const L: usize, const G: usize, E: FloatDtype, D: TrainDevice<E>, T: Tape<E, D>>
            Module<Tensor<(usize, Const<IN>, usize, usize), E, D, T>>
            for modules::$name<IN, OUT, K, S, P, L, G, E, D>
        {
            type Output = Tensor<(usize, Const<OUT>, usize, usize), E, D, T>;
            type Error = D::Err;

            fn try_forward(
                &self,
                x: Tensor<(usize, Const<IN>, usize, usize), E, D, T>,
            ) -> Result<Self::Output, D::Err> {
                // The shapes made run-time for the op, and back.
                let forward = || {
                    let x = realize(x, "Conv2D input")?;
                    let (weight, bias, opts) = self.parts()?;
                    realize(conv2d(x, &weight, bias.as_ref(), opts)?, "Conv2D output")
                };
                Ok(or_panic(forward()))
            }
        }

        impl<const IN: usize, const OUT: usize, const K: usize, const S: usize, const P: usize, const L: usize, const G: usize, E: FloatDtype, D: TrainDevice<E>>
            modules::$name<IN, OUT, K, S, P, L, G, E, D>
        {
            /// The layer as [`conv2d()`] takes it: weight and bias with run-time shapes, and
            /// its options.
            fn parts(&self) -> Result<(Dyn4<E, D>, Option<Tensor<(usize,), E, D>>, ConvOptions)> {
                let weight = realize(self.weight.clone(), "Conv2D.weight")?;
                let bias = match self.bias() {
                    Some(b) => Some(realize(b.clone(), "Conv2D.bias")?),
                    None => None,
                };
                let opts = ConvOptions {
                    stride: S,
                    padding: P,
                    dilation: L,
                    groups: Groups::<IN, OUT, G>::COUNT,
                };
                Ok((weight, bias, opts))
            }
        }


        impl<const IN: usize, const OUT: usize, const K: usize, const S: usize, const P: usize, const L: usize, const G: usize, E: FloatDtype, D: TrainDevice<E>>
            Describe<E, D> for modules::$name<IN, OUT, K, S, P, L, G, E, D>
        {
            fn describe<'a>(&'a mut self, ops: &mut Vec<Op<'a, E, D>>) -> Result<()> {
                let (weight, bias, opts) = self.parts()?;
                ops.push(Op::Conv { weight, bias, opts });
                Ok(())
            }
        }
    };
    (@bias $s:ident weight) => { None };
    (@bias $s:ident weight bias) => { Some(&$s.bias) };
}

pub mod modules {
    //! The modules of the layers: their tensors, with PyTorch's names and layouts.
    use super::*;

    /// The tensors of a [`Conv2D`](super::Conv2D): `weight` `[OUT, IN, K, K]` and `bias`
    /// `[OUT]`.
    #[derive(Debug, Clone)]
    pub struct Conv2D<
        const IN: usize,
        const OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const L: usize,
        const G: usize,
        E: Dtype,
        D: Device<E>,
    > {
        /// The kernels, `[OUT, IN / groups, K, K]` (`G` is the input channels per group).
        pub weight: Weight<G, OUT, K, E, D>,
        /// The bias, one value per output channel.
        pub bias: Bias<OUT, E, D>,
    }

    /// The tensor of a [`Conv2DNoBias`](super::Conv2DNoBias): `weight` `[OUT, IN, K, K]`.
    #[derive(Debug, Clone)]
    pub struct Conv2DNoBias<
        const IN: usize,
        const OUT: usize,
        const K: usize,
        const S: usize,
        const P: usize,
        const L: usize,
        const G: usize,
        E: Dtype,
        D: Device<E>,
    > {
        /// The kernels, `[OUT, IN / groups, K, K]` (`G` is the input channels per group).
        pub weight: Weight<G, OUT, K, E, D>,
    }
}

conv_layer!(
    /// The layer's specification (what a struct field names); its module is
    /// [`modules::Conv2D`].
    Conv2D { weight, bias }
);

/// A depthwise convolution (one group per channel, PyTorch's `groups=C`) with bias.
pub type DepthwiseConv2D<
    const C: usize,
    const K: usize,
    const STRIDE: usize = 1,
    const PADDING: usize = 0,
    const DILATION: usize = 1,
> = Conv2D<C, C, K, STRIDE, PADDING, DILATION, 1>;

conv_layer!(
    /// A convolution layer without bias (PyTorch's `bias=False`, what a convolution before a
    /// batch norm uses); otherwise as [`Conv2D`].
    Conv2DNoBias { weight }
);

/// The group count of a layer with `G` input channels per group, refused at compile time
/// unless it divides both channel counts.
struct Groups<const IN: usize, const OUT: usize, const G: usize>;

impl<const IN: usize, const OUT: usize, const G: usize> Groups<IN, OUT, G> {
    const COUNT: usize = {
        assert!(
            G > 0 && IN.is_multiple_of(G) && OUT.is_multiple_of(IN / G),
            "Conv2D: IN_PER_GROUP must divide IN, and the group count IN / IN_PER_GROUP must divide OUT"
        );
        IN / G
    };
}

//! The shapes the layers and their kernels share: image batches ([`Images`], [`Dyn4`]) and the
//! geometry of a convolution ([`ConvOptions`], [`ConvGeom`]) or a pooling ([`PoolKind`]).

use dfdx::shapes::{Dtype, HasShape, RealizeShapeTo, Shape};
use dfdx::tensor::{Cpu, NoneTape, Storage, Tape, Tensor};
use dfdx::tensor_ops::RealizeTo;

use crate::{Error, Result};

/// A batch of images with `C` channels: `[N, C, H, W]`, only the channels fixed at compile time.
pub type Images<const C: usize, E, D = Cpu, T = NoneTape> =
    Tensor<(usize, dfdx::shapes::Const<C>, usize, usize), E, D, T>;

/// A 4-D tensor with run-time dimensions, `[N, C, H, W]` (or `[C_out, C_in/groups, K, K]`).
pub type Dyn4<E, D = Cpu, T = NoneTape> = Tensor<(usize, usize, usize, usize), E, D, T>;

/// Stride, padding, dilation and groups of a convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConvOptions {
    /// Pixels between windows (default 1).
    pub stride: usize,
    /// Zeros around the input, on each side (default 0).
    pub padding: usize,
    /// Pixels between a window's taps (default 1).
    pub dilation: usize,
    /// Groups of channels convolved separately (default 1).
    pub groups: usize,
}

impl Default for ConvOptions {
    fn default() -> Self {
        Self {
            stride: 1,
            padding: 0,
            dilation: 1,
            groups: 1,
        }
    }
}

/// Which reduction a pooling window applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolKind {
    /// The window's largest value.
    Max,
    /// The window's mean (padding counted, PyTorch's `count_include_pad=True`).
    Avg,
}

/// The shape of one convolution.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct ConvGeom {
    /// Images in the batch.
    pub batch: usize,
    /// Input channels.
    pub c_in: usize,
    /// Input height.
    pub h: usize,
    /// Input width.
    pub w: usize,
    /// Output channels.
    pub c_out: usize,
    /// The kernel's size (square).
    pub k: usize,
    /// Pixels between windows.
    pub stride: usize,
    /// Zeros around the input, on each side.
    pub padding: usize,
    /// Pixels between a window's taps.
    pub dilation: usize,
    /// Groups of channels convolved separately.
    pub groups: usize,
}

impl ConvGeom {
    /// The geometry of a convolution with a weight of shape `[c_out, c_in / groups, k, k]`,
    /// `bias` values (if it has a bias) and `opts`, on images of shape `[n, c_in, h, w]`;
    /// impossible geometry is an error naming it.
    pub fn of(
        [batch, c_in, h, w]: [usize; 4],
        (c_out, cin_g, k, k2): (usize, usize, usize, usize),
        bias: Option<usize>,
        opts: ConvOptions,
    ) -> Result<Self> {
        let geom = ConvGeom {
            batch,
            c_in,
            h,
            w,
            c_out,
            k,
            stride: opts.stride,
            padding: opts.padding,
            dilation: opts.dilation,
            groups: opts.groups,
        };
        geom.check()?;
        if k != k2 || cin_g * opts.groups != c_in {
            return Err(Error::config(
                "Conv2D.weight",
                format!(
                    "a weight of shape [{c_out}, {cin_g}, {k}, {k2}] does not fit {c_in} input channels in {} groups with a square kernel",
                    opts.groups
                ),
            ));
        }
        match bias {
            Some(len) if len != c_out => Err(Error::config(
                "Conv2D.bias",
                format!("{len} biases for {c_out} output channels"),
            )),
            _ => Ok(geom),
        }
    }

    /// Its stride, padding, dilation and groups.
    pub fn options(&self) -> ConvOptions {
        ConvOptions {
            stride: self.stride,
            padding: self.padding,
            dilation: self.dilation,
            groups: self.groups,
        }
    }

    /// Refuses impossible geometry, naming what is wrong.
    pub fn check(&self) -> Result<()> {
        let bad = |what: &str, why: String| Err(Error::config(format!("Conv2D.{what}"), why));
        if self.stride == 0 || self.dilation == 0 || self.k == 0 {
            return bad(
                "stride",
                "stride, dilation and kernel size must be at least 1".into(),
            );
        }
        if self.groups == 0
            || !self.c_in.is_multiple_of(self.groups)
            || !self.c_out.is_multiple_of(self.groups)
        {
            return bad(
                "groups",
                format!(
                    "{} groups do not divide {} input and {} output channels",
                    self.groups, self.c_in, self.c_out
                ),
            );
        }
        let span = self.dilation * (self.k - 1) + 1;
        if self.h + 2 * self.padding < span || self.w + 2 * self.padding < span {
            return bad(
                "kernel_size",
                format!(
                    "a {}×{} input with padding {} is smaller than the kernel's span of {span}",
                    self.h, self.w, self.padding
                ),
            );
        }
        Ok(())
    }
    /// Output height.
    pub fn h_out(&self) -> usize {
        (self.h + 2 * self.padding - self.dilation * (self.k - 1) - 1) / self.stride + 1
    }
    /// Output width.
    pub fn w_out(&self) -> usize {
        (self.w + 2 * self.padding - self.dilation * (self.k - 1) - 1) / self.stride + 1
    }
    pub(crate) fn cin_g(&self) -> usize {
        self.c_in / self.groups
    }
    pub(crate) fn cout_g(&self) -> usize {
        self.c_out / self.groups
    }
    /// Rows of one group's column matrix: `C_in / groups × K × K`.
    pub(crate) fn col_rows(&self) -> usize {
        self.cin_g() * self.k * self.k
    }
    pub(crate) fn hw_out(&self) -> usize {
        self.h_out() * self.w_out()
    }
    /// Values in the weight.
    pub fn weight_len(&self) -> usize {
        self.c_out * self.col_rows()
    }
    /// Values in the output.
    pub fn output_len(&self) -> usize {
        self.batch * self.c_out * self.hw_out()
    }
}

/// `t` with the shape type `Dst`: the same dimensions, each known at compile time or not (a
/// batch `[N, 3, H, W]` as `[N, C, H, W]` of run-time sizes, and back). Dimensions that do not
/// fit `Dst` are an error naming `what`.
pub(crate) fn realize<Dst, S, E, D, T>(
    t: Tensor<S, E, D, T>,
    what: &str,
) -> Result<Tensor<Dst, E, D, T>>
where
    S: Shape + RealizeShapeTo<Dst>,
    Dst: Shape<Concrete = S::Concrete>,
    E: Dtype,
    D: Storage<E>,
    T: Tape<E, D>,
{
    let from = *t.shape();
    t.try_realize::<Dst>()
        .map_err(|_| Error::msg(format!("{what}: a tensor of shape {from:?} does not fit")))
}

/// The error of a residual block whose branches end in different shapes.
pub(crate) fn branches_disagree(f: impl std::fmt::Debug, r: impl std::fmt::Debug) -> Error {
    Error::config(
        "residual",
        format!("the branches give {f:?} and {r:?}; a block's branches must agree in shape"),
    )
}

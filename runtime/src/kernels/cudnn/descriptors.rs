//! cuDNN's descriptions of a convolution's operands, made from fulmen's [`ConvGeom`]: each an
//! owned handle, destroyed when dropped. Making them needs no GPU.

use std::ffi::c_void;

use super::library::{Api, Desc};
use crate::shapes::ConvGeom;

/// `CUDNN_TENSOR_NCHW`: dfdx's layout of images and of convolution weights.
const NCHW: i32 = 0;
/// `CUDNN_CROSS_CORRELATION`: what PyTorch's and fulmen's `conv2d` compute.
const CROSS_CORRELATION: i32 = 1;
/// `CUDNN_TENSOR_OP_MATH`: tensor cores (half precision; each algorithm then runs with the
/// math type cuDNN's heuristics name for it, as PyTorch does).
const TENSOR_OP_MATH: i32 = 1;
/// `CUDNN_FMA_MATH`: no tensor cores, so no TF32 rounding of f32 inputs: f32 convolutions
/// compute as the composed kernels' cuBLAS products and the CPU's kernels do.
pub(crate) const FMA_MATH: i32 = 3;

/// A dtype cuDNN computes in: its `cudnnDataType_t`, the dtype it accumulates in, and the
/// type of the α and β scalars it takes by pointer (`float`, except for `double` data).
pub(crate) trait CudnnDtype: Copy + 'static {
    /// `CUDNN_DATA_FLOAT` (0), `CUDNN_DATA_DOUBLE` (1) or `CUDNN_DATA_HALF` (2).
    const DATA: i32;
    /// The accumulation: f32 for half data (cuDNN's "pseudo-half"), else the data's own.
    const COMPUTE: i32;
    /// `CUDNN_TENSOR_OP_MATH` where tensor cores keep the result as exact as the dtype, else
    /// `CUDNN_FMA_MATH`.
    const MATH: i32;
    /// Whether cuDNN's batch norm takes this dtype's per-channel operands as they are (its
    /// half-precision batch norm wants them in f32).
    const BATCH_NORM: bool;
    /// α or β.
    type Scale: Copy;
    fn scale(v: f64) -> Self::Scale;
}

impl CudnnDtype for f32 {
    const DATA: i32 = 0;
    const COMPUTE: i32 = 0;
    const MATH: i32 = FMA_MATH;
    const BATCH_NORM: bool = true;
    type Scale = f32;
    fn scale(v: f64) -> f32 {
        v as f32
    }
}

impl CudnnDtype for f64 {
    const DATA: i32 = 1;
    const COMPUTE: i32 = 1;
    const MATH: i32 = FMA_MATH;
    const BATCH_NORM: bool = true;
    type Scale = f64;
    fn scale(v: f64) -> f64 {
        v
    }
}

impl CudnnDtype for crate::device::Half {
    const DATA: i32 = 2;
    const COMPUTE: i32 = 0;
    const MATH: i32 = TENSOR_OP_MATH;
    const BATCH_NORM: bool = false;
    type Scale = f32;
    fn scale(v: f64) -> f32 {
        v as f32
    }
}

/// A scalar α or β as cuDNN takes it: a pointer to a value of the right type.
pub(crate) fn scale_ptr<E: CudnnDtype>(v: &E::Scale) -> *const c_void {
    (v as *const E::Scale).cast()
}

/// Which kind of descriptor a [`Described`] owns, for its destruction.
#[derive(Clone, Copy)]
enum Kind {
    Tensor,
    Filter,
    Conv,
}

/// One descriptor, destroyed on drop.
pub(crate) struct Described {
    api: &'static Api,
    kind: Kind,
    pub(crate) raw: Desc,
}

impl Drop for Described {
    fn drop(&mut self) {
        let destroy = match self.kind {
            Kind::Tensor => self.api.destroy_tensor,
            Kind::Filter => self.api.destroy_filter,
            Kind::Conv => self.api.destroy_conv,
        };
        // SAFETY: `raw` was made by the matching create call and is destroyed once.
        unsafe { destroy(self.raw) };
    }
}

impl Described {
    fn new(api: &'static Api, kind: Kind) -> Result<Self, String> {
        let create = match kind {
            Kind::Tensor => api.create_tensor,
            Kind::Filter => api.create_filter,
            Kind::Conv => api.create_conv,
        };
        let mut raw: Desc = std::ptr::null_mut();
        // SAFETY: writes one handle into `raw`.
        api.check(unsafe { create(&mut raw) }, "creating a descriptor")?;
        Ok(Described { api, kind, raw })
    }
}

/// A size as cuDNN's `int`, or which one does not fit.
fn int(v: usize, what: &str) -> Result<i32, String> {
    i32::try_from(v).map_err(|_| format!("cuDNN: the convolution's {what}, {v}, is over 2³¹"))
}

/// The descriptors of one convolution: input `x`, weight `w`, output `y` and the convolution.
pub(crate) struct ConvDescriptors {
    pub(crate) x: Described,
    pub(crate) w: Described,
    pub(crate) y: Described,
    pub(crate) conv: Described,
}

/// `[n, c, h, w]` images in `E`, NCHW.
fn images<E: CudnnDtype>(api: &'static Api, [n, c, h, w]: [usize; 4]) -> Result<Described, String> {
    let d = Described::new(api, Kind::Tensor)?;
    let (n, c, h, w) = (
        int(n, "batch")?,
        int(c, "channels")?,
        int(h, "height")?,
        int(w, "width")?,
    );
    // SAFETY: `d` is a tensor descriptor.
    let status = unsafe { (api.set_tensor_4d)(d.raw, NCHW, E::DATA, n, c, h, w) };
    api.check(status, "cudnnSetTensor4dDescriptor")?;
    Ok(d)
}

/// `CUDNN_BATCHNORM_SPATIAL`: one mean and variance per channel, over the batch and pixels.
pub(crate) const SPATIAL: i32 = 1;

/// The descriptors of a batch norm: the images (input and output alike) and the per-channel
/// operands (scale, bias, statistics), which cuDNN derives from them.
pub(crate) struct NormDescriptors {
    pub(crate) x: Described,
    pub(crate) params: Described,
}

impl NormDescriptors {
    /// For `[n, c, h, w]` images in `E`.
    pub(crate) fn new<E: CudnnDtype>(api: &'static Api, shape: [usize; 4]) -> Result<Self, String> {
        let x = images::<E>(api, shape)?;
        let params = Described::new(api, Kind::Tensor)?;
        // SAFETY: `params` is a tensor descriptor, `x` is set.
        let status = unsafe { (api.derive_bn)(params.raw, x.raw, SPATIAL) };
        api.check(status, "cudnnDeriveBNTensorDescriptor")?;
        Ok(NormDescriptors { x, params })
    }
}

impl ConvDescriptors {
    /// For `g` in the dtype `E`; checks that cuDNN's output shape is `g`'s.
    pub(crate) fn new<E: CudnnDtype>(api: &'static Api, g: &ConvGeom) -> Result<Self, String> {
        let x = images::<E>(api, [g.batch, g.c_in, g.h, g.w])?;
        let y = images::<E>(api, [g.batch, g.c_out, g.h_out(), g.w_out()])?;
        let w = Described::new(api, Kind::Filter)?;
        let k = int(g.k, "kernel size")?;
        let per_group = int(g.c_in / g.groups.max(1), "input channels per group")?;
        // SAFETY: `w` is a filter descriptor.
        let status = unsafe {
            (api.set_filter_4d)(
                w.raw,
                E::DATA,
                NCHW,
                int(g.c_out, "output channels")?,
                per_group,
                k,
                k,
            )
        };
        api.check(status, "cudnnSetFilter4dDescriptor")?;
        let conv = Described::new(api, Kind::Conv)?;
        let (p, s, d) = (
            int(g.padding, "padding")?,
            int(g.stride, "stride")?,
            int(g.dilation, "dilation")?,
        );
        // SAFETY: `conv` is a convolution descriptor.
        let status =
            unsafe { (api.set_conv_2d)(conv.raw, p, p, s, s, d, d, CROSS_CORRELATION, E::COMPUTE) };
        api.check(status, "cudnnSetConvolution2dDescriptor")?;
        let status = unsafe { (api.set_conv_groups)(conv.raw, int(g.groups, "groups")?) };
        api.check(status, "cudnnSetConvolutionGroupCount")?;
        let status = unsafe { (api.set_conv_math)(conv.raw, E::MATH) };
        api.check(status, "cudnnSetConvolutionMathType")?;
        let (mut n, mut c, mut h, mut wo) = (0, 0, 0, 0);
        // SAFETY: the three descriptors are set; writes four ints.
        let status = unsafe {
            (api.conv_output_dim)(conv.raw, x.raw, w.raw, &mut n, &mut c, &mut h, &mut wo)
        };
        api.check(status, "cudnnGetConvolution2dForwardOutputDim")?;
        let theirs = [n, c, h, wo].map(|v| v as usize);
        let ours = [g.batch, g.c_out, g.h_out(), g.w_out()];
        if theirs != ours {
            return Err(format!(
                "cuDNN: the convolution {g:?} makes {theirs:?} in cuDNN, not {ours:?}"
            ));
        }
        Ok(ConvDescriptors { x, w, y, conv })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::device::Half;

    fn geom(k: usize, stride: usize, padding: usize, dilation: usize, groups: usize) -> ConvGeom {
        ConvGeom {
            batch: 2,
            c_in: 4,
            h: 17,
            w: 15,
            c_out: 8,
            k,
            stride,
            padding,
            dilation,
            groups,
        }
    }

    /// With a cuDNN named in `FULMEN_CUDNN_LIBRARY` (no GPU needed; `.ci/run` names one): the
    /// descriptors of every geometry fulmen's layers take agree with fulmen's output shape, and
    /// batch norms' are made.
    #[test]
    fn cudnn_makes_the_output_shape_fulmen_expects() {
        let Some(path) = std::env::var_os(super::super::LIBRARY_ENV) else {
            eprintln!("skipped: no {}", super::super::LIBRARY_ENV);
            return;
        };
        let api: &'static Api =
            Box::leak(Box::new(super::super::library::load(Some(path)).unwrap()));
        for g in [
            geom(3, 1, 1, 1, 1),
            geom(3, 2, 1, 1, 1),
            geom(1, 1, 0, 1, 1),
            geom(1, 2, 0, 1, 1),
            geom(7, 2, 3, 1, 1),
            geom(3, 1, 2, 2, 1),
            geom(3, 1, 1, 1, 4),
            geom(5, 3, 0, 1, 2),
        ] {
            ConvDescriptors::new::<f32>(api, &g).unwrap_or_else(|e| panic!("{g:?}: {e}"));
            ConvDescriptors::new::<f64>(api, &g).unwrap_or_else(|e| panic!("{g:?}: {e}"));
            ConvDescriptors::new::<Half>(api, &g).unwrap_or_else(|e| panic!("{g:?}: {e}"));
        }
        for shape in [[4, 64, 32, 32], [1, 3, 1, 1], [2, 2048, 4, 4]] {
            NormDescriptors::new::<f32>(api, shape).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
            NormDescriptors::new::<f64>(api, shape).unwrap_or_else(|e| panic!("{shape:?}: {e}"));
        }
        // A geometry whose output cuDNN computes otherwise is refused, not run.
        let mut wrong = geom(3, 1, 1, 1, 1);
        wrong.groups = 3; // 4 channels in 3 groups
        assert!(ConvDescriptors::new::<f32>(api, &wrong).is_err());
    }
}

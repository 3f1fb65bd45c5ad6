//! A cuDNN handle per device and thread, with its workspace, and the descriptors of each
//! convolution and batch norm it has run with the algorithms chosen for each convolution
//! (cuDNN's heuristics, asked once per shape and dtype): made once, not at every call.

use std::cell::RefCell;
use std::collections::HashMap;
use std::ffi::c_void;
use std::rc::Rc;
use std::sync::Arc;

use cudarc::driver::{CudaDevice, CudaSlice, DevicePtr, DeviceSlice};
use dfdx::tensor::{Cuda, Storage};

use super::descriptors::{
    scale_ptr, ConvDescriptors, CudnnDtype, NormDescriptors, FMA_MATH, SPATIAL,
};
use super::library::{api, AlgoPerf, AlgoQuery, Api, Desc, HandlePtr, SUCCESS};
use crate::shapes::ConvGeom;

/// The most workspace an algorithm may ask for: those that want more are passed over, as
/// PyTorch passes over those it cannot allocate.
const WORKSPACE_LIMIT: usize = 1 << 30;

/// `CUDNN_DETERMINISTIC`: the algorithm gives the same bits every run (no atomic adds).
const DETERMINISTIC: i32 = 1;

/// An algorithm, the workspace it needs and the math type it runs with.
#[derive(Debug, Clone, Copy)]
struct Chosen {
    algo: i32,
    bytes: usize,
    math: i32,
}

/// The algorithms for one convolution.
#[derive(Debug, Clone, Copy)]
struct Algos {
    forward: Chosen,
    backward_data: Chosen,
    backward_filter: Chosen,
}

/// A convolution's descriptors and algorithms, made once per geometry and dtype.
struct Planned {
    d: ConvDescriptors,
    algos: Algos,
}

/// A device pointer as cuDNN takes it.
pub(crate) type Ptr = *mut c_void;

/// A device buffer's address.
pub(crate) fn ptr<T>(buf: &impl DevicePtr<T>) -> Ptr {
    *buf.device_ptr() as Ptr
}

/// A dtype cuDNN computes in, with the address and device of dfdx's CUDA buffers of it (dfdx's
/// buffer type is known to be cudarc's only for a named dtype).
pub(crate) trait CudaDtype: CudnnDtype + crate::device::FloatDtype {
    fn address(buf: &<Cuda as Storage<Self>>::Vec) -> Ptr;
    fn device_of(buf: &<Cuda as Storage<Self>>::Vec) -> Arc<CudaDevice>;
}

macro_rules! cuda_dtypes {
    ($($e:ty),*) => {$(
        impl CudaDtype for $e {
            fn address(buf: &<Cuda as Storage<$e>>::Vec) -> Ptr {
                ptr(&**buf)
            }
            fn device_of(buf: &<Cuda as Storage<$e>>::Vec) -> Arc<CudaDevice> {
                buf.device()
            }
        }
    )*};
}

cuda_dtypes!(f32, f64, crate::device::Half);

/// One device's handle on this thread.
pub(crate) struct Handle {
    api: &'static Api,
    raw: HandlePtr,
    dev: Arc<CudaDevice>,
    workspace: Option<CudaSlice<u8>>,
    /// By geometry and `cudnnDataType_t`.
    convs: HashMap<(ConvGeom, i32), Rc<Planned>>,
    /// By image shape and `cudnnDataType_t`.
    norms: HashMap<([usize; 4], i32), Rc<NormDescriptors>>,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Under its own device's context (a thread may hold handles of several). A failure
        // (the context is gone at exit) leaves nothing to clean.
        if self.dev.bind_to_thread().is_ok() {
            // SAFETY: made by cudnnCreate, destroyed once.
            unsafe { (self.api.destroy)(self.raw) };
        }
    }
}

thread_local! {
    static HANDLES: RefCell<HashMap<usize, Handle>> = RefCell::new(HashMap::new());
}

/// `f` with this thread's handle for `dev` (made on first use; its context current).
pub(crate) fn with_handle<R>(
    dev: &Arc<CudaDevice>,
    f: impl FnOnce(&mut Handle) -> Result<R, String>,
) -> Result<R, String> {
    let api = api()?;
    dev.bind_to_thread()
        .map_err(|e| format!("cuDNN: CUDA device {}: {e:?}", dev.ordinal()))?;
    HANDLES.with(|handles| {
        let mut handles = handles.borrow_mut();
        let handle = match handles.entry(dev.ordinal()) {
            std::collections::hash_map::Entry::Occupied(e) => e.into_mut(),
            std::collections::hash_map::Entry::Vacant(e) => {
                let mut raw: HandlePtr = std::ptr::null_mut();
                // SAFETY: writes one handle; on the thread's current context, `dev`'s, and
                // on the legacy default stream, where dfdx runs every op.
                api.check(unsafe { (api.create)(&mut raw) }, "cudnnCreate")?;
                e.insert(Handle {
                    api,
                    raw,
                    dev: dev.clone(),
                    workspace: None,
                    convs: HashMap::new(),
                    norms: HashMap::new(),
                })
            }
        };
        f(handle)
    })
}

/// The first of `perfs` that succeeded and fits the workspace limit, deterministic ones
/// first (the heuristics rank them fastest first). Under `CUDNN_FMA_MATH` (f32, f64) only
/// algorithms of that math type: another would round f32 inputs to TF32.
fn choose<E: CudnnDtype>(perfs: &[AlgoPerf], what: &str, g: &ConvGeom) -> Result<Chosen, String> {
    let usable = |p: &&AlgoPerf| {
        p.status == SUCCESS
            && p.memory <= WORKSPACE_LIMIT
            && (E::MATH != FMA_MATH || p.math_type == FMA_MATH)
    };
    let found = (perfs.iter().filter(usable))
        .find(|p| p.determinism == DETERMINISTIC)
        .or_else(|| perfs.iter().find(usable));
    let math = |p: &AlgoPerf| match E::MATH {
        FMA_MATH => FMA_MATH,
        _ => p.math_type,
    };
    found
        .map(|p| Chosen {
            algo: p.algo,
            bytes: p.memory,
            math: math(p),
        })
        .ok_or_else(|| format!("cuDNN has no {what} algorithm for the convolution {g:?} within {WORKSPACE_LIMIT} bytes of workspace"))
}

impl Handle {
    /// The descriptors and algorithms of `g` in `E` (made, and the algorithms asked of cuDNN's
    /// heuristics, the first time).
    fn planned<E: CudnnDtype>(&mut self, g: &ConvGeom) -> Result<Rc<Planned>, String> {
        let key = (*g, E::DATA);
        if let Some(p) = self.convs.get(&key) {
            return Ok(p.clone());
        }
        let d = ConvDescriptors::new::<E>(self.api, g)?;
        let algos = self.algos::<E>(g, &d)?;
        let planned = Rc::new(Planned { d, algos });
        self.convs.insert(key, planned.clone());
        Ok(planned)
    }

    /// The descriptors of a batch norm of `shape` in `E` (made the first time).
    fn norm_descriptors<E: CudnnDtype>(
        &mut self,
        shape: [usize; 4],
    ) -> Result<Rc<NormDescriptors>, String> {
        let key = (shape, E::DATA);
        if let Some(d) = self.norms.get(&key) {
            return Ok(d.clone());
        }
        let d = Rc::new(NormDescriptors::new::<E>(self.api, shape)?);
        self.norms.insert(key, d.clone());
        Ok(d)
    }

    /// The algorithms cuDNN's heuristics rank first for `g` in `E`.
    fn algos<E: CudnnDtype>(&self, g: &ConvGeom, d: &ConvDescriptors) -> Result<Algos, String> {
        let (api, h) = (self.api, self.raw);
        let query = |f: AlgoQuery, descs: [Desc; 4], what: &str| -> Result<Chosen, String> {
            let mut perfs = [AlgoPerf::default(); 16];
            let mut n = 0;
            // SAFETY: the descriptors are set; cuDNN writes at most 16 results and their count.
            let status = unsafe {
                f(
                    h,
                    descs[0],
                    descs[1],
                    descs[2],
                    descs[3],
                    16,
                    &mut n,
                    perfs.as_mut_ptr(),
                )
            };
            api.check(status, what)?;
            choose::<E>(&perfs[..n.clamp(0, 16) as usize], what, g)
        };
        Ok(Algos {
            forward: query(
                api.forward_algos,
                [d.x.raw, d.w.raw, d.conv.raw, d.y.raw],
                "forward",
            )?,
            backward_data: query(
                api.backward_data_algos,
                [d.w.raw, d.y.raw, d.conv.raw, d.x.raw],
                "backward-data",
            )?,
            backward_filter: query(
                api.backward_filter_algos,
                [d.x.raw, d.y.raw, d.conv.raw, d.w.raw],
                "backward-filter",
            )?,
        })
    }

    /// The workspace, at least `bytes` long (grown when shorter), and its length.
    fn workspace(&mut self, bytes: usize) -> Result<(Ptr, usize), String> {
        if bytes == 0 {
            return Ok((std::ptr::null_mut(), 0));
        }
        if self.workspace.as_ref().is_none_or(|w| w.len() < bytes) {
            self.workspace = None; // freed before the larger one is taken
            let w = self.dev.alloc_zeros::<u8>(bytes).map_err(|e| {
                format!("cuDNN: a workspace of {bytes} bytes could not be allocated: {e:?}")
            })?;
            self.workspace = Some(w);
        }
        let w = self
            .workspace
            .as_ref()
            .map_or((std::ptr::null_mut(), 0), |w| (ptr(w), w.len()));
        Ok(w)
    }

    /// The convolution set to run `chosen` (its math type), with a workspace for it: the
    /// algorithm, the workspace and its length.
    fn prepare(
        &mut self,
        d: &ConvDescriptors,
        chosen: Chosen,
    ) -> Result<(i32, Ptr, usize), String> {
        // SAFETY: `d.conv` is a convolution descriptor.
        let status = unsafe { (self.api.set_conv_math)(d.conv.raw, chosen.math) };
        self.api.check(status, "cudnnSetConvolutionMathType")?;
        let (ws, len) = self.workspace(chosen.bytes)?;
        Ok((chosen.algo, ws, len))
    }

    /// `y = conv(x, w)` for `g` in `E`: `x`, `w` and `y` are contiguous device buffers of
    /// `g`'s shapes; `y` is overwritten.
    pub(crate) fn forward<E: CudnnDtype>(
        &mut self,
        g: &ConvGeom,
        x: Ptr,
        w: Ptr,
        y: Ptr,
    ) -> Result<(), String> {
        let planned = self.planned::<E>(g)?;
        let d = &planned.d;
        let (algo, ws, ws_len) = self.prepare(d, planned.algos.forward)?;
        let (one, zero) = (E::scale(1.0), E::scale(0.0));
        // SAFETY: the buffers are live, of the descriptors' shapes, on this handle's device.
        let status = unsafe {
            (self.api.forward)(
                self.raw,
                scale_ptr::<E>(&one),
                d.x.raw,
                x,
                d.w.raw,
                w,
                d.conv.raw,
                algo,
                ws,
                ws_len,
                scale_ptr::<E>(&zero),
                d.y.raw,
                y,
            )
        };
        self.api.check(status, "cudnnConvolutionForward")
    }

    /// Adds the gradients of `x` and `w` for the output's gradient `dy` into `dx` and `dw`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn backward<E: CudnnDtype>(
        &mut self,
        g: &ConvGeom,
        x: Ptr,
        w: Ptr,
        dy: Ptr,
        dx: Ptr,
        dw: Ptr,
    ) -> Result<(), String> {
        let planned = self.planned::<E>(g)?;
        let (d, algos) = (&planned.d, planned.algos);
        let one = E::scale(1.0);
        let (algo, ws, ws_len) = self.prepare(d, algos.backward_data)?;
        // SAFETY: as in `forward`; β = 1 adds into the gradient buffers.
        let status = unsafe {
            (self.api.backward_data)(
                self.raw,
                scale_ptr::<E>(&one),
                d.w.raw,
                w,
                d.y.raw,
                dy,
                d.conv.raw,
                algo,
                ws,
                ws_len,
                scale_ptr::<E>(&one),
                d.x.raw,
                dx,
            )
        };
        self.api.check(status, "cudnnConvolutionBackwardData")?;
        let (algo, ws, ws_len) = self.prepare(d, algos.backward_filter)?;
        let status = unsafe {
            (self.api.backward_filter)(
                self.raw,
                scale_ptr::<E>(&one),
                d.x.raw,
                x,
                d.y.raw,
                dy,
                d.conv.raw,
                algo,
                ws,
                ws_len,
                scale_ptr::<E>(&one),
                d.w.raw,
                dw,
            )
        };
        self.api.check(status, "cudnnConvolutionBackwardFilter")
    }
}

/// A batch norm's buffers on the device: images `[n, c, h, w]`, contiguous, and per-channel
/// operands of `c` values, all in the dtype `E`.
pub(crate) struct NormCall {
    pub(crate) shape: [usize; 4],
    pub(crate) epsilon: f64,
    pub(crate) x: Ptr,
    pub(crate) scale: Ptr,
}

impl Handle {
    /// Normalizes `call.x` into `y` by the batch's statistics: the mean into `mean`, the
    /// unbiased variance into `var` (cuDNN's running statistics with a factor of 1), and what
    /// the backward reads into `saved_mean` and `saved_inv_std`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn norm_train<E: CudnnDtype>(
        &mut self,
        call: &NormCall,
        bias: Ptr,
        y: Ptr,
        mean: Ptr,
        var: Ptr,
        saved_mean: Ptr,
        saved_inv_std: Ptr,
    ) -> Result<(), String> {
        let d = self.norm_descriptors::<E>(call.shape)?;
        let (one, zero) = (E::scale(1.0), E::scale(0.0));
        // SAFETY: the buffers are live, of the descriptors' shapes, on this device.
        let status = unsafe {
            (self.api.bn_forward_training)(
                self.raw,
                SPATIAL,
                scale_ptr::<E>(&one),
                scale_ptr::<E>(&zero),
                d.x.raw,
                call.x,
                d.x.raw,
                y,
                d.params.raw,
                call.scale,
                bias,
                1.0,
                mean,
                var,
                call.epsilon,
                saved_mean,
                saved_inv_std,
            )
        };
        self.api
            .check(status, "cudnnBatchNormalizationForwardTraining")
    }

    /// Normalizes `call.x` into `y` by the given statistics (evaluation).
    pub(crate) fn norm_eval<E: CudnnDtype>(
        &mut self,
        call: &NormCall,
        bias: Ptr,
        mean: Ptr,
        var: Ptr,
        y: Ptr,
    ) -> Result<(), String> {
        let d = self.norm_descriptors::<E>(call.shape)?;
        let (one, zero) = (E::scale(1.0), E::scale(0.0));
        // SAFETY: as in `norm_train`.
        let status = unsafe {
            (self.api.bn_forward_inference)(
                self.raw,
                SPATIAL,
                scale_ptr::<E>(&one),
                scale_ptr::<E>(&zero),
                d.x.raw,
                call.x,
                d.x.raw,
                y,
                d.params.raw,
                call.scale,
                bias,
                mean,
                var,
                call.epsilon,
            )
        };
        self.api
            .check(status, "cudnnBatchNormalizationForwardInference")
    }

    /// Adds the gradients of the input, scale and bias for the output's gradient `dy` into
    /// `dx`, `dscale` and `dbias`, from what [`Self::norm_train`] saved.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn norm_backward<E: CudnnDtype>(
        &mut self,
        call: &NormCall,
        dy: Ptr,
        dx: Ptr,
        dscale: Ptr,
        dbias: Ptr,
        saved_mean: Ptr,
        saved_inv_std: Ptr,
    ) -> Result<(), String> {
        let d = self.norm_descriptors::<E>(call.shape)?;
        let one = E::scale(1.0);
        // SAFETY: as in `norm_train`; β = 1 adds into the gradient buffers.
        let status = unsafe {
            (self.api.bn_backward)(
                self.raw,
                SPATIAL,
                scale_ptr::<E>(&one),
                scale_ptr::<E>(&one),
                scale_ptr::<E>(&one),
                scale_ptr::<E>(&one),
                d.x.raw,
                call.x,
                d.x.raw,
                dy,
                d.x.raw,
                dx,
                d.params.raw,
                call.scale,
                dscale,
                dbias,
                call.epsilon,
                saved_mean,
                saved_inv_std,
            )
        };
        self.api.check(status, "cudnnBatchNormalizationBackward")
    }
}

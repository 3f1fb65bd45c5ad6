//! cuDNN, loaded when a cuDNN op is first needed, not linked: a CUDA build starts on a machine
//! without it, and the first op that needs it ends with an error that says which library was
//! looked for, where, and how to get it.
//!
//! The library is `libcudnn.so.9` on the dynamic loader's path (`LD_LIBRARY_PATH`, the
//! `ldconfig` cache), or the file [`LIBRARY_ENV`] names. cuDNN 9 is what PyTorch's CUDA 13
//! wheels carry (`pip install nvidia-cudnn-cu13`: `site-packages/nvidia/cudnn/lib`); its
//! `libcudnn.so.9` exports the whole legacy API fulmen calls and loads its parts
//! (`libcudnn_cnn`, `libcudnn_ops`, …) from its own folder.

use std::ffi::{c_char, c_void, CStr, OsString};
use std::sync::OnceLock;

use libloading::Library;

/// The file the dynamic loader is asked for.
pub const LIBRARY: &str = "libcudnn.so.9";

/// The environment variable that names the cuDNN library file to load instead.
pub const LIBRARY_ENV: &str = "FULMEN_CUDNN_LIBRARY";

/// `cudnnStatus_t`.
pub(crate) type Status = i32;

/// `CUDNN_STATUS_SUCCESS`.
pub(crate) const SUCCESS: Status = 0;

/// `cudnnHandle_t`, and the descriptors' handles (`cudnnTensorDescriptor_t`,
/// `cudnnFilterDescriptor_t`, `cudnnConvolutionDescriptor_t`): opaque pointers.
pub(crate) type HandlePtr = *mut c_void;
pub(crate) type Desc = *mut c_void;

/// `cudnnConvolutionFwdAlgoPerf_t`, `cudnnConvolutionBwdDataAlgoPerf_t` and
/// `cudnnConvolutionBwdFilterAlgoPerf_t`, which share this layout (cudnn_cnn.h, cuDNN 9).
#[repr(C)]
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct AlgoPerf {
    pub(crate) algo: i32,
    pub(crate) status: Status,
    pub(crate) time: f32,
    pub(crate) memory: usize,
    pub(crate) determinism: i32,
    pub(crate) math_type: i32,
    pub(crate) reserved: [i32; 3],
}

/// `cudnnGet…Algorithm_v7`: a handle, four descriptors, how many results are wanted, how many
/// came, the results (each with the workspace its algorithm needs).
pub(crate) type AlgoQuery =
    unsafe extern "C" fn(HandlePtr, Desc, Desc, Desc, Desc, i32, *mut i32, *mut AlgoPerf) -> Status;
/// `cudnnConvolutionForward`, `…BackwardData`, `…BackwardFilter`: a handle, α, two operands
/// (descriptor, data), the convolution, the algorithm, the workspace and its size, β, the
/// result (descriptor, data).
type ConvCall = unsafe extern "C" fn(
    HandlePtr,
    *const c_void,
    Desc,
    *const c_void,
    Desc,
    *const c_void,
    Desc,
    i32,
    *mut c_void,
    usize,
    *const c_void,
    Desc,
    *mut c_void,
) -> Status;

/// The cuDNN functions fulmen calls, resolved once from the loaded library.
pub(crate) struct Api {
    /// Where it was loaded from, as it was asked for.
    pub(crate) path: OsString,
    pub(crate) get_version: unsafe extern "C" fn() -> usize,
    pub(crate) get_cudart_version: unsafe extern "C" fn() -> usize,
    pub(crate) get_error_string: unsafe extern "C" fn(Status) -> *const c_char,
    pub(crate) create: unsafe extern "C" fn(*mut HandlePtr) -> Status,
    pub(crate) destroy: unsafe extern "C" fn(HandlePtr) -> Status,
    pub(crate) create_tensor: unsafe extern "C" fn(*mut Desc) -> Status,
    /// `(desc, format, dtype, n, c, h, w)`.
    pub(crate) set_tensor_4d: unsafe extern "C" fn(Desc, i32, i32, i32, i32, i32, i32) -> Status,
    pub(crate) destroy_tensor: unsafe extern "C" fn(Desc) -> Status,
    pub(crate) create_filter: unsafe extern "C" fn(*mut Desc) -> Status,
    /// `(desc, dtype, format, k, c, h, w)`.
    pub(crate) set_filter_4d: unsafe extern "C" fn(Desc, i32, i32, i32, i32, i32, i32) -> Status,
    pub(crate) destroy_filter: unsafe extern "C" fn(Desc) -> Status,
    pub(crate) create_conv: unsafe extern "C" fn(*mut Desc) -> Status,
    /// `(desc, pad_h, pad_w, stride_h, stride_w, dilation_h, dilation_w, mode, compute dtype)`.
    pub(crate) set_conv_2d:
        unsafe extern "C" fn(Desc, i32, i32, i32, i32, i32, i32, i32, i32) -> Status,
    pub(crate) set_conv_groups: unsafe extern "C" fn(Desc, i32) -> Status,
    pub(crate) set_conv_math: unsafe extern "C" fn(Desc, i32) -> Status,
    pub(crate) destroy_conv: unsafe extern "C" fn(Desc) -> Status,
    /// `(conv, x, w, &n, &c, &h, &w)`.
    pub(crate) conv_output_dim:
        unsafe extern "C" fn(Desc, Desc, Desc, *mut i32, *mut i32, *mut i32, *mut i32) -> Status,
    /// `(handle, x, w, conv, y, …)`.
    pub(crate) forward_algos: AlgoQuery,
    /// `(handle, α, x, x data, w, w data, conv, algo, workspace, size, β, y, y data)`.
    pub(crate) forward: ConvCall,
    /// `(handle, w, dy, conv, dx, …)`.
    pub(crate) backward_data_algos: AlgoQuery,
    /// `(handle, α, w, w data, dy, dy data, conv, algo, workspace, size, β, dx, dx data)`.
    pub(crate) backward_data: ConvCall,
    /// `(handle, x, dy, conv, dw, …)`.
    pub(crate) backward_filter_algos: AlgoQuery,
    /// `(handle, α, x, x data, dy, dy data, conv, algo, workspace, size, β, dw, dw data)`.
    pub(crate) backward_filter: ConvCall,
    /// `(derived, x, mode)`: the per-channel operands' descriptor for images `x`.
    pub(crate) derive_bn: unsafe extern "C" fn(Desc, Desc, i32) -> Status,
    /// `(handle, mode, α, β, x, x data, y, y data, params, scale, bias, factor, running mean,
    /// running variance, ε, saved mean, saved 1/σ)`.
    pub(crate) bn_forward_training: unsafe extern "C" fn(
        HandlePtr,
        i32,
        *const c_void,
        *const c_void,
        Desc,
        *const c_void,
        Desc,
        *mut c_void,
        Desc,
        *const c_void,
        *const c_void,
        f64,
        *mut c_void,
        *mut c_void,
        f64,
        *mut c_void,
        *mut c_void,
    ) -> Status,
    /// `(handle, mode, α, β, x, x data, y, y data, params, scale, bias, mean, variance, ε)`.
    pub(crate) bn_forward_inference: unsafe extern "C" fn(
        HandlePtr,
        i32,
        *const c_void,
        *const c_void,
        Desc,
        *const c_void,
        Desc,
        *mut c_void,
        Desc,
        *const c_void,
        *const c_void,
        *const c_void,
        *const c_void,
        f64,
    ) -> Status,
    /// `(handle, mode, α data, β data, α params, β params, x, x data, dy, dy data, dx, dx data,
    /// params, scale, d scale, d bias, ε, saved mean, saved 1/σ)`.
    pub(crate) bn_backward: unsafe extern "C" fn(
        HandlePtr,
        i32,
        *const c_void,
        *const c_void,
        *const c_void,
        *const c_void,
        Desc,
        *const c_void,
        Desc,
        *const c_void,
        Desc,
        *mut c_void,
        Desc,
        *const c_void,
        *mut c_void,
        *mut c_void,
        f64,
        *const c_void,
        *const c_void,
    ) -> Status,
    /// Kept loaded for as long as the function pointers above are used: the process's life.
    _library: Library,
}

impl Api {
    /// `status` as cuDNN words it, for `what` (the call that returned it).
    pub(crate) fn check(&self, status: Status, what: &str) -> Result<(), String> {
        if status == SUCCESS {
            return Ok(());
        }
        // SAFETY: cuDNN returns a static, NUL-terminated string for every status.
        let text = unsafe { (self.get_error_string)(status) };
        let text = match text.is_null() {
            true => "no message".into(),
            false => unsafe { CStr::from_ptr(text) }.to_string_lossy(),
        };
        Err(format!("cuDNN: {what} failed: {text} (status {status})"))
    }
}

/// The library, loaded on first use; the same error every time after a failed load.
pub(crate) fn api() -> Result<&'static Api, String> {
    static LOADED: OnceLock<Result<Api, String>> = OnceLock::new();
    LOADED
        .get_or_init(|| load(std::env::var_os(LIBRARY_ENV)))
        .as_ref()
        .map_err(Clone::clone)
}

/// Loads `chosen` (the file [`LIBRARY_ENV`] names) or else [`LIBRARY`] from the loader's
/// path, and resolves every function fulmen calls.
pub(crate) fn load(chosen: Option<OsString>) -> Result<Api, String> {
    let (path, from) = match chosen {
        Some(path) => (path, format!("the file {LIBRARY_ENV} names")),
        None => {
            let paths = std::env::var("LD_LIBRARY_PATH").unwrap_or_default();
            let paths = match paths.is_empty() {
                true => "LD_LIBRARY_PATH is not set".to_owned(),
                false => format!("LD_LIBRARY_PATH={paths}"),
            };
            (
                LIBRARY.into(),
                format!("the dynamic loader's path: {paths}, then the ldconfig cache"),
            )
        }
    };
    let shown = path.to_string_lossy().into_owned();
    // SAFETY: loading runs the library's initializers; cuDNN's have no preconditions.
    let library = unsafe { Library::new(&path) }.map_err(|e| {
        format!(
            "cuDNN is needed for this op and was not found: loading {shown} (from {from}) failed: \
             {e}. Install cuDNN 9 (PyTorch's CUDA 13 wheels carry it: `pip install \
             nvidia-cudnn-cu13` puts libcudnn.so.9 in site-packages/nvidia/cudnn/lib) and put \
             its folder on LD_LIBRARY_PATH, or name the file in {LIBRARY_ENV}"
        )
    })?;
    macro_rules! resolve {
        ($name:literal) => {{
            // SAFETY: the symbol is cuDNN's function of this name, whose C signature the
            // field's type spells (cudnn.h, cuDNN 9).
            let f = unsafe { library.get(concat!($name, "\0").as_bytes()) }
                .map_err(|e| format!("cuDNN: {shown} has no `{}`: {e}", $name))?;
            *f
        }};
    }
    let api = Api {
        get_version: resolve!("cudnnGetVersion"),
        get_cudart_version: resolve!("cudnnGetCudartVersion"),
        get_error_string: resolve!("cudnnGetErrorString"),
        create: resolve!("cudnnCreate"),
        destroy: resolve!("cudnnDestroy"),
        create_tensor: resolve!("cudnnCreateTensorDescriptor"),
        set_tensor_4d: resolve!("cudnnSetTensor4dDescriptor"),
        destroy_tensor: resolve!("cudnnDestroyTensorDescriptor"),
        create_filter: resolve!("cudnnCreateFilterDescriptor"),
        set_filter_4d: resolve!("cudnnSetFilter4dDescriptor"),
        destroy_filter: resolve!("cudnnDestroyFilterDescriptor"),
        create_conv: resolve!("cudnnCreateConvolutionDescriptor"),
        set_conv_2d: resolve!("cudnnSetConvolution2dDescriptor"),
        set_conv_groups: resolve!("cudnnSetConvolutionGroupCount"),
        set_conv_math: resolve!("cudnnSetConvolutionMathType"),
        destroy_conv: resolve!("cudnnDestroyConvolutionDescriptor"),
        conv_output_dim: resolve!("cudnnGetConvolution2dForwardOutputDim"),
        forward_algos: resolve!("cudnnGetConvolutionForwardAlgorithm_v7"),
        forward: resolve!("cudnnConvolutionForward"),
        backward_data_algos: resolve!("cudnnGetConvolutionBackwardDataAlgorithm_v7"),
        backward_data: resolve!("cudnnConvolutionBackwardData"),
        backward_filter_algos: resolve!("cudnnGetConvolutionBackwardFilterAlgorithm_v7"),
        backward_filter: resolve!("cudnnConvolutionBackwardFilter"),
        derive_bn: resolve!("cudnnDeriveBNTensorDescriptor"),
        bn_forward_training: resolve!("cudnnBatchNormalizationForwardTraining"),
        bn_forward_inference: resolve!("cudnnBatchNormalizationForwardInference"),
        bn_backward: resolve!("cudnnBatchNormalizationBackward"),
        path: path.clone(),
        _library: library,
    };
    // SAFETY: takes no arguments and needs no device.
    let version = unsafe { (api.get_version)() };
    if !(90000..100000).contains(&version) {
        return Err(format!(
            "cuDNN: {shown} is version {version}; fulmen calls cuDNN 9's API (9.0 or newer, before 10)"
        ));
    }
    Ok(api)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_library_is_named_with_where_it_was_looked_for_and_how_to_get_it() {
        let Err(e) = load(Some("/no/such/folder/libcudnn.so.9".into())) else {
            panic!("loaded a library that does not exist");
        };
        for part in [
            "/no/such/folder/libcudnn.so.9",
            "the file FULMEN_CUDNN_LIBRARY names",
            "nvidia-cudnn-cu13",
            "LD_LIBRARY_PATH",
        ] {
            assert!(e.contains(part), "{part:?} is not in: {e}");
        }
    }

    /// With a cuDNN named in `FULMEN_CUDNN_LIBRARY` (no GPU needed), every function resolves.
    #[test]
    fn a_named_cudnn_loads_whole() {
        let Some(path) = std::env::var_os(LIBRARY_ENV) else {
            eprintln!("skipped: no {LIBRARY_ENV}");
            return;
        };
        let api = load(Some(path)).expect("cuDNN loads");
        assert!(unsafe { (api.get_version)() } >= 90000);
        let e = api.check(2000, "cudnnSomething").expect_err("a failure");
        assert!(
            e.starts_with("cuDNN: cudnnSomething failed: CUDNN_STATUS_BAD_PARAM"),
            "{e}"
        );
    }

    #[test]
    fn a_library_that_is_not_cudnn_is_named_with_the_function_it_lacks() {
        // The C library is loaded in every process and has none of cuDNN's functions.
        let Err(e) = load(Some("libc.so.6".into())) else {
            panic!("took libc for cuDNN");
        };
        assert!(e.contains("libc.so.6 has no `cudnnGetVersion`"), "{e}");
    }
}

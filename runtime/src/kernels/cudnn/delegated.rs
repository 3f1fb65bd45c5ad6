//! The families cuDNN does not compute (yet): the composed kernels', as the CUDA device ran
//! them before [`Cudnn`] was its implementation.

use super::Cudnn;
use crate::kernels::Composed;

/// `Family::method(args)` of [`Composed`].
macro_rules! composed {
    ($family:path, $call:ident ($($arg:expr),*)) => {
        <Composed as $family>::$call($($arg),*)
    };
}

delegate!(Cudnn, composed: Dense, Pool, Elementwise, Fuse, Step, Reduce, Unscale);

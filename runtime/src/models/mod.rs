//! Ready-made architectures, as layer specifications to use as fields of a `#[module]` or
//! `#[lightning_module]` struct.

pub mod resnet;

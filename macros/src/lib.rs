//! The attributes of fulmen: `#[lightning_module]`, `#[module]` and `#[data_module]`.
//!
//! Each runs in three passes: parse the user's item into a small model, validate it while
//! collecting every error with its span ([`ctxt::Ctxt`]), and generate the trait impls. On
//! error the user's item is emitted unchanged beside the `compile_error!`s, so the rest of
//! the crate (and the IDE) still sees it.

mod ctxt;
mod data_module;
mod hooks;
mod lightning_impl;
mod module_struct;
mod names;
#[cfg(test)]
mod snapshot_tests;

use proc_macro::TokenStream;

/// Makes a model struct trainer-ready (on the struct) and turns its steps and hooks into a
/// `fulmen::LightningModule` (on its impl). See the `fulmen` crate docs.
#[proc_macro_attribute]
pub fn lightning_module(attr: TokenStream, item: TokenStream) -> TokenStream {
    module_struct::expand_item(attr.into(), item.into(), module_struct::Kind::Lightning).into()
}

/// The dfdx plumbing of `#[lightning_module]` for a plain sub-module (a block of layers),
/// so that it can be a field of other modules.
#[proc_macro_attribute]
pub fn module(attr: TokenStream, item: TokenStream) -> TokenStream {
    module_struct::expand_item(attr.into(), item.into(), module_struct::Kind::Plain).into()
}

/// Makes a data struct (on the struct) and its loaders (on its impl) a `fulmen::DataModule`.
#[proc_macro_attribute]
pub fn data_module(attr: TokenStream, item: TokenStream) -> TokenStream {
    data_module::expand(attr.into(), item.into()).into()
}

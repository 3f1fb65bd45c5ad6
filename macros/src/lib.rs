//! The attributes of fulmen: `#[lightning_module]`, `#[module]` and `#[data_module]`.
//!
//! Each runs in three passes, after serde_derive: parse the user's item into a typed model
//! (`ast.rs`), check it while collecting every error with its span (`check.rs`, into a
//! `ctxt::Ctxt` that panics if its errors are never looked at), and generate (`expand/`).
//! On error the user's item is emitted beside the `compile_error!`s, with what can still be
//! generated for it or a stub impl of the trait, so that the rest of the crate (and the IDE)
//! sees it and one mistake is one message.

mod ast;
mod check;
mod ctxt;
mod expand;
mod hooks;
mod names;
#[cfg(test)]
mod snapshot_tests;

use proc_macro::TokenStream;

use ast::Kind;

/// Makes a model struct trainer-ready (on the struct) and turns its steps and hooks into a
/// `fulmen::LightningModule` (on its impl). See the `fulmen` crate docs.
#[proc_macro_attribute]
pub fn lightning_module(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::module(attr.into(), item.into(), Kind::Lightning).into()
}

/// The dfdx plumbing of `#[lightning_module]` for a plain sub-module (a block of layers),
/// so that it can be a field of other modules.
#[proc_macro_attribute]
pub fn module(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::module(attr.into(), item.into(), Kind::Plain).into()
}

/// Makes a data struct (on the struct) and its loaders (on its impl) a `fulmen::DataModule`.
///
/// On the struct it also generates `new` from the fields that are hyperparameters (in order;
/// `#[skip]` fields take their `Default`) and `fulmen::FromHParams` (what `LightningCli`
/// builds it with). `#[data_module(no_new)]` generates neither: for a data module with a `new`
/// of its own, or with `#[skip]` fields that have no `Default`.
#[proc_macro_attribute]
pub fn data_module(attr: TokenStream, item: TokenStream) -> TokenStream {
    expand::data_module(attr.into(), item.into()).into()
}

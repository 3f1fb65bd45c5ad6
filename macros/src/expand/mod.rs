//! The attributes' three passes: parse the item into its model ([`crate::ast`]), check it
//! ([`crate::check`], every error collected), generate. On any error the user's item is
//! still emitted, with what can be generated for it or a stub impl of the trait
//! (`LightningModule`, `DataModule`), beside the `compile_error!`s: so that the rest of the
//! crate and the IDE see the item, and one mistake is one message.

mod batch_transfer;
mod data_module;
mod lightning_impl;
mod module_data;
mod module_struct;

pub(crate) use self::module_struct::expand_struct;

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};

use crate::ast::{DataImpl, DataStruct, Kind, ModuleImpl, ModuleStruct};
use crate::check;
use crate::ctxt::Ctxt;

/// `#[lightning_module]` or `#[module]` on `item`.
pub(crate) fn module(attr: TokenStream, item: TokenStream, kind: Kind) -> TokenStream {
    let cx = Ctxt::new();
    let parsed = syn::parse2::<syn::Item>(item.clone());
    // `manual_optimization`, on a lightning module's impl: its `training_step` steps the
    // optimizers itself.
    let on_impl = kind == Kind::Lightning && matches!(parsed, Ok(syn::Item::Impl(_)));
    let manual = on_impl && attr.to_string() == "manual_optimization";
    if !attr.is_empty() && !manual {
        let why = match on_impl {
            true => "takes no arguments but `manual_optimization`: write `#[lightning_module(manual_optimization)]` to step the optimizers in `training_step`",
            false => "takes no arguments here (`manual_optimization` goes on the impl)",
        };
        cx.error(&attr, format!("{} {why}", kind.attr()));
    }
    let (out, fallback) = match parsed {
        Err(e) => {
            cx.syn_error(e);
            (TokenStream::new(), item)
        }
        Ok(syn::Item::Struct(s)) => {
            let mut model = ModuleStruct::parse(s, kind);
            match check::module_struct(&cx, &mut model) {
                // What can be generated is emitted beside the errors too.
                true => (expand_struct(&model), expand_struct(&model)),
                false => (TokenStream::new(), model.stripped().into_token_stream()),
            }
        }
        Ok(syn::Item::Impl(i)) if kind == Kind::Lightning => {
            let mut model = ModuleImpl::parse(i);
            model.manual = manual;
            check::module_impl(&cx, &mut model);
            let out = match cx.has_errors() {
                false => lightning_impl::expand(&model),
                true => TokenStream::new(),
            };
            (out, lightning_impl::fallback(&model))
        }
        Ok(syn::Item::Impl(i)) => {
            cx.error(&i.self_ty, "#[module] goes on the struct only: a plain module has no steps or hooks (did you mean #[lightning_module]?)");
            (TokenStream::new(), i.into_token_stream())
        }
        Ok(other) => {
            let what = match &other {
                syn::Item::Enum(e) => Some(("an enum", e.enum_token.into_token_stream())),
                syn::Item::Union(u) => Some(("a union", u.union_token.into_token_stream())),
                _ => None,
            };
            let attr = kind.attr();
            match what {
                Some((what, at)) => cx.error(at, format!("{attr} goes on a struct (the model's layers) or on its impl (the steps and hooks), not on {what}")),
                None => cx.error(&other, format!("{attr} goes on a struct or on its impl")),
            }
            (TokenStream::new(), other.into_token_stream())
        }
    };
    match cx.check() {
        Ok(()) => out,
        Err(errors) => quote!(#fallback #errors),
    }
}

/// `#[data_module]` on `item`.
pub(crate) fn data_module(attr: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::new();
    let parsed = syn::parse2::<syn::Item>(item.clone());
    // `no_new`, on the struct only: it keeps a `new` of its own (a builder's, say), or has
    // `#[skip]` fields without a `Default`; it gets neither `new` nor `FromHParams`.
    let no_new = attr.to_string() == "no_new" && matches!(parsed, Ok(syn::Item::Struct(_)));
    if !attr.is_empty() && !no_new {
        cx.error(&attr, "#[data_module] takes no arguments but `no_new`, on the struct: write `#[data_module(no_new)]` to keep a `new` of your own");
    }
    let (out, fallback) = match parsed {
        Err(e) => {
            cx.syn_error(e);
            (TokenStream::new(), item)
        }
        Ok(syn::Item::Struct(s)) => {
            let mut model = DataStruct::parse(s);
            model.generate_new = !no_new;
            check::data_struct(&cx, &model);
            let out = data_module::expand_struct(&model);
            (out.clone(), out)
        }
        Ok(syn::Item::Impl(i)) => {
            let mut model = DataImpl::parse(i);
            check::data_impl(&cx, &mut model);
            let out = match cx.has_errors() {
                false => data_module::expand_impl(&model),
                true => TokenStream::new(),
            };
            (out, data_module::fallback(&model))
        }
        Ok(other) => {
            cx.error(&other, "#[data_module] goes on a struct (its fields are the hyperparameters) or on its impl (the loaders)");
            (TokenStream::new(), other.into_token_stream())
        }
    };
    match cx.check() {
        Ok(()) => out,
        Err(errors) => quote!(#fallback #errors),
    }
}

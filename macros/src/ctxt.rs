//! Error collection, after serde_derive's `Ctxt`: every problem is recorded with the span of
//! the user's token, and all are reported together.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use std::cell::RefCell;

#[derive(Default)]
pub(crate) struct Ctxt {
    errors: RefCell<Vec<syn::Error>>,
}

impl Ctxt {
    pub(crate) fn error(&self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.errors
            .borrow_mut()
            .push(syn::Error::new_spanned(tokens.into_token_stream(), message));
    }

    pub(crate) fn has_errors(&self) -> bool {
        !self.errors.borrow().is_empty()
    }

    /// The collected errors as `compile_error!`s, after `fallback`: the user's item, or what
    /// of it still compiles, so that the rest of the crate and the IDE keep working.
    pub(crate) fn into_output(self, fallback: TokenStream) -> TokenStream {
        let errors = self
            .errors
            .into_inner()
            .into_iter()
            .map(|e| e.to_compile_error());
        quote! { #fallback #(#errors)* }
    }
}

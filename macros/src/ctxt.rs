//! Error collection, after serde_derive's `Ctxt`: every problem is recorded with the span of
//! the user's token while the item is parsed and checked, and all are reported together. A
//! context whose errors were never taken ([`Ctxt::check`]) panics when dropped: a pass that
//! forgets to look would otherwise generate code from an item known to be wrong.

use proc_macro2::TokenStream;
use quote::ToTokens;
use std::cell::RefCell;

pub(crate) struct Ctxt {
    /// `None` once the errors were taken.
    errors: RefCell<Option<Vec<syn::Error>>>,
}

impl Ctxt {
    pub(crate) fn new() -> Self {
        Ctxt {
            errors: RefCell::new(Some(Vec::new())),
        }
    }

    /// Records `message` at `tokens`.
    pub(crate) fn error(&self, tokens: impl ToTokens, message: impl std::fmt::Display) {
        self.syn_error(syn::Error::new_spanned(tokens.into_token_stream(), message));
    }

    /// Records an error syn made.
    pub(crate) fn syn_error(&self, error: syn::Error) {
        self.errors
            .borrow_mut()
            .as_mut()
            .expect("a context is not used after its errors were taken")
            .push(error);
    }

    /// Whether an error was recorded so far.
    pub(crate) fn has_errors(&self) -> bool {
        self.errors.borrow().as_ref().is_some_and(|e| !e.is_empty())
    }

    /// Takes the errors: `Err` with all of them as `compile_error!`s, if there are any.
    pub(crate) fn check(self) -> Result<(), TokenStream> {
        let errors = self.errors.borrow_mut().take().unwrap_or_default();
        if errors.is_empty() {
            return Ok(());
        }
        Err(errors.iter().map(syn::Error::to_compile_error).collect())
    }
}

impl Drop for Ctxt {
    fn drop(&mut self) {
        if !std::thread::panicking() && self.errors.borrow().is_some() {
            panic!("a macro pass forgot to check its context's errors");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::Ctxt;

    #[test]
    fn errors_come_out_together() {
        let cx = Ctxt::new();
        cx.error(quote::quote!(a), "first");
        cx.error(quote::quote!(b), "second");
        let out = cx.check().expect_err("two errors").to_string();
        assert!(out.contains("first") && out.contains("second"), "{out}");
        assert!(Ctxt::new().check().is_ok());
    }

    #[test]
    #[should_panic(expected = "forgot to check")]
    fn a_context_never_checked_panics() {
        let cx = Ctxt::new();
        cx.error(quote::quote!(a), "unseen");
    }
}

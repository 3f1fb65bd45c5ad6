//! The batch-transfer hooks a module's or data module's impl writes, as its
//! `fulmen::batch_transfer::BatchTransfer` impl: for the types the hooks name (the host batch
//! from `on_before_batch_transfer` or `transfer_batch_to_device`, the device batch from
//! `on_after_batch_transfer` or what `transfer_batch_to_device` returns), for every type where
//! they name none. The user's methods stay inherent, renamed `__fulmen_<hook>`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};

pub(crate) use crate::hooks::TRANSFER as HOOKS;

/// The batch-transfer hooks an impl wrote (renamed already, see [`rename`]).
#[derive(Default)]
pub(crate) struct Written {
    pub before: Option<syn::ImplItemFn>,
    pub transfer: Option<syn::ImplItemFn>,
    pub after: Option<syn::ImplItemFn>,
}

impl Written {
    /// Takes `f` if it is one of the hooks: renamed `__fulmen_<hook>` and hidden, and (for a
    /// data module, whose impl has no `E` and `D`: `generic`) generic over the run's dtype and
    /// device where it meets the device's batch. Returns it to keep in the inherent impl.
    pub(crate) fn take(&mut self, f: &syn::ImplItemFn, generic: bool) -> Option<syn::ImplItemFn> {
        let name = f.sig.ident.to_string();
        let slot = match name.as_str() {
            "on_before_batch_transfer" => &mut self.before,
            "transfer_batch_to_device" => &mut self.transfer,
            "on_after_batch_transfer" => &mut self.after,
            _ => return None,
        };
        let mut own = f.clone();
        own.sig.ident = format_ident!("__fulmen_{name}", span = f.sig.ident.span());
        own.attrs.push(syn::parse_quote!(#[doc(hidden)]));
        own.attrs
            .push(syn::parse_quote!(#[allow(clippy::type_complexity)]));
        if generic && name != "on_before_batch_transfer" {
            own.sig.generics =
                syn::parse_quote!(<E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>>);
        }
        *slot = Some(own.clone());
        Some(own)
    }

    fn any_device(&self) -> bool {
        self.transfer.is_some() || self.after.is_some()
    }
}

/// The type of `f`'s first parameter after `self`.
fn batch_type(f: &syn::ImplItemFn) -> Option<TokenStream> {
    match f.sig.inputs.iter().nth(1)? {
        syn::FnArg::Typed(t) => Some(t.ty.to_token_stream()),
        syn::FnArg::Receiver(_) => None,
    }
}

/// What `f` returns.
fn return_type(f: &syn::ImplItemFn) -> Option<TokenStream> {
    match &f.sig.output {
        syn::ReturnType::Type(_, ty) => Some(ty.to_token_stream()),
        syn::ReturnType::Default => None,
    }
}

/// Where the impl is: a module's (`E` and `D` are its own) or a data module's (they are the
/// impl's where a hook meets the device's batch).
pub(crate) enum Owner<'a> {
    Module {
        /// The impl's own generic parameters with `E` and `D`, each followed by a comma.
        generics: TokenStream,
        self_ty: &'a syn::Type,
        where_clause: Option<&'a syn::WhereClause>,
    },
    Data {
        item: &'a syn::ItemImpl,
    },
}

/// `BatchTransfer` for the owner, calling the hooks `written`.
pub(crate) fn expand(written: &Written, owner: Owner<'_>) -> TokenStream {
    let host = (written.before.as_ref())
        .and_then(batch_type)
        .or_else(|| written.transfer.as_ref().and_then(batch_type));
    let device_batch = (written.after.as_ref())
        .and_then(batch_type)
        .or_else(|| written.transfer.as_ref().and_then(return_type));
    let mut extra: Vec<TokenStream> = Vec::new();
    let h = host.unwrap_or_else(|| {
        extra.push(quote!(__H));
        quote!(__H)
    });
    let b = device_batch.unwrap_or_else(|| {
        extra.push(quote!(__B));
        quote!(__B)
    });
    let data = matches!(owner, Owner::Data { .. });
    let (generics, self_ty, where_clause, device, turbofish) = match owner {
        Owner::Module {
            generics,
            self_ty,
            where_clause,
        } => (
            generics,
            self_ty.to_token_stream(),
            where_clause.cloned(),
            quote!(D),
            quote!(),
        ),
        Owner::Data { item } => {
            let params = item.generics.params.iter();
            let (generics, device, turbofish) = match written.any_device() {
                true => (
                    quote!(#(#params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>,),
                    quote!(D),
                    quote!(::<E, D>),
                ),
                false => {
                    extra.push(quote!(__D));
                    (quote!(#(#params,)*), quote!(__D), quote!())
                }
            };
            let where_clause = item.generics.where_clause.clone();
            (
                generics,
                item.self_ty.to_token_stream(),
                where_clause,
                device,
                turbofish,
            )
        }
    };
    let flag = |f: &Option<syn::ImplItemFn>| f.is_some();
    let (before, transfer, after) = (
        flag(&written.before),
        flag(&written.transfer),
        flag(&written.after),
    );
    let call = |f: &syn::ImplItemFn, args: TokenStream, generic: bool| {
        let inner = &f.sig.ident;
        let turbofish = if generic { turbofish.clone() } else { quote!() };
        // `self` with the wrapper's hygiene, not the hook's (an impl a `macro_rules!` writes).
        quote!(Self::#inner #turbofish(self, #args))
    };
    // A data module's methods take the module, whose hooks its own replace.
    let (module, module_arg, trait_name) = match data {
        true => (
            quote!(<__M: ::fulmen::batch_transfer::BatchTransfer<#h, #b, #device>>),
            quote!(, _module: &mut __M),
            quote!(DataBatchTransfer),
        ),
        false => (quote!(), quote!(), quote!(BatchTransfer)),
    };
    let before_fn = written.before.as_ref().map(|f| {
        let call = call(f, quote!(batch, dataloader_idx), false);
        quote! {
            fn on_before_batch_transfer #module(&mut self, batch: #h, dataloader_idx: usize #module_arg) -> #h {
                #call
            }
        }
    });
    // Without the hook, a module moves the batch with `CastBatch` (a data module leaves it to
    // the module).
    let mut cast_bound: Option<syn::WherePredicate> = None;
    let transfer_fn = match &written.transfer {
        Some(f) => {
            let call = call(f, quote!(batch, device, dataloader_idx), true);
            Some(quote! {
                fn transfer_batch_to_device #module(&mut self, batch: #h, device: &#device, dataloader_idx: usize #module_arg) -> #b {
                    #call
                }
            })
        }
        None if !data => {
            cast_bound = Some(syn::parse_quote!(#h: ::fulmen::data::CastBatch<E, D, Out = #b>));
            Some(quote! {
                fn transfer_batch_to_device(&mut self, batch: #h, device: &#device, _dataloader_idx: usize) -> #b {
                    ::fulmen::data::CastBatch::<E, D>::cast(batch, device)
                }
            })
        }
        None => None,
    };
    let after_fn = written.after.as_ref().map(|f| {
        let call = call(f, quote!(batch, dataloader_idx), true);
        quote! {
            fn on_after_batch_transfer #module(&mut self, batch: #b, dataloader_idx: usize #module_arg) -> #b {
                #call
            }
        }
    });
    let mut where_clause = where_clause;
    if let Some(bound) = cast_bound {
        let clause = where_clause.get_or_insert_with(|| syn::parse_quote!(where));
        clause.predicates.push(bound);
    }
    quote! {
        impl<#generics #(#extra,)*> ::fulmen::batch_transfer::#trait_name<#h, #b, #device> for #self_ty #where_clause {
            const WRITTEN: ::fulmen::batch_transfer::Written = ::fulmen::batch_transfer::Written {
                before: #before,
                transfer: #transfer,
                after: #after,
            };
            #before_fn
            #transfer_fn
            #after_fn
        }
    }
}

//! `#[data_module]`: on the struct, its fields (less `#[skip]` ones) as hyperparameters; on
//! the impl, `fulmen::DataModule` from the methods written, whose return types may be plain
//! (`DataLoader<S>`, `()`) or fallible (`Result<DataLoader<S>>`, `Result<()>`, `Option<...>`).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use crate::ctxt::Ctxt;
use crate::names;

/// Each method `#[data_module]` knows, with the parameters it takes after `self`.
const METHODS: &[(&str, &str)] = &[
    ("prepare_data", ""),
    ("setup", "stage: Stage"),
    ("teardown", "stage: Stage"),
    ("train_dataloader", ""),
    ("val_dataloader", ""),
    ("test_dataloader", ""),
    ("predict_dataloader", ""),
    ("state_dict", ""),
    ("load_state_dict", "state: &serde_json::Value"),
];

pub(crate) fn expand(attr: TokenStream, item: TokenStream) -> TokenStream {
    let cx = Ctxt::default();
    if !attr.is_empty() {
        cx.error(&attr, "#[data_module] takes no arguments");
    }
    let parsed: syn::Item = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    let mut fallback = item;
    let out = match &parsed {
        syn::Item::Struct(s) => {
            fallback = crate::module_struct::strip_field_attrs(s);
            expand_struct(&cx, s)
        }
        syn::Item::Impl(i) => expand_impl(&cx, i),
        other => {
            cx.error(other, "#[data_module] goes on a struct (its fields are the hyperparameters) or on its impl (the loaders)");
            TokenStream::new()
        }
    };
    if cx.has_errors() {
        cx.into_output(fallback)
    } else {
        out
    }
}

fn expand_struct(cx: &Ctxt, item: &syn::ItemStruct) -> TokenStream {
    let mut item = item.clone();
    let mut inserts = Vec::new();
    if let syn::Fields::Named(named) = &mut item.fields {
        for f in named.named.iter_mut() {
            let before = f.attrs.len();
            f.attrs.retain(|a| !a.path().is_ident("skip"));
            if f.attrs.len() != before {
                continue;
            }
            if let Some(a) = f.attrs.iter().find(|a| a.path().is_ident("hparam")) {
                cx.error(a, "in a #[data_module] every field is a hyperparameter unless marked #[skip]: remove #[hparam]");
            }
            let (name, ty) = (f.ident.clone(), &f.ty);
            let label = name.to_token_stream().to_string();
            inserts.push(quote_spanned!(ty.span()=> hparams.insert(#label, &self.#name);));
        }
    } else if !matches!(item.fields, syn::Fields::Unit) {
        cx.error(
            &item.fields,
            "#[data_module] needs named fields: their names are the hyperparameter names",
        );
    }
    let name = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    quote! {
        #item

        impl #impl_generics ::fulmen::Hyperparameters for #name #ty_generics #where_clause {
            fn hparams(&self) -> ::fulmen::HParams {
                #[allow(unused_mut)]
                let mut hparams = ::fulmen::HParams::new();
                #(#inserts)*
                hparams
            }
        }
    }
}

/// The `S` of the first `DataLoader<S>` inside `ty`.
fn loader_sample(ty: &syn::Type) -> Option<syn::Type> {
    let syn::Type::Path(p) = ty else { return None };
    let last = p.path.segments.last()?;
    let syn::PathArguments::AngleBracketed(args) = &last.arguments else {
        return None;
    };
    let mut types = args.args.iter().filter_map(|a| match a {
        syn::GenericArgument::Type(t) => Some(t),
        _ => None,
    });
    if last.ident == "DataLoader" {
        return types.next().cloned();
    }
    types.find_map(loader_sample)
}

fn expand_impl(cx: &Ctxt, item: &syn::ItemImpl) -> TokenStream {
    if let Some((_, path, _)) = &item.trait_ {
        cx.error(path, "#[data_module] goes on the data module's own impl (`impl MyData { ... }`), not on a trait impl");
        return TokenStream::new();
    }
    let mut sample: Option<syn::Type> = None;
    let mut wrappers = Vec::new();
    let mut seen = Vec::new();
    for impl_item in &item.items {
        let syn::ImplItem::Fn(f) = impl_item else {
            continue;
        };
        let name = f.sig.ident.to_string();
        let Some(&(known, params)) = METHODS.iter().find(|(m, _)| *m == name) else {
            if let Some(close) = names::closest(&name, METHODS.iter().map(|(m, _)| *m)) {
                cx.error(
                    &f.sig.ident,
                    format!("`{name}` is not a DataModule method; did you mean `{close}`?"),
                );
            }
            continue;
        };
        if seen.contains(&known) {
            cx.error(&f.sig.ident, format!("`{name}` is defined twice"));
            continue;
        }
        seen.push(known);
        let takes_self =
            matches!(f.sig.inputs.first(), Some(syn::FnArg::Receiver(r)) if r.reference.is_some());
        let arity = usize::from(!params.is_empty());
        if !takes_self || f.sig.inputs.len() - 1 != arity {
            let receiver = if known == "state_dict" {
                "&self"
            } else {
                "&mut self"
            };
            let expected = if params.is_empty() {
                format!("({receiver})")
            } else {
                format!("({receiver}, {params})")
            };
            cx.error(&f.sig, format!("`{name}` must take `{expected}`"));
            continue;
        }
        let ident = &f.sig.ident;
        if known.ends_with("_dataloader") {
            let syn::ReturnType::Type(_, ret) = &f.sig.output else {
                cx.error(&f.sig, format!("`{name}` must return the loader: `-> DataLoader<Sample>` (or `Result<...>` / `Option<...>` of it)"));
                continue;
            };
            match loader_sample(ret) {
                Some(s) if sample.is_none() => sample = Some(s),
                Some(_) => {}
                None => {
                    cx.error(ret, format!("`{name}` must return `DataLoader<Sample>` (or `Result<...>` / `Option<...>` of it)"));
                    continue;
                }
            }
            wrappers.push(quote_spanned! {f.sig.span()=>
                fn #ident(&mut self) -> ::fulmen::Result<::core::option::Option<::fulmen::data::DataLoader<Self::Sample>>> {
                    ::fulmen::datamodule::IntoLoader::into_loader(Self::#ident(self))
                }
            });
        } else if known == "state_dict" {
            wrappers.push(quote_spanned! {f.sig.span()=>
                fn state_dict(&self) -> ::core::option::Option<::fulmen::serde_json::Value> {
                    ::fulmen::datamodule::IntoState::into_state(Self::state_dict(self))
                }
            });
        } else if known == "load_state_dict" {
            wrappers.push(quote_spanned! {f.sig.span()=>
                fn load_state_dict(&mut self, state: &::fulmen::serde_json::Value) -> ::fulmen::Result<()> {
                    ::fulmen::datamodule::IntoResult::into_result(Self::load_state_dict(self, state))
                }
            });
        } else {
            let (param, arg) = if arity == 1 {
                (quote!(, stage: ::fulmen::Stage), quote!(, stage))
            } else {
                (quote!(), quote!())
            };
            wrappers.push(quote_spanned! {f.sig.span()=>
                fn #ident(&mut self #param) -> ::fulmen::Result<()> {
                    ::fulmen::datamodule::IntoResult::into_result(Self::#ident(self #arg))
                }
            });
        }
    }
    let Some(sample) = sample else {
        if !cx.has_errors() {
            cx.error(&item.self_ty, "a #[data_module] needs at least one loader: `fn train_dataloader(&self) -> DataLoader<Sample>`");
        }
        return TokenStream::new();
    };
    if cx.has_errors() {
        return TokenStream::new();
    }
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let self_ty = &item.self_ty;
    quote! {
        #item

        impl #impl_generics ::fulmen::DataModule for #self_ty #where_clause {
            type Sample = #sample;
            #(#wrappers)*
        }
    }
}

//! `#[data_module]`: on the struct, its fields (less `#[skip]` ones) as hyperparameters; on
//! the impl, `fulmen::DataModule` from the methods written, whose return types may be plain
//! (`DataLoader<S>`, `()`) or fallible (`Result<DataLoader<S>>`, `Result<()>`, `Option<...>`).

use proc_macro2::TokenStream;
use quote::{quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use super::batch_transfer::{self, Owner, Written, HOOKS};
use crate::ast::{DataImpl, DataStruct};

/// The struct without its markers, its `Hyperparameters` impl (its fields but the `#[skip]`
/// ones), and, for named fields, `new` from those (the skipped ones take their `Default`) and
/// `FromHParams`, the same by name.
pub(crate) fn expand_struct(model: &DataStruct) -> TokenStream {
    let item = model.stripped();
    let inserts = model.fields.iter().filter(|f| !f.skip).map(|f| {
        let (name, ty) = (&f.name, &f.ty);
        let label = name.to_token_stream().to_string();
        quote_spanned!(ty.span()=> hparams.insert(#label, &self.#name);)
    });
    let name = &item.ident;
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    let constructors = constructors(model, &item);
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

        #constructors
    }
}

/// `new` and `FromHParams` for a data module of named fields, neither under `no_new` (a data
/// module with its own `new`, or `#[skip]` fields without a `Default`).
fn constructors(model: &DataStruct, item: &syn::ItemStruct) -> TokenStream {
    let named = matches!(item.fields, syn::Fields::Named(_)) && model.generate_new;
    let Some(fields) = (named)
        .then(|| {
            (model.fields.iter())
                .map(|f| Some((f.name.as_ref()?, f)))
                .collect::<Option<Vec<_>>>()
        })
        .flatten()
    else {
        return quote!();
    };
    let hparams: Vec<_> = fields.iter().filter(|(_, f)| !f.skip).collect();
    let params = hparams.iter().map(|(n, f)| {
        let ty = &f.ty;
        quote!(#n: #ty)
    });
    let init = |from_hparams: bool| {
        let fields = fields
            .iter()
            .map(move |(n, f)| match (f.skip, from_hparams) {
                (true, _) => quote_spanned!(f.ty.span()=> #n: ::core::default::Default::default()),
                (false, false) => quote!(#n),
                (false, true) => {
                    let (ty, label) = (&f.ty, n.to_string());
                    quote_spanned!(ty.span()=> #n: hparams.get::<#ty>(#label)?)
                }
            });
        quote!(Self { #(#fields),* })
    };
    let (by_args, by_hparams) = (init(false), init(true));
    let schema = hparams.iter().map(|(n, f)| {
        let (label, ty) = (n.to_string(), super::module_struct::type_text(&f.ty));
        quote!((#label, #ty))
    });
    let name = &item.ident;
    let doc = format!(
        " Builds `{name}` from its hyperparameters (every field but the `#[skip]` ones, which take their `Default`)."
    );
    let (impl_generics, ty_generics, where_clause) = item.generics.split_for_impl();
    quote! {
        impl #impl_generics #name #ty_generics #where_clause {
            #[doc = #doc]
            #[allow(clippy::new_without_default, clippy::too_many_arguments)]
            pub fn new(#(#params),*) -> Self {
                #by_args
            }
        }

        impl #impl_generics ::fulmen::FromHParams for #name #ty_generics #where_clause {
            const HPARAMS: &'static [(&'static str, &'static str)] = &[#(#schema),*];

            #[allow(unused_variables)]
            fn from_hparams(hparams: &::fulmen::HParams) -> ::fulmen::Result<Self> {
                ::core::result::Result::Ok(#by_hparams)
            }
        }
    }
}

/// The impl as written (its batch-transfer hooks renamed, `batch_transfer.rs`), and
/// `DataModule`'s methods calling its known ones.
pub(crate) fn expand_impl(model: &DataImpl) -> TokenStream {
    let mut item = model.item.clone();
    let mut transfers = Written::default();
    for it in item.items.iter_mut() {
        if let syn::ImplItem::Fn(f) = it {
            if let Some(own) = transfers.take(f, true) {
                *f = own;
            }
        }
    }
    let wrappers = model.methods.iter().filter_map(|m| {
        let (known, params) = m.known?;
        if HOOKS.contains(&known) {
            return None;
        }
        let ident = &m.f.sig.ident;
        let span = m.f.sig.span();
        Some(match known {
            "val_dataloader" => quote_spanned! {span=>
                fn #ident(&mut self) -> ::fulmen::Result<::std::vec::Vec<::fulmen::data::DataLoader<Self::EvalSample>>> {
                    ::fulmen::datamodule::IntoLoaders::into_loaders(Self::#ident(self))
                }
            },
            "test_dataloader" => quote_spanned! {span=>
                fn #ident(&mut self) -> ::fulmen::Result<::std::vec::Vec<::fulmen::data::DataLoader<Self::EvalSample>>> {
                    ::fulmen::datamodule::IntoLoaders::into_loaders(Self::#ident(self))
                }
            },
            "predict_dataloader" => quote_spanned! {span=>
                fn #ident(&mut self) -> ::fulmen::Result<::core::option::Option<::fulmen::data::DataLoader<Self::PredictSample>>> {
                    ::fulmen::datamodule::IntoLoader::into_loader(Self::#ident(self))
                }
            },
            k if k.ends_with("_dataloader") => quote_spanned! {span=>
                fn #ident(&mut self) -> ::fulmen::Result<::core::option::Option<::fulmen::data::DataLoader<Self::Sample>>> {
                    ::fulmen::datamodule::IntoLoader::into_loader(Self::#ident(self))
                }
            },
            "state_dict" => quote_spanned! {span=>
                fn state_dict(&self) -> ::core::option::Option<::fulmen::serde_json::Value> {
                    ::fulmen::datamodule::IntoState::into_state(Self::state_dict(self))
                }
            },
            "load_state_dict" => quote_spanned! {span=>
                fn load_state_dict(&mut self, state: &::fulmen::serde_json::Value) -> ::fulmen::Result<()> {
                    ::fulmen::datamodule::IntoResult::into_result(Self::load_state_dict(self, state))
                }
            },
            "on_exception" => quote_spanned! {span=>
                fn on_exception(&mut self, error: &::fulmen::Error) {
                    Self::on_exception(self, error)
                }
            },
            _ => {
                let (param, arg) = match params {
                    "" => (quote!(), quote!()),
                    _ => (quote!(, stage: ::fulmen::Stage), quote!(, stage)),
                };
                quote_spanned! {span=>
                    fn #ident(&mut self #param) -> ::fulmen::Result<()> {
                        ::fulmen::datamodule::IntoResult::into_result(Self::#ident(self #arg))
                    }
                }
            }
        })
    });
    // Without a `val_dataloader`, no sanity check (Lightning's "defined").
    let writes_val =
        (model.methods.iter()).any(|m| m.known.is_some_and(|(k, _)| k == "val_dataloader"));
    let no_val = (!writes_val).then(|| {
        quote! {
            fn has_val_dataloader(&self) -> bool {
                false
            }
        }
    });
    let transfer = batch_transfer::expand(&transfers, Owner::Data { item: &item });
    let data_module = with_data_module(model, &item, quote!(#(#wrappers)* #no_val));
    quote!(#data_module #transfer)
}

/// The impl as written and `DataModule` for its type, with `methods`: its sample types those of
/// its loaders (the training loader's where the others are not written).
fn with_data_module(model: &DataImpl, item: &syn::ItemImpl, methods: TokenStream) -> TokenStream {
    let sample = (model.sample()).map_or_else(|| quote!(()), |t| t.into_token_stream());
    let or_sample =
        |t: Option<syn::Type>| t.map_or_else(|| sample.clone(), |t| t.into_token_stream());
    let (eval_sample, predict_sample) = (
        or_sample(model.eval_sample()),
        or_sample(model.predict_sample()),
    );
    let (impl_generics, _, where_clause) = item.generics.split_for_impl();
    let self_ty = &item.self_ty;
    quote! {
        #item

        impl #impl_generics ::fulmen::DataModule for #self_ty #where_clause {
            type Source = ::fulmen::datamodule::ItsOwn;
            type Sample = #sample;
            type EvalSample = #eval_sample;
            type PredictSample = #predict_sample;
            #methods
        }
    }
}

/// What is emitted beside the errors: the impl as written, and a stub `DataModule` impl
/// (the sample type of the first loader that names one, every method its default), so that
/// code using the data module reports nothing more.
pub(crate) fn fallback(model: &DataImpl) -> TokenStream {
    match model.item.trait_ {
        Some(_) => model.item.to_token_stream(),
        None => {
            // The hooks as generation has them (`E` and `D` in scope), so that a mistake
            // elsewhere is the one message.
            let mut item = model.item.clone();
            let mut transfers = Written::default();
            for it in item.items.iter_mut() {
                if let syn::ImplItem::Fn(f) = it {
                    if let Some(own) = transfers.take(f, true) {
                        *f = own;
                    }
                }
            }
            let data_module = with_data_module(model, &item, TokenStream::new());
            let transfer = batch_transfer::expand(&Written::default(), Owner::Data { item: &item });
            quote!(#data_module #transfer)
        }
    }
}

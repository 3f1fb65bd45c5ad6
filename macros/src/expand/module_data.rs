//! The loaders a module's impl writes (Lightning's `*_dataloader` on the `LightningModule`) as
//! its `fulmen::module_data::ServesData` impl, with the sample types they name; the user's
//! methods stay inherent, renamed `__fulmen_<loader>`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, ToTokens};

use crate::ast::loader_sample;

/// The loaders, as `LightningModule`'s known methods.
pub(crate) const LOADERS: [&str; 4] = [
    "train_dataloader",
    "val_dataloader",
    "test_dataloader",
    "predict_dataloader",
];

/// The loaders an impl wrote, by name (renamed already, see [`Written::take`]).
#[derive(Default)]
pub(crate) struct Written {
    loaders: Vec<(&'static str, syn::ImplItemFn)>,
}

impl Written {
    /// Takes `f` if it is a loader: renamed `__fulmen_<loader>` and hidden. Returns it to keep
    /// in the inherent impl.
    pub(crate) fn take(&mut self, f: &syn::ImplItemFn) -> Option<syn::ImplItemFn> {
        let name = f.sig.ident.to_string();
        let loader = LOADERS.into_iter().find(|l| *l == name)?;
        let mut own = f.clone();
        own.sig.ident = format_ident!("__fulmen_{name}", span = f.sig.ident.span());
        own.attrs.push(syn::parse_quote!(#[doc(hidden)]));
        self.loaders.push((loader, own.clone()));
        Some(own)
    }

    /// The sample type of the first loader `which` takes.
    fn sample(&self, which: &[&str]) -> Option<TokenStream> {
        (self.loaders.iter())
            .filter(|(name, _)| which.contains(name))
            .find_map(|(_, f)| match &f.sig.output {
                syn::ReturnType::Type(_, ret) => loader_sample(ret),
                syn::ReturnType::Default => None,
            })
            .map(|t| t.to_token_stream())
    }
}

/// `ServesData` for the module (`generics`: the impl's own with `E` and `D`, each followed by
/// a comma), when it wrote a loader; beside errors (`stub`), its types alone, so that a
/// stage given `FromModule::of` reports nothing more.
pub(crate) fn expand(
    written: &Written,
    generics: TokenStream,
    self_ty: &syn::Type,
    where_clause: Option<&syn::WhereClause>,
    stub: bool,
) -> TokenStream {
    let eval = written.sample(&["val_dataloader", "test_dataloader"]);
    let predict = written.sample(&["predict_dataloader"]);
    let Some(sample) = (written.sample(&["train_dataloader"]))
        .or_else(|| eval.clone())
        .or_else(|| predict.clone())
    else {
        return TokenStream::new();
    };
    let (eval, predict) = (
        eval.unwrap_or_else(|| sample.clone()),
        predict.unwrap_or_else(|| sample.clone()),
    );
    let methods = written.loaders.iter().filter(|_| !stub).map(|(name, f)| {
        let (ident, inner) = (format_ident!("{name}"), &f.sig.ident);
        match *name {
            "val_dataloader" => quote! {
                fn val_dataloader(&mut self) -> ::fulmen::Result<::std::vec::Vec<::fulmen::data::DataLoader<Self::EvalSample>>> {
                    ::fulmen::datamodule::IntoLoaders::into_loaders(Self::#inner(self))
                }
                fn has_val_dataloader(&self) -> bool {
                    true
                }
            },
            "test_dataloader" => quote! {
                fn test_dataloader(&mut self) -> ::fulmen::Result<::std::vec::Vec<::fulmen::data::DataLoader<Self::EvalSample>>> {
                    ::fulmen::datamodule::IntoLoaders::into_loaders(Self::#inner(self))
                }
            },
            "predict_dataloader" => quote! {
                fn predict_dataloader(&mut self) -> ::fulmen::Result<::core::option::Option<::fulmen::data::DataLoader<Self::PredictSample>>> {
                    ::fulmen::datamodule::IntoLoader::into_loader(Self::#inner(self))
                }
            },
            _ => quote! {
                fn #ident(&mut self) -> ::fulmen::Result<::core::option::Option<::fulmen::data::DataLoader<Self::Sample>>> {
                    ::fulmen::datamodule::IntoLoader::into_loader(Self::#inner(self))
                }
            },
        }
    });
    quote! {
        impl<#generics> ::fulmen::module_data::ServesData for #self_ty #where_clause {
            type Sample = #sample;
            type EvalSample = #eval;
            type PredictSample = #predict;
            #(#methods)*
        }
    }
}

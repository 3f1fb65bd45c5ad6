//! `#[lightning_module]` on the impl: known methods (steps, `configure_optimizers`, hooks)
//! become the `fulmen::LightningModule` impl, checked by name and shape; every other method
//! (`forward`, helpers) stays an inherent method. Both see the dtype `E` and device `D`.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};
use std::collections::HashSet;

use crate::ctxt::Ctxt;
use crate::hooks::{self, Receiver};
use crate::names;

/// `X<args>` → `X<args, E, D>`.
pub(crate) fn with_dtype_device(ty: &syn::Type) -> Option<syn::Type> {
    let syn::Type::Path(p) = ty else { return None };
    let mut p = p.clone();
    let last = p.path.segments.last_mut()?;
    let extra: [syn::GenericArgument; 2] = [syn::parse_quote!(E), syn::parse_quote!(D)];
    match &mut last.arguments {
        syn::PathArguments::None => {
            last.arguments = syn::PathArguments::AngleBracketed(syn::parse_quote!(<E, D>));
        }
        syn::PathArguments::AngleBracketed(a) => a.args.extend(extra),
        syn::PathArguments::Parenthesized(_) => return None,
    }
    Some(syn::Type::Path(p))
}

fn receiver(sig: &syn::Signature) -> Option<&syn::Receiver> {
    match sig.inputs.first() {
        Some(syn::FnArg::Receiver(r)) => Some(r),
        _ => None,
    }
}

/// What is emitted beside the errors: the impl's methods as inherent methods with `E` and `D`
/// in scope (each name once), so that the IDE and the rest of the crate still see them.
pub(crate) fn fallback(item: &syn::ItemImpl) -> TokenStream {
    let Some(self_ty) = with_dtype_device(&item.self_ty) else {
        return TokenStream::new();
    };
    if item.trait_.is_some() {
        return TokenStream::new();
    }
    let mut names = Vec::new();
    let items = item.items.iter().filter(|i| match i {
        syn::ImplItem::Fn(f) => {
            let name = f.sig.ident.to_string();
            let first = !names.contains(&name);
            names.push(name);
            first
        }
        _ => true,
    });
    let params = item.generics.params.iter();
    let where_clause = &item.generics.where_clause;
    quote! {
        #[allow(dead_code)]
        impl<#(#params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>> #self_ty #where_clause {
            #(#items)*
        }
    }
}

pub(crate) fn expand(cx: &Ctxt, item: &syn::ItemImpl) -> TokenStream {
    if let Some((_, path, _)) = &item.trait_ {
        cx.error(path, "#[lightning_module] goes on the module's own impl (`impl MyModel { ... }`), not on a trait impl");
        return TokenStream::new();
    }
    let Some(self_ty) = with_dtype_device(&item.self_ty) else {
        cx.error(
            &item.self_ty,
            "#[lightning_module] expects the struct's name here (`impl MyModel`)",
        );
        return TokenStream::new();
    };
    let type_name = match &*item.self_ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .map(|s| s.ident.to_string())
            .unwrap_or_default(),
        _ => String::new(),
    };

    let mut seen: HashSet<String> = HashSet::new();
    let mut trait_items: Vec<syn::ImplItemFn> = Vec::new();
    let mut inherent_items: Vec<syn::ImplItem> = Vec::new();
    let mut near_misses: Vec<&'static str> = Vec::new();
    let known_names = || hooks::KNOWN.iter().map(|k| k.name);

    for impl_item in &item.items {
        let syn::ImplItem::Fn(f) = impl_item else {
            inherent_items.push(impl_item.clone());
            continue;
        };
        let name = f.sig.ident.to_string();
        let Some(known) = hooks::find(&name) else {
            if let Some(close) = names::closest(&name, known_names()) {
                cx.error(
                    &f.sig.ident,
                    format!("`{name}` is not a LightningModule method; did you mean `{close}`?"),
                );
                near_misses.push(close);
            } else if name.starts_with("on_") {
                cx.error(&f.sig.ident, format!("unknown hook `{name}`: fulmen's hooks are listed in `fulmen::Callback` (Lightning would silently never call it)"));
            } else {
                inherent_items.push(impl_item.clone());
            }
            continue;
        };
        if !seen.insert(name.clone()) {
            cx.error(&f.sig.ident, format!("`{name}` is defined twice"));
            continue;
        }
        let mut f = f.clone();
        let shape_error = || format!("`{name}` must have the signature `{}`", known.signature());
        if !f.sig.generics.params.is_empty() {
            cx.error(
                &f.sig.generics,
                format!(
                    "{}: it takes no generic parameters (`E` and `D` are in scope)",
                    shape_error()
                ),
            );
            continue;
        }
        match receiver(&f.sig) {
            None => {
                cx.error(
                    &f.sig,
                    format!("{}: it takes `self` by reference", shape_error()),
                );
                continue;
            }
            Some(r) if r.reference.is_none() => {
                cx.error(
                    r,
                    format!("{}: it takes `self` by reference", shape_error()),
                );
                continue;
            }
            Some(r) if known.receiver == Receiver::Ref && r.mutability.is_some() => {
                cx.error(r, format!("{}: it only reads the module", shape_error()));
                continue;
            }
            Some(_) => {}
        }
        if f.sig.inputs.len() - 1 != known.params.len() {
            cx.error(&f.sig, shape_error());
            continue;
        }
        if known.receiver == Receiver::Mut {
            // `&self` is accepted where the trait takes `&mut self`: it asks for less.
            if let Some(syn::FnArg::Receiver(r)) = f.sig.inputs.first_mut() {
                if r.mutability.is_none() {
                    *r = syn::parse_quote!(&mut self);
                }
            }
        }
        trait_items.push(f);
    }

    for required in hooks::REQUIRED {
        if !seen.contains(required) && !near_misses.contains(&required) {
            let example = hooks::find(required)
                .map(|k| k.signature())
                .unwrap_or_default();
            cx.error(
                &item.self_ty,
                format!(
                    "`{type_name}` has no `{required}`: a #[lightning_module] needs `{example}`"
                ),
            );
        }
    }
    if cx.has_errors() {
        return TokenStream::new();
    }

    let arg_type = |name: &str| -> Option<syn::Type> {
        let f = trait_items.iter().find(|f| f.sig.ident == name)?;
        match f.sig.inputs.iter().nth(1)? {
            syn::FnArg::Typed(t) => Some((*t.ty).clone()),
            syn::FnArg::Receiver(_) => None,
        }
    };
    let batch = arg_type("training_step")
        .map(|t| t.into_token_stream())
        .unwrap_or_else(|| quote!(()));
    let predict = trait_items.iter().find(|f| f.sig.ident == "predict_step");
    let prediction = match predict.map(|f| &f.sig.output) {
        Some(syn::ReturnType::Type(_, ty)) => ty.to_token_stream(),
        _ => quote!(()),
    };
    let has = |name: &str| trait_items.iter().any(|f| f.sig.ident == name);
    let (has_val, has_test, has_predict) = (
        has("validation_step"),
        has("test_step"),
        has("predict_step"),
    );
    let default_predict = (!has_predict).then(|| {
        quote! {
            fn predict_step(&mut self, _batch: Self::Batch, _ctx: &mut ::fulmen::StepContext<E, D>) -> Self::Prediction {}
        }
    });

    let generic_params: Vec<_> = item.generics.params.iter().collect();
    let where_clause = &item.generics.where_clause;
    let attrs = &item.attrs;
    let inherent = (!inherent_items.is_empty()).then(|| {
        quote! {
            #(#attrs)*
            impl<#(#generic_params,)* E: ::fulmen::FloatDtype, D: ::fulmen::dfdx::tensor_ops::Device<E>> #self_ty #where_clause {
                #(#inherent_items)*
            }
        }
    });
    quote! {
        #inherent

        impl<#(#generic_params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>> ::fulmen::LightningModule<E, D> for #self_ty #where_clause {
            type Batch = #batch;
            type Prediction = #prediction;
            const NAME: &'static str = #type_name;
            const HAS_VALIDATION_STEP: bool = #has_val;
            const HAS_TEST_STEP: bool = #has_test;
            const HAS_PREDICT_STEP: bool = #has_predict;

            #(#trait_items)*
            #default_predict
        }
    }
}

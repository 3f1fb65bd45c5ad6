//! `#[lightning_module]` on the impl: the known methods (steps, `configure_optimizers`, hooks)
//! become the `fulmen::LightningModule` impl; every other method (`forward`, helpers) stays an
//! inherent method. Both see the dtype `E` and device `D`.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use super::batch_transfer::{self, Owner, Written};
use super::module_data;
use crate::ast::ModuleImpl;
use crate::hooks::Receiver;

/// The impl of a model that checked.
pub(crate) fn expand(m: &ModuleImpl) -> TokenStream {
    let Some(self_ty) = &m.self_ty else {
        return TokenStream::new();
    };
    let mut trait_items = Vec::new();
    let mut inherent_items = m.others.clone();
    let mut transfers = Written::default();
    let mut loaders = module_data::Written::default();
    for method in &m.methods {
        let Some(known) = method.known else {
            inherent_items.push(syn::ImplItem::Fn(method.f.clone()));
            continue;
        };
        let mut f = method.f.clone();
        // `&self` is accepted where the trait takes `&mut self`: it asks for less.
        if known.receiver == Receiver::Mut {
            if let Some(syn::FnArg::Receiver(r)) = f.sig.inputs.first_mut() {
                if r.mutability.is_none() {
                    *r = syn::parse_quote!(&mut self);
                }
            }
        }
        match known.name {
            // The user's own, renamed, and the trait's calling it: what it returns becomes what
            // the loop takes, with a message naming the mistake where it is not.
            "training_step" | "configure_optimizers" | "validation_step" | "test_step" => {
                let (own, wrapper) = wrapped(f, m.manual);
                inherent_items.push(syn::ImplItem::Fn(own));
                trait_items.push(wrapper);
            }
            // Their own traits', called from them (`batch_transfer.rs`, `module_data.rs`).
            name if batch_transfer::HOOKS.contains(&name) => {
                inherent_items.extend(transfers.take(&f, false).map(syn::ImplItem::Fn));
            }
            name if module_data::LOADERS.contains(&name) => {
                inherent_items.extend(loaders.take(&f).map(syn::ImplItem::Fn));
            }
            _ => trait_items.push(f),
        }
    }
    let has = |name: &str| m.known(name).is_some();
    let (has_val, has_test, has_predict) = (
        has("validation_step"),
        has("test_step"),
        has("predict_step"),
    );
    let has_zero_grad = has("optimizer_zero_grad").then(|| {
        quote!(
            const HAS_OPTIMIZER_ZERO_GRAD: bool = true;
        )
    });
    let default_predict = (!has_predict).then(|| {
        quote! {
            fn predict_step(&mut self, _batch: Self::PredictBatch, _ctx: &mut ::fulmen::StepContext<E, D>) -> Self::Prediction {}
        }
    });
    let Associated {
        batch,
        eval_batch,
        predict_batch,
        prediction,
        type_name,
    } = associated(m);
    let generic_params: Vec<_> = m.item.generics.params.iter().collect();
    let where_clause = &m.item.generics.where_clause;
    let attrs = &m.item.attrs;
    // The module's own methods see what its hooks see: a device the trainer runs on, so that
    // fulmen's layers (which compute through `TrainDevice`'s kernels) can be called in them.
    let inherent = (!inherent_items.is_empty()).then(|| {
        quote! {
            #(#attrs)*
            impl<#(#generic_params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>> #self_ty #where_clause {
                #(#inherent_items)*
            }
        }
    });
    let mode = mode(m.manual);
    let side = side_traits(m, self_ty, &transfers, &loaders, false);
    quote! {
        #inherent

        #side

        impl<#(#generic_params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>> ::fulmen::LightningModule<E, D> for #self_ty #where_clause {
            type Batch = #batch;
            type Optimization = #mode;
            type EvalBatch = #eval_batch;
            type PredictBatch = #predict_batch;
            type Prediction = #prediction;
            const NAME: &'static str = #type_name;
            const HAS_VALIDATION_STEP: bool = #has_val;
            const HAS_TEST_STEP: bool = #has_test;
            const HAS_PREDICT_STEP: bool = #has_predict;
            #has_zero_grad

            #(#trait_items)*
            #default_predict
        }
    }
}

/// The optimization mode's type.
fn mode(manual: bool) -> TokenStream {
    match manual {
        true => quote!(::fulmen::Manual),
        false => quote!(::fulmen::Automatic),
    }
}

/// `training_step`, `validation_step`, `test_step` or `configure_optimizers` as the user wrote
/// it, renamed to
/// `__fulmen_<name>` (under manual optimization with the context `StepContext<E, D, Manual>`),
/// and the trait's method, which calls it and converts what it returns.
fn wrapped(mut own: syn::ImplItemFn, manual: bool) -> (syn::ImplItemFn, syn::ImplItemFn) {
    let name = own.sig.ident.to_string();
    let inner = format_ident!("__fulmen_{name}");
    own.sig.ident = inner.clone();
    own.attrs.push(syn::parse_quote!(#[doc(hidden)]));
    // Where the trait's method was, the batch type is the user's to write out.
    own.attrs
        .push(syn::parse_quote!(#[allow(clippy::type_complexity)]));
    // What it returns decides the message's place.
    let at = match &own.sig.output {
        syn::ReturnType::Type(_, ty) => ty.span(),
        syn::ReturnType::Default => own.sig.ident.span(),
    };
    // The binding and its use share the return type's span (hygiene: an impl that a
    // `macro_rules!` writes has the user's tokens in another context than the call site's).
    let out = format_ident!("out", span = at);
    let wrapper = match name.as_str() {
        "training_step" => {
            if manual {
                if let Some(syn::FnArg::Typed(ctx)) = own.sig.inputs.iter_mut().nth(2) {
                    *ctx.ty = manual_context(&ctx.ty);
                }
            }
            let convert = match manual {
                true => quote_spanned!(at=> ::core::result::Result::map(
                    ::fulmen::ManualStep::into_logged(#out),
                    ::fulmen::StepOutput::Logged,
                )),
                false => quote_spanned!(at=> ::fulmen::AutomaticStep::<E, D>::into_output(#out)),
            };
            syn::parse_quote! {
                fn training_step(&mut self, batch: Self::Batch, ctx: &mut ::fulmen::StepContext<E, D, Self::Optimization>) -> ::fulmen::Result<::fulmen::StepOutput<E, D>> {
                    let #out = Self::#inner(self, batch, ctx);
                    #convert
                }
            }
        }
        "validation_step" | "test_step" => {
            let name = format_ident!("{name}");
            let convert = quote_spanned!(at=> ::fulmen::EvalStep::into_result(#out));
            syn::parse_quote! {
                fn #name(&mut self, batch: Self::EvalBatch, ctx: &mut ::fulmen::StepContext<E, D>) -> ::fulmen::Result<()> {
                    let #out = Self::#inner(self, batch, ctx);
                    #convert
                }
            }
        }
        _ => {
            let convert = quote_spanned!(at=> ::core::convert::Into::<::fulmen::optim::Optimizers>::into(#out));
            syn::parse_quote! {
                fn configure_optimizers(&self) -> ::fulmen::optim::Optimizers {
                    let #out = Self::#inner(self);
                    #convert
                }
            }
        }
    };
    (own, wrapper)
}

/// `&mut StepContext<E, D>` as manual optimization's `&mut StepContext<E, D, Manual>` (a
/// context that names its mode already is kept).
fn manual_context(ty: &syn::Type) -> syn::Type {
    let mut ty = ty.clone();
    if let syn::Type::Reference(r) = &mut ty {
        if let syn::Type::Path(p) = &mut *r.elem {
            if let Some(last) = p.path.segments.last_mut() {
                if let syn::PathArguments::AngleBracketed(a) = &mut last.arguments {
                    let types = a
                        .args
                        .iter()
                        .filter(|g| matches!(g, syn::GenericArgument::Type(_)));
                    if types.count() == 2 {
                        a.args.push(syn::parse_quote!(::fulmen::Manual));
                    }
                }
            }
        }
    }
    ty
}

/// The types of the `LightningModule` impl, and the struct's name.
struct Associated {
    /// `training_step`'s batch.
    batch: TokenStream,
    /// `validation_step`'s and `test_step`'s batch (the training batch without them).
    eval_batch: TokenStream,
    /// `predict_step`'s batch (the training batch without one).
    predict_batch: TokenStream,
    /// What `predict_step` returns.
    prediction: TokenStream,
    type_name: String,
}

fn associated(m: &ModuleImpl) -> Associated {
    let batch = (m.arg_type("training_step")).map_or_else(|| quote!(()), |t| t.into_token_stream());
    let own = |step: &str| m.arg_type(step).map(|t| t.into_token_stream());
    let eval_batch = (own("validation_step"))
        .or_else(|| own("test_step"))
        .unwrap_or_else(|| batch.clone());
    let predict_batch = own("predict_step").unwrap_or_else(|| batch.clone());
    // One the check refuses (it names `E` or `D`) is `()` in the stub beside the error, so
    // that a `predict` call reports nothing more.
    let prediction =
        (m.return_type("predict_step")).filter(|t| !crate::check::names_dtype_or_device(t));
    Associated {
        batch,
        eval_batch,
        predict_batch,
        prediction: prediction.map_or_else(|| quote!(()), |t| t.into_token_stream()),
        type_name: m.type_name.clone(),
    }
}

/// What is emitted beside the errors: the impl's methods as inherent methods with `E` and `D`
/// in scope (each name once), so that the IDE and the rest of the crate still see them, and a
/// stub `LightningModule` impl, so that code using the module (a trainer's `fit`) reports
/// nothing more.
pub(crate) fn fallback(m: &ModuleImpl) -> TokenStream {
    let Some(self_ty) = &m.self_ty else {
        return TokenStream::new();
    };
    if m.item.trait_.is_some() {
        return m.item.to_token_stream();
    }
    let mut names = Vec::new();
    let mut items = m.item.items.clone();
    // A manual step's calls compile against its context, so that they report nothing more.
    for item in items.iter_mut() {
        if let syn::ImplItem::Fn(f) = item {
            if m.manual && f.sig.ident == "training_step" {
                if let Some(syn::FnArg::Typed(ctx)) = f.sig.inputs.iter_mut().nth(2) {
                    *ctx.ty = manual_context(&ctx.ty);
                }
            }
        }
    }
    let items = items.iter().filter(|i| match i {
        syn::ImplItem::Fn(f) => {
            let name = f.sig.ident.to_string();
            let first = !names.contains(&name);
            names.push(name);
            first
        }
        _ => true,
    });
    let params = m.item.generics.params.iter();
    let where_clause = &m.item.generics.where_clause;
    let Associated {
        batch,
        eval_batch,
        predict_batch,
        prediction,
        type_name,
    } = associated(m);
    let unreachable =
        format!("`{type_name}` did not compile: its #[lightning_module] impl has errors");
    let generic_params: Vec<_> = m.item.generics.params.iter().collect();
    let mode = mode(m.manual);
    let mut loaders = module_data::Written::default();
    for method in m.methods.iter().filter(|m| m.known.is_some()) {
        loaders.take(&method.f);
    }
    let side = side_traits(m, self_ty, &Written::default(), &loaders, true);
    quote! {
        #side

        #[allow(dead_code)]
        impl<#(#params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>> #self_ty #where_clause {
            #(#items)*
        }

        impl<#(#generic_params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>> ::fulmen::LightningModule<E, D> for #self_ty #where_clause {
            type Batch = #batch;
            type EvalBatch = #eval_batch;
            type PredictBatch = #predict_batch;
            type Prediction = #prediction;
            type Optimization = #mode;
            const NAME: &'static str = #type_name;

            fn training_step(&mut self, _batch: Self::Batch, _ctx: &mut ::fulmen::StepContext<E, D, Self::Optimization>) -> ::fulmen::Result<::fulmen::StepOutput<E, D>> {
                ::core::unreachable!(#unreachable)
            }
            fn predict_step(&mut self, _batch: Self::PredictBatch, _ctx: &mut ::fulmen::StepContext<E, D>) -> Self::Prediction {
                ::core::unreachable!(#unreachable)
            }
            fn configure_optimizers(&self) -> ::fulmen::optim::Optimizers {
                ::core::unreachable!(#unreachable)
            }
        }
    }
}

/// The module's impls of the traits beside `LightningModule`: its batch-transfer hooks
/// (`batch_transfer.rs`) and its own loaders (`module_data.rs`; beside errors, `stub`, their
/// types alone).
fn side_traits(
    m: &ModuleImpl,
    self_ty: &syn::Type,
    transfers: &Written,
    loaders: &module_data::Written,
    stub: bool,
) -> TokenStream {
    let params = m.item.generics.params.iter();
    let generics = quote!(#(#params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>,);
    let where_clause = m.item.generics.where_clause.as_ref();
    let transfer = batch_transfer::expand(
        transfers,
        Owner::Module {
            generics: generics.clone(),
            self_ty,
            where_clause,
        },
    );
    let served = module_data::expand(loaders, generics, self_ty, where_clause, stub);
    quote!(#transfer #served)
}

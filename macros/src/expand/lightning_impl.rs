//! `#[lightning_module]` on the impl: the known methods (steps, `configure_optimizers`, hooks)
//! become the `fulmen::LightningModule` impl; every other method (`forward`, helpers) stays an
//! inherent method. Both see the dtype `E` and device `D`.

use proc_macro2::TokenStream;
use quote::{quote, ToTokens};

use crate::ast::ModuleImpl;
use crate::hooks::Receiver;

/// The impl of a model that checked.
pub(crate) fn expand(m: &ModuleImpl) -> TokenStream {
    let Some(self_ty) = &m.self_ty else {
        return TokenStream::new();
    };
    let mut trait_items = Vec::new();
    let mut inherent_items = m.others.clone();
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
        trait_items.push(f);
    }
    let has = |name: &str| m.known(name).is_some();
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
    let (batch, prediction, type_name) = associated(m);
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

/// The batch type (`training_step`'s), the prediction type (`predict_step`'s), and the
/// struct's name.
fn associated(m: &ModuleImpl) -> (TokenStream, TokenStream, String) {
    let batch = m.arg_type("training_step");
    let prediction = m.return_type("predict_step");
    (
        batch.map_or_else(|| quote!(()), |t| t.into_token_stream()),
        prediction.map_or_else(|| quote!(()), |t| t.into_token_stream()),
        m.type_name.clone(),
    )
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
    let items = m.item.items.iter().filter(|i| match i {
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
    let (batch, prediction, type_name) = associated(m);
    let unreachable =
        format!("`{type_name}` did not compile: its #[lightning_module] impl has errors");
    let generic_params: Vec<_> = m.item.generics.params.iter().collect();
    quote! {
        #[allow(dead_code)]
        impl<#(#params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>> #self_ty #where_clause {
            #(#items)*
        }

        impl<#(#generic_params,)* E: ::fulmen::FloatDtype, D: ::fulmen::TrainDevice<E>> ::fulmen::LightningModule<E, D> for #self_ty #where_clause {
            type Batch = #batch;
            type Prediction = #prediction;
            const NAME: &'static str = #type_name;

            fn training_step(&mut self, _batch: Self::Batch, _ctx: &mut ::fulmen::StepContext<E, D>) -> ::fulmen::Loss<E, D> {
                ::core::unreachable!(#unreachable)
            }
            fn predict_step(&mut self, _batch: Self::Batch, _ctx: &mut ::fulmen::StepContext<E, D>) -> Self::Prediction {
                ::core::unreachable!(#unreachable)
            }
            fn configure_optimizers(&self) -> ::fulmen::Optim {
                ::core::unreachable!(#unreachable)
            }
        }
    }
}

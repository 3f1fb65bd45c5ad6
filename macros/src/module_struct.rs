//! `#[lightning_module]` / `#[module]` on a struct: the struct made generic over dtype `E` and
//! device `D`, and the dfdx plumbing (`TensorCollection`, so build, reset, parameter counts,
//! device and dtype moves and safetensors all work), `Spec` (so it nests), hyperparameters.

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned, ToTokens};
use syn::spanned::Spanned;

use crate::ctxt::Ctxt;

#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `#[lightning_module]`: also a constructor from the hyperparameters.
    Lightning,
    /// `#[module]`: plumbing only.
    Plain,
}

impl Kind {
    fn attr(self) -> &'static str {
        match self {
            Kind::Lightning => "#[lightning_module]",
            Kind::Plain => "#[module]",
        }
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Role {
    Layer,
    HParam,
    Skip,
}

struct Field {
    name: syn::Ident,
    ty: syn::Type,
    role: Role,
    vis: syn::Visibility,
    attrs: Vec<syn::Attribute>,
}

/// Entry point of both attributes: dispatches on the item.
pub(crate) fn expand_item(attr: TokenStream, item: TokenStream, kind: Kind) -> TokenStream {
    let cx = Ctxt::default();
    if !attr.is_empty() {
        cx.error(&attr, format!("{} takes no arguments", kind.attr()));
    }
    let parsed: syn::Item = match syn::parse2(item.clone()) {
        Ok(item) => item,
        Err(e) => return e.to_compile_error(),
    };
    let mut fallback = item;
    let out = match &parsed {
        syn::Item::Struct(s) => {
            fallback = strip_field_attrs(s);
            expand_struct(&cx, s, kind)
        }
        syn::Item::Impl(i) if kind == Kind::Lightning => {
            fallback = crate::lightning_impl::fallback(i);
            crate::lightning_impl::expand(&cx, i)
        }
        syn::Item::Impl(i) => {
            cx.error(&i.self_ty, "#[module] goes on the struct only: a plain module has no steps or hooks (did you mean #[lightning_module]?)");
            TokenStream::new()
        }
        syn::Item::Enum(e) => {
            cx.error(e.enum_token, format!("{} goes on a struct (the model's layers) or on its impl (the steps and hooks), not on an enum", kind.attr()));
            TokenStream::new()
        }
        syn::Item::Union(u) => {
            cx.error(u.union_token, format!("{} goes on a struct (the model's layers) or on its impl (the steps and hooks), not on a union", kind.attr()));
            TokenStream::new()
        }
        other => {
            cx.error(
                other,
                format!("{} goes on a struct or on its impl", kind.attr()),
            );
            TokenStream::new()
        }
    };
    if cx.has_errors() {
        cx.into_output(fallback)
    } else {
        out
    }
}

/// Primitive and container types that cannot be layers: a field of one of these without
/// `#[hparam]` or `#[skip]` is a mistake we can name precisely.
fn plainly_not_a_layer(ty: &syn::Type) -> bool {
    const PLAIN: &[&str] = &[
        "f32", "f64", "bool", "char", "u8", "u16", "u32", "u64", "u128", "usize", "i8", "i16",
        "i32", "i64", "i128", "isize", "String", "PathBuf", "Vec", "Option", "HashMap", "BTreeMap",
        "Box", "Rc", "Arc",
    ];
    match ty {
        syn::Type::Path(p) => p
            .path
            .segments
            .last()
            .is_some_and(|s| PLAIN.contains(&s.ident.to_string().as_str())),
        syn::Type::Reference(_) | syn::Type::Slice(_) | syn::Type::Array(_) => true,
        _ => false,
    }
}

fn parse_fields(cx: &Ctxt, item: &syn::ItemStruct, kind: Kind) -> Vec<Field> {
    let named = match &item.fields {
        syn::Fields::Named(named) => named,
        syn::Fields::Unit => return Vec::new(),
        syn::Fields::Unnamed(f) => {
            cx.error(f, format!("{} needs named fields: their names are the tensor names in checkpoints (`layer_1.weight`)", kind.attr()));
            return Vec::new();
        }
    };
    let mut fields = Vec::new();
    for f in &named.named {
        let mut role = Role::Layer;
        let mut attrs = Vec::new();
        for a in &f.attrs {
            let new_role = if a.path().is_ident("hparam") {
                Role::HParam
            } else if a.path().is_ident("skip") {
                Role::Skip
            } else {
                attrs.push(a.clone());
                continue;
            };
            if !matches!(a.meta, syn::Meta::Path(_)) {
                cx.error(
                    a,
                    format!("`#[{}]` takes no arguments", a.path().to_token_stream()),
                );
            }
            if role != Role::Layer {
                cx.error(
                    a,
                    "a field is either #[hparam] (saved) or #[skip] (not saved), not both",
                );
            }
            role = new_role;
        }
        let name = f.ident.clone().unwrap_or_else(|| format_ident!("_"));
        if role == Role::Layer && plainly_not_a_layer(&f.ty) {
            cx.error(
                &f.ty,
                format!(
                    "field `{name}` is neither a layer nor marked: add #[hparam] to save it as a hyperparameter, or #[skip] to keep it out of the module's state"
                ),
            );
        }
        fields.push(Field {
            name,
            ty: f.ty.clone(),
            role,
            vis: f.vis.clone(),
            attrs,
        });
    }
    fields
}

/// Splits `items` into nested tuples of at most six, the arity dfdx implements `ModuleFields`
/// for; returns the tuple expression and the matching pattern.
fn nest(items: Vec<(TokenStream, TokenStream)>) -> (TokenStream, TokenStream) {
    if items.len() <= 6 {
        let (exprs, pats): (Vec<_>, Vec<_>) = items.into_iter().unzip();
        return (quote!((#(#exprs,)*)), quote!((#(#pats,)*)));
    }
    let per = items.len().div_ceil(6);
    let mut groups = Vec::new();
    let mut iter = items.into_iter().peekable();
    while iter.peek().is_some() {
        groups.push(nest(iter.by_ref().take(per).collect()));
    }
    nest(groups)
}

fn expand_struct(cx: &Ctxt, item: &syn::ItemStruct, kind: Kind) -> TokenStream {
    let fields = parse_fields(cx, item, kind);
    for param in &item.generics.params {
        match param {
            syn::GenericParam::Lifetime(l) => cx.error(
                l,
                format!(
                    "{} structs own their tensors and cannot borrow: remove the lifetime",
                    kind.attr()
                ),
            ),
            syn::GenericParam::Type(t) if t.ident == "E" || t.ident == "D" => cx.error(
                t,
                format!(
                    "{} adds the dtype `E` and device `D` parameters itself: remove `{}`",
                    kind.attr(),
                    t.ident
                ),
            ),
            _ => {}
        }
    }
    if cx.has_errors() {
        return TokenStream::new();
    }

    let fulmen = quote!(::fulmen);
    let dfdx = quote!(::fulmen::dfdx);
    let name = &item.ident;
    let vis = &item.vis;
    let attrs = &item.attrs;
    let (user_impl, user_ty, user_where) = item.generics.split_for_impl();
    let user_params: Vec<_> = item.generics.params.iter().collect();
    let impl_params: Vec<syn::GenericParam> =
        user_params.iter().map(|p| strip_default(p)).collect();
    let user_args: Vec<TokenStream> = item
        .generics
        .params
        .iter()
        .map(|p| match p {
            syn::GenericParam::Type(t) => t.ident.to_token_stream(),
            syn::GenericParam::Const(c) => c.ident.to_token_stream(),
            syn::GenericParam::Lifetime(l) => l.lifetime.to_token_stream(),
        })
        .collect();
    let where_clause = &item.generics.where_clause;

    let struct_fields = fields.iter().map(|f| {
        let (fname, fvis, fattrs, ty) = (&f.name, &f.vis, &f.attrs, &f.ty);
        match f.role {
            Role::Layer => quote_spanned!(ty.span()=> #(#fattrs)* #fvis #fname: <#ty as #fulmen::Spec>::Module<E, D>),
            _ => quote!(#(#fattrs)* #fvis #fname: #ty),
        }
    });

    let layers: Vec<&Field> = fields.iter().filter(|f| f.role == Role::Layer).collect();
    let others: Vec<&Field> = fields.iter().filter(|f| f.role != Role::Layer).collect();
    let hparams: Vec<&Field> = fields.iter().filter(|f| f.role == Role::HParam).collect();

    let visits: Vec<(TokenStream, TokenStream)> = layers
        .iter()
        .map(|f| {
            let fname = &f.name;
            let label = fname.to_string();
            (
                quote!(Self::module(#label, |s| &s.#fname, |s| &mut s.#fname)),
                quote!(#fname),
            )
        })
        .collect();
    let (visit_tuple, visit_pattern) = nest(visits);
    let layer_names = layers.iter().map(|f| &f.name);
    let layer_types = layers.iter().map(|f| {
        let (label, ty) = (f.name.to_string(), type_text(&f.ty));
        quote!((#label, #ty))
    });
    let other_names = others.iter().map(|f| &f.name);

    let hparam_inserts = hparams.iter().map(|f| {
        let (fname, ty) = (&f.name, &f.ty);
        let label = fname.to_string();
        quote_spanned!(ty.span()=> hparams.insert(#label, &self.#fname);)
    });
    let hparam_carries = hparams.iter().map(|f| {
        let (fname, ty) = (&f.name, &f.ty);
        quote_spanned!(ty.span()=> to.#fname = ::core::clone::Clone::clone(&self.#fname);)
    });

    let doc = format!(
        " Generated by {}: `{name}` on dtype `E` and device `D` (f32 on CPU unless named).",
        kind.attr()
    );
    let mut out = quote! {
        #(#attrs)*
        #[doc = #doc]
        #vis struct #name<#(#user_params,)* E: #dfdx::shapes::Dtype = f32, D: #dfdx::tensor_ops::Device<E> = #dfdx::tensor::Cpu> #where_clause {
            #(#struct_fields,)*
        }

        impl #user_impl #fulmen::Spec for #name #user_ty #user_where {
            type Module<E2: #dfdx::shapes::Dtype, D2: #dfdx::tensor_ops::Device<E2>> = #name<#(#user_args,)* E2, D2>;
        }

        impl<#(#impl_params,)* E: #fulmen::FloatDtype, D: #dfdx::tensor_ops::Device<E>> #dfdx::nn::TensorCollection<E, D> for #name<#(#user_args,)* E, D> #where_clause {
            type To<E2: #dfdx::shapes::Dtype, D2: #dfdx::tensor_ops::Device<E2>> = #name<#(#user_args,)* E2, D2>;

            fn iter_tensors<V: #dfdx::nn::ModuleVisitor<Self, E, D>>(
                visitor: &mut V,
            ) -> ::core::result::Result<::core::option::Option<Self::To<V::E2, V::D2>>, V::Err> {
                visitor.visit_fields(
                    #visit_tuple,
                    // dfdx rebuilds the struct from its tensors; the other fields start from
                    // Default and `CarryHParams` copies the hyperparameters over.
                    |#visit_pattern| #name {
                        #(#layer_names,)*
                        #(#other_names: ::core::default::Default::default(),)*
                    },
                )
            }
        }

        impl<#(#impl_params,)* E: #dfdx::shapes::Dtype, D: #dfdx::tensor_ops::Device<E>> #fulmen::spec::Layers for #name<#(#user_args,)* E, D> #where_clause {
            const LAYERS: &'static [(&'static str, &'static str)] = &[#(#layer_types),*];
        }

        impl<#(#impl_params,)* E: #dfdx::shapes::Dtype, D: #dfdx::tensor_ops::Device<E>> #fulmen::Hyperparameters for #name<#(#user_args,)* E, D> #where_clause {
            fn hparams(&self) -> #fulmen::HParams {
                #[allow(unused_mut)]
                let mut hparams = #fulmen::HParams::new();
                #(#hparam_inserts)*
                hparams
            }
        }

        impl<#(#impl_params,)* E: #fulmen::FloatDtype, D: #dfdx::tensor_ops::Device<E>> #fulmen::hparams::CarryHParams<E, D> for #name<#(#user_args,)* E, D> #where_clause {
            #[allow(unused_variables)]
            fn carry_hparams<E2: #dfdx::shapes::Dtype, D2: #dfdx::tensor_ops::Device<E2>>(&self, to: &mut Self::To<E2, D2>) {
                #(#hparam_carries)*
            }
        }
    };

    if kind == Kind::Lightning {
        let params = hparams.iter().map(|f| {
            let (fname, ty) = (&f.name, &f.ty);
            quote!(#fname: #ty)
        });
        let assigns = hparams.iter().map(|f| {
            let fname = &f.name;
            quote!(module.#fname = #fname;)
        });
        let reads = hparams.iter().map(|f| {
            let (ty, label) = (&f.ty, f.name.to_string());
            quote_spanned!(ty.span()=> hparams.get::<#ty>(#label)?)
        });
        let ctor_doc = format!(
            " Builds `{name}` on the CPU in f32 from its hyperparameters, its weights drawn from fulmen's seeded stream (`seed_everything`)."
        );
        let load_doc = format!(
            " Rebuilds `{name}` from a checkpoint: `new` with the saved hyperparameters, then the saved weights. A checkpoint of another model is refused, naming the tensor or hyperparameter that does not fit."
        );
        out.extend(quote! {
            impl<#(#impl_params,)*> #name<#(#user_args,)* f32, #dfdx::tensor::Cpu> #where_clause {
                #[doc = #ctor_doc]
                #[allow(clippy::new_without_default, clippy::too_many_arguments)]
                pub fn new(#(#params),*) -> Self {
                    let device = #fulmen::seed::cpu();
                    #[allow(unused_mut)]
                    let mut module: Self = #dfdx::nn::BuildModule::build(&device);
                    #(#assigns)*
                    module
                }

                #[doc = #load_doc]
                pub fn load_from_checkpoint(path: impl ::core::convert::AsRef<::std::path::Path>) -> #fulmen::Result<Self> {
                    #fulmen::checkpoint::Checkpoint::read(path)?.rebuild(|hparams| {
                        ::core::result::Result::Ok(Self::new(#(#reads),*))
                    })
                }
            }
        });
    }
    out
}

/// A type as a user writes it: `Linear<4, 16>`, not the token stream's `Linear < 4 , 16 >`.
fn type_text(ty: &syn::Type) -> String {
    let mut text = ty.to_token_stream().to_string();
    for (from, to) in [
        (" <", "<"),
        ("< ", "<"),
        (" >", ">"),
        (" ,", ","),
        ("( ", "("),
        (" )", ")"),
        (" :: ", "::"),
    ] {
        text = text.replace(from, to);
    }
    text
}

/// The struct without the `#[hparam]` / `#[skip]` markers, which mean nothing to rustc.
pub(crate) fn strip_field_attrs(item: &syn::ItemStruct) -> TokenStream {
    let mut item = item.clone();
    for f in item.fields.iter_mut() {
        f.attrs
            .retain(|a| !a.path().is_ident("hparam") && !a.path().is_ident("skip"));
    }
    item.into_token_stream()
}

fn strip_default(p: &syn::GenericParam) -> syn::GenericParam {
    let mut p = p.clone();
    match &mut p {
        syn::GenericParam::Type(t) => {
            t.eq_token = None;
            t.default = None;
        }
        syn::GenericParam::Const(c) => {
            c.eq_token = None;
            c.default = None;
        }
        syn::GenericParam::Lifetime(_) => {}
    }
    p
}

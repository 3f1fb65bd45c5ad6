//! The checks of the typed models: every mistake recorded in the [`Ctxt`] with the span of
//! the user's token, one message per mistake. Where a mistake leaves an item that code can
//! still be generated for, the check says so (and recovers what it can, such as a plain
//! value marked as nothing, kept out of the module's state), so that the rest of the user's
//! crate compiles against it and reports nothing more.

use std::collections::HashSet;

use quote::ToTokens;

use crate::ast::{DataImpl, DataStruct, Kind, ModuleImpl, ModuleStruct, Role};
use crate::ctxt::Ctxt;
use crate::hooks::{self, Receiver};
use crate::names;

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

/// Checks a module struct; returns whether the module's code can still be generated for it.
pub(crate) fn module_struct(cx: &Ctxt, s: &mut ModuleStruct) -> bool {
    let attr = s.kind.attr();
    let mut generatable = true;
    if let syn::Fields::Unnamed(f) = &s.item.fields {
        cx.error(f, format!("{attr} needs named fields: their names are the tensor names in checkpoints (`layer_1.weight`)"));
        generatable = false;
    }
    for param in &s.item.generics.params {
        match param {
            syn::GenericParam::Lifetime(l) => {
                cx.error(
                    l,
                    format!(
                        "{attr} structs own their tensors and cannot borrow: remove the lifetime"
                    ),
                );
                generatable = false;
            }
            syn::GenericParam::Type(t) if t.ident == "E" || t.ident == "D" => {
                cx.error(
                    t,
                    format!(
                        "{attr} adds the dtype `E` and device `D` parameters itself: remove `{}`",
                        t.ident
                    ),
                );
                generatable = false;
            }
            _ => {}
        }
    }
    let kind = s.kind;
    for f in &mut s.fields {
        for m in &f.markers {
            let name = m.attr.path().to_token_stream();
            match (&m.attr.meta, m.role) {
                (syn::Meta::Path(_), _) => {}
                (syn::Meta::List(list), Role::Metric) => {
                    if let Err(e) = syn::parse2::<syn::Expr>(list.tokens.clone()) {
                        cx.error(&list.tokens, format!("`#[metric(..)]` takes the expression that makes the metric, as `#[metric(F1Score::multiclass(3))]`: {e}"));
                    }
                }
                _ if m.role == Role::Metric => cx.error(&m.attr, "write `#[metric]` (the metric's Default) or `#[metric(F1Score::multiclass(3))]`"),
                _ => cx.error(&m.attr, format!("`#[{name}]` takes no arguments")),
            }
            if m.role == Role::Metric && kind == Kind::Plain {
                cx.error(&m.attr, "a metric is a field of the #[lightning_module] struct, whose steps update and log it; a #[module] holds layers");
            }
        }
        if let Some(second) = f.markers.get(1) {
            cx.error(
                &second.attr,
                "a field is one of #[hparam] (saved), #[skip] (not saved) or #[metric], not several",
            );
        }
        if let (Role::Layer, syn::Type::Tuple(t)) = (f.role, &f.ty) {
            if t.elems.len() > 6 {
                let (name, n) = (&f.name, t.elems.len());
                cx.error(&f.ty, format!("field `{name}` is a tuple of {n} layers, but a tuple holds at most 6 (dfdx implements layers' traits for tuples up to 6): write `seq![...]` (fulmen::seq!: any number of layers in sequence) or nest tuples"));
                // The same layers nested, so that nothing else fails on this field.
                f.ty = nested(t);
            }
        }
        if f.role == Role::Layer && plainly_not_a_layer(&f.ty) {
            let name = &f.name;
            cx.error(&f.ty, format!("field `{name}` is neither a layer nor marked: add #[hparam] to save it as a hyperparameter, #[metric] for a metric, or #[skip] to keep it out of the module's state"));
            f.role = Role::Skip;
        }
    }
    generatable
}

/// A tuple of more than six types as tuples of at most six: the first five, then the rest.
fn nested(t: &syn::TypeTuple) -> syn::Type {
    let elems: Vec<&syn::Type> = t.elems.iter().collect();
    if elems.len() <= 6 {
        return syn::Type::Tuple(t.clone());
    }
    let mut rest = t.clone();
    rest.elems = elems[5..].iter().map(|e| (*e).clone()).collect();
    let tail = nested(&rest);
    let head = elems[..5].iter().copied();
    syn::parse_quote!((#(#head,)* #tail))
}

/// Checks a module's impl: known methods by name, shape and presence. A method whose
/// signature is wrong is no longer taken for the known one.
pub(crate) fn module_impl(cx: &Ctxt, m: &mut ModuleImpl) {
    if let Some((_, path, _)) = &m.item.trait_ {
        cx.error(path, "#[lightning_module] goes on the module's own impl (`impl MyModel { ... }`), not on a trait impl");
        return;
    }
    if m.self_ty.is_none() {
        cx.error(
            &m.item.self_ty,
            "#[lightning_module] expects the struct's name here (`impl MyModel`)",
        );
        return;
    }
    let mut seen: HashSet<String> = HashSet::new();
    let mut near_misses: Vec<&'static str> = Vec::new();
    for method in &mut m.methods {
        let name = method.f.sig.ident.to_string();
        let Some(known) = method.known else {
            let known_names = hooks::KNOWN.iter().map(|k| k.name);
            if hooks::CALLBACK_ONLY.contains(&name.as_str()) {
                cx.error(&method.f.sig.ident, format!("`{name}` is a callback's hook, not a module's (as in Lightning): implement it on a `Callback` and return that from `configure_callbacks`{}", if name == "on_exception" { ", or on the #[data_module]" } else { "" }));
            } else if let Some(close) = names::closest(&name, known_names) {
                cx.error(
                    &method.f.sig.ident,
                    format!("`{name}` is not a LightningModule method; did you mean `{close}`?"),
                );
                near_misses.push(close);
            } else if name.starts_with("on_") {
                cx.error(&method.f.sig.ident, format!("unknown hook `{name}`: fulmen's hooks are listed in `fulmen::Callback` (Lightning would silently never call it)"));
            }
            continue;
        };
        if !seen.insert(name.clone()) {
            cx.error(&method.f.sig.ident, format!("`{name}` is defined twice"));
            method.known = None;
            continue;
        }
        if let Err((tokens, why)) = signature(&method.f.sig, known) {
            let shape = format!("`{name}` must have the signature `{}`", known.signature());
            cx.error(tokens, format!("{shape}{why}"));
            method.known = None;
        }
    }
    if let (false, Some(ty)) = (m.manual, m.context_type("training_step")) {
        if names_manual(ty) {
            cx.error(ty, "`StepContext<E, D, Manual>` is the context of manual optimization: write `#[lightning_module(manual_optimization)]` on the impl");
        }
    }
    if let (Some(val), Some(test)) = (m.arg_type("validation_step"), m.arg_type("test_step")) {
        let text = |t: &syn::Type| {
            let text = quote::ToTokens::to_token_stream(t).to_string();
            text.replace(" <", "<")
                .replace("< ", "<")
                .replace(" >", ">")
        };
        if text(&val) != text(&test) {
            cx.error(&test, format!("`test_step` takes `{}` but `validation_step` takes `{}`: the evaluation loaders (the data module's `EvalSample`) give both one batch type", text(&test), text(&val)));
        }
    }
    for hook in ["on_before_batch_transfer", "transfer_batch_to_device"] {
        host_batch(cx, hook, m.arg_type(hook).as_ref());
    }
    for method in &mut m.methods {
        let name = method.f.sig.ident.to_string();
        if method.known.is_none() || !name.ends_with("_dataloader") {
            continue;
        }
        let why = match &method.f.sig.output {
            syn::ReturnType::Type(_, ret) => match crate::ast::loader_sample(ret) {
                Some(sample) if names_dtype_or_device(&sample) => Some((sample.to_token_stream(), format!("`{name}`'s samples are the host's, collated before the batch moves: they cannot name the run's dtype or device (`E`, `D`)"))),
                Some(_) => None,
                None => Some((ret.to_token_stream(), format!("`{name}` must return `DataLoader<Sample>` (or `Result<...>` / `Option<...>` of it)"))),
            },
            syn::ReturnType::Default => Some((method.f.sig.to_token_stream(), format!("`{name}` must return the loader: `-> DataLoader<Sample>` (or `Result<...>` / `Option<...>` of it)"))),
        };
        if let Some((tokens, why)) = why {
            cx.error(tokens, why);
            method.known = None;
        }
    }
    if let Some(ty) = m.return_type("predict_step").filter(names_dtype_or_device) {
        cx.error(&ty, "`predict_step` returns a type that names the run's dtype or device (`E`, `D`): `Trainer::predict` runs in any precision on any device and hands the predictions back, so return host values (`Vec<f32>`, `Vec<usize>`, `probabilities.as_vec()`)");
    }
    for required in hooks::REQUIRED {
        if !seen.contains(required) && !near_misses.contains(&required) {
            let example = hooks::find(required)
                .map(|k| k.signature())
                .unwrap_or_default();
            let type_name = &m.type_name;
            cx.error(
                &m.item.self_ty,
                format!(
                    "`{type_name}` has no `{required}`: a #[lightning_module] needs `{example}`"
                ),
            );
        }
    }
}

/// `hook`'s batch, `ty`, is the one collated on the host: it cannot name `E` or `D`.
fn host_batch(cx: &Ctxt, hook: &str, ty: Option<&syn::Type>) {
    if let Some(ty) = ty.filter(|t| names_dtype_or_device(t)) {
        cx.error(ty, format!("`{hook}` takes the batch collated on the host, in f32 on the CPU (`ClassBatch<4, 3, f32, Cpu>`, say): it cannot name the run's dtype or device (`E`, `D`), which the batch has after `transfer_batch_to_device`"));
    }
}

/// Whether `ty` names the impl's dtype or device parameter anywhere: `E` or `D` as a path of
/// one segment (not `my_crate::D`, not `D::Item`).
pub(crate) fn names_dtype_or_device(ty: &syn::Type) -> bool {
    names_any(ty, &["E", "D"])
}

/// Whether `ty` names one of `params` anywhere, as a path of one segment.
fn names_any(ty: &syn::Type, params: &[&str]) -> bool {
    fn any(tokens: proc_macro2::TokenStream, params: &[&str]) -> bool {
        let tokens: Vec<proc_macro2::TokenTree> = tokens.into_iter().collect();
        let colon = |t: Option<&proc_macro2::TokenTree>| matches!(t, Some(proc_macro2::TokenTree::Punct(p)) if p.as_char() == ':');
        tokens.iter().enumerate().any(|(i, t)| match t {
            proc_macro2::TokenTree::Ident(id) => {
                params.iter().any(|p| id == p)
                    && !colon(i.checked_sub(1).and_then(|j| tokens.get(j)))
                    && !colon(tokens.get(i + 1))
            }
            proc_macro2::TokenTree::Group(g) => any(g.stream(), params),
            _ => false,
        })
    }
    any(quote::ToTokens::to_token_stream(ty), params)
}

/// A data module's device hook, `name`, generic over the run's dtype and device: the batch it
/// takes or returns on the device, `ty`, must name the dtype `E`, which only the batch fixes.
fn device_batch_names_dtype(cx: &Ctxt, name: &str, ty: Option<&syn::Type>) -> bool {
    let Some(ty) = ty.filter(|t| !names_any(t, &["E"])) else {
        return true;
    };
    cx.error(ty, format!("`{name}`'s batch on the device must name the run's dtype `E` (`ClassBatch<4, 3, E, D>`, say): a data module's device hooks are generic over it, and only the batch type fixes it; a batch without values of that dtype moves in the module's hook, where `E` is the module's"));
    false
}

/// Whether `ty` is a context whose last type argument is `Manual`.
fn names_manual(ty: &syn::Type) -> bool {
    let syn::Type::Reference(r) = ty else {
        return false;
    };
    let syn::Type::Path(p) = &*r.elem else {
        return false;
    };
    let Some(syn::PathArguments::AngleBracketed(a)) = p.path.segments.last().map(|s| &s.arguments)
    else {
        return false;
    };
    matches!(a.args.last(), Some(syn::GenericArgument::Type(syn::Type::Path(t)))
        if t.path.segments.last().is_some_and(|s| s.ident == "Manual"))
}

/// Whether `sig` has the shape of `known`; if not, the tokens to point at and what is wrong.
fn signature(
    sig: &syn::Signature,
    known: &hooks::Known,
) -> Result<(), (proc_macro2::TokenStream, &'static str)> {
    if !sig.generics.params.is_empty() {
        let why = ": it takes no generic parameters (`E` and `D` are in scope)";
        return Err((sig.generics.to_token_stream(), why));
    }
    match sig.inputs.first() {
        Some(syn::FnArg::Receiver(r)) if r.reference.is_none() => {
            return Err((r.to_token_stream(), ": it takes `self` by reference"))
        }
        Some(syn::FnArg::Receiver(r))
            if known.receiver == Receiver::Ref && r.mutability.is_some() =>
        {
            return Err((r.to_token_stream(), ": it only reads the module"))
        }
        Some(syn::FnArg::Receiver(_)) => {}
        _ => return Err((sig.to_token_stream(), ": it takes `self` by reference")),
    }
    if sig.inputs.len() - 1 != known.params.len() {
        return Err((sig.to_token_stream(), ""));
    }
    Ok(())
}

/// Checks a data module's struct: every field is a hyperparameter unless `#[skip]`.
pub(crate) fn data_struct(cx: &Ctxt, s: &DataStruct) {
    if !matches!(s.item.fields, syn::Fields::Named(_) | syn::Fields::Unit) {
        cx.error(
            &s.item.fields,
            "#[data_module] needs named fields: their names are the hyperparameter names",
        );
    }
    for f in &s.fields {
        for a in &f.hparams {
            let why = match f.skip {
                true => "a #[skip] field is not a hyperparameter: remove #[hparam]",
                false => "in a #[data_module] every field is a hyperparameter unless marked #[skip]: remove #[hparam]",
            };
            cx.error(a, why);
        }
    }
}

/// Checks a data module's impl: known methods by name and shape, and a loader to take the
/// sample type from. A method whose signature is wrong is no longer taken for the known one.
pub(crate) fn data_impl(cx: &Ctxt, d: &mut DataImpl) {
    if let Some((_, path, _)) = &d.item.trait_ {
        cx.error(path, "#[data_module] goes on the data module's own impl (`impl MyData { ... }`), not on a trait impl");
        return;
    }
    let mut seen = Vec::new();
    for method in &mut d.methods {
        let name = method.f.sig.ident.to_string();
        let Some((known, params)) = method.known else {
            let known_names = crate::ast::DATA_METHODS.iter().map(|(m, _)| *m);
            if let Some(close) = names::closest(&name, known_names) {
                cx.error(
                    &method.f.sig.ident,
                    format!("`{name}` is not a DataModule method; did you mean `{close}`?"),
                );
            }
            continue;
        };
        if seen.contains(&known) {
            cx.error(&method.f.sig.ident, format!("`{name}` is defined twice"));
            method.known = None;
            continue;
        }
        seen.push(known);
        let sig = &method.f.sig;
        let takes_self =
            matches!(sig.inputs.first(), Some(syn::FnArg::Receiver(r)) if r.reference.is_some());
        let arity = match params {
            "" => 0,
            params => params.split(", ").count(),
        };
        if !takes_self || sig.inputs.len() - 1 != arity {
            let receiver = if known == "state_dict" {
                "&self"
            } else {
                "&mut self"
            };
            let expected = match params {
                "" => format!("({receiver})"),
                params => format!("({receiver}, {params})"),
            };
            cx.error(sig, format!("`{name}` must take `{expected}`"));
            method.known = None;
            continue;
        }
        if hooks::TRANSFER.contains(&known) {
            if !sig.generics.params.is_empty() {
                cx.error(&sig.generics, format!("`{name}` takes no generic parameters: the run's dtype and device, `E` and `D`, are in scope"));
                method.known = None;
                continue;
            }
            let batch = match sig.inputs.iter().nth(1) {
                Some(syn::FnArg::Typed(t)) => Some(&*t.ty),
                _ => None,
            };
            let on_device = match (known, &sig.output) {
                ("on_after_batch_transfer", _) => batch,
                ("transfer_batch_to_device", syn::ReturnType::Type(_, ret)) => Some(&**ret),
                _ => None,
            };
            if known != "on_after_batch_transfer" {
                host_batch(cx, known, batch);
            }
            if !device_batch_names_dtype(cx, known, on_device) {
                method.known = None;
                continue;
            }
        }
        if known.ends_with("_dataloader") {
            let loader = match &sig.output {
                syn::ReturnType::Type(_, ret) => crate::ast::loader_sample(ret).ok_or(&**ret),
                syn::ReturnType::Default => {
                    cx.error(sig, format!("`{name}` must return the loader: `-> DataLoader<Sample>` (or `Result<...>` / `Option<...>` of it)"));
                    method.known = None;
                    continue;
                }
            };
            if let Err(ret) = loader {
                cx.error(ret, format!("`{name}` must return `DataLoader<Sample>` (or `Result<...>` / `Option<...>` of it)"));
                method.known = None;
            }
        }
    }
    if d.sample().is_none() && !cx.has_errors() {
        cx.error(&d.item.self_ty, "a #[data_module] needs at least one loader: `fn train_dataloader(&self) -> DataLoader<Sample>`");
    }
}

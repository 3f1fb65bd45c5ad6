//! The typed models of the items the attributes go on, parsed from syn's AST: a module struct
//! and its fields ([`ModuleStruct`]), a module's impl and its methods ([`ModuleImpl`]), a data
//! module's struct and impl ([`DataStruct`], [`DataImpl`]). Parsing keeps everything the
//! user wrote, mistakes included; [`crate::check`] judges it, [`crate::expand`] generates
//! from it.

use quote::format_ident;

use crate::hooks::{self, Known};

/// Which attribute is on the struct.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind {
    /// `#[lightning_module]`: also a constructor from the hyperparameters.
    Lightning,
    /// `#[module]`: plumbing only.
    Plain,
}

impl Kind {
    pub(crate) fn attr(self) -> &'static str {
        match self {
            Kind::Lightning => "#[lightning_module]",
            Kind::Plain => "#[module]",
        }
    }
}

/// What a module struct's field is.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum Role {
    /// A layer: its tensors are the module's.
    Layer,
    /// `#[hparam]`: a hyperparameter, saved.
    HParam,
    /// `#[skip]`: kept out of the module's state.
    Skip,
    /// `#[metric]` or `#[metric(init)]`: a metric (`fulmen::metrics`), its state saved and
    /// its value logged by the trainer.
    Metric,
}

/// A `#[hparam]`, `#[skip]` or `#[metric]` on a field.
pub(crate) struct Marker {
    pub attr: syn::Attribute,
    pub role: Role,
}

/// A named field of a module struct.
pub(crate) struct Field {
    pub name: syn::Ident,
    pub ty: syn::Type,
    pub vis: syn::Visibility,
    /// The user's attributes other than the markers.
    pub attrs: Vec<syn::Attribute>,
    pub markers: Vec<Marker>,
    /// What generation takes it for: its first marker's role, or a layer; [`crate::check`]
    /// makes a plain value without a marker a [`Role::Skip`], so that one mistake is one
    /// message.
    pub role: Role,
}

/// A struct under `#[lightning_module]` or `#[module]`.
pub(crate) struct ModuleStruct {
    pub item: syn::ItemStruct,
    pub kind: Kind,
    pub fields: Vec<Field>,
}

impl ModuleStruct {
    pub(crate) fn parse(item: syn::ItemStruct, kind: Kind) -> Self {
        let fields = match &item.fields {
            syn::Fields::Named(named) => named.named.iter().map(Field::parse).collect(),
            _ => Vec::new(),
        };
        ModuleStruct { item, kind, fields }
    }

    /// The struct without the markers, which mean nothing to rustc: what is emitted beside
    /// the errors when nothing can be generated.
    pub(crate) fn stripped(&self) -> syn::ItemStruct {
        let mut item = self.item.clone();
        for f in item.fields.iter_mut() {
            f.attrs.retain(|a| marker_role(a).is_none());
        }
        item
    }
}

/// The role a marker attribute gives, if `a` is one.
fn marker_role(a: &syn::Attribute) -> Option<Role> {
    if a.path().is_ident("hparam") {
        Some(Role::HParam)
    } else if a.path().is_ident("skip") {
        Some(Role::Skip)
    } else if a.path().is_ident("metric") {
        Some(Role::Metric)
    } else {
        None
    }
}

impl Field {
    fn parse(f: &syn::Field) -> Self {
        let (mut markers, mut attrs) = (Vec::new(), Vec::new());
        for a in &f.attrs {
            match marker_role(a) {
                Some(role) => markers.push(Marker {
                    attr: a.clone(),
                    role,
                }),
                None => attrs.push(a.clone()),
            }
        }
        Field {
            name: f.ident.clone().unwrap_or_else(|| format_ident!("_")),
            ty: f.ty.clone(),
            vis: f.vis.clone(),
            attrs,
            role: markers.first().map_or(Role::Layer, |m| m.role),
            markers,
        }
    }
}

/// A method of a module's impl: one `fulmen::LightningModule` knows, or the user's own.
pub(crate) struct Method {
    pub f: syn::ImplItemFn,
    pub known: Option<&'static Known>,
}

/// The impl under `#[lightning_module]`.
pub(crate) struct ModuleImpl {
    pub item: syn::ItemImpl,
    /// The struct's name, for messages.
    pub type_name: String,
    /// The struct with the dtype and device: `Net<E, D>`; `None` if the impl is not of a
    /// plain type path.
    pub self_ty: Option<syn::Type>,
    pub methods: Vec<Method>,
    /// Everything else of the impl (constants, types), kept as written.
    pub others: Vec<syn::ImplItem>,
    /// `#[lightning_module(manual_optimization)]`: `training_step` steps the optimizers.
    pub manual: bool,
}

impl ModuleImpl {
    pub(crate) fn parse(item: syn::ItemImpl) -> Self {
        let type_name = match &*item.self_ty {
            syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        };
        let (mut methods, mut others) = (Vec::new(), Vec::new());
        for it in &item.items {
            match it {
                syn::ImplItem::Fn(f) => methods.push(Method {
                    known: hooks::find(&f.sig.ident.to_string()),
                    f: f.clone(),
                }),
                other => others.push(other.clone()),
            }
        }
        ModuleImpl {
            type_name: type_name.unwrap_or_default(),
            self_ty: with_dtype_device(&item.self_ty),
            item,
            methods,
            others,
            manual: false,
        }
    }

    /// The method named `name` that `LightningModule` knows, if the impl has one.
    pub(crate) fn known(&self, name: &str) -> Option<&syn::ImplItemFn> {
        (self.methods.iter())
            .find(|m| m.known.is_some() && m.f.sig.ident == name)
            .map(|m| &m.f)
    }

    /// The type of `name`'s first parameter after `self` (`training_step`'s batch).
    pub(crate) fn arg_type(&self, name: &str) -> Option<syn::Type> {
        match self.known(name)?.sig.inputs.iter().nth(1)? {
            syn::FnArg::Typed(t) => Some((*t.ty).clone()),
            syn::FnArg::Receiver(_) => None,
        }
    }

    /// The type of `name`'s second parameter after `self` (a step's context).
    pub(crate) fn context_type(&self, name: &str) -> Option<&syn::Type> {
        match self.known(name)?.sig.inputs.iter().nth(2)? {
            syn::FnArg::Typed(t) => Some(&*t.ty),
            syn::FnArg::Receiver(_) => None,
        }
    }

    /// The type `name` returns (`predict_step`'s prediction).
    pub(crate) fn return_type(&self, name: &str) -> Option<syn::Type> {
        match &self.known(name)?.sig.output {
            syn::ReturnType::Type(_, ty) => Some((**ty).clone()),
            syn::ReturnType::Default => None,
        }
    }
}

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

/// A field of a data module: a hyperparameter unless `#[skip]`.
pub(crate) struct DataField {
    pub name: Option<syn::Ident>,
    pub ty: syn::Type,
    pub skip: bool,
    /// `#[hparam]`s, which a data module does not take.
    pub hparams: Vec<syn::Attribute>,
}

/// The struct under `#[data_module]`.
pub(crate) struct DataStruct {
    pub item: syn::ItemStruct,
    pub fields: Vec<DataField>,
    /// Whether `new` and `FromHParams` are generated (not under `#[data_module(no_new)]`).
    pub generate_new: bool,
}

impl DataStruct {
    pub(crate) fn parse(item: syn::ItemStruct) -> Self {
        let fields = match &item.fields {
            syn::Fields::Named(named) => (named.named.iter())
                .map(|f| DataField {
                    name: f.ident.clone(),
                    ty: f.ty.clone(),
                    skip: f.attrs.iter().any(|a| marker_role(a) == Some(Role::Skip)),
                    hparams: (f.attrs.iter())
                        .filter(|a| marker_role(a) == Some(Role::HParam))
                        .cloned()
                        .collect(),
                })
                .collect(),
            _ => Vec::new(),
        };
        DataStruct {
            item,
            fields,
            generate_new: true,
        }
    }

    /// The struct without `#[skip]` and `#[hparam]`, which mean nothing to rustc.
    pub(crate) fn stripped(&self) -> syn::ItemStruct {
        ModuleStruct::parse(self.item.clone(), Kind::Plain).stripped()
    }
}

/// Each method `#[data_module]` knows, with the parameters it takes after `self`.
pub(crate) const DATA_METHODS: &[(&str, &str)] = &[
    ("prepare_data", ""),
    ("setup", "stage: Stage"),
    ("teardown", "stage: Stage"),
    ("train_dataloader", ""),
    ("val_dataloader", ""),
    ("test_dataloader", ""),
    ("predict_dataloader", ""),
    ("state_dict", ""),
    ("load_state_dict", "state: &serde_json::Value"),
    ("on_exception", "error: &fulmen::Error"),
    (
        "on_before_batch_transfer",
        "batch: <the module's batch type in f32 on the CPU>, dataloader_idx: usize",
    ),
    (
        "transfer_batch_to_device",
        "batch: <the module's batch type in f32 on the CPU>, device: &D, dataloader_idx: usize",
    ),
    (
        "on_after_batch_transfer",
        "batch: <the module's batch type in E on D>, dataloader_idx: usize",
    ),
];

/// A method of a data module's impl, and what `DataModule` knows of its name.
pub(crate) struct DataMethod {
    pub f: syn::ImplItemFn,
    pub known: Option<(&'static str, &'static str)>,
}

/// The impl under `#[data_module]`.
pub(crate) struct DataImpl {
    pub item: syn::ItemImpl,
    pub methods: Vec<DataMethod>,
}

impl DataImpl {
    pub(crate) fn parse(item: syn::ItemImpl) -> Self {
        let methods = (item.items.iter())
            .filter_map(|it| match it {
                syn::ImplItem::Fn(f) => Some(DataMethod {
                    known: DATA_METHODS.iter().find(|(m, _)| f.sig.ident == m).copied(),
                    f: f.clone(),
                }),
                _ => None,
            })
            .collect();
        DataImpl { item, methods }
    }

    /// The training loader's sample type: the `S` of its `DataLoader<S>` (the evaluation
    /// loaders', or the prediction loader's, when it is not written).
    pub(crate) fn sample(&self) -> Option<syn::Type> {
        (self.loader_sample(|k| k == "train_dataloader"))
            .or_else(|| self.eval_sample())
            .or_else(|| self.predict_sample())
    }

    /// The validation and test loaders' sample type, when one is written.
    pub(crate) fn eval_sample(&self) -> Option<syn::Type> {
        self.loader_sample(|k| k == "val_dataloader" || k == "test_dataloader")
    }

    /// The prediction loader's sample type, when it is written.
    pub(crate) fn predict_sample(&self) -> Option<syn::Type> {
        self.loader_sample(|k| k == "predict_dataloader")
    }

    /// The sample type of the first loader method `which` takes that names one.
    fn loader_sample(&self, which: impl Fn(&str) -> bool) -> Option<syn::Type> {
        (self.methods.iter())
            .filter(|m| {
                m.known
                    .is_some_and(|(k, _)| k.ends_with("_dataloader") && which(k))
            })
            .find_map(|m| match &m.f.sig.output {
                syn::ReturnType::Type(_, ret) => loader_sample(ret),
                syn::ReturnType::Default => None,
            })
    }
}

/// The `S` of the first `DataLoader<S>` inside `ty`.
pub(crate) fn loader_sample(ty: &syn::Type) -> Option<syn::Type> {
    let p = match ty {
        syn::Type::Path(p) => p,
        syn::Type::Array(a) => return loader_sample(&a.elem),
        _ => return None,
    };
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

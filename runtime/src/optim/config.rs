use crate::{Error, Result};

/// Which update rule an [`Optim`] applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub enum OptimKind {
    /// `torch.optim.SGD`.
    Sgd,
    /// `torch.optim.Adam`.
    Adam,
    /// `torch.optim.AdamW`.
    AdamW,
    /// `torch.optim.RMSprop`.
    RmsProp,
}

/// An optimizer's settings, with PyTorch's defaults.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Optim {
    pub(crate) kind: OptimKind,
    pub(crate) lr: f64,
    pub(crate) momentum: f64,
    pub(crate) dampening: f64,
    pub(crate) nesterov: bool,
    pub(crate) weight_decay: f64,
    pub(crate) betas: (f64, f64),
    pub(crate) eps: f64,
    pub(crate) alpha: f64,
    pub(crate) centered: bool,
    pub(crate) scheduler: Option<super::LrScheduler>,
    /// The fields it steps (dotted paths of the module's fields, `generator` or
    /// `body.layer_1`); `None`: every trainable parameter.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) params: Option<Vec<String>>,
    /// Parameter groups after the default one ([`Optim::group`]).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub(crate) groups: Vec<Group>,
}

/// A parameter group (an entry of PyTorch's `param_groups`): the parameters it covers, by
/// field, and the settings it changes for them. A parameter belongs to the first group that
/// covers it, and to the optimizer's own settings (the default group) when none does.
///
/// A field is a dotted path (`body`, `body.layer_1`: the parameters under it), or a pattern
/// with `*` for any characters (`*.bias`: every bias; `*bn*`).
///
/// ```
/// use fulmen::optim::Group;
/// use fulmen::Optim;
/// // No weight decay on biases and batch norm; a larger rate for the new head.
/// let adamw = Optim::adamw(1e-3)
///     .group(Group::of(["*.bias", "*bn*"]).weight_decay(0.0))
///     .group(Group::of(["head"]).lr(1e-2));
/// assert_eq!(adamw.group_of("body.bn1.weight"), 1);
/// assert_eq!(adamw.group_of("head.weight"), 2);
/// assert_eq!(adamw.group_of("body.conv1.weight"), 0);
/// ```
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Group {
    pub(crate) fields: Vec<String>,
    pub(crate) lr: Option<f64>,
    pub(crate) weight_decay: Option<f64>,
    pub(crate) momentum: Option<f64>,
}

impl Group {
    /// The group of the parameters of `fields` (dotted paths or `*` patterns).
    pub fn of<S: Into<String>>(fields: impl IntoIterator<Item = S>) -> Self {
        Group {
            fields: fields.into_iter().map(Into::into).collect(),
            lr: None,
            weight_decay: None,
            momentum: None,
        }
    }
    /// Its learning rate (its schedule starts from it).
    pub fn lr(mut self, lr: f64) -> Self {
        self.lr = Some(lr);
        self
    }
    /// Its weight decay.
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = Some(weight_decay);
        self
    }
    /// Its momentum (SGD's and RMSprop's `momentum`, Adam's beta1).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = Some(momentum);
        self
    }
    /// Whether it covers the parameter named `name`.
    pub fn covers(&self, name: &str) -> bool {
        self.fields.iter().any(|f| field_matches(f, name))
    }
}

/// Whether the field (or pattern) `field` covers the parameter named `name`: `field` itself or
/// a path under it, or with `*` anywhere, a match of the whole name (`*` = any characters).
pub(crate) fn field_matches(field: &str, name: &str) -> bool {
    if !field.contains('*') {
        return name
            .strip_prefix(field)
            .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'));
    }
    let parts: Vec<&str> = field.split('*').collect();
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !name.starts_with(first) || name.len() < first.len() + last.len() || !name.ends_with(last) {
        return false;
    }
    let mut rest = &name[first.len()..name.len() - last.len()];
    for part in &parts[1..parts.len() - 1] {
        match rest.find(part) {
            Some(at) => rest = &rest[at + part.len()..],
            None => return false,
        }
    }
    true
}

/// Refuses `field` (given to `setting`) when it covers none of `names`, the trainable
/// parameters of `module_name`, naming the module's top-level fields.
pub(crate) fn check_field(
    setting: &str,
    field: &str,
    names: &[String],
    module_name: &str,
) -> crate::Result<()> {
    if names.iter().any(|n| field_matches(field, n)) {
        return Ok(());
    }
    let mut top: Vec<&str> = Vec::new();
    for name in names.iter().filter_map(|n| n.split('.').next()) {
        if !top.contains(&name) {
            top.push(name);
        }
    }
    Err(crate::Error::config(
        setting,
        format!(
            "`{field}` is no field of {module_name} with trainable parameters; its fields are {}",
            top.join(", ")
        ),
    ))
}

/// What `configure_optimizers` returns: one optimizer, or several (manual optimization), each
/// over its own fields ([`Optim::params`]). Made from an [`Optim`], a `Vec<Optim>` or an
/// array of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Optimizers(pub Vec<Optim>);

impl From<Optim> for Optimizers {
    fn from(o: Optim) -> Self {
        Optimizers(vec![o])
    }
}
impl From<Vec<Optim>> for Optimizers {
    fn from(v: Vec<Optim>) -> Self {
        Optimizers(v)
    }
}
impl<const N: usize> From<[Optim; N]> for Optimizers {
    fn from(a: [Optim; N]) -> Self {
        Optimizers(a.into())
    }
}

impl Optim {
    fn with(kind: OptimKind, lr: f64) -> Self {
        Optim {
            kind,
            lr,
            momentum: 0.0,
            dampening: 0.0,
            nesterov: false,
            weight_decay: 0.0,
            betas: (0.9, 0.999),
            eps: 1e-8,
            alpha: 0.99,
            centered: false,
            scheduler: None,
            params: None,
            groups: Vec::new(),
        }
    }

    /// `torch.optim.SGD(lr=lr)`: momentum 0, dampening 0, no Nesterov, no weight decay.
    pub fn sgd(lr: f64) -> Self {
        Self::with(OptimKind::Sgd, lr)
    }
    /// `torch.optim.Adam(lr=lr)`: betas (0.9, 0.999), eps 1e-8, L2 weight decay 0.
    pub fn adam(lr: f64) -> Self {
        Self::with(OptimKind::Adam, lr)
    }
    /// `torch.optim.AdamW(lr=lr)`: as Adam, with decoupled weight decay 0.01.
    pub fn adamw(lr: f64) -> Self {
        Self {
            weight_decay: 0.01,
            ..Self::with(OptimKind::AdamW, lr)
        }
    }
    /// `torch.optim.RMSprop(lr=lr)`: alpha 0.99, eps 1e-8, momentum 0, not centered.
    pub fn rmsprop(lr: f64) -> Self {
        Self::with(OptimKind::RmsProp, lr)
    }

    /// `torch.optim.SGD`'s and `RMSprop`'s `momentum` (default 0).
    pub fn momentum(mut self, momentum: f64) -> Self {
        self.momentum = momentum;
        self
    }
    /// `torch.optim.SGD`'s `dampening` (default 0).
    pub fn dampening(mut self, dampening: f64) -> Self {
        self.dampening = dampening;
        self
    }
    /// `torch.optim.SGD`'s `nesterov` (default false); it needs a momentum above 0 and no
    /// dampening.
    pub fn nesterov(mut self, nesterov: bool) -> Self {
        self.nesterov = nesterov;
        self
    }
    /// L2 penalty (SGD, Adam, RMSprop) or decoupled decay (AdamW).
    pub fn weight_decay(mut self, weight_decay: f64) -> Self {
        self.weight_decay = weight_decay;
        self
    }
    /// `torch.optim.Adam`'s and `AdamW`'s `betas` (default (0.9, 0.999)), each in [0, 1).
    pub fn betas(mut self, beta1: f64, beta2: f64) -> Self {
        self.betas = (beta1, beta2);
        self
    }
    /// `torch.optim.Adam`'s, `AdamW`'s and `RMSprop`'s `eps`, added to the denominator (default
    /// 1e-8).
    pub fn eps(mut self, eps: f64) -> Self {
        self.eps = eps;
        self
    }
    /// RMSprop's smoothing constant.
    pub fn alpha(mut self, alpha: f64) -> Self {
        self.alpha = alpha;
        self
    }
    /// `torch.optim.RMSprop`'s `centered` (default false): normalize by the gradient's estimated
    /// variance instead of its mean square.
    pub fn centered(mut self, centered: bool) -> Self {
        self.centered = centered;
        self
    }

    /// The learning-rate scheduler that drives this optimizer's rate (Lightning's
    /// `lr_scheduler`); see [`crate::optim::scheduler`].
    pub fn scheduler(mut self, scheduler: impl Into<super::LrScheduler>) -> Self {
        self.scheduler = Some(scheduler.into());
        self
    }

    /// Steps only the parameters of these fields of the module (dotted paths: `generator`,
    /// `body.layer_1`; or patterns with `*`: `*.bias`), as PyTorch's
    /// `Adam(model.generator.parameters())`; the others are
    /// left alone. A name that is no field is refused when the fit starts, naming the fields
    /// there are.
    ///
    /// ```
    /// use fulmen::Optim;
    /// let [g, d] = [Optim::adam(2e-4).params(["generator"]), Optim::adam(2e-4).params(["discriminator"])];
    /// assert!(g.selects("generator.0.weight") && !g.selects("discriminator.0.weight"));
    /// assert!(!g.selects("generator_2.weight"));
    /// ```
    pub fn params<S: Into<String>>(mut self, fields: impl IntoIterator<Item = S>) -> Self {
        self.params = Some(fields.into_iter().map(Into::into).collect());
        self
    }

    /// Whether it steps the parameter named `name` (a dotted path).
    pub fn selects(&self, name: &str) -> bool {
        (self.params.as_ref()).is_none_or(|fields| fields.iter().any(|f| field_matches(f, name)))
    }

    /// Adds a parameter group with settings of its own (PyTorch's `param_groups`); see
    /// [`Group`]. Groups are numbered from 1 in the order added; 0 is the default group.
    pub fn group(mut self, group: Group) -> Self {
        self.groups.push(group);
        self
    }

    /// The groups after the default one, in order.
    pub fn groups(&self) -> &[Group] {
        &self.groups
    }

    /// The group of the parameter named `name`: the first that covers it, from 1; 0 if none.
    pub fn group_of(&self, name: &str) -> usize {
        (self.groups.iter().position(|g| g.covers(name))).map_or(0, |i| i + 1)
    }

    /// The settings of group `g` (0: these) at the learning rate and momentum `rates` gives.
    pub(crate) fn for_group(&self, g: usize, rates: Option<super::scheduler::Rates>) -> Optim {
        // The update rule's settings alone (no fields, groups or schedule to copy).
        let mut o = Optim {
            kind: self.kind,
            lr: self.lr,
            momentum: self.momentum,
            dampening: self.dampening,
            nesterov: self.nesterov,
            weight_decay: self.weight_decay,
            betas: self.betas,
            eps: self.eps,
            alpha: self.alpha,
            centered: self.centered,
            scheduler: None,
            params: None,
            groups: Vec::new(),
        };
        if let Some(group) = g.checked_sub(1).and_then(|i| self.groups.get(i)) {
            o.lr = group.lr.unwrap_or(o.lr);
            o.weight_decay = group.weight_decay.unwrap_or(o.weight_decay);
            if let Some(m) = group.momentum {
                o.set_momentum(m);
            }
        }
        if let Some(rates) = rates {
            o.lr = rates.lr;
            if let Some(m) = rates.momentum {
                o.set_momentum(m);
            }
        }
        o
    }

    /// The fields it steps, as [`params`](Self::params) named them (`None`: all).
    pub fn fields(&self) -> Option<&[String]> {
        self.params.as_deref()
    }

    /// PyTorch's class name: `SGD`, `Adam`, `AdamW`, `RMSprop`.
    pub fn name(&self) -> &'static str {
        match self.kind {
            OptimKind::Sgd => "SGD",
            OptimKind::Adam => "Adam",
            OptimKind::AdamW => "AdamW",
            OptimKind::RmsProp => "RMSprop",
        }
    }

    /// Sets SGD's and RMSprop's momentum or Adam's beta1 (what `OneCycleLR` cycles).
    pub(crate) fn set_momentum(&mut self, momentum: f64) {
        match self.kind {
            OptimKind::Adam | OptimKind::AdamW => self.betas.0 = momentum,
            OptimKind::Sgd | OptimKind::RmsProp => self.momentum = momentum,
        }
    }

    /// SGD's or RMSprop's momentum, or Adam's beta1.
    pub fn momentum_value(&self) -> f64 {
        match self.kind {
            OptimKind::Adam | OptimKind::AdamW => self.betas.0,
            OptimKind::Sgd | OptimKind::RmsProp => self.momentum,
        }
    }

    /// Adam's and RMSprop's eps.
    pub fn eps_value(&self) -> f64 {
        self.eps
    }

    /// Which update rule it applies.
    pub fn kind(&self) -> OptimKind {
        self.kind
    }
    /// The learning rate (`lr`).
    pub fn lr(&self) -> f64 {
        self.lr
    }

    /// Refuses the settings PyTorch refuses, naming the setting.
    pub fn validate(&self) -> Result<()> {
        let bad = |setting: &str, message: String| Err(Error::config(setting, message));
        if !(self.lr >= 0.0 && self.lr.is_finite()) {
            return bad("lr", format!("{} is not a finite value >= 0", self.lr));
        }
        if !(self.momentum >= 0.0 && self.momentum.is_finite()) {
            return bad(
                "momentum",
                format!("{} is not a finite value >= 0", self.momentum),
            );
        }
        if !(self.weight_decay >= 0.0 && self.weight_decay.is_finite()) {
            return bad(
                "weight_decay",
                format!("{} is not a finite value >= 0", self.weight_decay),
            );
        }
        if !(self.eps >= 0.0 && self.eps.is_finite()) {
            return bad("eps", format!("{} is not a finite value >= 0", self.eps));
        }
        for (name, beta) in [("betas.0", self.betas.0), ("betas.1", self.betas.1)] {
            if !(0.0..1.0).contains(&beta) {
                return bad(name, format!("{beta} is not in [0, 1)"));
            }
        }
        if !(self.alpha >= 0.0 && self.alpha.is_finite()) {
            return bad(
                "alpha",
                format!("{} is not a finite value >= 0", self.alpha),
            );
        }
        if self.nesterov && (self.momentum <= 0.0 || self.dampening != 0.0) {
            return bad(
                "nesterov",
                "Nesterov momentum requires a momentum > 0 and zero dampening".to_string(),
            );
        }
        for (i, g) in self.groups.iter().enumerate() {
            let checks = [
                ("lr", g.lr),
                ("weight_decay", g.weight_decay),
                ("momentum", g.momentum),
            ];
            for (name, value) in checks {
                if let Some(v) = value.filter(|v| !(*v >= 0.0 && v.is_finite())) {
                    let setting = format!("group {}.{name}", i + 1);
                    return bad(&setting, format!("{v} is not a finite value >= 0"));
                }
            }
            if g.fields.is_empty() {
                return bad(&format!("group {}", i + 1), "covers no field".to_string());
            }
            // Its settings obey what the optimizer's do (Adam's beta1 in [0, 1), ...).
            if let Err(e) = self.for_group(i + 1, None).validate() {
                return bad(&format!("group {}", i + 1), e.to_string());
            }
            let one_cycle = matches!(
                self.scheduler.as_ref().map(|s| &s.schedule),
                Some(super::Schedule::OneCycle(_))
            );
            if one_cycle && (g.lr.is_some() || g.momentum.is_some()) {
                return bad(&format!("group {}", i + 1), "OneCycleLR sets every group's rate (and momentum) from its max_lr, as PyTorch's with one max_lr: a group's own lr or momentum would have no effect; remove them or the scheduler".to_string());
            }
        }
        match &self.scheduler {
            Some(s) => s.validate(),
            None => Ok(()),
        }
    }
}

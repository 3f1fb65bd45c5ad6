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
    /// `body.layer_1`), as PyTorch's `Adam(model.generator.parameters())`; the others are
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
        self.params.as_ref().is_none_or(|fields| {
            fields.iter().any(|f| {
                name.strip_prefix(f.as_str())
                    .is_some_and(|rest| rest.is_empty() || rest.starts_with('.'))
            })
        })
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
        match &self.scheduler {
            Some(s) => s.validate(),
            None => Ok(()),
        }
    }
}

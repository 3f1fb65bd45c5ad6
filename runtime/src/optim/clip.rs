//! Gradient clipping's settings (PyTorch's `clip_grad_norm_` / `clip_grad_value_`): how
//! ([`ClipAlgorithm`]) and, decided at each step, what it does to every gradient ([`Clip`]).

use crate::{Error, FloatDtype, Result};

/// How gradients are clipped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum ClipAlgorithm {
    /// Scale all gradients so that their joint L2 norm is at most the clip value.
    #[default]
    Norm,
    /// Clamp every gradient value to `[-clip, clip]`.
    Value,
}

impl std::str::FromStr for ClipAlgorithm {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "norm" => Ok(ClipAlgorithm::Norm),
            "value" => Ok(ClipAlgorithm::Value),
            other => Err(Error::config(
                "gradient_clip_algorithm",
                format!("`{other}` is not \"norm\" or \"value\""),
            )),
        }
    }
}

/// What clipping does to every gradient before the optimizer's step.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
pub enum Clip {
    /// Nothing.
    #[default]
    None,
    /// Multiply by this factor (clipping by norm).
    Scale(f64),
    /// Clamp to `[-c, c]` (clipping by value).
    Clamp(f64),
}

impl Clip {
    /// Clips `g` in place, in its dtype (as PyTorch).
    pub(crate) fn apply<E: FloatDtype>(self, g: &mut [E]) {
        match self {
            Clip::None => {}
            Clip::Scale(coef) => {
                let c = E::from(coef).unwrap_or_else(E::one);
                g.iter_mut().for_each(|v| *v *= c);
            }
            Clip::Clamp(clip) => {
                let c = E::from(clip).unwrap_or_else(E::infinity);
                g.iter_mut().for_each(|v| *v = v.max(-c).min(c));
            }
        }
    }
}

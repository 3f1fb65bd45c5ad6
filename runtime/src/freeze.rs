//! Freezing (Lightning's `requires_grad = False`, `BaseFinetuning.freeze`): a frozen
//! parameter gets no optimizer update and keeps no gradient between steps, and a
//! [`BatchNorm2D`](crate::layers::BatchNorm2D) whose weight is frozen normalizes by its running
//! statistics and leaves them as they are (PyTorch's `eval()` on the frozen part).
//!
//! Any hook asks for it through the view: `trainer.freeze("body")`, `trainer.unfreeze("body")`
//! (a field, a dotted path or a `*` pattern, as [`Optim::params`](crate::optim::Optim::params)
//! names them); the loop applies it before the next training step, and checkpoints keep it, so
//! a resumed run goes on with the same parameters frozen.
//!
//! ```
//! use fulmen::prelude::*;
//!
//! /// Trains only the head for the first two epochs.
//! struct HeadFirst;
//! impl Callback for HeadFirst {
//!     fn on_train_epoch_start(&mut self, trainer: &mut TrainerView) {
//!         match trainer.current_epoch() < 2 {
//!             true => trainer.freeze("body"),
//!             false => trainer.unfreeze("body"),
//!         }
//!     }
//! }
//! ```
//!
//! What is saved: the frozen parameters' gradient buffers are dropped at the end of each
//! backward (dfdx's ops still compute them during it) and their optimizer state does not move.

use std::cell::RefCell;
use std::collections::BTreeSet;
use std::rc::Rc;

use dfdx::tensor::{Gradients, Tensor, UniqueId};
use serde::{Deserialize, Serialize};

use crate::device::HostAccess;
use crate::optim::field_matches;
use crate::walk::{id_of, EachParam, Params};
use crate::{FloatDtype, Result};

/// Which parameters are frozen: the fields frozen and unfrozen, in the order asked; the last
/// that covers a parameter decides.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Freezing {
    rules: Vec<(String, bool)>,
}

impl Freezing {
    /// Freezes the parameters under `field`.
    pub fn freeze(&mut self, field: &str) {
        self.set(field, true);
    }

    /// Unfreezes the parameters under `field`.
    pub fn unfreeze(&mut self, field: &str) {
        self.set(field, false);
    }

    fn set(&mut self, field: &str, frozen: bool) {
        // A field asked again replaces its earlier rule; `*` replaces every rule.
        self.rules.retain(|(f, _)| f != field && field != "*");
        self.rules.push((field.to_string(), frozen));
        if !self.rules.iter().any(|(_, frozen)| *frozen) {
            self.rules.clear();
        }
    }

    /// Whether the parameter `name` is frozen.
    pub fn is_frozen(&self, name: &str) -> bool {
        let rule = self
            .rules
            .iter()
            .rev()
            .find(|(f, _)| field_matches(f, name));
        rule.is_some_and(|(_, frozen)| *frozen)
    }

    /// Whether nothing is frozen.
    pub fn is_empty(&self) -> bool {
        self.rules.is_empty()
    }

    /// Refuses a field that covers no trainable parameter of `params` (of `module_name`),
    /// naming its top-level fields.
    pub(crate) fn check<E: FloatDtype, D: HostAccess<E>>(
        &self,
        params: &dyn Params<E, D>,
        module_name: &str,
    ) -> Result<()> {
        let mut names = Vec::new();
        params.each(&mut |name, _| {
            names.push(name.to_string());
            Ok(())
        })?;
        for (field, _) in &self.rules {
            crate::optim::check_field("freeze", field, &names, module_name)?;
        }
        Ok(())
    }
}

/// The parameters of `P` that are not frozen.
pub(crate) struct Unfrozen<'f, P> {
    pub params: P,
    pub freezing: &'f Freezing,
}

impl<E: FloatDtype, D: HostAccess<E>, P: Params<E, D>> Params<E, D> for Unfrozen<'_, P> {
    fn each(&self, f: &mut EachParam<'_, E, D>) -> Result<()> {
        let freezing = self.freezing;
        self.params
            .each(&mut |name, tensor| match freezing.is_frozen(name) {
                true => Ok(()),
                false => f(name, tensor),
            })
    }
}

/// Gradients of zeros for `params` alone: after a backward, every other tensor's gradient
/// (a frozen parameter's included) is dropped.
pub(crate) fn alloc_grads<E: FloatDtype, D: HostAccess<E>, P: Params<E, D> + ?Sized>(
    params: &P,
) -> Result<Gradients<E, D>> {
    let mut grads = Gradients::leaky();
    let mut ids = Vec::new();
    params.each(&mut |_, tensor| {
        tensor.grad_buffer(&mut grads)?;
        ids.extend(tensor.id());
        Ok(())
    })?;
    grads.retain_leafs(&ids);
    Ok(grads)
}

/// The ids of the frozen parameters of `params` (what layers look up while a step runs).
pub(crate) fn frozen_ids<E: FloatDtype, D: HostAccess<E>, P: Params<E, D> + ?Sized>(
    params: &P,
    freezing: &Freezing,
) -> Result<BTreeSet<UniqueId>> {
    let mut ids = BTreeSet::new();
    if !freezing.is_empty() {
        params.each(&mut |name, tensor| {
            if freezing.is_frozen(name) {
                ids.extend(tensor.id());
            }
            Ok(())
        })?;
    }
    Ok(ids)
}

thread_local! {
    /// The frozen parameters of the step running on this thread.
    static FROZEN: RefCell<Rc<BTreeSet<UniqueId>>> = RefCell::new(Rc::new(BTreeSet::new()));
}

/// Runs `f` (a training step) with the parameters `ids` frozen for the layers that ask
/// ([`is_frozen`]).
pub(crate) fn within<R>(ids: Rc<BTreeSet<UniqueId>>, f: impl FnOnce() -> R) -> R {
    struct Restore(Rc<BTreeSet<UniqueId>>);
    impl Drop for Restore {
        fn drop(&mut self) {
            let before = std::mem::take(&mut self.0);
            FROZEN.with(|s| *s.borrow_mut() = before);
        }
    }
    let _restore = Restore(FROZEN.with(|s| std::mem::replace(&mut *s.borrow_mut(), ids)));
    f()
}

/// Whether the running step froze anything.
pub(crate) fn any() -> bool {
    FROZEN.with(|s| !s.borrow().is_empty())
}

/// Whether the running step froze the parameter `t`.
pub(crate) fn is_frozen<S: dfdx::shapes::Shape, E: dfdx::shapes::Unit, D, T>(
    t: &Tensor<S, E, D, T>,
) -> bool
where
    D: dfdx::tensor::Storage<E>,
{
    any() && id_of(t).is_some_and(|id| FROZEN.with(|s| s.borrow().contains(&id)))
}

#[cfg(test)]
mod tests {
    use super::Freezing;

    #[test]
    fn the_last_rule_that_covers_a_parameter_decides() {
        let mut f = Freezing::default();
        f.freeze("body");
        f.unfreeze("body.bn");
        assert!(f.is_frozen("body.conv.weight"));
        assert!(!f.is_frozen("body.bn.weight"));
        assert!(!f.is_frozen("head.weight"));
        f.freeze("*");
        assert!(f.is_frozen("body.bn.weight") && f.is_frozen("head.bias"));
        f.unfreeze("*");
        assert!(f.is_empty(), "unfreezing everything leaves no rule");
    }

    #[test]
    fn asking_again_replaces_the_earlier_rule() {
        let mut f = Freezing::default();
        for _ in 0..3 {
            f.freeze("body");
        }
        f.unfreeze("body");
        assert!(f.is_empty());
    }
}

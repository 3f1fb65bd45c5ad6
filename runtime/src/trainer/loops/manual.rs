//! Manual optimization's step (Lightning's `loops/optimization/manual.py`): the trainer's side
//! of the calls a manual `training_step` makes through its context (`crate::manual`): the
//! optimizers, their schedulers, the callbacks' hooks, the ranks.

use dfdx::tensor::Gradients;

use crate::callback::Callback;
use crate::context::mode::{ManualHook, ManualSteps};
use crate::distributed::Collective;
use crate::optim::grads::{self, Selected};
use crate::optim::{Clip, ClipAlgorithm, Interval};
use crate::trainer::optimization_state::Configured;
use crate::trainer::settings::Settings;
use crate::walk::{Params, ParamsMut};
use crate::weights::{At, Weights};
use crate::TrainerView;
use crate::{Error, FloatDtype, Result, TrainDevice};

/// What a manual step reaches of the run.
pub(super) struct ManualRun<'r, E: FloatDtype, D: TrainDevice<E>> {
    pub optimizers: &'r mut [Configured<E, D>],
    pub callbacks: &'r mut [Box<dyn Callback>],
    pub view: &'r mut TrainerView,
    pub collective: &'r dyn Collective,
    pub settings: &'r Settings,
    /// Per optimizer, the clipping `clip_gradients` asked for its next step.
    pub clips: Vec<Clip>,
    pub batch_idx: usize,
}

impl<E: FloatDtype, D: TrainDevice<E>> ManualRun<'_, E, D> {
    fn configured(&mut self, opt: usize) -> Result<&mut Configured<E, D>> {
        let count = self.optimizers.len();
        self.optimizers.get_mut(opt).ok_or_else(|| {
            Error::msg(format!(
                "optimizer {opt} does not exist: configure_optimizers returns {count}"
            ))
        })
    }

    fn at(&self) -> String {
        format!(
            "epoch {}, step {}",
            self.view.current_epoch, self.view.global_step
        )
    }
}

impl<E: FloatDtype, D: TrainDevice<E>> ManualSteps<E, D> for ManualRun<'_, E, D> {
    fn count(&self) -> usize {
        self.optimizers.len()
    }

    fn view(&mut self) -> &mut TrainerView {
        self.view
    }

    fn callbacks(&mut self, hook: ManualHook) {
        for cb in self.callbacks.iter_mut() {
            match hook {
                ManualHook::BeforeBackward(loss) => cb.on_before_backward(self.view, loss),
                ManualHook::AfterBackward => cb.on_after_backward(self.view),
                ManualHook::BeforeOptimizerStep => cb.on_before_optimizer_step(self.view),
            }
        }
    }

    fn with_weights(&mut self, at: At, weights: &mut dyn Weights) {
        for cb in self.callbacks.iter_mut() {
            cb.with_weights(self.view, at, weights);
        }
    }

    fn after_hook(&mut self) -> Result<()> {
        // The checkpoints hooks ask for here are written after the step, with the
        // optimizers' state.
        self.view.take_error()
    }

    fn check_loss(&self, value: f64) -> Result<()> {
        if !self.settings.check_finite_loss || value.is_finite() {
            return Ok(());
        }
        Err(Error::NonFiniteLoss {
            value,
            epoch: self.view.current_epoch,
            step: self.view.global_step,
            batch: self.batch_idx,
        })
    }

    fn absorb(
        &mut self,
        params: &dyn Params<E, D>,
        mut fresh: Gradients<E, D>,
        kept: Option<(Gradients<E, D>, usize)>,
    ) -> Result<Gradients<E, D>> {
        // Averaging is linear and (but for rounding) leaves equal values alone: gradients
        // summed over several backwards are averaged right however often it runs. Each
        // backward averages the whole module's.
        crate::distributed::average_grads(self.collective, params, &mut fresh)?;
        let Some((into, opt)) = kept else {
            return Ok(fresh);
        };
        let o = &self.configured(opt)?.optimizer;
        let (config, frozen) = (o.config(), o.frozen());
        grads::add_grads(
            &Selected {
                params,
                config,
                frozen,
            },
            &mut fresh,
            into,
        )
    }

    fn all_agree(&self, ok: bool) -> Result<bool> {
        crate::distributed::all_true(self.collective, ok)
    }

    fn clip(
        &mut self,
        opt: usize,
        params: &dyn Params<E, D>,
        grads: &mut Gradients<E, D>,
        max: f64,
        algorithm: ClipAlgorithm,
    ) -> Result<()> {
        if !(max >= 0.0 && max.is_finite()) {
            return Err(Error::config(
                "clip_gradients",
                format!("{max} is not a finite value >= 0"),
            ));
        }
        let at = self.at();
        let o = &self.configured(opt)?.optimizer;
        let (config, frozen) = (o.config(), o.frozen());
        let selected = Selected {
            params,
            config,
            frozen,
        };
        let clip = match algorithm {
            ClipAlgorithm::Value => Clip::Clamp(max),
            ClipAlgorithm::Norm => grads::clip_norm(&selected, grads, max, Ok)
                .map_err(|e| Error::msg(format!("{at}: {e}")))?,
        };
        self.clips[opt] = clip;
        Ok(())
    }

    fn step(
        &mut self,
        opt: usize,
        params: &mut dyn ParamsMut<E, D>,
        grads: &mut Gradients<E, D>,
    ) -> Result<()> {
        let at = self.at();
        let detect = self.settings.detect_anomaly;
        self.configured(opt)?;
        let c = &mut self.optimizers[opt];
        if detect {
            let selected = Selected {
                params: &*params,
                config: c.optimizer.config(),
                frozen: c.optimizer.frozen(),
            };
            if let Some(name) = grads::first_non_finite(&selected, grads)? {
                return Err(Error::msg(format!(
                    "detect_anomaly: the gradient of `{name}` holds NaN or infinity at {at}; no step was taken"
                )));
            }
        }
        let count = self.optimizers.len();
        if let Some(&(bad, ..)) = self.view.lr_requests.iter().find(|r| r.0 >= count) {
            return Err(Error::config(
                "set_group_lr",
                format!("optimizer {bad} does not exist: configure_optimizers returns {count}"),
            ));
        }
        let c = &mut self.optimizers[opt];
        let requested = c.take_requests(opt, &mut self.view.lr_requests)?;
        let clip = std::mem::replace(&mut self.clips[opt], Clip::None);
        // The optimizer steps the parameters it selects (its state is kept by their place
        // among all).
        let rates = c.rates();
        c.optimizer.step_params_at(params, grads, clip, &rates)?;
        let steps = c.optimizer.steps() as usize;
        let rescheduled = c.step_scheduler(Interval::Step, steps, &self.view.callback_metrics)?;
        self.view.global_step += 1;
        // The view's rates change only when a rate did.
        if rescheduled || requested {
            self.view.optimizers = self.optimizers.iter().map(|c| c.info()).collect();
        }
        Ok(())
    }

    fn lr_scheduler_step(&mut self, opt: usize) -> Result<()> {
        let metrics = &self.view.callback_metrics;
        let count = self.optimizers.len();
        let c = (self.optimizers.get_mut(opt)).ok_or_else(|| {
            Error::msg(format!(
                "optimizer {opt} does not exist: configure_optimizers returns {count}"
            ))
        })?;
        let interval = c.schedulers().next().map(|s| s.interval());
        // `frequency` does not apply: 0 is a multiple of every one.
        if !c.step_scheduler(Interval::Manual, 0, metrics)? {
            let why = match interval {
                None => "has no scheduler".to_string(),
                Some(i) => format!("'s scheduler steps on its own interval ({i:?}); give it `.interval(Interval::Manual)` to step it here"),
            };
            return Err(Error::config(
                "lr_scheduler_step",
                format!("optimizer {opt} {why}"),
            ));
        }
        self.view.optimizers = self.optimizers.iter().map(|c| c.info()).collect();
        Ok(())
    }

    fn zero_grad(
        &mut self,
        opt: usize,
        params: &dyn Params<E, D>,
        grads: &mut Gradients<E, D>,
    ) -> Result<()> {
        let o = &self.configured(opt)?.optimizer;
        let (config, frozen) = (o.config(), o.frozen());
        grads::zero_grads(
            &Selected {
                params,
                config,
                frozen,
            },
            grads,
        )
    }
}

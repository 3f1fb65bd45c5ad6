use std::collections::BTreeMap;

use dfdx::nn::TensorCollection;
use dfdx::tensor::{Cpu, Gradients, Tensor};

use super::scheduler::Rates;
use super::{Clip, Optim};
use crate::checkpoint::{Checkpoint, CkptDtype, OptimizerState, Record, Records};
use crate::freeze::Freezing;
use crate::kernels::{Scratch, Step, StepRule};
use crate::walk::{AnyTensorMut, Params, ParamsMut, Tensors, TensorsMut};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// An optimizer at work: its settings and, per parameter, the buffers its rule keeps, on the
/// device `D` of the parameters (on CUDA the step runs there, without copies to the host).
#[derive(Debug, Clone)]
pub struct Optimizer<E: FloatDtype, D: TrainDevice<E> = Cpu> {
    config: Optim,
    step: u64,
    /// Per parameter, in the module's walk order: its name and its buffers.
    state: Vec<(String, Buffers<E, D>)>,
    /// The host kernels' copies, kept between steps.
    scratch: Scratch<E>,
    /// Under SHARD_GRAD_OP, per parameter whether this rank steps it (and keeps its state).
    owned: Option<Vec<bool>>,
    /// Whether the buffers stay in host memory between steps (FULL_SHARD's `cpu_offload`).
    offload: bool,
    /// The parameters it does not step now (they keep their buffers).
    frozen: Freezing,
    /// Per parameter, the steps it sat out frozen: its own step count (Adam's bias correction,
    /// SGD's first momentum step) is the optimizer's less these, as PyTorch counts a
    /// parameter's steps (`state["step"]`) from when it first has a gradient.
    skipped: BTreeMap<String, u64>,
}

/// Reads a parameter's buffer from a checkpoint: `(index, parameter, buffer, len)`.
pub(crate) type ReadBuffer<'f, E> = dyn FnMut(usize, &str, &str, usize) -> Result<Vec<E>> + 'f;

/// One parameter's buffers, in [`StepRule::buffers`]' order: where the parameter lives, or
/// in host memory between steps (`cpu_offload`), copied to the parameter's device for its
/// step and back.
#[derive(Debug, Clone)]
enum Buffers<E: FloatDtype, D: TrainDevice<E>> {
    Device(Vec<Tensor<(usize,), E, D>>),
    Host(Vec<Vec<E>>),
}

impl<E: FloatDtype, D: TrainDevice<E>> Buffers<E, D> {
    /// Buffers of `values` on `device`, or in host memory.
    fn new(values: Vec<Vec<E>>, device: &D, offload: bool) -> Result<Self> {
        if offload {
            return Ok(Buffers::Host(values));
        }
        let on_device = values
            .into_iter()
            .map(|v| {
                let n = v.len();
                device.try_tensor_from_vec(v, (n,))
            })
            .collect::<std::result::Result<_, _>>()?;
        Ok(Buffers::Device(on_device))
    }

    /// The buffers' values, on the host.
    fn values(&self) -> Vec<Vec<E>> {
        match self {
            Buffers::Device(b) => b.iter().map(|t| t.as_vec()).collect(),
            Buffers::Host(h) => h.clone(),
        }
    }

    /// `param`'s step with these buffers, where the parameter lives.
    fn step(
        &mut self,
        rule: StepRule<'_>,
        param: &mut dyn AnyTensorMut<E, D>,
        grads: &mut Gradients<E, D>,
        scratch: &mut Scratch<E>,
    ) -> Result<()> {
        match self {
            Buffers::Device(b) => D::Kernels::step(rule, param, grads, b, scratch),
            Buffers::Host(h) => {
                let device = param.device();
                let mut b = Buffers::new(std::mem::take(h), &device, false)?;
                let stepped = b.step(rule, param, grads, scratch);
                *h = b.values();
                stepped
            }
        }
    }
}

/// Per parameter, its name and its buffers' values.
pub(crate) type HostState<E> = Vec<(String, Vec<Vec<E>>)>;

impl<E: FloatDtype, D: TrainDevice<E>> Optimizer<E, D> {
    /// An optimizer with the settings `config` and no buffers yet; refuses the settings PyTorch
    /// refuses.
    pub fn new(config: Optim) -> Result<Self> {
        config.validate()?;
        Ok(Self {
            config,
            step: 0,
            state: Vec::new(),
            scratch: Vec::new(),
            owned: None,
            offload: false,
            frozen: Freezing::default(),
            skipped: BTreeMap::new(),
        })
    }

    /// Keeps the buffers in host memory between steps (`cpu_offload`: the device holds one
    /// parameter's at a time, during its step), or where the parameters live.
    pub(crate) fn set_offload(&mut self, offload: bool) {
        self.offload = offload;
    }

    /// Its settings, at the current learning rate.
    pub fn config(&self) -> &Optim {
        &self.config
    }

    /// The learning rate it steps at: the configured one, or the last one it was given
    /// ([`set_lr`](Self::set_lr); in a trainer's run, each step's rate).
    pub fn lr(&self) -> f64 {
        self.config.lr
    }

    /// Changes the default parameter group's learning rate from the next step on (the other
    /// groups keep theirs).
    pub fn set_lr(&mut self, lr: f64) -> Result<()> {
        if !(lr >= 0.0 && lr.is_finite()) {
            return Err(Error::config(
                "lr",
                format!("{lr} is not a finite value >= 0"),
            ));
        }
        self.config.lr = lr;
        Ok(())
    }

    /// Sets SGD's and RMSprop's momentum or Adam's beta1 (what `OneCycleLR` cycles).
    pub fn set_momentum(&mut self, momentum: f64) {
        self.config.set_momentum(momentum);
    }

    /// The number of steps taken.
    pub fn steps(&self) -> u64 {
        self.step
    }

    /// The values of the buffers kept for the parameter named `name` (none before its first
    /// step), copied from the device.
    pub fn buffers(&self, name: &str) -> Option<Vec<Vec<E>>> {
        self.state
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, b)| b.values())
    }

    /// Steps none of the parameters `frozen` freezes (until it is set again).
    pub(crate) fn set_frozen(&mut self, frozen: &Freezing) {
        self.frozen = frozen.clone();
    }

    /// The parameters it does not step now.
    pub(crate) fn frozen(&self) -> &Freezing {
        &self.frozen
    }

    /// Steps only the parameters marked `true` (in walk order) and keeps state for them alone
    /// (SHARD_GRAD_OP); `None` steps all.
    pub(crate) fn set_owned(&mut self, owned: Option<Vec<bool>>) {
        if let Some(owned) = &owned {
            for ((_, buffers), &mine) in self.state.iter_mut().zip(owned) {
                if !mine {
                    *buffers = Buffers::Host(Vec::new());
                }
            }
        }
        self.owned = owned;
    }

    /// Every parameter's buffers, the others' sent by their owners (`tensors[i]` is parameter
    /// i's owner and size): what a sharded run's checkpoint holds. Every rank calls it.
    pub(crate) fn gathered(
        &self,
        c: &dyn crate::distributed::Collective,
        tensors: &[(usize, usize)],
    ) -> Result<HostState<E>> {
        let mut full = self.host_state();
        if full.is_empty() {
            return Ok(full);
        }
        let per_param = StepRule::buffers(&self.config).len();
        for owner in 0..c.world_size() {
            let mut bytes = Vec::new();
            if owner == c.rank() {
                for ((_, buffers), _) in full.iter().zip(tensors).filter(|(_, t)| t.0 == owner) {
                    for b in buffers {
                        crate::distributed::to_wire(b, &mut bytes);
                    }
                }
            }
            c.broadcast(owner, &mut bytes)?;
            let mut values = crate::distributed::from_wire::<E>(&bytes);
            for ((name, buffers), &(o, len)) in full.iter_mut().zip(tensors) {
                if o != owner {
                    continue;
                }
                let mut got = Vec::with_capacity(per_param);
                for _ in 0..per_param {
                    let b: Vec<E> = values.by_ref().take(len).collect();
                    if b.len() != len {
                        return Err(Error::msg(format!(
                            "rank {owner} sent too little optimizer state for `{name}`"
                        )));
                    }
                    got.push(b);
                }
                *buffers = got;
            }
        }
        Ok(full)
    }

    /// Every parameter's buffers, copied from the device.
    pub(crate) fn host_state(&self) -> HostState<E> {
        self.state
            .iter()
            .map(|(name, b)| (name.clone(), b.values()))
            .collect()
    }

    /// Updates every trainable parameter of `module` from `grads`.
    pub fn step<M: TensorCollection<E, D>>(
        &mut self,
        module: &mut M,
        grads: &mut Gradients<E, D>,
    ) -> Result<()> {
        self.step_clipped(module, grads, Clip::None)
    }

    /// [`step_clipped`](Self::step_clipped) at the learning rates (and momenta) `rates`, one
    /// per parameter group, the default group first: what the trainer's loop, which owns the
    /// rates, hands each step.
    pub(crate) fn step_at<M: TensorCollection<E, D>>(
        &mut self,
        module: &mut M,
        grads: &mut Gradients<E, D>,
        clip: Clip,
        rates: &[Rates],
    ) -> Result<()> {
        self.step_params_at(&mut TensorsMut(module), grads, clip, rates)
    }

    /// [`step_params`](Self::step_params) at the learning rates (and momenta) `rates`, one
    /// per parameter group.
    pub(crate) fn step_params_at<P: ParamsMut<E, D> + ?Sized>(
        &mut self,
        params: &mut P,
        grads: &mut Gradients<E, D>,
        clip: Clip,
        rates: &[Rates],
    ) -> Result<()> {
        for (g, r) in rates.iter().enumerate() {
            if !(r.lr >= 0.0 && r.lr.is_finite()) {
                let setting = if g == 0 {
                    "lr".into()
                } else {
                    format!("group {g}.lr")
                };
                return Err(Error::config(
                    &setting,
                    format!("{} is not a finite value >= 0", r.lr),
                ));
            }
        }
        if let Some(first) = rates.first() {
            self.set_lr(first.lr)?;
            if let Some(momentum) = first.momentum {
                self.set_momentum(momentum);
            }
        }
        self.step_groups(params, grads, clip, Some(rates))
    }

    /// [`step`](Self::step) with every gradient clipped first as `clip` says (where it
    /// lives: on CUDA nothing goes through the host).
    pub fn step_clipped<M: TensorCollection<E, D>>(
        &mut self,
        module: &mut M,
        grads: &mut Gradients<E, D>,
        clip: Clip,
    ) -> Result<()> {
        self.step_params(&mut TensorsMut(module), grads, clip)
    }

    /// [`step_clipped`](Self::step_clipped) over any trainable tensors (a FULL_SHARD run's
    /// flat shards).
    pub(crate) fn step_params<P: ParamsMut<E, D> + ?Sized>(
        &mut self,
        module: &mut P,
        grads: &mut Gradients<E, D>,
        clip: Clip,
    ) -> Result<()> {
        self.step_groups(module, grads, clip, None)
    }

    /// One step of every parameter it selects, each by its group's settings (at `rates`, one
    /// per group, where given).
    fn step_groups<P: ParamsMut<E, D> + ?Sized>(
        &mut self,
        module: &mut P,
        grads: &mut Gradients<E, D>,
        clip: Clip,
        rates: Option<&[Rates]>,
    ) -> Result<()> {
        if self.state.is_empty() {
            // The buffers are made at the first step, zeros where the parameters live, in
            // walk order (none for another rank's parameters under SHARD_GRAD_OP).
            let kept = StepRule::buffers(&self.config).len();
            let mut state = Vec::new();
            for (i, (name, len, device)) in parameters(module)?.into_iter().enumerate() {
                let owned = (self.owned.as_ref()).is_none_or(|o| o.get(i).copied().unwrap_or(true));
                let mine = owned && self.config.selects(&name);
                let zeros = vec![vec![E::zero(); len]; if mine { kept } else { 0 }];
                state.push((name, Buffers::new(zeros, &device, self.offload)?));
            }
            self.state = state;
        }
        self.step += 1;
        let Optimizer {
            config,
            step,
            state,
            scratch,
            owned,
            frozen,
            skipped,
            ..
        } = self;
        let configs: Vec<Optim> = (0..=config.groups().len())
            .map(|g| config.for_group(g, rates.and_then(|r| r.get(g).copied())))
            .collect();
        let mut index = 0;
        module.each_mut(&mut |name, tensor| {
            let buffers = &mut state
                .get_mut(index)
                .ok_or_else(|| Error::msg("the optimizer was stepped on a module with more parameters than it was created for"))?
                .1;
            let mine = owned
                .as_ref()
                .is_none_or(|o| o.get(index).copied().unwrap_or(true));
            index += 1;
            if !mine || !config.selects(name) {
                return Ok(());
            }
            if frozen.is_frozen(name) {
                *skipped.entry(name.to_string()).or_default() += 1;
                return Ok(());
            }
            let rule = StepRule {
                config: configs.get(config.group_of(name)).unwrap_or(config),
                step: *step - skipped.get(name).copied().unwrap_or(0),
                clip,
            };
            buffers.step(rule, tensor, grads, scratch)
        })
    }
}

impl<E: FloatDtype + CkptDtype, D: TrainDevice<E>> Optimizer<E, D> {
    /// Adds `state` (every parameter's buffers: [`host_state`](Self::host_state), or what
    /// a sharded run gathered of it) to `records` (as `optimizer/<parameter>/<buffer>`) and
    /// returns the settings, at the run's learning rate and momentum `rates`, and the step
    /// count.
    pub(crate) fn save_state(
        &self,
        records: &mut Records,
        prefix: &str,
        state: HostState<E>,
        rates: Rates,
    ) -> Result<OptimizerState> {
        let names = StepRule::buffers(&self.config);
        for (param, buffers) in &state {
            for (buffer, values) in names.iter().zip(buffers) {
                records.insert(
                    format!("{prefix}{param}/{buffer}"),
                    Record::from_values(vec![values.len()], values),
                );
            }
        }
        let mut config = self.config.clone();
        config.lr = rates.lr;
        if let Some(momentum) = rates.momentum {
            config.set_momentum(momentum);
        }
        Ok(OptimizerState {
            config,
            step: self.step,
            group_schedulers: Vec::new(),
            skipped: self.skipped.clone(),
        })
    }

    /// Takes the settings, step count and buffers of a checkpoint for `module`'s parameters.
    pub(crate) fn load_state<M: TensorCollection<E, D>>(
        &mut self,
        module: &M,
        prefix: &str,
        state: &OptimizerState,
        ckpt: &Checkpoint,
    ) -> Result<()> {
        self.load_state_of(
            &Tensors(module),
            state,
            ckpt,
            &mut |_, param, buffer, len| {
                ckpt.values::<E>(&format!("{prefix}{param}/{buffer}"), &[len])
            },
        )
    }

    /// Takes the settings and step count of a checkpoint, and for each of `params` the
    /// buffers `read(index, parameter, buffer, len)` gives.
    pub(crate) fn load_state_of(
        &mut self,
        params: &dyn Params<E, D>,
        state: &OptimizerState,
        ckpt: &Checkpoint,
        read: &mut ReadBuffer<'_, E>,
    ) -> Result<()> {
        if state.config.kind != self.config.kind {
            return Err(ckpt.error(Error::msg(format!(
                "its optimizer is {:?} but configure_optimizers returns {:?}",
                state.config.kind, self.config.kind
            ))));
        }
        if state.config.params != self.config.params {
            let fields = |o: &Optim| o.fields().map_or("every field".into(), |f| f.join(", "));
            return Err(ckpt.error(Error::msg(format!(
                "its {} optimizer steps {}, but the one configure_optimizers returns now steps {}",
                self.config.name(),
                fields(&state.config),
                fields(&self.config)
            ))));
        }
        let covers = |o: &Optim| {
            o.groups()
                .iter()
                .map(|g| g.fields.clone())
                .collect::<Vec<_>>()
        };
        if covers(&state.config) != covers(&self.config) {
            return Err(ckpt.error(Error::msg(format!(
                "its {} optimizer has the parameter groups {:?}, but the one configure_optimizers returns now has {:?}",
                self.config.name(),
                covers(&state.config),
                covers(&self.config)
            ))));
        }
        state.config.validate()?;
        self.config = state.config.clone();
        self.step = state.step;
        self.skipped = state.skipped.clone();
        self.state.clear();
        if self.step == 0 {
            return Ok(());
        }
        let names = StepRule::buffers(&self.config);
        for (index, (param, len, device)) in parameters(params)?.into_iter().enumerate() {
            if !self.config.selects(&param) {
                self.state.push((param, Buffers::Host(Vec::new())));
                continue;
            }
            let mut buffers = Vec::with_capacity(names.len());
            for buffer in names {
                buffers.push(read(index, &param, buffer, len)?);
            }
            let buffers = Buffers::new(buffers, &device, self.offload)?;
            self.state.push((param, buffers));
        }
        Ok(())
    }
}

/// Refuses an optimizer whose [`Optim::params`] name a field that holds no trainable
/// parameter of `module` (`module_name`), naming the fields there are.
pub(crate) fn check_fields<E: FloatDtype, D: TrainDevice<E>>(
    config: &Optim,
    module: &dyn Params<E, D>,
    module_name: &str,
) -> Result<()> {
    let names: Vec<String> = parameters(module)?.into_iter().map(|p| p.0).collect();
    for (i, group) in config.groups().iter().enumerate() {
        if !names.iter().any(|n| group.covers(n)) {
            return Err(Error::config(
                format!("group {}", i + 1),
                format!(
                    "{:?} covers no trainable parameter of {module_name}",
                    group.fields
                ),
            ));
        }
    }
    let Some(fields) = config.fields() else {
        return Ok(());
    };
    for field in fields {
        super::config::check_field("Optim::params", field, &names, module_name)?;
    }
    Ok(())
}

/// The name, size and device of every trainable parameter of `module`, in order.
fn parameters<E: FloatDtype, D: TrainDevice<E>, P: Params<E, D> + ?Sized>(
    module: &P,
) -> Result<Vec<(String, usize, D)>> {
    let mut names = Vec::new();
    module.each(&mut |name, tensor| {
        names.push((name.to_string(), tensor.num_values(), tensor.device()));
        Ok(())
    })?;
    Ok(names)
}

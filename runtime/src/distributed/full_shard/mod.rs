//! FSDP's `FULL_SHARD` (ZeRO-3; `strategy("fsdp")`): with N ranks each holds 1/N of every
//! parameter, of its gradient and of its optimizer state, and a unit's parameters are
//! gathered whole only while the unit runs.
//!
//! The units are the [`Unit`](crate::layers::Unit) layers of the model, and, for the
//! parameters outside every unit, each top-level field of the module (those are gathered for
//! the whole step). Each unit's trainable tensors, end to end in walk order, form one flat
//! buffer cut into equal shards ([`Layout`]); this rank keeps its shard of every unit
//! ([`Shards`], what the optimizer steps) and the module keeps a one-value placeholder in place
//! of each parameter ([`AnyTensorMut::release`]). A unit's forward all-gathers its shards into
//! the layers and frees them after; its backward gathers them again, recomputes, and
//! reduce-scatters the gradients, so each rank adds the mean over the ranks of its shard's
//! gradient into [`FullShard::grads`] (`running.rs`). The optimizer's rules are element-wise,
//! so stepping each shard is stepping the whole.
//!
//! Buffers (batch norm's running statistics) are not sharded: each rank keeps its own, as
//! under DDP. During the fit, hooks and callbacks see the placeholders (NaN), not the
//! parameters, as PyTorch's FSDP shows its flat shards; checkpoints gather them or write them
//! sharded (`connectors/`). When a fit ends the module gets its whole parameters back
//! ([`FullShard::unshard`]); a fit that fails leaves them sharded (its checkpoints hold them).

mod layout;
mod running;

use std::cell::RefCell;
use std::rc::Rc;
use std::sync::Arc;

use dfdx::nn::TensorCollection;
use dfdx::tensor::{Gradients, Tensor};

pub(crate) use layout::Layout;
pub(crate) use running::{evaluate, forward, running, within};

use super::{cast, Collective};
use crate::checkpoint::sharded::{Layout as ShardLayout, UnitLayout};
use crate::walk::{
    self, AnyTensor, EachParam, EachParamMut, Params, ParamsMut, Tensors, TensorsMut,
};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// A flat tensor.
type Flat<E, D> = Tensor<(usize,), E, D>;

/// A FULL_SHARD run's state, shared with the units' backward ops.
pub(crate) type Shared<E, D> = Rc<RefCell<FullShard<E, D>>>;

/// What a FULL_SHARD run holds of a model.
pub(crate) struct FullShard<E: FloatDtype, D: TrainDevice<E>> {
    collective: Arc<dyn Collective>,
    units: Vec<UnitShard>,
    /// Per trainable tensor of the model, in walk order: its name and its unit.
    tensors: Vec<(String, usize)>,
    /// Per trainable tensor of the model, in walk order: its shape.
    dims: Vec<Vec<usize>>,
    /// This rank's shard of every unit: what the optimizer steps.
    pub params: Shards<E, D>,
    /// The shards' gradients, summed since the optimizer last stepped.
    pub grads: Gradients<E, D>,
    /// Whether the top-level fields' parameters are gathered for a step.
    roots_gathered: std::cell::Cell<bool>,
}

/// What [`FullShard::unshard`] gathers for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Unshard {
    /// A checkpoint: into the model of the rank `here` (rank 0), the shards kept.
    Checkpoint { here: bool },
    /// The end of a fit: into every rank's model, the shards freed.
    End,
}

/// One unit.
struct UnitShard {
    /// Its parameters' common prefix (a top-level field's name for those outside the units).
    name: String,
    /// Gathered by its `Unit` layer; else a top-level field's parameters, gathered by the
    /// trainer for the whole step.
    layer: bool,
    /// Over the trainable tensors of what the unit is gathered into (the layer's module, or the
    /// whole model), in walk order: whether each is this unit's.
    mask: Vec<bool>,
    /// The unit's tensors, in walk order of the model.
    own: Vec<usize>,
    layout: Layout,
}

/// This rank's shards, one flat tensor per unit, named by the unit.
pub(crate) struct Shards<E: FloatDtype, D: TrainDevice<E>> {
    flats: Vec<(String, Flat<E, D>)>,
}

impl<E: FloatDtype, D: TrainDevice<E>> Params<E, D> for Shards<E, D> {
    fn each(&self, f: &mut EachParam<'_, E, D>) -> Result<()> {
        self.flats.iter().try_for_each(|(name, t)| f(name, t))
    }
}

impl<E: FloatDtype, D: TrainDevice<E>> ParamsMut<E, D> for Shards<E, D> {
    fn each_mut(&mut self, f: &mut EachParamMut<'_, E, D>) -> Result<()> {
        self.flats.iter_mut().try_for_each(|(name, t)| f(name, t))
    }
}

impl<E: FloatDtype, D: TrainDevice<E>> FullShard<E, D> {
    /// Shards `model` (whose values must be the same on every rank) over the ranks of
    /// `collective`: this rank keeps its shard of each unit, and the model placeholders.
    pub fn new<M: TensorCollection<E, D>>(
        model: &mut M,
        collective: Arc<dyn Collective>,
    ) -> Result<Self> {
        let world = collective.world_size();
        let trace = walk::units(model)?;
        let mut tensors = Vec::new();
        let mut sizes = Vec::new();
        let mut dims = Vec::new();
        Tensors(&*model).each(&mut |name, t| {
            tensors.push((name.to_string(), usize::MAX));
            sizes.push(t.num_values());
            dims.push(t.dims());
            Ok(())
        })?;
        let mut units: Vec<UnitShard> = Vec::new();
        for (k, (span, key)) in trace.units.iter().enumerate() {
            if trace.units[..k].iter().any(|(_, other)| other.same(key)) {
                return Err(Error::config(
                    "strategy",
                    format!(
                        "two units of the model share one `Unit` layer's identity (the second holds `{}`): a `Unit` cloned inside one model; build each separately",
                        tensors.get(span.start).map_or("nothing", |t| t.0.as_str())
                    ),
                ));
            }
            let mask: Vec<bool> = span
                .clone()
                .map(|g| trace.innermost[g] == Some(k))
                .collect();
            let own: Vec<usize> = span
                .clone()
                .filter(|&g| trace.innermost[g] == Some(k))
                .collect();
            if own.is_empty() {
                key.set(None);
                continue;
            }
            key.set(Some(units.len()));
            let names: Vec<&str> = own.iter().map(|&g| tensors[g].0.as_str()).collect();
            units.push(UnitShard {
                name: common_prefix(&names),
                layer: true,
                mask,
                layout: Layout::new(own.iter().map(|&g| sizes[g]).collect(), world),
                own,
            });
        }
        for (g, unit) in trace.innermost.iter().enumerate() {
            if unit.is_none() {
                let field = tensors[g].0.split('.').next().unwrap_or("").to_string();
                let at = match units.iter().position(|u| !u.layer && u.name == field) {
                    Some(at) => at,
                    None => {
                        units.push(UnitShard {
                            name: field,
                            layer: false,
                            mask: vec![false; tensors.len()],
                            own: Vec::new(),
                            layout: Layout::new(Vec::new(), world),
                        });
                        units.len() - 1
                    }
                };
                let u = &mut units[at];
                u.mask[g] = true;
                u.own.push(g);
                u.layout = Layout::new(u.own.iter().map(|&o| sizes[o]).collect(), world);
            }
        }
        for (k, u) in units.iter().enumerate() {
            for &g in &u.own {
                tensors[g].1 = k;
            }
        }
        let params = Shards {
            flats: shard_values(model, &units, &tensors, collective.rank())?,
        };
        Ok(Self {
            collective,
            units,
            tensors,
            dims,
            params,
            grads: Gradients::leaky(),
            roots_gathered: Default::default(),
        })
    }

    /// The units gathered for the whole step (the top-level fields' parameters outside the
    /// `Unit` layers).
    fn roots(&self) -> impl Iterator<Item = usize> + '_ {
        (0..self.units.len()).filter(|&k| !self.units[k].layer)
    }

    /// Unit `k`'s whole flat buffer (padding included), gathered from every rank.
    fn gathered(&self, k: usize) -> Result<Vec<E>> {
        self.all_gather(self.params.flats[k].1.as_vec())
    }

    /// Gives unit `k`'s tensors in `module` (the unit's layers, or the whole model for a
    /// top-level field's) their values, gathered from every rank.
    pub fn gather<M: TensorCollection<E, D>>(&self, k: usize, module: &mut M) -> Result<()> {
        let full = self.gathered(k)?;
        let unit = &self.units[k];
        let mut ranges = unit.layout.tensors();
        self.each_of(k, module, &mut |name, t| {
            let r = ranges.next().ok_or_else(|| {
                Error::msg(format!("unit `{}` has no values for `{name}`", unit.name))
            })?;
            let n = r.len();
            let values = t.device().try_tensor_from_vec(full[r].to_vec(), (n,))?;
            t.set_flat(values)
        })
    }

    /// Frees unit `k`'s tensors in `module`, leaving placeholders.
    pub fn release<M: TensorCollection<E, D>>(&self, k: usize, module: &mut M) -> Result<()> {
        self.each_of(k, module, &mut |_, t| t.release())
    }

    /// Calls `f` on each of unit `k`'s tensors in `module`.
    fn each_of<M: TensorCollection<E, D>>(
        &self,
        k: usize,
        module: &mut M,
        f: &mut EachParamMut<'_, E, D>,
    ) -> Result<()> {
        let unit = &self.units[k];
        let mut i = 0;
        TensorsMut(module).each_mut(&mut |name, t| {
            let mine = unit.mask.get(i).copied();
            i += 1;
            match mine {
                Some(true) => f(name, t),
                Some(false) => Ok(()),
                None => Err(self.not_the_unit(k)),
            }
        })?;
        if i != unit.mask.len() {
            return Err(self.not_the_unit(k));
        }
        Ok(())
    }

    fn not_the_unit(&self, k: usize) -> Error {
        Error::msg(format!(
            "FULL_SHARD: unit `{}` ran with a different number of parameters than the model had when it was sharded",
            self.units[k].name
        ))
    }

    /// The reduce-scatter of unit `k`: the gradients of its tensors in `module` (in `grads`),
    /// summed over the ranks and divided by their number; this rank's shard of it is added to
    /// [`grads`](Self::grads).
    pub fn scatter_grads<M: TensorCollection<E, D>>(
        &mut self,
        k: usize,
        module: &M,
        grads: &mut Gradients<E, D>,
    ) -> Result<()> {
        let unit = &self.units[k];
        let mut flat: Vec<E> = Vec::with_capacity(unit.layout.padded());
        let mut i = 0;
        Tensors(module).each(&mut |_, t| {
            let mine = unit.mask.get(i).copied().unwrap_or(false);
            i += 1;
            if mine {
                t.with_grad(grads, &mut |g| flat.extend_from_slice(g))?;
            }
            Ok(())
        })?;
        if flat.len() != unit.layout.total() {
            return Err(self.not_the_unit(k));
        }
        flat.resize(unit.layout.padded(), E::zero());
        let c = &*self.collective;
        let shard = unit.layout.shard;
        let sum: Vec<f64> = if std::mem::size_of::<E>() == 8 {
            let mut mine = vec![0.0; shard];
            c.reduce_scatter_sum_f64(&cast::<E, f64>(flat), &mut mine)?;
            mine
        } else {
            let mut mine = vec![0.0f32; shard];
            c.reduce_scatter_sum_f32(&cast::<E, f32>(flat), &mut mine)?;
            mine.into_iter().map(f64::from).collect()
        };
        let inv = 1.0 / c.world_size() as f64;
        let (_, tensor) = &self.params.flats[k];
        tensor.with_grad(&mut self.grads, &mut |g| {
            for (g, s) in g.iter_mut().zip(&sum) {
                *g += E::from(s * inv).unwrap_or_else(E::nan);
            }
        })
    }

    /// Gathers the top-level fields' parameters into `model`, for a step.
    pub fn gather_roots<M: TensorCollection<E, D>>(&self, model: &mut M) -> Result<()> {
        if self.roots_gathered.get() {
            return Ok(());
        }
        self.roots().try_for_each(|k| self.gather(k, model))?;
        self.roots_gathered.set(true);
        Ok(())
    }

    /// Frees the top-level fields' parameters in `model` after a step.
    pub fn release_roots<M: TensorCollection<E, D>>(&self, model: &mut M) -> Result<()> {
        self.roots_gathered.set(false);
        self.roots().try_for_each(|k| self.release(k, model))
    }

    /// The reduce-scatter of the top-level fields' gradients (in `grads`, from the step's
    /// backward).
    pub fn scatter_root_grads<M: TensorCollection<E, D>>(
        &mut self,
        model: &M,
        grads: &mut Gradients<E, D>,
    ) -> Result<()> {
        let roots: Vec<usize> = self.roots().collect();
        roots
            .into_iter()
            .try_for_each(|k| self.scatter_grads(k, model, grads))
    }

    /// Gives the parameters of `model` their whole values again, from every rank's shards, one
    /// unit at a time (every rank calls it). For a checkpoint only rank 0's model takes them
    /// (`Unshard::Checkpoint { here }`: the others help gather and keep nothing); at the end of
    /// a fit every rank's does, and each shard is freed once gathered, so that no rank holds
    /// more than the model and one unit's shard. The top-level fields' parameters gathered for
    /// a step are left as they are (the step's tape holds them).
    pub fn unshard<M: TensorCollection<E, D>>(
        &mut self,
        model: &mut M,
        how: Unshard,
    ) -> Result<()> {
        let here = match how {
            Unshard::Checkpoint { here } => here,
            Unshard::End => true,
        };
        for k in 0..self.units.len() {
            if self.is_gathered(k) {
                continue;
            }
            let full = self.gathered(k)?;
            if matches!(how, Unshard::End) {
                let (_, flat) = &mut self.params.flats[k];
                *flat = flat.device().try_tensor_from_vec(Vec::new(), (0,))?;
            }
            if !here {
                continue;
            }
            let mut ranges = self.units[k].layout.tensors();
            let mut g = 0;
            TensorsMut(&mut *model).each_mut(&mut |name, t| {
                let owner = self.tensors.get(g).map(|t| t.1).ok_or_else(|| {
                    Error::msg(format!("`{name}` was not in the model when it was sharded"))
                })?;
                g += 1;
                if owner != k {
                    return Ok(());
                }
                let r = ranges.next().ok_or_else(|| self.not_the_unit(k))?;
                let n = r.len();
                t.set_flat(t.device().try_tensor_from_vec(full[r].to_vec(), (n,))?)
            })?;
        }
        Ok(())
    }

    /// Frees the parameters of `model` that [`unshard`](Self::unshard) gave it, for a
    /// checkpoint.
    pub fn reshard<M: TensorCollection<E, D>>(&mut self, model: &mut M) -> Result<()> {
        let mut g = 0;
        TensorsMut(model).each_mut(&mut |_, t| {
            let k = self.tensors.get(g).map_or(usize::MAX, |t| t.1);
            g += 1;
            match self.is_gathered(k) {
                true => Ok(()),
                false => t.release(),
            }
        })
    }

    /// Whether unit `k` is a top-level field's, gathered for the step under way.
    fn is_gathered(&self, k: usize) -> bool {
        self.roots_gathered.get() && self.units.get(k).is_some_and(|u| !u.layer)
    }

    /// Sets every shard's gradient to zero, for the next window.
    pub fn zero_grads(&mut self) {
        self.grads = Gradients::leaky();
    }

    /// Per-unit values of this rank's shards (`per_unit[k]`: a list of flat buffers of unit
    /// `k`'s shard length, as the optimizer keeps per shard), as every rank's together, per
    /// tensor of the model by name, in walk order, on the rank where `here` (rank 0, for a
    /// checkpoint; the others get nothing). Every rank calls it.
    pub fn unflatten(
        &self,
        per_unit: &[Vec<Vec<E>>],
        here: bool,
    ) -> Result<Vec<(String, Vec<Vec<E>>)>> {
        let mut out: Vec<(String, Vec<Vec<E>>)> = self
            .tensors
            .iter()
            .map(|(name, _)| (name.clone(), Vec::new()))
            .collect();
        for (unit, buffers) in self.units.iter().zip(per_unit) {
            for local in buffers {
                if local.len() != unit.layout.shard {
                    return Err(Error::msg(format!(
                        "unit `{}`: {} values where its shard holds {}",
                        unit.name,
                        local.len(),
                        unit.layout.shard
                    )));
                }
                let whole = self.all_gather(local.clone())?;
                if here {
                    for (&g, r) in unit.own.iter().zip(unit.layout.tensors()) {
                        out[g].1.push(whole[r].to_vec());
                    }
                }
            }
        }
        Ok(if here { out } else { Vec::new() })
    }

    /// This rank's shard of unit `k` of values read per tensor: `read(name, len)` gives the
    /// whole values of the tensor `name` (from a checkpoint).
    pub fn shard_of(
        &self,
        k: usize,
        read: &mut dyn FnMut(&str, usize) -> Result<Vec<E>>,
    ) -> Result<Vec<E>> {
        let unit = &self.units[k];
        let mut flat = Vec::with_capacity(unit.layout.padded());
        for (&g, &len) in unit.own.iter().zip(&unit.layout.sizes) {
            flat.extend(read(&self.tensors[g].0, len)?);
        }
        flat.resize(unit.layout.padded(), E::zero());
        Ok(flat[unit.layout.range(self.collective.rank())].to_vec())
    }

    /// The shards' gradients summed so far, per unit (for a checkpoint inside a window).
    pub fn local_grads(&mut self) -> Result<Vec<Vec<Vec<E>>>> {
        let Self { params, grads, .. } = self;
        params
            .flats
            .iter()
            .map(|(_, t)| {
                let mut values = Vec::new();
                t.with_grad(grads, &mut |g| values = g.to_vec())?;
                Ok(vec![values])
            })
            .collect()
    }

    /// Sets the shards' summed gradients to `per_unit` (one buffer per unit).
    pub fn set_local_grads(&mut self, per_unit: Vec<Vec<E>>) -> Result<()> {
        let Self { params, grads, .. } = self;
        for ((_, t), values) in params.flats.iter().zip(per_unit) {
            t.with_grad(grads, &mut |g| g.copy_from_slice(&values))?;
        }
        Ok(())
    }

    /// This rank's shard of every unit's parameters.
    pub fn local_params(&self) -> Vec<Vec<E>> {
        self.params.flats.iter().map(|(_, t)| t.as_vec()).collect()
    }

    /// How the ranks' shards make the model's tensors (what a sharded checkpoint records).
    pub fn layout(&self) -> ShardLayout {
        ShardLayout {
            world: self.collective.world_size(),
            units: self
                .units
                .iter()
                .map(|u| UnitLayout {
                    tensors: (u.own.iter())
                        .map(|&g| (self.tensors[g].0.clone(), self.dims[g].clone()))
                        .collect(),
                    shard: u.layout.shard,
                })
                .collect(),
        }
    }

    /// Unit `k`'s name: its parameters' common prefix.
    pub fn unit_name(&self, k: usize) -> &str {
        self.units.get(k).map_or("?", |u| u.name.as_str())
    }

    /// The units by number, with their names (what the optimizer's state is named by).
    pub fn unit_names(&self) -> impl Iterator<Item = &str> {
        self.units.iter().map(|u| u.name.as_str())
    }

    /// Every rank's `mine`, in rank order.
    fn all_gather(&self, mine: Vec<E>) -> Result<Vec<E>> {
        let c = &*self.collective;
        let n = mine.len() * c.world_size();
        if std::mem::size_of::<E>() == 8 {
            let mut all = vec![0.0; n];
            c.all_gather_f64(&cast::<E, f64>(mine), &mut all)?;
            Ok(cast(all))
        } else {
            let mut all = vec![0.0f32; n];
            c.all_gather_f32(&cast::<E, f32>(mine), &mut all)?;
            Ok(cast(all))
        }
    }
}

/// Each unit's shard for `rank` of the values `model` holds, one unit at a time: the unit's
/// tensors are released as soon as its shard is cut, so that no rank holds more than the model
/// and one unit's shard.
fn shard_values<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
    model: &mut M,
    units: &[UnitShard],
    tensors: &[(String, usize)],
    rank: usize,
) -> Result<Vec<(String, Flat<E, D>)>> {
    let mut shards = Vec::with_capacity(units.len());
    for (k, u) in units.iter().enumerate() {
        let mut values = Vec::with_capacity(u.layout.padded());
        let mut device = None;
        let mut g = 0;
        TensorsMut(&mut *model).each_mut(&mut |_, t| {
            if tensors[g].1 == k {
                values.extend(t.values());
                device.get_or_insert_with(|| t.device());
                t.release()?;
            }
            g += 1;
            Ok(())
        })?;
        let device =
            device.ok_or_else(|| Error::msg(format!("unit `{}` has no tensors", u.name)))?;
        values.resize(u.layout.padded(), E::zero());
        let mine = values[u.layout.range(rank)].to_vec();
        drop(values);
        let n = mine.len();
        // Named for what the gradient checks report: the unit, not one tensor.
        let name = format!("unit {}", u.name);
        shards.push((name, device.try_tensor_from_vec(mine, (n,))?));
    }
    Ok(shards)
}

/// The dotted prefix `names` share (`body.0` of `body.0.0.weight` and `body.0.2.bias`).
fn common_prefix(names: &[&str]) -> String {
    let mut parts: Vec<&str> = names.first().map_or(Vec::new(), |n| n.split('.').collect());
    for name in names.iter().skip(1) {
        let same = parts
            .iter()
            .zip(name.split('.'))
            .take_while(|(a, b)| *a == b)
            .count();
        parts.truncate(same);
    }
    if parts.is_empty() {
        names.first().map_or(String::new(), |n| n.to_string())
    } else {
        parts.join(".")
    }
}

#[cfg(test)]
mod tests;

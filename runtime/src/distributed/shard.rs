//! FSDP's `SHARD_GRAD_OP` (ZeRO-2) by parameter tensor: each trainable tensor belongs to one
//! rank — contiguous runs in walk order, split by size — which alone keeps its optimizer
//! state. At a step the gradients are summed onto their owners (a reduce per owner, in
//! buckets: the reduce-scatter), each owner steps its tensors, and every owner sends its new
//! values to the others (the all-gather). Checkpoints gather the optimizer state onto every
//! rank first, so a sharded run's checkpoint holds all of it and resumes on any number of
//! ranks.
//!
//! What is partitioned is the optimizer state and the step; each rank still holds every
//! gradient until the reduce (dfdx allocates them all), so the saving is Adam's two buffers
//! per parameter, not the gradients' memory.

use dfdx::nn::TensorCollection;
use dfdx::tensor::Gradients;
use num_traits::NumCast;

use super::{Collective, BUCKET};
use crate::walk::{self, Item, ItemMut};
use crate::{Error, FloatDtype, Result, TrainDevice};

/// Which rank owns each trainable tensor.
pub(crate) struct Shards {
    /// Per trainable tensor in walk order: its owner and its number of values.
    tensors: Vec<(usize, usize)>,
    rank: usize,
    world: usize,
}

impl Shards {
    /// Splits `module`'s trainable tensors into `world` contiguous runs of about equal size.
    pub fn new<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
        module: &M,
        rank: usize,
        world: usize,
    ) -> Result<Self> {
        let mut sizes = Vec::new();
        walk::read(module, |_, item| {
            if let Item::Tensor {
                tensor,
                trainable: true,
            } = item
            {
                sizes.push(tensor.dims().iter().product::<usize>());
            }
            Ok(())
        })?;
        let total: usize = sizes.iter().sum::<usize>().max(1);
        let mut start = 0;
        let tensors = sizes
            .into_iter()
            .map(|len| {
                let owner = (start * world / total).min(world - 1);
                start += len;
                (owner, len)
            })
            .collect();
        Ok(Self {
            tensors,
            rank,
            world,
        })
    }

    /// Per trainable tensor, whether this rank owns it.
    pub fn owned(&self) -> Vec<bool> {
        self.tensors.iter().map(|&(o, _)| o == self.rank).collect()
    }

    /// Per trainable tensor in walk order, its owner and its number of values.
    pub fn tensors(&self) -> &[(usize, usize)] {
        &self.tensors
    }

    /// The reduce-scatter: each gradient summed onto its owner and divided by the world size;
    /// the copies a rank does not own are zeroed (so that clipping and the anomaly check see
    /// each gradient once across ranks).
    pub fn reduce_grads<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
        &self,
        c: &dyn Collective,
        model: &M,
        grads: &mut Gradients<E, D>,
    ) -> Result<()> {
        if std::mem::size_of::<E>() == 8 {
            self.reduce_as::<f64, E, D, M>(c, model, grads, |c, r, v| c.reduce_sum_f64(r, v))
        } else {
            self.reduce_as::<f32, E, D, M>(c, model, grads, |c, r, v| c.reduce_sum_f32(r, v))
        }
    }

    fn reduce_as<
        W: num_traits::Float,
        E: FloatDtype,
        D: TrainDevice<E>,
        M: TensorCollection<E, D>,
    >(
        &self,
        c: &dyn Collective,
        model: &M,
        grads: &mut Gradients<E, D>,
        reduce: fn(&dyn Collective, usize, &mut [W]) -> Result<()>,
    ) -> Result<()> {
        let mut flat: Vec<W> = Vec::new();
        walk::each_grad(model, grads, |_, g| {
            flat.extend(
                g.iter()
                    .map(|v| <W as NumCast>::from(*v).unwrap_or_else(W::nan)),
            );
        })?;
        // Each owner's tensors are one contiguous run of the flat gradient.
        let mut start = 0;
        for owner in 0..self.world {
            let len: usize = self
                .tensors
                .iter()
                .filter(|&&(o, _)| o == owner)
                .map(|&(_, l)| l)
                .sum();
            for bucket in flat[start..start + len].chunks_mut(BUCKET) {
                reduce(c, owner, bucket)?;
            }
            start += len;
        }
        let inv = 1.0 / self.world as f64;
        let (mut at, mut index) = (0, 0);
        walk::each_grad(model, grads, |_, g| {
            let mine = self
                .tensors
                .get(index)
                .is_some_and(|&(o, _)| o == self.rank);
            for (dst, src) in g.iter_mut().zip(&flat[at..]) {
                *dst = if mine {
                    E::from(src.to_f64().unwrap_or(f64::NAN) * inv).unwrap_or_else(E::nan)
                } else {
                    E::zero()
                };
            }
            at += g.len();
            index += 1;
        })
    }

    /// The all-gather: every owner's tensors, as its step left them, on every rank.
    pub fn gather_params<E: FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
        &self,
        c: &dyn Collective,
        model: &mut M,
    ) -> Result<()> {
        for owner in 0..self.world {
            let mut bytes = Vec::new();
            if owner == self.rank {
                let mut index = 0;
                walk::read(model, |_, item| {
                    if let Item::Tensor {
                        tensor,
                        trainable: true,
                    } = item
                    {
                        if self.tensors[index].0 == owner {
                            super::to_wire(&tensor.values(), &mut bytes);
                        }
                        index += 1;
                    }
                    Ok(())
                })?;
            }
            c.broadcast(owner, &mut bytes)?;
            if owner == self.rank {
                continue;
            }
            let mut values = super::from_wire::<E>(&bytes);
            let mut index = 0;
            walk::write(model, |name, item| {
                if let ItemMut::Tensor {
                    tensor,
                    trainable: true,
                } = item
                {
                    let (o, len) = self.tensors[index];
                    index += 1;
                    if o == owner {
                        let new: Vec<E> = values.by_ref().take(len).collect();
                        if new.len() != len {
                            return Err(Error::msg(format!(
                                "rank {owner} sent too few values for `{name}`: the ranks do not build the same model"
                            )));
                        }
                        tensor.set_values(&new);
                    }
                }
                Ok(())
            })?;
        }
        Ok(())
    }
}

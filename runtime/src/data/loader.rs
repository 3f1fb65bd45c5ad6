use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;

use rand::seq::SliceRandom;
use rand::SeedableRng;

use super::Dataset;
use crate::{Error, Result};

/// Batches of samples from a [`Dataset`], as PyTorch's `DataLoader`: `batch_size`, seeded
/// `shuffle` (a new order every epoch, the same orders for the same seed), `drop_last`, and
/// `num_workers` threads that prefetch the next batches while the model trains.
///
/// ```
/// use fulmen::data::{DataLoader, InMemoryDataset};
/// let loader = DataLoader::new(InMemoryDataset::new((0..10).collect::<Vec<u32>>()), 4).drop_last(true);
/// let batches: Vec<Vec<u32>> = loader.epoch(0).collect();
/// assert_eq!(batches, vec![vec![0, 1, 2, 3], vec![4, 5, 6, 7]]);
/// ```
pub struct DataLoader<S> {
    dataset: Arc<dyn Dataset<Item = S>>,
    batch_size: usize,
    shuffle: bool,
    drop_last: bool,
    num_workers: usize,
    seed: u64,
    /// This rank's share of every epoch (the distributed sampler).
    shard: Option<Shard>,
}

/// Rank `rank` of `world` takes every `world`-th sample from its rank on; `padded`: of the
/// order padded to a multiple of `world`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shard {
    rank: usize,
    world: usize,
    padded: bool,
}

impl<S> Clone for DataLoader<S> {
    fn clone(&self) -> Self {
        Self {
            dataset: self.dataset.clone(),
            batch_size: self.batch_size,
            shuffle: self.shuffle,
            drop_last: self.drop_last,
            num_workers: self.num_workers,
            seed: self.seed,
            shard: self.shard,
        }
    }
}

impl<S: Send + 'static> std::fmt::Debug for DataLoader<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataLoader")
            .field("len", &self.dataset.len())
            .field("batch_size", &self.batch_size)
            .field("shuffle", &self.shuffle)
            .field("drop_last", &self.drop_last)
            .field("num_workers", &self.num_workers)
            .finish()
    }
}

impl<S: Send + 'static> DataLoader<S> {
    /// A loader over `dataset` in batches of `batch_size`, in order, keeping the last partial
    /// batch. Its shuffle seed is drawn from fulmen's global seed ([`crate::seed_everything`]).
    pub fn new(dataset: impl Dataset<Item = S> + 'static, batch_size: usize) -> Self {
        Self {
            dataset: Arc::new(dataset),
            batch_size,
            shuffle: false,
            drop_last: false,
            num_workers: 0,
            seed: crate::seed::next_seed(),
            shard: None,
        }
    }

    /// Rank `rank` of `world` sees every `world`-th sample of each epoch's order, starting at
    /// its rank, after the order is padded with its own first samples to a multiple of
    /// `world` (PyTorch's `DistributedSampler`: every rank the same number of batches, each
    /// sample once per epoch but for the padding). The trainer sets it under DDP.
    pub fn distributed(mut self, rank: usize, world: usize) -> Self {
        self.shard = (world > 1).then_some(Shard {
            rank,
            world,
            padded: true,
        });
        self
    }

    /// Rank `rank` of `world` sees every `world`-th sample of each epoch's order, starting at
    /// its rank, without padding (Lightning's `UnrepeatedDistributedSampler`): every sample
    /// exactly once over the ranks, whose shares differ by at most one sample, so that a
    /// metric over them all counts none twice. The trainer evaluates so under DDP. When the
    /// last rank's share would hold no batch (fewer samples than ranks, or `drop_last` with a
    /// share below the batch size), the shares are padded as [`distributed`](Self::distributed)
    /// pads them, so that every rank runs the same loops (the same on every rank: it depends
    /// on the sizes alone).
    pub fn distributed_unrepeated(mut self, rank: usize, world: usize) -> Self {
        let unrepeated = Shard {
            rank,
            world,
            padded: false,
        };
        self.shard = (world > 1).then_some(unrepeated);
        if world > 1 && self.batches_of(world - 1) == 0 {
            return self.distributed(rank, world);
        }
        self
    }

    /// Visit the samples in a new random order every epoch.
    pub fn shuffle(mut self, shuffle: bool) -> Self {
        self.shuffle = shuffle;
        self
    }

    /// Drop the last batch when it is smaller than `batch_size`.
    pub fn drop_last(mut self, drop_last: bool) -> Self {
        self.drop_last = drop_last;
        self
    }

    /// Threads that fetch samples ahead of the training loop (0: fetch on the loop's thread).
    pub fn num_workers(mut self, num_workers: usize) -> Self {
        self.num_workers = num_workers;
        self
    }

    /// The seed of the shuffle order (epoch `k` uses an order derived from it and `k`).
    pub fn seed(mut self, seed: u64) -> Self {
        self.seed = seed;
        self
    }

    /// The seed of the shuffle order.
    pub fn shuffle_seed(&self) -> u64 {
        self.seed
    }

    /// The number of samples per batch (the last may have fewer unless `drop_last`).
    pub fn batch_size(&self) -> usize {
        self.batch_size
    }

    /// The number of samples in the dataset.
    pub fn num_samples(&self) -> usize {
        self.dataset.len()
    }

    /// The number of batches in one epoch (of this rank's share, under DDP).
    pub fn len(&self) -> usize {
        self.batches_of(self.shard.map_or(0, |s| s.rank))
    }

    /// The number of batches of the largest rank's share (rank 0's): what every rank decides
    /// by (whether to validate, how many batches a limit allows), so that they decide alike
    /// when an unrepeated share leaves some ranks a batch fewer.
    pub fn len_largest_share(&self) -> usize {
        self.batches_of(0)
    }

    fn batches_of(&self, rank: usize) -> usize {
        let n = match self.shard {
            Some(Shard { world, padded, .. }) if padded => self.dataset.len().div_ceil(world),
            Some(Shard { world, .. }) => {
                (self.dataset.len() + world - 1).saturating_sub(rank) / world
            }
            None => self.dataset.len(),
        };
        match self.batch_size {
            0 => 0,
            b if self.drop_last => n / b,
            b => n.div_ceil(b),
        }
    }

    /// Whether an epoch has no batches.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Refuses settings that cannot produce batches.
    pub fn validate(&self, name: &str) -> Result<()> {
        if self.batch_size == 0 {
            return Err(Error::config(
                format!("{name}.batch_size"),
                "must be at least 1",
            ));
        }
        if self.dataset.is_empty() {
            return Err(Error::config(name, "the dataset is empty"));
        }
        if self.is_empty() {
            return Err(Error::config(
                name,
                format!(
                    "drop_last with batch_size {} leaves no batch of the {} samples",
                    self.batch_size,
                    self.dataset.len()
                ),
            ));
        }
        Ok(())
    }

    /// The sample indices of `epoch`, in visiting order.
    pub fn order(&self, epoch: usize) -> Vec<usize> {
        let mut order: Vec<usize> = (0..self.dataset.len()).collect();
        if self.shuffle {
            let seed = self
                .seed
                .wrapping_add((epoch as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15));
            order.shuffle(&mut rand::rngs::StdRng::seed_from_u64(seed));
        }
        if let Some(Shard {
            rank,
            world,
            padded,
        }) = self.shard
        {
            if padded {
                let to = order.len().div_ceil(world) * world;
                let pad: Vec<usize> = (order.iter().cycle())
                    .take(to - order.len())
                    .copied()
                    .collect();
                order.extend(pad);
            }
            order = order.into_iter().skip(rank).step_by(world).collect();
        }
        order
    }

    /// Where each batch of an order of `n` samples starts and ends.
    fn bounds(&self, n: usize) -> Vec<(usize, usize)> {
        let mut bounds: Vec<(usize, usize)> = (0..n)
            .step_by(self.batch_size.max(1))
            .map(|start| (start, (start + self.batch_size).min(n)))
            .collect();
        if self.drop_last {
            bounds.retain(|(s, e)| e - s == self.batch_size);
        }
        bounds
    }

    /// The dataset indices of each batch of `epoch`, in order (what a prediction writer
    /// is told of each batch).
    pub fn batch_indices(&self, epoch: usize) -> Vec<Vec<usize>> {
        let order = self.order(epoch);
        (self.bounds(order.len()).into_iter())
            .map(|(s, e)| order[s..e].to_vec())
            .collect()
    }

    /// The batches of `epoch`.
    pub fn epoch(&self, epoch: usize) -> BatchIter<S> {
        self.epoch_from(epoch, 0)
    }

    /// The batches of `epoch` from batch `first` on, the earlier ones neither loaded nor
    /// collated (how a run resumed inside an epoch continues).
    pub fn epoch_from(&self, epoch: usize, first: usize) -> BatchIter<S> {
        let order = self.order(epoch);
        let mut bounds = self.bounds(order.len());
        bounds.drain(..first.min(bounds.len()));
        let order = Arc::new(order);
        if self.num_workers == 0 {
            return BatchIter {
                source: Source::Inline {
                    dataset: self.dataset.clone(),
                    order,
                    bounds,
                    epoch,
                },
                next: 0,
            };
        }
        let bounds = Arc::new(bounds);
        let workers = (0..self.num_workers)
            .map(|w| {
                let (tx, rx) = sync_channel(2);
                let (dataset, order, bounds) =
                    (self.dataset.clone(), order.clone(), bounds.clone());
                let step = self.num_workers;
                std::thread::spawn(move || {
                    for &(s, e) in bounds.iter().skip(w).step_by(step) {
                        let batch: Vec<S> = order[s..e]
                            .iter()
                            .map(|&i| dataset.get_in_epoch(i, epoch))
                            .collect();
                        if tx.send(batch).is_err() {
                            return; // the loop stopped early
                        }
                    }
                });
                rx
            })
            .collect();
        BatchIter {
            source: Source::Workers {
                workers,
                total: bounds.len(),
            },
            next: 0,
        }
    }
}

enum Source<S> {
    Inline {
        dataset: Arc<dyn Dataset<Item = S>>,
        order: Arc<Vec<usize>>,
        bounds: Vec<(usize, usize)>,
        epoch: usize,
    },
    Workers {
        workers: Vec<Receiver<Vec<S>>>,
        total: usize,
    },
}

/// The batches of one epoch, in order.
pub struct BatchIter<S> {
    source: Source<S>,
    next: usize,
}

impl<S: Send + 'static> Iterator for BatchIter<S> {
    type Item = Vec<S>;

    fn next(&mut self) -> Option<Vec<S>> {
        let i = self.next;
        self.next += 1;
        match &self.source {
            Source::Inline {
                dataset,
                order,
                bounds,
                epoch,
            } => {
                let &(s, e) = bounds.get(i)?;
                Some(
                    order[s..e]
                        .iter()
                        .map(|&j| dataset.get_in_epoch(j, *epoch))
                        .collect(),
                )
            }
            Source::Workers { workers, total } => {
                if i >= *total {
                    return None;
                }
                // A worker that died (a panicking Dataset::get) ends the epoch early; the
                // trainer reports the short epoch instead of hanging.
                workers[i % workers.len()].recv().ok()
            }
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let total = match &self.source {
            Source::Inline { bounds, .. } => bounds.len(),
            Source::Workers { total, .. } => *total,
        };
        let left = total.saturating_sub(self.next);
        (0, Some(left))
    }
}

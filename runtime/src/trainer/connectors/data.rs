//! The data module's loaders (or the module's own, [`crate::module_data`]) as the loops take
//! them (Lightning's `data_connector.py`): each stage's loader checked, and under DDP this
//! rank's share of it.

use crate::checkpoint::Ckpt;
use crate::data::DataLoader;
use crate::datamodule::{DataModule, Stage};
use crate::module::LightningModule;
use crate::module_data::LoadersOf;
use crate::trainer::loops::Run;
use crate::trainer::settings::Limit;
use crate::{Error, Result, TrainDevice};

/// Where a stage's loaders come from, as functions of the module the stage runs and its data
/// module (made where the stage's types are known, `trainer/placement.rs`): the data module's
/// own, or the module's (`DataModule::Source`).
pub(in crate::trainer) struct Serving<M, DM: DataModule> {
    whose: &'static str,
    train: Ask<M, DM, Option<DataLoader<DM::Sample>>>,
    has_val: fn(&M, &DM) -> bool,
    val: Ask<M, DM, Vec<DataLoader<DM::EvalSample>>>,
    test: Ask<M, DM, Vec<DataLoader<DM::EvalSample>>>,
    predict: Ask<M, DM, Option<DataLoader<DM::PredictSample>>>,
}

/// A loader asked of the module or the data module.
type Ask<M, DM, L> = fn(&mut M, &mut DM) -> Result<L>;

impl<M, DM: DataModule> Serving<M, DM> {
    /// The loaders of `L` (a data module's `Source`).
    pub(in crate::trainer) fn of<L: LoadersOf<M, DM>>() -> Self {
        Self {
            whose: L::WHOSE,
            train: L::train,
            has_val: L::has_val,
            val: L::val,
            test: L::test,
            predict: L::predict,
        }
    }
}

impl<E: Ckpt, D: TrainDevice<E>, M: LightningModule<E, D>, DM: DataModule> Run<'_, E, D, M, DM> {
    /// Whether validation loaders are defined (Lightning's condition for a sanity check).
    pub(in crate::trainer) fn has_val_loaders(&self) -> bool {
        (self.serving.has_val)(self.model, self.dm)
    }

    /// The training loader (unshuffled for `overfit_batches`); sets the epoch's batches.
    pub(in crate::trainer) fn train_loader(&mut self) -> Result<DataLoader<DM::Sample>> {
        let train = (self.serving.train)(self.model, self.dm)?;
        let mut train = self.shard(
            train.ok_or_else(|| missing(self.serving.whose, "train_dataloader", Stage::Fit))?,
            true,
        )?;
        train.validate("train_dataloader")?;
        if self.settings.overfit_batches != Limit::Count(0) {
            train = train.shuffle(false);
        }
        let limit = self.settings.limit_train_batches;
        self.position.train_batches = limit.of(train.len(), "limit_train_batches")?;
        Ok(train)
    }

    /// Fit's validation loaders: none unless the module validates and `limit_val_batches`
    /// lets a batch through.
    pub(in crate::trainer) fn val_loaders(&mut self) -> Result<Vec<DataLoader<DM::EvalSample>>> {
        let mut val = Vec::new();
        if M::HAS_VALIDATION_STEP {
            for loader in (self.serving.val)(self.model, self.dm)? {
                let loader = self.shard(loader, self.eval_padded())?;
                loader.validate("val_dataloader")?;
                val.push(loader);
            }
        }
        // limit_val_batches=0 turns validation off.
        let limit = &self.settings.limit_val_batches;
        let counts = (val.iter())
            .map(|l| limit.of(l.len_largest_share(), "limit_val_batches"))
            .collect::<Result<Vec<_>>>()?;
        if counts.iter().all(|&n| n == 0) {
            val.clear();
        }
        Ok(val)
    }

    /// The validation or test loaders, for `validate` or `test`.
    pub(in crate::trainer) fn eval_loaders(
        &mut self,
        stage: Stage,
    ) -> Result<Vec<DataLoader<DM::EvalSample>>> {
        let (loaders, what) = match stage {
            Stage::Validate => ((self.serving.val)(self.model, self.dm)?, "val_dataloader"),
            _ => ((self.serving.test)(self.model, self.dm)?, "test_dataloader"),
        };
        if loaders.is_empty() {
            return Err(missing(self.serving.whose, what, stage));
        }
        let mut sharded = Vec::new();
        for loader in loaders {
            let loader = self.shard(loader, self.eval_padded())?;
            loader.validate(what)?;
            sharded.push(loader);
        }
        self.require_step(stage)?;
        Ok(sharded)
    }

    /// The prediction loader, for `predict`.
    /// Under DDP, this rank's share (the distributed sampler's, of rank 0's order when it
    /// shuffles): a writer of the predictions gathers them.
    pub(in crate::trainer) fn predict_loader(&mut self) -> Result<DataLoader<DM::PredictSample>> {
        let loader = (self.serving.predict)(self.model, self.dm)?;
        let loader = loader
            .ok_or_else(|| missing(self.serving.whose, "predict_dataloader", Stage::Predict))?;
        self.require_step(Stage::Predict)?;
        self.shard(loader, true)
    }

    /// Under DDP with the distributed sampler, this rank's share of `loader`, of rank 0's
    /// shuffle seed (so that the ranks split one order); `padded` to as many batches on every
    /// rank (PyTorch's `DistributedSampler`), or else each sample once.
    fn shard<S: Send + 'static>(
        &self,
        loader: DataLoader<S>,
        padded: bool,
    ) -> Result<DataLoader<S>> {
        let (env, c) = (&self.dist.env, &*self.dist.collective);
        if env.world_size == 1 || !self.dist.sampler {
            return Ok(loader);
        }
        let mut seed = loader.shuffle_seed().to_le_bytes().to_vec();
        c.broadcast(0, &mut seed)?;
        let seed = seed
            .try_into()
            .map(u64::from_le_bytes)
            .map_err(|_| Error::msg("rank 0 sent a malformed shuffle seed"))?;
        let (loader, rank, world) = (loader.seed(seed), env.global_rank, env.world_size);
        Ok(match padded {
            true => loader.distributed(rank, world),
            false => loader.distributed_unrepeated(rank, world),
        })
    }

    /// Whether the evaluation loaders are padded to as many batches on every rank: only
    /// under FULL_SHARD, whose forward gathers every rank's parameters at each batch. Else
    /// each sample is evaluated once, so that the metrics over the ranks count none twice.
    fn eval_padded(&self) -> bool {
        self.dist.strategy == crate::distributed::Strategy::FullShard
    }

    /// An error unless the module wrote the step `stage` runs.
    fn require_step(&self, stage: Stage) -> Result<()> {
        let (has, step) = match stage {
            Stage::Validate => (M::HAS_VALIDATION_STEP, "validation_step"),
            Stage::Test => (M::HAS_TEST_STEP, "test_step"),
            Stage::Predict => (M::HAS_PREDICT_STEP, "predict_step"),
            Stage::Fit => (true, "training_step"),
        };
        if has {
            return Ok(());
        }
        Err(Error::config(
            stage.as_str(),
            format!(
                "`{}` has no `{step}`; write one in its #[lightning_module] impl",
                M::NAME
            ),
        ))
    }
}

/// The error of a stage whose loader the data module (or, `whose`, the module) does not give.
fn missing(whose: &str, what: &str, stage: Stage) -> Error {
    Error::config(
        what,
        format!(
            "`{}` needs data: {whose} `{what}` returned none",
            stage.as_str()
        ),
    )
}

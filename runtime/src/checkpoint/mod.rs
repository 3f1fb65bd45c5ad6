//! Checkpoints: everything needed to continue a run exactly where it stopped.
//!
//! A checkpoint is one [safetensors](https://github.com/huggingface/safetensors) file. Its
//! tensors are the module's weights under their dotted names (`layer_1.weight`, what
//! `safetensors.torch.load_file` returns to a PyTorch user) and the optimizer's buffers under
//! `optimizer/<parameter>/<buffer>`. Its header metadata holds, as JSON, the hyperparameters,
//! the loop position (epoch, global step, batches done inside the epoch), the seeds of the
//! random streams, the optimizer's settings and step count, the state of every callback and of
//! the data module, what hooks added, the fulmen version, and a CRC-32 over all of it, so that
//! a truncated or damaged file is refused instead of loaded.
//!
//! ```no_run
//! # use fulmen::checkpoint::Checkpoint;
//! let ckpt = Checkpoint::read("lightning_logs/version_0/checkpoints/last.ckpt")?;
//! println!("epoch {:?}, lr {:?}", ckpt.epoch(), ckpt.hparams().get::<f64>("lr"));
//! # Ok::<(), fulmen::Error>(())
//! ```

mod file;
pub(crate) mod float;
pub(crate) mod sharded;
pub(crate) mod tensors;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::{FloatDtype, TrainDevice};
use dfdx::nn::TensorCollection;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub(crate) use tensors::Ckpt;
pub use tensors::CkptDtype;

use crate::hparams::HParams;
use crate::{Error, Result};

/// One stored tensor: dtype, shape and little-endian bytes.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Record {
    pub dtype: safetensors::Dtype,
    pub shape: Vec<usize>,
    pub data: Vec<u8>,
}

pub(crate) type Records = BTreeMap<String, Record>;

/// A module's configuration scalars by name (batch norm's `epsilon`), kept in the header.
pub(crate) type Scalars = BTreeMap<String, f64>;

/// The prefix of the optimizer's tensors. A `/` cannot occur in a module's field path, so
/// every name with one is training state, not a weight.
pub(crate) const OPTIMIZER_PREFIX: &str = "optimizer/";
/// The prefix of the tensors of the optimizer at `index` in `configure_optimizers`' order:
/// [`OPTIMIZER_PREFIX`] for the first, `optimizer_<index>/` for the others.
pub(crate) fn optimizer_prefix(index: usize) -> String {
    match index {
        0 => OPTIMIZER_PREFIX.to_string(),
        i => format!("optimizer_{i}/"),
    }
}

/// The prefix of gradients summed inside an unfinished accumulation window.
pub(crate) const GRADS_PREFIX: &str = "grads/";

/// Where a run continues: the epoch, and how far into it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct LoopState {
    pub epoch: usize,
    /// Training batches of `epoch` already done.
    pub batches_done: usize,
    /// Whether `epoch` is over (validation and epoch-end hooks done).
    pub epoch_done: bool,
    pub global_step: usize,
    /// The seed of the training device's random stream (dropout), drawn per step from it.
    pub run_seed: u64,
    /// The shuffle seed of the training loader (`None`: saved before the fit made it, in
    /// `on_fit_start` or the sanity check, when a resume keeps the loader's own).
    pub train_loader_seed: Option<u64>,
    pub callback_metrics: BTreeMap<String, float::F64>,
    /// The epoch-level values logged so far in `epoch`.
    pub epoch_metrics: Value,
    /// Which parameters were frozen (`TrainerView::freeze`).
    #[serde(default, skip_serializing_if = "crate::freeze::Freezing::is_empty")]
    pub freezing: crate::freeze::Freezing,
}

/// The optimizer's settings and step count (its buffers are tensors).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct OptimizerState {
    pub config: crate::optim::Optim,
    pub step: u64,
    /// The schedulers of its parameter groups after the default one (whose is beside it).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub group_schedulers: Vec<crate::optim::scheduler::SchedulerState>,
    /// Per parameter, the steps it sat out frozen (none: every parameter took every step).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub skipped: BTreeMap<String, u64>,
}

/// An optimizer after the first (manual optimization): its state and its scheduler's.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct MoreOptimizer {
    pub optimizer: OptimizerState,
    pub scheduler: Option<crate::optim::scheduler::SchedulerState>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub(crate) struct Meta {
    pub fulmen_version: String,
    pub module: String,
    pub weights_only: bool,
    pub hparams: HParams,
    pub datamodule_hparams: HParams,
    pub loop_state: Option<LoopState>,
    pub optimizer: Option<OptimizerState>,
    #[serde(default)]
    pub scheduler: Option<crate::optim::scheduler::SchedulerState>,
    /// The optimizers after the first, in `configure_optimizers`' order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub more_optimizers: Vec<MoreOptimizer>,
    #[serde(default)]
    pub loss_scaler: Option<crate::precision::scaler::LossScaler>,
    /// The module's `#[metric]` fields' states, every rank's added up, by field.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub metrics: BTreeMap<String, crate::metrics::State>,
    pub callbacks: BTreeMap<String, Value>,
    pub datamodule: Option<Value>,
    pub extra: BTreeMap<String, Value>,
    /// The modules' configuration scalars (batch norm's `epsilon`, `momentum`), by name.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub scalars: Scalars,
    /// In a sharded checkpoint's files: how the ranks' shards make the whole tensors.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layout: Option<sharded::Layout>,
}

/// A checkpoint in memory: read from a file, or being built by the trainer (hooks see it in
/// `on_save_checkpoint` / `on_load_checkpoint`).
#[derive(Debug, Clone)]
pub struct Checkpoint {
    pub(crate) records: Records,
    pub(crate) meta: Meta,
    path: Option<PathBuf>,
}

impl Checkpoint {
    /// A checkpoint holding `module`'s weights and hyperparameters only.
    pub fn of_module<E: CkptDtype + FloatDtype, D: TrainDevice<E>, M>(
        module: &M,
        name: &str,
    ) -> Result<Self>
    where
        M: TensorCollection<E, D> + crate::Hyperparameters,
    {
        let (mut records, mut scalars) = (Records::new(), Scalars::new());
        tensors::collect(module, &mut records, &mut scalars)?;
        let mut ckpt = Self::of_records(records, module.hparams(), name);
        ckpt.meta.scalars = scalars;
        Ok(ckpt)
    }

    /// A weights-only checkpoint of `records` and `hparams`, written by module `name`.
    fn of_records(records: Records, hparams: HParams, name: &str) -> Self {
        Checkpoint {
            records,
            meta: Meta {
                fulmen_version: env!("CARGO_PKG_VERSION").to_string(),
                module: name.to_string(),
                weights_only: true,
                hparams,
                datamodule_hparams: HParams::new(),
                loop_state: None,
                optimizer: None,
                scheduler: None,
                more_optimizers: Vec::new(),
                loss_scaler: None,
                metrics: BTreeMap::new(),
                callbacks: BTreeMap::new(),
                datamodule: None,
                extra: BTreeMap::new(),
                scalars: Scalars::new(),
                layout: None,
            },
            path: None,
        }
    }

    /// A sharded checkpoint's part of `module`: its buffers and scalars when `root` (the
    /// trainable tensors go in as shards), nothing else.
    pub(crate) fn of_module_buffers<E: CkptDtype + FloatDtype, D: TrainDevice<E>, M>(
        module: &M,
        name: &str,
        root: bool,
    ) -> Result<Self>
    where
        M: TensorCollection<E, D> + crate::Hyperparameters,
    {
        let mut ckpt = Self::of_records(Records::new(), module.hparams(), name);
        if root {
            tensors::collect_buffers(module, &mut ckpt.records, &mut ckpt.meta.scalars)?;
        }
        Ok(ckpt)
    }

    /// Reads and verifies the checkpoint at `path`: a file, or the directory of a sharded
    /// checkpoint (FULL_SHARD's `state_dict_type("sharded")`), read whole.
    pub fn read(path: impl AsRef<Path>) -> Result<Self> {
        let path = path.as_ref();
        if path.is_dir() {
            return Self::read_sharded(path);
        }
        let (records, meta) = file::read(path)?;
        let meta: Meta = serde_json::from_str(&meta)
            .map_err(|e| Error::data(path, format!("its fulmen metadata cannot be read: {e}")))?;
        Ok(Checkpoint {
            records,
            meta,
            path: Some(path.to_path_buf()),
        })
    }

    /// A sharded checkpoint's files, each verified, put back together.
    fn read_sharded(dir: &Path) -> Result<Self> {
        let world = sharded::world_of(dir)?;
        let mut parts = Vec::with_capacity(world);
        let mut first = None;
        for rank in 0..world {
            let (records, meta) = file::read(&sharded::part(dir, rank, world))?;
            first.get_or_insert(meta);
            parts.push(records);
        }
        let meta: Meta = serde_json::from_str(first.as_deref().unwrap_or_default())
            .map_err(|e| Error::data(dir, format!("its fulmen metadata cannot be read: {e}")))?;
        let layout = match &meta.layout {
            Some(l) if l.world == world => l,
            Some(l) => {
                return Err(Error::data(
                    dir,
                    format!("its layout is of {} ranks, its files of {world}", l.world),
                ))
            }
            None => return Err(Error::data(dir, "rank 0's file has no shard layout")),
        };
        let records = sharded::assemble(dir, layout, parts)?;
        Ok(Checkpoint {
            records,
            meta: Meta {
                layout: None,
                ..meta
            },
            path: Some(dir.to_path_buf()),
        })
    }

    /// Writes rank `rank`'s file of a sharded checkpoint of `world` ranks bound for `path`
    /// into the directory every rank stages it in ([`sharded::commit`] moves it into place).
    pub(crate) fn write_part(&self, path: &Path, rank: usize, world: usize) -> Result<()> {
        let meta = serde_json::to_string(&self.meta)
            .map_err(|e| Error::msg(format!("the checkpoint's metadata cannot be written: {e}")))?;
        file::write(
            &sharded::part(&sharded::staging(path), rank, world),
            &self.records,
            &meta,
        )
    }

    /// Writes the checkpoint to `path` atomically: a failure leaves any earlier file there whole.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<()> {
        let meta = serde_json::to_string(&self.meta)
            .map_err(|e| Error::msg(format!("the checkpoint's metadata cannot be written: {e}")))?;
        file::write(path.as_ref(), &self.records, &meta)
    }

    /// The saved state of the module's metric field `field` (`field/member` for a
    /// collection's), as rank 0 had it when the checkpoint was written.
    pub fn metric_state(&self, field: &str) -> Option<&crate::metrics::State> {
        self.meta.metrics.get(field)
    }

    /// The file this checkpoint was read from.
    pub fn path(&self) -> Option<&Path> {
        self.path.as_deref()
    }
    /// The module's hyperparameters.
    pub fn hparams(&self) -> &HParams {
        &self.meta.hparams
    }
    /// The data module's hyperparameters.
    pub fn datamodule_hparams(&self) -> &HParams {
        &self.meta.datamodule_hparams
    }
    /// The name of the module struct that wrote it.
    pub fn module_name(&self) -> &str {
        &self.meta.module
    }
    /// The version of fulmen that wrote it.
    pub fn fulmen_version(&self) -> &str {
        &self.meta.fulmen_version
    }
    /// Whether it holds weights only (no optimizer or loop state: it cannot resume a run).
    pub fn weights_only(&self) -> bool {
        self.meta.weights_only
    }
    /// The epoch it was saved in.
    pub fn epoch(&self) -> Option<usize> {
        self.meta.loop_state.as_ref().map(|l| l.epoch)
    }
    /// Optimizer steps taken when it was saved.
    pub fn global_step(&self) -> Option<usize> {
        self.meta.loop_state.as_ref().map(|l| l.global_step)
    }
    /// The names of the stored tensors.
    pub fn tensor_names(&self) -> impl Iterator<Item = &str> {
        self.records.keys().map(String::as_str)
    }
    /// A stored tensor's values (as f64), in row-major order.
    pub fn tensor(&self, name: &str) -> Result<Vec<f64>> {
        self.records
            .get(name)
            .ok_or_else(|| Error::msg(format!("the checkpoint has no tensor `{name}`")))?
            .values::<f64>(name)
    }
    /// Stores `values` (`f32`, row-major, as many as `shape` holds) as the tensor `name`, in
    /// place of one of that name (how a callback adds a tensor in `on_save_checkpoint`).
    pub fn set_tensor(&mut self, name: &str, shape: Vec<usize>, values: &[f32]) -> Result<()> {
        let count: usize = shape.iter().product();
        if count != values.len() {
            return Err(Error::msg(format!(
                "{} values for tensor `{name}` of shape {shape:?}",
                values.len()
            )));
        }
        self.records
            .insert(name.to_string(), Record::from_values(shape, values));
        Ok(())
    }
    /// Renames the stored tensor `from` to `to` (its values and dtype as they are).
    pub fn rename_tensor(&mut self, from: &str, to: &str) -> Result<()> {
        let record = (self.records.remove(from))
            .ok_or_else(|| Error::msg(format!("the checkpoint has no tensor `{from}`")))?;
        self.records.insert(to.to_string(), record);
        Ok(())
    }
    /// Drops the stored tensor `name` (one the model no longer has), returning its values in
    /// `f32`.
    pub fn remove_tensor(&mut self, name: &str) -> Result<Vec<f32>> {
        let record = (self.records.get(name))
            .ok_or_else(|| Error::msg(format!("the checkpoint has no tensor `{name}`")))?;
        let values = record.values::<f32>(name)?;
        self.records.remove(name);
        Ok(values)
    }
    /// Renames the field `from` to `to` (dotted paths: `"encoder"`, `"backbone.layer1"`):
    /// every tensor under it, with the optimizers' buffers of its parameters
    /// (`optimizer/<name>/…`, `optimizer_1/…`), their kept gradients (`grads/<name>`) and the
    /// layers' scalars (batch norm's `epsilon`). How a module whose field was renamed resumes
    /// (in `on_load_checkpoint`). An error when nothing is stored under `from`.
    pub fn rename_field(&mut self, from: &str, to: &str) -> Result<()> {
        let (from, to) = (format!("{from}."), format!("{to}."));
        let mut any = false;
        for name in self.records.keys().cloned().collect::<Vec<_>>() {
            if let Some(new) = renamed(&name, &from, &to) {
                if let Some(record) = self.records.remove(&name) {
                    self.records.insert(new, record);
                    any = true;
                }
            }
        }
        for name in self.meta.scalars.keys().cloned().collect::<Vec<_>>() {
            if let Some(new) = renamed(&name, &from, &to) {
                if let Some(value) = self.meta.scalars.remove(&name) {
                    self.meta.scalars.insert(new, value);
                }
            }
        }
        if !any {
            return Err(Error::msg(format!(
                "the checkpoint has no tensor under `{}`",
                from.trim_end_matches('.')
            )));
        }
        Ok(())
    }
    /// Every stored tensor whose name starts with `prefix`, by the rest of its name, in
    /// `f32` (what a callback put there with [`set_tensor`](Self::set_tensor)).
    pub fn tensors_under(&self, prefix: &str) -> Result<Vec<(String, Vec<f32>)>> {
        let under = self
            .records
            .iter()
            .filter_map(|(name, record)| Some((name, name.strip_prefix(prefix)?, record)));
        under
            .map(|(name, rest, record)| Ok((rest.to_string(), record.values::<f32>(name)?)))
            .collect()
    }
    /// A stored tensor's shape.
    pub fn tensor_shape(&self, name: &str) -> Option<&[usize]> {
        self.records.get(name).map(|r| r.shape.as_slice())
    }
    /// What a callback stored under `key`.
    pub fn callback_state(&self, key: &str) -> Option<&Value> {
        self.meta.callbacks.get(key)
    }
    /// What the data module's `state_dict` returned.
    pub fn datamodule_state(&self) -> Option<&Value> {
        self.meta.datamodule.as_ref()
    }
    /// Entries added by `on_save_checkpoint` hooks.
    pub fn extra(&self) -> &BTreeMap<String, Value> {
        &self.meta.extra
    }
    /// Room for `on_save_checkpoint` hooks to add entries of their own.
    pub fn extra_mut(&mut self) -> &mut BTreeMap<String, Value> {
        &mut self.meta.extra
    }

    /// Loads the weights into `module`, refusing a checkpoint whose tensors do not match it
    /// (missing, extra or differently shaped), with the tensor's name.
    pub fn load_weights<E: CkptDtype + FloatDtype, D: TrainDevice<E>, M: TensorCollection<E, D>>(
        &self,
        module: &mut M,
    ) -> Result<()> {
        let used =
            tensors::load(module, &self.records, &self.meta.scalars).map_err(|e| self.error(e))?;
        let extra: Vec<&str> = self
            .records
            .keys()
            .filter(|k| !k.contains('/') && !used.contains(k))
            .map(String::as_str)
            .collect();
        if !extra.is_empty() {
            return Err(self.error(Error::msg(format!(
                "tensors {extra:?} are in the checkpoint but not in the model: it was written by another model"
            ))));
        }
        Ok(())
    }

    /// Loads the tensors stored under `field` (`field.…`) into `part`, a part of a module
    /// (PyTorch's `model.backbone.load_state_dict(...)` from a checkpoint of the whole
    /// model): how a fine-tuning run starts from another run's backbone. Refuses a checkpoint
    /// whose tensors there do not match `part` (missing, extra or differently shaped), with the
    /// tensor's name.
    pub fn load_weights_of<E, D, M>(&self, field: &str, part: &mut M) -> Result<()>
    where
        E: CkptDtype + FloatDtype,
        D: TrainDevice<E>,
        M: TensorCollection<E, D>,
    {
        let prefix = format!("{field}.");
        let under = |name: &String| name.strip_prefix(&prefix).map(str::to_string);
        let records: Records = (self.records.iter())
            .filter_map(|(k, r)| under(k).map(|k| (k, r.clone())))
            .collect();
        let scalars: Scalars = (self.meta.scalars.iter())
            .filter_map(|(k, v)| under(k).map(|k| (k, *v)))
            .collect();
        if records.is_empty() {
            return Err(self.error(Error::msg(format!("it holds no tensor under `{field}`"))));
        }
        let used = tensors::load(part, &records, &scalars)
            .map_err(|e| self.error(Error::msg(format!("under `{field}`: {e}"))))?;
        let extra: Vec<String> = (records.keys())
            .filter(|k| !used.contains(k))
            .map(|k| format!("{prefix}{k}"))
            .collect();
        if !extra.is_empty() {
            return Err(self.error(Error::msg(format!(
                "tensors {extra:?} are in the checkpoint but not in the part loaded: it was written by another model"
            ))));
        }
        Ok(())
    }

    /// The values of stored tensor `name`, which must have `shape`; errors name the file.
    pub(crate) fn values<E: CkptDtype>(&self, name: &str, shape: &[usize]) -> Result<Vec<E>> {
        tensors::lookup(&self.records, name, shape)
            .and_then(|r| r.values(name))
            .map_err(|e| self.error(e))
    }

    /// `error`, naming this checkpoint's file when it came from one.
    pub(crate) fn error(&self, error: Error) -> Error {
        match &self.path {
            Some(path) => Error::data(path, error.to_string()),
            None => error,
        }
    }
}

/// Which checkpoint `Trainer::fit_from` resumes: a file, or the checkpoint callback's `last`
/// or `best` (Lightning's `ckpt_path="last"` / `"best"`), or none (`ckpt_path=None`: an
/// `Option` of any of these converts, so that a program passes its optional flag as it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CkptPath {
    /// No checkpoint: a fresh run.
    Fresh,
    /// The checkpoint file at this path.
    Path(PathBuf),
    /// The newest `last*.ckpt` where the checkpoint callbacks keep theirs, or of an earlier
    /// run under the same root directory; else the newest checkpoint there (`"last"`).
    Last,
    /// The best checkpoint by the checkpoint callback's monitored metric, saved by an earlier
    /// fit of the same trainer (`"best"`).
    Best,
}

/// As Lightning's `ckpt_path` writes it: `"last"`, `"best"`, or the path.
impl std::fmt::Display for CkptPath {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CkptPath::Last => f.write_str("ckpt_path \"last\""),
            CkptPath::Best => f.write_str("ckpt_path \"best\""),
            CkptPath::Path(p) => write!(f, "ckpt_path {}", p.display()),
            CkptPath::Fresh => f.write_str("no ckpt_path"),
        }
    }
}

impl<T: Into<CkptPath>> From<Option<T>> for CkptPath {
    fn from(p: Option<T>) -> Self {
        p.map_or(CkptPath::Fresh, Into::into)
    }
}

impl From<&str> for CkptPath {
    fn from(s: &str) -> Self {
        match s {
            "last" => CkptPath::Last,
            "best" => CkptPath::Best,
            path => CkptPath::Path(PathBuf::from(path)),
        }
    }
}

impl From<&Path> for CkptPath {
    fn from(p: &Path) -> Self {
        CkptPath::Path(p.to_path_buf())
    }
}

impl From<PathBuf> for CkptPath {
    fn from(p: PathBuf) -> Self {
        CkptPath::Path(p)
    }
}

impl From<&PathBuf> for CkptPath {
    fn from(p: &PathBuf) -> Self {
        CkptPath::Path(p.clone())
    }
}

/// `name` with the field prefix `from` (ending in `.`) made `to`, in the first of its
/// `/`-separated parts that starts with it (`layer.weight`, `optimizer/layer.weight/exp_avg`,
/// `grads/layer.weight`); `None` when no part does.
fn renamed(name: &str, from: &str, to: &str) -> Option<String> {
    let mut hit = false;
    let parts: Vec<String> = (name.split('/'))
        .map(|part| match part.strip_prefix(from) {
            Some(tail) if !hit => {
                hit = true;
                format!("{to}{tail}")
            }
            _ => part.to_string(),
        })
        .collect();
    hit.then(|| parts.join("/"))
}

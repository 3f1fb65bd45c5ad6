//! Sharded checkpoints (FULL_SHARD's `state_dict_type("sharded")`): a directory holding one
//! checkpoint file per rank, `rank-<r>-of-<N>.safetensors`, each written by its rank with
//! nothing gathered. A rank's file holds its shard of every unit's parameters (`shard/<k>`),
//! of the optimizer's buffers (`optimizer/shard/<k>/<buffer>`) and of an unfinished window's
//! gradients (`grads/shard/<k>`); rank 0's also holds the module's buffers and the run's
//! state, and every file the [`Layout`] that puts the shards back together.
//! [`Checkpoint::read`](super::Checkpoint::read) reads the directory as the whole checkpoint,
//! so that it resumes on any number of ranks, or loads into one process.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::{Record, Records, GRADS_PREFIX, OPTIMIZER_PREFIX};
use crate::{Error, Result};

/// How the shards make the whole tensors: per unit, its tensors laid end to end in this
/// order, padded, and cut into `world` shards of `shard` values.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct Layout {
    pub world: usize,
    pub units: Vec<UnitLayout>,
}

/// One unit of a [`Layout`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub(crate) struct UnitLayout {
    /// Its tensors' names and shapes.
    pub tensors: Vec<(String, Vec<usize>)>,
    /// Values in each rank's shard.
    pub shard: usize,
}

/// The record of a rank's shard of unit `k`: its parameters, an optimizer buffer, or its
/// gradients.
pub(crate) fn shard_name(kind: Kind<'_>, k: usize) -> String {
    match kind {
        Kind::Weights => format!("shard/{k}"),
        Kind::Optimizer(buffer) => format!("{OPTIMIZER_PREFIX}shard/{k}/{buffer}"),
        Kind::Grads => format!("{GRADS_PREFIX}shard/{k}"),
    }
}

/// What a shard record holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Kind<'a> {
    Weights,
    Optimizer(&'a str),
    Grads,
}

/// The unit and kind of a shard record's name.
fn parse(name: &str) -> Option<(usize, Kind<'_>)> {
    if let Some(k) = name.strip_prefix("shard/") {
        return Some((k.parse().ok()?, Kind::Weights));
    }
    if let Some(rest) = name
        .strip_prefix(OPTIMIZER_PREFIX)
        .and_then(|r| r.strip_prefix("shard/"))
    {
        let (k, buffer) = rest.split_once('/')?;
        return Some((k.parse().ok()?, Kind::Optimizer(buffer)));
    }
    let k = name.strip_prefix(GRADS_PREFIX)?.strip_prefix("shard/")?;
    Some((k.parse().ok()?, Kind::Grads))
}

/// The whole tensor's record name for `tensor` of a shard record of `kind`.
fn whole_name(kind: Kind<'_>, tensor: &str) -> String {
    match kind {
        Kind::Weights => tensor.to_string(),
        Kind::Optimizer(buffer) => format!("{OPTIMIZER_PREFIX}{tensor}/{buffer}"),
        Kind::Grads => format!("{GRADS_PREFIX}{tensor}"),
    }
}

/// Rank `rank`'s file of `world` in the checkpoint directory `dir`.
pub(crate) fn part(dir: &Path, rank: usize, world: usize) -> PathBuf {
    dir.join(format!("rank-{rank}-of-{world}.safetensors"))
}

/// Where the ranks write a sharded checkpoint before it replaces `path` (every rank names
/// the same directory).
pub(crate) fn staging(path: &Path) -> PathBuf {
    let name = path
        .file_name()
        .map_or_else(|| "checkpoint".into(), |n| n.to_string_lossy().into_owned());
    path.with_file_name(format!(".{name}.partial"))
}

/// Makes the staged directory the checkpoint at `path`, replacing what was there (rank 0,
/// once every rank has written its file): the old checkpoint is removed only after the new
/// one is in place.
pub(crate) fn commit(path: &Path) -> Result<()> {
    let staged = staging(path);
    let old = path.with_file_name(format!(
        ".{}.old",
        path.file_name()
            .map_or_else(String::new, |n| n.to_string_lossy().into_owned())
    ));
    if path.exists() {
        remove(&old)?;
        std::fs::rename(path, &old).map_err(|e| Error::io(path, e))?;
    }
    std::fs::rename(&staged, path).map_err(|e| Error::io(path, e))?;
    remove(&old)
}

/// Removes a checkpoint, a file or a sharded directory (nothing if there is none).
pub(crate) fn remove(path: &Path) -> Result<()> {
    let removed = match std::fs::symlink_metadata(path) {
        Ok(m) if m.is_dir() => std::fs::remove_dir_all(path),
        Ok(_) => std::fs::remove_file(path),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(e),
    };
    removed.map_err(|e| Error::io(path, e))
}

/// The world size of the sharded checkpoint in `dir`, from its files' names; every rank's
/// file must be there.
pub(crate) fn world_of(dir: &Path) -> Result<usize> {
    let mut found: Vec<(usize, usize)> = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(|e| Error::io(dir, e))? {
        let name = entry.map_err(|e| Error::io(dir, e))?.file_name();
        let name = name.to_string_lossy();
        let parsed = name
            .strip_prefix("rank-")
            .and_then(|n| n.strip_suffix(".safetensors"))
            .and_then(|n| n.split_once("-of-"))
            .and_then(|(r, w)| Some((r.parse().ok()?, w.parse().ok()?)));
        if let Some(rw) = parsed {
            found.push(rw);
        }
    }
    let world = found.first().map(|&(_, w)| w).ok_or_else(|| {
        Error::data(
            dir,
            "a directory without rank-<r>-of-<N>.safetensors files: not a sharded checkpoint",
        )
    })?;
    found.sort();
    let want: Vec<(usize, usize)> = (0..world).map(|r| (r, world)).collect();
    if found != want {
        return Err(Error::data(
            dir,
            format!(
                "a sharded checkpoint of {world} ranks must hold rank-0-of-{world} to rank-{}-of-{world}; it holds {:?}",
                world - 1,
                found.iter().map(|(r, w)| format!("rank-{r}-of-{w}")).collect::<Vec<_>>()
            ),
        ));
    }
    Ok(world)
}

/// The whole records of a sharded checkpoint: `parts[r]` is rank r's records, `layout` how
/// they fit. The records that are not shards are rank 0's.
pub(crate) fn assemble(dir: &Path, layout: &Layout, mut parts: Vec<Records>) -> Result<Records> {
    if parts.len() != layout.world {
        return Err(Error::data(
            dir,
            format!(
                "{} files for a checkpoint of {} ranks",
                parts.len(),
                layout.world
            ),
        ));
    }
    let mut whole = Records::new();
    let first = std::mem::take(&mut parts[0]);
    let names: Vec<String> = first.keys().cloned().collect();
    parts[0] = first;
    for name in names {
        let Some((k, kind)) = parse(&name) else {
            if let Some(r) = parts[0].remove(&name) {
                whole.insert(name, r);
            }
            continue;
        };
        let unit = layout.units.get(k).ok_or_else(|| {
            Error::data(
                dir,
                format!(
                    "`{name}` names unit {k}, and the layout has {}",
                    layout.units.len()
                ),
            )
        })?;
        let mut bytes = Vec::new();
        let mut dtype = None;
        for (r, records) in parts.iter_mut().enumerate() {
            let record = records
                .remove(&name)
                .ok_or_else(|| Error::data(dir, format!("rank {r}'s file has no `{name}`")))?;
            if record.shape != [unit.shard] || dtype.is_some_and(|d| d != record.dtype) {
                return Err(Error::data(
                    dir,
                    format!(
                        "rank {r}'s `{name}` is not a shard of {} values",
                        unit.shard
                    ),
                ));
            }
            dtype = Some(record.dtype);
            bytes.extend(record.data);
        }
        let (Some(dtype), Some(width)) =
            (dtype, bytes.len().checked_div(unit.shard * layout.world))
        else {
            continue;
        };
        let mut at = 0;
        for (tensor, shape) in &unit.tensors {
            let n: usize = shape.iter().product();
            let data = bytes
                .get(at * width..(at + n) * width)
                .ok_or_else(|| {
                    Error::data(dir, format!("the shards of `{name}` end before `{tensor}`"))
                })?
                .to_vec();
            at += n;
            let shape = match kind {
                Kind::Weights => shape.clone(),
                _ => vec![n],
            };
            whole.insert(whole_name(kind, tensor), Record { dtype, shape, data });
        }
    }
    Ok(whole)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(values: &[f32]) -> Record {
        Record::from_values(vec![values.len()], values)
    }

    #[test]
    fn shards_are_put_back_into_whole_tensors_by_name() {
        // One unit of a 2×2 weight and a bias of 1, on 2 ranks: 5 values padded to 6.
        let layout = Layout {
            world: 2,
            units: vec![UnitLayout {
                tensors: vec![("w".into(), vec![2, 2]), ("b".into(), vec![1])],
                shard: 3,
            }],
        };
        let mut r0 = Records::new();
        r0.insert(shard_name(Kind::Weights, 0), record(&[1.0, 2.0, 3.0]));
        r0.insert(
            shard_name(Kind::Optimizer("exp_avg"), 0),
            record(&[0.1, 0.2, 0.3]),
        );
        r0.insert("running_mean".into(), record(&[7.0]));
        let mut r1 = Records::new();
        r1.insert(shard_name(Kind::Weights, 0), record(&[4.0, 5.0, 0.0]));
        r1.insert(
            shard_name(Kind::Optimizer("exp_avg"), 0),
            record(&[0.4, 0.5, 0.0]),
        );
        let whole = assemble(Path::new("ckpt"), &layout, vec![r0, r1]).expect("assembled");
        let values = |n: &str| whole[n].values::<f32>(n).expect("values");
        assert_eq!(whole["w"].shape, [2, 2]);
        assert_eq!(values("w"), [1.0, 2.0, 3.0, 4.0]);
        assert_eq!(values("b"), [5.0]);
        assert_eq!(values("optimizer/w/exp_avg"), [0.1, 0.2, 0.3, 0.4]);
        assert_eq!(values("optimizer/b/exp_avg"), [0.5]);
        assert_eq!(values("running_mean"), [7.0]);
        assert_eq!(whole.len(), 5);

        let mut short = Records::new();
        short.insert(shard_name(Kind::Weights, 0), record(&[1.0, 2.0, 3.0]));
        let missing = assemble(Path::new("ckpt"), &layout, vec![short, Records::new()]);
        assert!(missing
            .unwrap_err()
            .to_string()
            .contains("rank 1's file has no `shard/0`"));
    }
}

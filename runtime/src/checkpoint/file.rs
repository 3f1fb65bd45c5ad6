//! The checkpoint file: one safetensors file (PyTorch users open it with the `safetensors`
//! package) whose header metadata holds fulmen's state as JSON and a CRC-32 over everything,
//! written atomically (`crate::files`).

use std::borrow::Cow;
use std::collections::HashMap;
use std::path::Path;

use safetensors::tensor::{SafeTensors, View};
use safetensors::SafeTensorError;

use super::{Record, Records};
use crate::{Error, Result};

const META_KEY: &str = "fulmen";
const CRC_KEY: &str = "fulmen_crc32";

impl View for &Record {
    fn dtype(&self) -> safetensors::Dtype {
        self.dtype
    }
    fn shape(&self) -> &[usize] {
        &self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.data)
    }
    fn data_len(&self) -> usize {
        self.data.len()
    }
}

/// CRC-32 of the metadata and of every tensor's name, dtype, shape and bytes, in name order.
fn checksum<'a>(meta: &str, records: impl Iterator<Item = (&'a str, &'a Record)>) -> String {
    let mut crc = crc32fast::Hasher::new();
    crc.update(meta.as_bytes());
    for (name, r) in records {
        crc.update(name.as_bytes());
        crc.update(format!("{:?}{:?}", r.dtype, r.shape).as_bytes());
        crc.update(&r.data);
    }
    format!("{:08x}", crc.finalize())
}

/// Writes `records` and `meta` to `path` so that `path` is either its old self or the whole new
/// checkpoint, never a partial file. On failure the error names the path and nothing is left
/// behind.
pub(crate) fn write(path: &Path, records: &Records, meta: &str) -> Result<()> {
    let header = HashMap::from([
        ("format".to_string(), "pt".to_string()),
        (META_KEY.to_string(), meta.to_string()),
        (
            CRC_KEY.to_string(),
            checksum(meta, records.iter().map(|(n, r)| (n.as_str(), r))),
        ),
    ]);
    crate::files::write_atomic(path, |tmp| {
        safetensors::serialize_to_file(records.iter(), &Some(header), tmp).map_err(|e| match e {
            SafeTensorError::IoError(io) => io,
            other => std::io::Error::other(format!("{other:?}")),
        })
    })
}

/// Reads a checkpoint, refusing a truncated or corrupt file with an error naming it.
pub(crate) fn read(path: &Path) -> Result<(Records, String)> {
    let bytes = std::fs::read(path).map_err(|e| Error::io(path, e))?;
    let corrupt = |why: String| {
        Error::data(
            path,
            format!("not a readable fulmen checkpoint ({why}); it may be truncated or damaged"),
        )
    };
    let (_, header) = SafeTensors::read_metadata(&bytes).map_err(|e| corrupt(format!("{e:?}")))?;
    let info = header.metadata().clone().unwrap_or_default();
    let (meta, crc) =
        match (info.get(META_KEY), info.get(CRC_KEY)) {
            (Some(m), Some(c)) => (m.clone(), c.clone()),
            _ => return Err(Error::data(
                path,
                "a safetensors file without fulmen's checkpoint metadata: it holds weights only \
                 (load it with dfdx's `load_safetensors`), not a checkpoint",
            )),
        };
    let tensors = SafeTensors::deserialize(&bytes).map_err(|e| corrupt(format!("{e:?}")))?;
    let mut records = Records::new();
    for (name, view) in tensors.tensors() {
        records.insert(
            name,
            Record {
                dtype: view.dtype(),
                shape: view.shape().to_vec(),
                data: view.data().to_vec(),
            },
        );
    }
    let actual = checksum(&meta, records.iter().map(|(n, r)| (n.as_str(), r)));
    if actual != crc {
        return Err(corrupt(format!(
            "checksum {actual} does not match the recorded {crc}"
        )));
    }
    Ok((records, meta))
}

//! NumPy `.npz` archives (read with [npyz]), as written by `np.savez`.

use std::path::Path;

use npyz::npz::NpzArchive;
use npyz::{DType, TypeChar};

use super::{class_sample, Class};
use crate::{Error, Result};

/// A numeric array read from an archive, converted to `f64`.
#[derive(Debug, Clone, PartialEq)]
pub struct Array {
    /// The array's shape, as NumPy's `shape`.
    pub shape: Vec<usize>,
    /// The values in C (row-major) order.
    pub data: Vec<f64>,
}

fn open(path: &Path) -> Result<Archive> {
    let file = super::open_file(path)?;
    NpzArchive::new(std::io::BufReader::new(file))
        .map_err(|e| Error::data(path, format!("not a readable .npz archive: {e}")))
}

type Archive = NpzArchive<std::io::BufReader<std::fs::File>>;

/// Reads array `name` of the archive at `path`: float16, float32, float64 or an integer dtype
/// of 8 to 64 bits, signed or not, in C order.
pub fn read_array(path: impl AsRef<Path>, name: &str) -> Result<Array> {
    let path = path.as_ref();
    read_from(&mut open(path)?, path, name)
}

fn read_from(archive: &mut Archive, path: &Path, name: &str) -> Result<Array> {
    let names: Vec<String> = archive.array_names().map(str::to_string).collect();
    let npy = archive
        .by_name(name)
        .map_err(|e| Error::data(path, format!("array `{name}` cannot be read: {e}")))?
        .ok_or_else(|| {
            Error::data(
                path,
                format!("no array named `{name}` (the archive holds {names:?})"),
            )
        })?;
    if npy.order() == npyz::Order::Fortran {
        return Err(Error::data(
            path,
            format!("array `{name}` is in Fortran order; save it with np.ascontiguousarray"),
        ));
    }
    let shape = npy.shape().iter().map(|&d| d as usize).collect();
    let bad = |e: std::io::Error| Error::data(path, format!("array `{name}`: {e}"));
    let dtype = npy.dtype();
    let data: Vec<f64> = match &dtype {
        DType::Plain(ts) => match (ts.type_char(), ts.size_field()) {
            (TypeChar::Float, 4) => npy
                .into_vec::<f32>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
            (TypeChar::Float, 8) => npy.into_vec::<f64>().map_err(bad)?,
            (TypeChar::Float, 2) => npy
                .into_vec::<half::f16>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
            (TypeChar::Int, 8) => npy
                .into_vec::<i64>()
                .map_err(bad)?
                .into_iter()
                .map(|v| v as f64)
                .collect(),
            (TypeChar::Int, 4) => npy
                .into_vec::<i32>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
            (TypeChar::Int, 2) => npy
                .into_vec::<i16>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
            (TypeChar::Int, 1) => npy
                .into_vec::<i8>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
            (TypeChar::Uint, 8) => npy
                .into_vec::<u64>()
                .map_err(bad)?
                .into_iter()
                .map(|v| v as f64)
                .collect(),
            (TypeChar::Uint, 4) => npy
                .into_vec::<u32>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
            (TypeChar::Uint, 2) => npy
                .into_vec::<u16>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
            (TypeChar::Uint, 1) => npy
                .into_vec::<u8>()
                .map_err(bad)?
                .into_iter()
                .map(f64::from)
                .collect(),
            _ => {
                return Err(Error::data(
                    path,
                    format!("array `{name}` has dtype {ts}; fulmen reads float16/32/64 and (unsigned) integers of 8 to 64 bits"),
                ))
            }
        },
        other => {
            return Err(Error::data(
                path,
                format!("array `{name}` has dtype {other:?}, not a plain number type"),
            ))
        }
    };
    Ok(Array { shape, data })
}

/// Labelled samples from features `x_name` (shape `(rows, N)`) and labels `y_name` (shape
/// `(rows,)`, integers in `0..C`), the layout of the tutorial's `data/iris.npz`.
pub fn read_classification<const N: usize, const C: usize>(
    path: impl AsRef<Path>,
    x_name: &str,
    y_name: &str,
) -> Result<Vec<([f32; N], Class<C>)>> {
    let path = path.as_ref();
    let mut archive = open(path)?;
    let x = read_from(&mut archive, path, x_name)?;
    let y = read_from(&mut archive, path, y_name)?;
    let rows = match x.shape[..] {
        [rows, cols] if cols == N => rows,
        _ => {
            return Err(Error::data(
                path,
                format!(
                    "array `{x_name}` has shape {:?}, but the model reads (rows, {N})",
                    x.shape
                ),
            ))
        }
    };
    if y.shape != [rows] {
        return Err(Error::data(
            path,
            format!(
                "array `{y_name}` has shape {:?}, but `{x_name}` has {rows} rows: expected ({rows},)",
                y.shape
            ),
        ));
    }
    if rows == 0 {
        return Err(Error::data(path, format!("array `{x_name}` has no rows")));
    }
    x.data
        .chunks_exact(N)
        .zip(&y.data)
        .enumerate()
        .map(|(i, (features, &label))| class_sample(path, &format!("row {i}"), features, label))
        .collect()
}

/// Writes `values` (in C order) as the `float32` array `name` of the shape `shape`, alone in
/// the archive at `path`: what `np.savez(path, name=values)` writes.
pub fn write_array(
    path: impl AsRef<Path>,
    name: &str,
    shape: &[usize],
    values: &[f32],
) -> Result<()> {
    use npyz::WriterBuilder;
    let path = path.as_ref();
    let io = |e: std::io::Error| Error::io(path, e);
    if shape.iter().product::<usize>() != values.len() {
        return Err(Error::msg(format!(
            "{}: {} values do not fill the shape {shape:?}",
            path.display(),
            values.len()
        )));
    }
    let mut npz = npyz::npz::NpzWriter::create(path).map_err(io)?;
    let options =
        npyz::zip::write::FileOptions::default().last_modified_time(npyz::zip::DateTime::default());
    let shape: Vec<u64> = shape.iter().map(|&d| d as u64).collect();
    let mut writer = npz
        .array::<f32>(name, options)
        .map_err(io)?
        .default_dtype()
        .shape(&shape)
        .begin_nd()
        .map_err(io)?;
    writer.extend(values.iter().copied()).map_err(io)?;
    writer.finish().map_err(io)
}

/// Writes features as `float32` array `X` and labels as `int64` array `y`, the layout that
/// `np.savez(path, X=X, y=y)` produces.
pub fn write_classification<const N: usize, const C: usize>(
    path: impl AsRef<Path>,
    samples: &[([f32; N], Class<C>)],
) -> Result<()> {
    use npyz::WriterBuilder;
    let path = path.as_ref();
    let io = |e: std::io::Error| Error::io(path, e);
    let mut npz = npyz::npz::NpzWriter::create(path).map_err(io)?;
    // A fixed timestamp (zip's epoch, 1980-01-01): the same samples give the same bytes.
    let options =
        npyz::zip::write::FileOptions::default().last_modified_time(npyz::zip::DateTime::default());
    let mut writer = npz
        .array::<f32>("X", options)
        .map_err(io)?
        .default_dtype()
        .shape(&[samples.len() as u64, N as u64])
        .begin_nd()
        .map_err(io)?;
    writer
        .extend(samples.iter().flat_map(|(x, _)| x.iter().copied()))
        .map_err(io)?;
    writer.finish().map_err(io)?;
    let mut writer = npz
        .array::<i64>("y", options)
        .map_err(io)?
        .default_dtype()
        .shape(&[samples.len() as u64])
        .begin_nd()
        .map_err(io)?;
    writer
        .extend(samples.iter().map(|(_, y)| y.index() as i64))
        .map_err(io)?;
    writer.finish().map_err(io)?;
    Ok(())
}

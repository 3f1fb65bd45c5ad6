//! Data: datasets, loaders, collation of samples into dfdx batches, splits and file formats.
//!
//! A [`DataLoader`] yields `Vec<Sample>`; the trainer collates each into the model's batch type
//! on its device through [`Collate`]. Which sample types collate into which batch types is
//! fixed at compile time, so a data module yielding 5 features cannot feed a model reading 4.

mod augment;
mod cast;
pub mod cifar10;
mod collate;
pub mod csv;
mod dataset;
mod image;
pub mod iris;
mod labels;
mod loader;
pub mod npz;
mod scaler;
mod split;

pub use augment::Augmented;
pub use cast::{host_to_device, CastBatch, CastDtype};
pub use collate::{ClassBatch, Collate, RegressionBatch};
pub use dataset::{Dataset, InMemoryDataset};
pub use image::{Image, ImageBatch};
pub use labels::{Class, Labels};
pub use loader::{BatchIter, DataLoader};
pub use scaler::{Scaler, ScalerKind};
pub use split::{random_split, stratified_split};

use std::path::Path;

use crate::{Error, Result};

/// Opens a data file, saying what is wrong when it is missing or a directory.
pub(crate) fn open_file(path: &Path) -> Result<std::fs::File> {
    if path.is_dir() {
        return Err(Error::data(path, "is a directory, not a file"));
    }
    std::fs::File::open(path).map_err(|e| match e.kind() {
        std::io::ErrorKind::NotFound => Error::MissingData {
            path: path.to_path_buf(),
            message: format!("{} does not exist", path.display()),
        },
        _ => Error::io(path, e),
    })
}

/// One labelled sample from a row of numbers (a record of your own format), checked as fulmen's
/// readers check theirs: the row has `N` finite features, within float32's range, and an
/// integral label in `0..C`. `path` and `row` name the data in errors ("row 12", "line 13").
///
/// ```
/// use fulmen::data::{class_sample, Class};
/// let (x, y) = class_sample::<2, 3>("mine.txt".as_ref(), "row 0", &[1.5, 2.0], 2.0).unwrap();
/// assert_eq!((x, y), ([1.5, 2.0], Class::new(2).unwrap()));
/// let e = class_sample::<2, 3>("mine.txt".as_ref(), "row 1", &[1.5, f64::NAN], 0.0).unwrap_err();
/// assert_eq!(e.to_string(), "mine.txt: row 1: feature 1 is NaN");
/// ```
pub fn class_sample<const N: usize, const C: usize>(
    path: &Path,
    row: &str,
    features: &[f64],
    label: f64,
) -> Result<([f32; N], Class<C>)> {
    if features.len() != N {
        return Err(Error::data(
            path,
            format!(
                "{row}: {} feature values, but the model reads {N}",
                features.len()
            ),
        ));
    }
    let mut x = [0f32; N];
    for (i, (slot, &v)) in x.iter_mut().zip(features).enumerate() {
        if !v.is_finite() {
            return Err(Error::data(path, format!("{row}: feature {i} is {v}")));
        }
        *slot = v as f32;
        if !slot.is_finite() {
            return Err(Error::data(
                path,
                format!("{row}: feature {i} is {v:e}, beyond float32's range (±3.4e38), in which samples are collated"),
            ));
        }
    }
    let class = (label.fract() == 0.0 && label >= 0.0)
        .then(|| Class::new(label as usize))
        .flatten()
        .ok_or_else(|| {
            Error::data(
                path,
                format!("{row}: label {label} is outside the class range 0..{C}"),
            )
        })?;
    Ok((x, class))
}

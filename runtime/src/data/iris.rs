//! The Iris data set (Fisher, 1936; public domain): 150 flowers, 4 measurements in cm
//! (sepal length, sepal width, petal length, petal width), 3 species (0 setosa, 1 versicolor,
//! 2 virginica), 50 each. A copy ships inside fulmen, so the tutorial runs offline.

use std::path::Path;

use super::Class;
use crate::{Error, Result};

/// The bundled CSV: a header, then `f1,f2,f3,f4,label` per flower.
pub const CSV: &str = include_str!("../../data/iris.csv");

/// One Iris sample: 4 features and one of 3 classes.
pub type Sample = ([f32; 4], Class<3>);

/// The 150 bundled samples, in the order of the original data set.
pub fn bundled() -> Vec<Sample> {
    CSV.lines()
        .skip(1)
        .filter_map(|line| {
            let v: Vec<f32> = line.split(',').filter_map(|f| f.parse().ok()).collect();
            let class = Class::new(*v.get(4)? as usize)?;
            Some(([v[0], v[1], v[2], v[3]], class))
        })
        .collect()
}

/// Writes the bundled data as the tutorial's `iris.npz` (`X`: 150×4 float32, `y`: 150 int64).
pub fn write_npz(path: impl AsRef<Path>) -> Result<()> {
    let path = path.as_ref();
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        std::fs::create_dir_all(dir).map_err(|e| Error::io(dir, e))?;
    }
    super::npz::write_classification(path, &bundled())
}

/// Reads an `iris.npz` as written by [`write_npz`] or by the tutorial's download script.
pub fn load(path: impl AsRef<Path>) -> Result<Vec<Sample>> {
    super::npz::read_classification(path, "X", "y").map_err(|e| match e {
        Error::MissingData { path, .. } => missing(path),
        other => other,
    })
}

/// The tutorial's `FileNotFoundError` for a missing `iris.npz`: the path, and how to make it.
pub fn missing(path: impl Into<std::path::PathBuf>) -> Error {
    let path = path.into();
    Error::MissingData {
        message: format!(
            "Expected dataset at {}. Run the download script provided to create it: \
             `cargo run --example make_iris`",
            path.display()
        ),
        path,
    }
}

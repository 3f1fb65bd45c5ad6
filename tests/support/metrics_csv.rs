//! What a run's CsvLogger wrote: one column of `metrics.csv`.

use std::path::Path;

/// The values of the column `name` of `version/metrics.csv` (a `lightning_logs/version_N`
/// folder), in order, its empty cells skipped.
pub fn column(version: &Path, name: &str) -> Vec<f64> {
    let mut reader = csv::Reader::from_path(version.join("metrics.csv")).unwrap();
    let headers = reader.headers().unwrap().clone();
    let col = headers.iter().position(|h| h == name);
    let col = col.unwrap_or_else(|| panic!("no column {name} in {headers:?}"));
    reader
        .records()
        .map(|r| r.unwrap())
        .filter(|r| !r[col].is_empty())
        .map(|r| r[col].parse().unwrap())
        .collect()
}

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use super::Logger;
use crate::hparams::HParams;
use crate::{Error, Result};

/// Lightning's `CSVLogger`: `ROOT/NAME/version_N/metrics.csv` (one row per logging call, one
/// column per metric name, sorted, `epoch` and `step` included) and `hparams.yaml`.
///
/// The version directory is claimed when the logger is created: the first free `version_N`.
/// Rows are buffered and flushed every `flush_every` rows and at the end of every stage.
#[derive(Debug)]
pub struct CsvLogger {
    dir: PathBuf,
    keys: Vec<String>,
    rows: Vec<BTreeMap<String, f64>>,
    written: usize,
    flush_every: usize,
}

impl CsvLogger {
    /// A logger writing under `root/name/version_N` for the first free `N`.
    pub fn new(root: impl AsRef<Path>, name: &str) -> Result<Self> {
        let dir = super::claim_version_dir(root.as_ref(), name)?;
        Ok(Self {
            dir,
            keys: Vec::new(),
            rows: Vec::new(),
            written: 0,
            flush_every: 100,
        })
    }

    /// The `metrics.csv` path.
    pub fn metrics_path(&self) -> PathBuf {
        self.dir.join("metrics.csv")
    }

    fn flush(&mut self) -> Result<()> {
        let pending = &self.rows[self.written..];
        if pending.is_empty() {
            return Ok(());
        }
        let mut keys = self.keys.clone();
        for row in pending {
            for k in row.keys() {
                if !keys.contains(k) {
                    keys.push(k.clone());
                }
            }
        }
        keys.sort();
        let path = self.metrics_path();
        let io = |e: std::io::Error| Error::io(&path, e);
        let rewrite = keys != self.keys || self.written == 0;
        let (file, from) = if rewrite {
            // New columns: rewrite the whole file under the new header, atomically.
            let tmp = path.with_extension("csv.tmp");
            (std::fs::File::create(&tmp).map_err(io)?, 0)
        } else {
            let file = std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .map_err(io)?;
            (file, self.written)
        };
        let mut out = csv::Writer::from_writer(std::io::BufWriter::new(file));
        let csv_err = |e: csv::Error| Error::io(&path, std::io::Error::other(e.to_string()));
        if rewrite {
            out.write_record(&keys).map_err(csv_err)?;
        }
        for row in &self.rows[from..] {
            out.write_record(
                keys.iter()
                    .map(|k| row.get(k).map(|v| format_value(*v)).unwrap_or_default()),
            )
            .map_err(csv_err)?;
        }
        let mut inner = out
            .into_inner()
            .map_err(|e| Error::io(&path, std::io::Error::other(e.to_string())))?;
        inner.flush().map_err(io)?;
        drop(inner);
        if rewrite {
            std::fs::rename(path.with_extension("csv.tmp"), &path).map_err(io)?;
        }
        self.keys = keys;
        self.written = self.rows.len();
        Ok(())
    }
}

/// Integral values (epoch, step) print as integers, as Lightning's CSV shows them.
fn format_value(v: f64) -> String {
    if v.fract() == 0.0 && v.abs() < 1e15 {
        format!("{}", v as i64)
    } else {
        format!("{v}")
    }
}

impl Logger for CsvLogger {
    fn log_hyperparams(&mut self, hparams: &HParams) -> Result<()> {
        let path = self.dir.join("hparams.yaml");
        std::fs::write(&path, hparams.to_yaml()).map_err(|e| Error::io(&path, e))
    }

    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> Result<()> {
        let mut row = metrics.clone();
        row.insert("step".to_string(), step as f64);
        self.rows.push(row);
        if self.rows.len() - self.written >= self.flush_every {
            self.flush()?;
        }
        Ok(())
    }

    fn finalize(&mut self) -> Result<()> {
        self.flush()
    }

    fn log_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

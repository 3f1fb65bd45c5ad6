use std::collections::BTreeMap;
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
        Self::in_dir(super::claim_version_dir(root.as_ref(), name)?)
    }

    /// A logger writing into `dir` (another logger's version folder, say).
    pub fn in_dir(dir: PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
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
        let rewrite = keys != self.keys || self.written == 0;
        let rows = |file: std::fs::File, from: usize| -> std::io::Result<()> {
            let mut out = csv::Writer::from_writer(std::io::BufWriter::new(file));
            if rewrite {
                out.write_record(&keys)?;
            }
            for row in &self.rows[from..] {
                out.write_record(
                    keys.iter()
                        .map(|k| row.get(k).map(|v| format_value(*v)).unwrap_or_default()),
                )?;
            }
            out.flush()
        };
        if rewrite {
            // New columns: rewrite the whole file under the new header, atomically.
            crate::files::write_atomic(&path, |tmp| rows(std::fs::File::create(tmp)?, 0))?;
        } else {
            std::fs::OpenOptions::new()
                .append(true)
                .open(&path)
                .and_then(|file| rows(file, self.written))
                .map_err(|e| Error::io(&path, e))?;
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
        crate::files::write_bytes(&self.dir.join("hparams.yaml"), hparams.to_yaml().as_bytes())
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

//! Lightning's `TensorBoardLogger`: event files that TensorBoard reads (scalars, and the
//! hyperparameters in its HPARAMS tab) in `ROOT/NAME/version_N/`, with `hparams.yaml` beside.
//!
//! ```no_run
//! use fulmen::loggers::TensorBoardLogger;
//! use fulmen::prelude::*;
//! let logger = TensorBoardLogger::new("tb_logs", "my_model")?;
//! let trainer = Trainer::builder().logger(logger).build()?;
//! # Ok::<(), fulmen::Error>(())
//! ```
//!
//! An event file is a sequence of TFRecords (length, masked CRC-32C of the length, an `Event`
//! protocol buffer, masked CRC-32C of it); the messages are in `proto`.

mod proto;

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::path::{Path, PathBuf};

use prost::Message;

use self::proto::*;
use super::Logger;
use crate::hparams::HParams;
use crate::{Error, Result};

/// Writes TensorBoard event files; see the [module docs](self).
#[derive(Debug)]
pub struct TensorBoardLogger {
    dir: PathBuf,
    path: PathBuf,
    file: std::io::BufWriter<std::fs::File>,
    default_hp_metric: bool,
}

fn now() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .or_else(|| std::fs::read_to_string("/proc/sys/kernel/hostname").ok())
        .map(|h| h.trim().to_string())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".into())
}

/// TFRecord's masked CRC-32C.
fn masked_crc(data: &[u8]) -> u32 {
    let crc = crc32c::crc32c(data);
    (crc.rotate_right(15)).wrapping_add(0xa282_ead8)
}

impl TensorBoardLogger {
    /// A logger writing under `root/name/version_N` for the first free `N`.
    pub fn new(root: impl AsRef<Path>, name: &str) -> Result<Self> {
        Self::in_dir(super::claim_version_dir(root.as_ref(), name)?)
    }

    /// A logger writing into `dir` (another logger's version folder, say).
    pub fn in_dir(dir: std::path::PathBuf) -> Result<Self> {
        std::fs::create_dir_all(&dir).map_err(|e| Error::io(&dir, e))?;
        let path = dir.join(format!(
            "events.out.tfevents.{}.{}.{}.0",
            now() as u64,
            hostname(),
            std::process::id()
        ));
        let file = std::fs::File::create(&path).map_err(|e| Error::io(&path, e))?;
        let mut logger = Self {
            dir,
            path,
            file: std::io::BufWriter::new(file),
            default_hp_metric: true,
        };
        logger.write(&Event {
            wall_time: now(),
            step: 0,
            what: Some(What::FileVersion("brain.Event:2".into())),
        })?;
        Ok(logger)
    }

    /// Log `hp_metric = -1` with the hyperparameters, as Lightning does by default, so that
    /// the HPARAMS tab has a metric column (turn off to name your own with `log_metrics`).
    pub fn default_hp_metric(mut self, on: bool) -> Self {
        self.default_hp_metric = on;
        self
    }

    /// The event file.
    pub fn event_file(&self) -> &Path {
        &self.path
    }

    fn write(&mut self, event: &Event) -> Result<()> {
        let data = event.encode_to_vec();
        let len = (data.len() as u64).to_le_bytes();
        let mut record = Vec::with_capacity(data.len() + 16);
        record.extend_from_slice(&len);
        record.extend_from_slice(&masked_crc(&len).to_le_bytes());
        record.extend_from_slice(&data);
        record.extend_from_slice(&masked_crc(&data).to_le_bytes());
        self.file
            .write_all(&record)
            .map_err(|e| Error::io(&self.path, e))
    }

    fn summary(&mut self, step: usize, value: Vec<SummaryValue>) -> Result<()> {
        self.write(&Event {
            wall_time: now(),
            step: step as i64,
            what: Some(What::Summary(Summary { value })),
        })
    }

    /// One of the three hparams-plugin summaries.
    fn hparams_value(tag: &str, data: HParamsData) -> SummaryValue {
        let content = HParamsPluginData {
            version: 0,
            data: Some(data),
        };
        SummaryValue {
            tag: format!("_hparams_/{tag}"),
            metadata: Some(SummaryMetadata {
                plugin_data: Some(PluginData {
                    plugin_name: "hparams".into(),
                    content: content.encode_to_vec(),
                }),
            }),
            simple_value: None,
            image: None,
        }
    }
}

/// A hyperparameter as the hparams plugin stores it: numbers, booleans and strings as such,
/// anything else as its YAML text.
fn hparam_value(v: &serde_yaml::Value) -> (prost_types::Value, i32) {
    use prost_types::value::Kind;
    let (kind, data_type) = match v {
        serde_yaml::Value::Bool(b) => (Kind::BoolValue(*b), 2),
        serde_yaml::Value::Number(n) => (Kind::NumberValue(n.as_f64().unwrap_or(f64::NAN)), 3),
        serde_yaml::Value::String(s) => (Kind::StringValue(s.clone()), 1),
        other => (
            Kind::StringValue(
                serde_yaml::to_string(other)
                    .unwrap_or_default()
                    .trim()
                    .to_string(),
            ),
            1,
        ),
    };
    (prost_types::Value { kind: Some(kind) }, data_type)
}

impl Logger for TensorBoardLogger {
    fn log_hyperparams(&mut self, hparams: &HParams) -> Result<()> {
        crate::files::write_bytes(&self.dir.join("hparams.yaml"), hparams.to_yaml().as_bytes())?;
        let mut values = HashMap::new();
        let mut infos = Vec::new();
        for (name, value) in hparams.entries() {
            let (v, data_type) = hparam_value(value);
            values.insert(name.to_string(), v);
            infos.push(HParamInfo {
                name: name.to_string(),
                r#type: data_type,
            });
        }
        let metric_infos = if self.default_hp_metric {
            vec![MetricInfo {
                name: Some(MetricName {
                    group: String::new(),
                    tag: "hp_metric".into(),
                }),
            }]
        } else {
            Vec::new()
        };
        let t = now();
        let summaries = vec![
            Self::hparams_value(
                "experiment",
                HParamsData::Experiment(Experiment {
                    time_created_secs: t,
                    hparam_infos: infos,
                    metric_infos,
                }),
            ),
            Self::hparams_value(
                "session_start_info",
                HParamsData::SessionStartInfo(SessionStartInfo {
                    hparams: values,
                    group_name: String::new(),
                    start_time_secs: t,
                }),
            ),
            Self::hparams_value(
                "session_end_info",
                HParamsData::SessionEndInfo(SessionEndInfo {
                    status: 1,
                    end_time_secs: t,
                }),
            ),
        ];
        for value in summaries {
            self.summary(0, vec![value])?;
        }
        if self.default_hp_metric {
            self.log_metrics(&BTreeMap::from([("hp_metric".to_string(), -1.0)]), 0)?;
        }
        Ok(())
    }

    fn log_metrics(&mut self, metrics: &BTreeMap<String, f64>, step: usize) -> Result<()> {
        let value = metrics
            .iter()
            .map(|(tag, v)| SummaryValue {
                tag: tag.clone(),
                metadata: None,
                simple_value: Some(*v as f32),
                image: None,
            })
            .collect();
        self.summary(step, value)
    }

    fn log_image(&mut self, tag: &str, png: &[u8], step: usize) -> Result<()> {
        // The size from the PNG's header (IHDR: width, height, big-endian, at bytes 16..24).
        let size = |at: usize| {
            (png.get(at..at + 4))
                .and_then(|b| <[u8; 4]>::try_from(b).ok())
                .map(|b| u32::from_be_bytes(b) as i32)
        };
        let (Some(width), Some(height)) = (size(16), size(20)) else {
            return Err(Error::msg(format!("TensorBoard image `{tag}`: not a PNG")));
        };
        let value = SummaryValue {
            tag: tag.to_string(),
            metadata: None,
            simple_value: None,
            image: Some(Image {
                height,
                width,
                colorspace: 3,
                encoded_image_string: png.to_vec(),
            }),
        };
        self.summary(step, vec![value])
    }

    fn finalize(&mut self) -> Result<()> {
        self.file.flush().map_err(|e| Error::io(&self.path, e))
    }

    fn log_dir(&self) -> Option<&Path> {
        Some(&self.dir)
    }
}

//! The configuration of a command-line run as one tree: `seed_everything`, `ckpt_path`, and the
//! sections `trainer`, `model` and `data`. YAML files (`--config`, in order) and then flags
//! (`--trainer.max_epochs 5`, `--model.lr 0.02`) are laid over it, later over earlier, and every
//! value remembers where it came from, so that an error names the file or the flag.

use std::collections::BTreeMap;
use std::path::Path;

use serde_yaml::{Mapping, Value};

use crate::{Error, Result};

/// The sections and top-level keys of a config.
pub(super) const SECTIONS: [&str; 3] = ["trainer", "model", "data"];
pub(super) const SCALARS: [&str; 2] = ["seed_everything", "ckpt_path"];

/// The keys each section may hold.
pub(super) struct Schema {
    pub trainer: Vec<String>,
    pub model: Vec<String>,
    pub data: Vec<String>,
}

impl Schema {
    fn keys(&self, section: &str) -> &[String] {
        match section {
            "trainer" => &self.trainer,
            "model" => &self.model,
            _ => &self.data,
        }
    }
}

/// The resolved configuration and the source of each value (`run.yaml`, `--model.lr`).
#[derive(Debug, Default, Clone)]
pub(super) struct Config {
    pub tree: Mapping,
    sources: BTreeMap<String, String>,
}

impl Config {
    /// Lays the YAML file at `path` over this config; unknown keys are errors naming the file
    /// and the nearest valid key.
    pub fn load_file(&mut self, path: &Path, schema: &Schema) -> Result<()> {
        let text = crate::data::open_file(path)
            .and_then(|f| std::io::read_to_string(f).map_err(|e| Error::io(path, e)))?;
        let doc: Value = serde_yaml::from_str(&text)
            .map_err(|e| Error::data(path, format!("not a YAML config: {e}")))?;
        let source = path.display().to_string();
        let top = match doc {
            Value::Mapping(m) => m,
            Value::Null => return Ok(()),
            _ => return Err(Error::data(path, "a config is a mapping of keys (`trainer:`, `model:`, `data:`, `seed_everything:`, `ckpt_path:`)")),
        };
        for (key, value) in top {
            let key = key_text(&key, path)?;
            if SCALARS.contains(&key.as_str()) {
                self.set(&key, value, &source);
                continue;
            }
            if !SECTIONS.contains(&key.as_str()) {
                let valid: Vec<String> = SCALARS
                    .iter()
                    .chain(&SECTIONS)
                    .map(|s| s.to_string())
                    .collect();
                return Err(unknown(&source, &key, &valid));
            }
            let entries = match value {
                Value::Mapping(m) => m,
                Value::Null => continue,
                _ => {
                    return Err(Error::data(
                        path,
                        format!("`{key}` is a mapping of its settings"),
                    ))
                }
            };
            for (name, value) in entries {
                let name = key_text(&name, path)?;
                let valid = schema.keys(&key);
                if !valid.contains(&name) {
                    let dotted: Vec<String> = valid.iter().map(|v| format!("{key}.{v}")).collect();
                    return Err(unknown(&source, &format!("{key}.{name}"), &dotted));
                }
                self.set(&format!("{key}.{name}"), value, &source);
            }
        }
        Ok(())
    }

    /// Sets the value at `dotted` (`trainer.max_epochs`, `seed_everything`), from `source`.
    pub fn set(&mut self, dotted: &str, value: Value, source: &str) {
        let mut slot = &mut self.tree;
        let mut parts: Vec<&str> = dotted.split('.').collect();
        let last = parts.pop().unwrap_or(dotted);
        for part in parts {
            let entry = slot
                .entry(Value::String(part.to_string()))
                .or_insert_with(|| Value::Mapping(Mapping::new()));
            if !entry.is_mapping() {
                *entry = Value::Mapping(Mapping::new());
            }
            let Value::Mapping(inner) = entry else {
                unreachable!("made a mapping just above")
            };
            slot = inner;
        }
        slot.insert(Value::String(last.to_string()), value);
        self.sources.insert(dotted.to_string(), source.to_string());
    }

    /// The value at `dotted`, if set.
    pub fn get(&self, dotted: &str) -> Option<&Value> {
        let mut parts = dotted.split('.');
        let mut value = self.tree.get(parts.next()?)?;
        for part in parts {
            value = value.as_mapping()?.get(part)?;
        }
        Some(value)
    }

    /// Where the value at `dotted` came from.
    pub fn source(&self, dotted: &str) -> &str {
        self.sources
            .get(dotted)
            .map_or("the defaults", String::as_str)
    }

    /// The entries of `section`, in the order set.
    pub fn section(&self, section: &str) -> Vec<(String, Value)> {
        let Some(Value::Mapping(m)) = self.tree.get(section) else {
            return Vec::new();
        };
        m.iter()
            .filter_map(|(k, v)| Some((k.as_str()?.to_string(), v.clone())))
            .collect()
    }

    /// The config as a YAML document, in the order `--config` reads it back.
    pub fn to_yaml(&self) -> String {
        let mut ordered = Mapping::new();
        for key in SCALARS.iter().chain(&SECTIONS) {
            if let Some(v) = self.tree.get(*key) {
                ordered.insert(Value::String(key.to_string()), v.clone());
            }
        }
        serde_yaml::to_string(&ordered).unwrap_or_default()
    }
}

fn key_text(key: &Value, path: &Path) -> Result<String> {
    key.as_str()
        .map(str::to_string)
        .ok_or_else(|| Error::data(path, format!("a key must be a name, not {key:?}")))
}

/// An unknown key's error: where it is, and the nearest valid key (or all of them).
fn unknown(source: &str, key: &str, valid: &[String]) -> Error {
    // Compared by the last name only: `data.zzz` is not near `data.batch_size`.
    let last = |k: &str| k.rsplit('.').next().unwrap_or(k).to_string();
    let nearest = valid
        .iter()
        .map(|v| (strsim::jaro_winkler(&last(key), &last(v)), v))
        .filter(|(score, _)| *score > 0.8)
        .max_by(|a, b| a.0.total_cmp(&b.0));
    let hint = match nearest {
        Some((_, v)) => format!("did you mean `{v}`?"),
        None => format!("the keys are {}", valid.join(", ")),
    };
    Error::msg(format!("{source}: unknown key `{key}`; {hint}"))
}

/// A value given on the command line as YAML reads it: `0.01` a number, `true` a boolean,
/// `./data` a string, `'"1.10"'` the string `1.10`.
pub(super) fn scalar(text: &str) -> Value {
    match serde_yaml::from_str::<Value>(text) {
        Ok(v @ (Value::Number(_) | Value::Bool(_) | Value::Null | Value::String(_))) => v,
        _ => Value::String(text.to_string()),
    }
}

/// A value as the trainer's flag takes it: `5`, `cpu`, `0,1` for a list.
pub(super) fn flag_text(value: &Value) -> Option<String> {
    match value {
        Value::Null => None,
        Value::Bool(b) => Some(b.to_string()),
        Value::Number(n) => Some(n.to_string()),
        Value::String(s) => Some(s.clone()),
        Value::Sequence(items) => Some(
            items
                .iter()
                .filter_map(flag_text)
                .collect::<Vec<_>>()
                .join(","),
        ),
        Value::Mapping(_) | Value::Tagged(_) => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn schema() -> Schema {
        Schema {
            trainer: vec!["max_epochs".into(), "accelerator".into()],
            model: vec!["lr".into()],
            data: vec!["batch_size".into(), "data_dir".into()],
        }
    }

    #[test]
    fn files_then_flags_lay_over_each_other_and_remember_their_source() {
        let dir = tempfile::tempdir().unwrap();
        let (a, b) = (dir.path().join("a.yaml"), dir.path().join("b.yaml"));
        std::fs::write(&a, "trainer:\n  max_epochs: 3\nmodel:\n  lr: 0.1\n").unwrap();
        std::fs::write(&b, "trainer:\n  max_epochs: 5\ndata:\n  batch_size: 8\n").unwrap();
        let mut c = Config::default();
        c.load_file(&a, &schema()).unwrap();
        c.load_file(&b, &schema()).unwrap();
        c.set("model.lr", scalar("0.02"), "--model.lr");
        assert_eq!(c.get("trainer.max_epochs"), Some(&Value::from(5)));
        assert_eq!(c.get("model.lr"), Some(&Value::from(0.02)));
        assert_eq!(c.source("trainer.max_epochs"), b.display().to_string());
        assert_eq!(c.source("model.lr"), "--model.lr");
        let mut again = Config::default();
        let printed = dir.path().join("printed.yaml");
        std::fs::write(&printed, c.to_yaml()).unwrap();
        again.load_file(&printed, &schema()).unwrap();
        assert_eq!(again.tree, c.tree);
    }

    #[test]
    fn unknown_keys_name_the_file_and_the_nearest_key() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run.yaml");
        for (text, expected) in [
            (
                "trainer:\n  max_epoch: 3\n",
                "unknown key `trainer.max_epoch`; did you mean `trainer.max_epochs`?",
            ),
            (
                "modle:\n  lr: 1\n",
                "unknown key `modle`; did you mean `model`?",
            ),
            (
                "data:\n  zzz: 1\n",
                "unknown key `data.zzz`; the keys are data.batch_size, data.data_dir",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = Config::default()
                .load_file(&path, &schema())
                .unwrap_err()
                .to_string();
            assert!(e.contains("run.yaml") && e.contains(expected), "{e}");
        }
        std::fs::write(&path, "trainer: [1, 2]\n").unwrap();
        let e = Config::default()
            .load_file(&path, &schema())
            .unwrap_err()
            .to_string();
        assert!(e.contains("`trainer` is a mapping"), "{e}");
    }
}

//! Checkpoint file names from templates such as `{epoch}-{val_loss:.2f}`, as Lightning's
//! `ModelCheckpoint.format_checkpoint_name` writes them: each `{name}` becomes `name=value`,
//! with a Python format spec (`.2f`, `03d`, `.3e`) when one is given.

use std::collections::BTreeMap;

/// One piece of a parsed template.
#[derive(Debug, Clone, PartialEq)]
enum Piece {
    Text(String),
    Field { name: String, spec: Spec },
}

/// The subset of Python's format spec that names need: `[0][width][.precision][d|f|e]`.
#[derive(Debug, Clone, Copy, PartialEq, Default)]
struct Spec {
    zero: bool,
    width: usize,
    precision: Option<usize>,
    kind: Option<char>,
}

/// A checked template.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Template(Vec<Piece>);

impl Template {
    /// Parses `template`, or says what is wrong with it.
    pub(crate) fn parse(template: &str) -> Result<Self, String> {
        let mut pieces = Vec::new();
        let mut rest = template;
        while let Some(open) = rest.find('{') {
            if let Some(close) = rest[..open].find('}') {
                return Err(format!("unmatched `}}` at `{}`", &rest[close..]));
            }
            if open > 0 {
                pieces.push(Piece::Text(rest[..open].to_string()));
            }
            let close = rest[open..]
                .find('}')
                .ok_or_else(|| format!("unclosed `{{` in `{}`", &rest[open..]))?
                + open;
            let field = &rest[open + 1..close];
            let (name, spec) = field.split_once(':').unwrap_or((field, ""));
            if name.is_empty() {
                return Err("an empty `{}`: write the metric's name inside".to_string());
            }
            pieces.push(Piece::Field {
                name: name.to_string(),
                spec: Spec::parse(spec)
                    .ok_or_else(|| format!("`{spec}` in `{{{field}}}` is not a format fulmen knows (use e.g. `.2f`, `03d`, `.3e`)"))?,
            });
            rest = &rest[close + 1..];
        }
        if rest.contains('}') {
            return Err(format!("unmatched `}}` in `{rest}`"));
        }
        if !rest.is_empty() {
            pieces.push(Piece::Text(rest.to_string()));
        }
        Ok(Template(pieces))
    }

    /// The file stem for `values`; `Err` names the first field with no value.
    pub(crate) fn format(&self, values: &BTreeMap<String, f64>) -> Result<String, String> {
        let mut out = String::new();
        for piece in &self.0 {
            match piece {
                Piece::Text(t) => out.push_str(t),
                Piece::Field { name, spec } => {
                    let v = values.get(name).ok_or_else(|| name.clone())?;
                    // A `/` (an evaluation loader's suffix) would make a folder: `_`, as
                    // Lightning writes the name.
                    let shown = name.replace('/', "_");
                    out.push_str(&format!("{shown}={}", spec.apply(*v)));
                }
            }
        }
        Ok(out)
    }
}

impl Spec {
    fn parse(s: &str) -> Option<Spec> {
        let mut spec = Spec::default();
        let mut rest = s;
        if let Some(kind) = rest.chars().last().filter(|c| c.is_ascii_alphabetic()) {
            if !matches!(kind, 'd' | 'f' | 'e') {
                return None;
            }
            spec.kind = Some(kind);
            rest = &rest[..rest.len() - 1];
        }
        let (width, precision) = rest.split_once('.').unwrap_or((rest, ""));
        if let Some(w) = width.strip_prefix('0') {
            spec.zero = true;
            spec.width = if w.is_empty() { 0 } else { w.parse().ok()? };
        } else if !width.is_empty() {
            spec.width = width.parse().ok()?;
        }
        if rest.contains('.') {
            spec.precision = Some(precision.parse().ok()?);
        }
        Some(spec)
    }

    fn apply(&self, v: f64) -> String {
        let integral = v.fract() == 0.0 && v.abs() < 1e15;
        let body = match (self.kind, self.precision) {
            (Some('d'), _) => format!("{}", v as i64),
            (Some('e'), p) => python_exp(v, p.unwrap_or(6)),
            (Some('f'), p) | (None, p @ Some(_)) => format!("{:.*}", p.unwrap_or(6), v),
            _ if integral => format!("{}", v as i64),
            _ => format!("{v}"),
        };
        match (self.zero, body.strip_prefix('-')) {
            (true, Some(digits)) => format!("-{digits:0>w$}", w = self.width.saturating_sub(1)),
            (true, None) => format!("{body:0>w$}", w = self.width),
            (false, _) => format!("{body:>w$}", w = self.width),
        }
    }
}

/// `v` in Python's `e` notation: at least two exponent digits, with a sign (`1.50e-03`).
fn python_exp(v: f64, precision: usize) -> String {
    let rust = format!("{v:.precision$e}");
    match rust.split_once('e') {
        Some((mantissa, exp)) => {
            let (sign, digits) = match exp.strip_prefix('-') {
                Some(d) => ('-', d),
                None => ('+', exp),
            };
            format!("{mantissa}e{sign}{digits:0>2}")
        }
        None => rust,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(template: &str, values: &[(&str, f64)]) -> String {
        let values = values.iter().map(|(k, v)| (k.to_string(), *v)).collect();
        Template::parse(template).unwrap().format(&values).unwrap()
    }

    #[test]
    fn formats_as_lightning_does() {
        let v = [("epoch", 3.0), ("step", 32.0), ("val_loss", 0.12345)];
        assert_eq!(name("{epoch}-{step}", &v), "epoch=3-step=32");
        assert_eq!(name("{epoch}-{val_loss:.2f}", &v), "epoch=3-val_loss=0.12");
        assert_eq!(name("best-{epoch:03d}", &v), "best-epoch=003");
        assert_eq!(name("{val_loss:.2e}", &v), "val_loss=1.23e-01");
        assert_eq!(name("{val_loss}", &v), "val_loss=0.12345");
        assert_eq!(name("plain", &v), "plain");
        let several = [("val_loss/dataloader_idx_1", 0.5)];
        assert_eq!(
            name("{val_loss/dataloader_idx_1:.1f}", &several),
            "val_loss_dataloader_idx_1=0.5"
        );
    }

    #[test]
    fn refuses_bad_templates() {
        assert!(Template::parse("{epoch").unwrap_err().contains("unclosed"));
        assert!(Template::parse("epoch}").unwrap_err().contains("unmatched"));
        assert!(Template::parse("{}").unwrap_err().contains("empty"));
        assert!(Template::parse("{val_loss:.2x}")
            .unwrap_err()
            .contains(".2x"));
        let t = Template::parse("{val_acc}").unwrap();
        assert_eq!(t.format(&BTreeMap::new()), Err("val_acc".to_string()));
    }
}

//! `ModelSummary`: prints the module's layers with their parameter counts when fit starts
//! (Lightning's `ModelSummary`, on by default through `enable_model_summary`).
//!
//! ```text
//!   | Name    | Type           | Params | Shapes
//! -------------------------------------------------------------------------
//! 0 | layer_1 | Linear<4, 16>  |     80 | weight [16, 4], bias [16]
//! 1 | layer_2 | Linear<16, 3>  |     51 | weight [3, 16], bias [3]
//! -------------------------------------------------------------------------
//! 131       Trainable params
//! 0         Non-trainable params
//! 131       Total params
//! 0.001     Total estimated model params size (MB)
//! ```

use crate::callback::Callback;
use crate::trainer::ParamInfo;
use crate::TrainerView;

/// One row of the table: a field (or nested field), its parameter count, its tensors' shapes.
type Row = (String, usize, Vec<String>);

/// Prints the summary table; see the [module docs](self).
#[derive(Debug, Clone)]
pub struct ModelSummary {
    max_depth: usize,
}

impl Default for ModelSummary {
    fn default() -> Self {
        Self::new()
    }
}

impl ModelSummary {
    /// Rows for the top-level fields (Lightning's `max_depth=1`).
    pub fn new() -> Self {
        Self { max_depth: 1 }
    }
    /// Rows down to this depth of nested modules (`block.conv1` is depth 2).
    pub fn max_depth(mut self, depth: usize) -> Self {
        self.max_depth = depth.max(1);
        self
    }

    /// The table for `params`, with `bytes` per value; `layers` names the types of the
    /// top-level fields.
    pub fn table(&self, params: &[ParamInfo], layers: &[(&str, &str)], bytes: usize) -> String {
        // Rows in first-seen order: (name, count, shapes).
        let mut rows: Vec<Row> = Vec::new();
        for p in params {
            let parts: Vec<&str> = p.name.split('.').collect();
            let depth = self.max_depth.min(parts.len().saturating_sub(1)).max(1);
            let (row, rest) = (parts[..depth].join("."), parts[depth..].join("."));
            let count: usize = p.shape.iter().product();
            let shape = format!("{rest} {:?}", p.shape);
            match rows.iter_mut().find(|r| r.0 == row) {
                Some(r) => {
                    r.1 += count;
                    r.2.push(shape);
                }
                None => rows.push((row, count, vec![shape])),
            }
        }
        let type_of = |row: &str| {
            layers
                .iter()
                .find(|(name, _)| *name == row)
                .map_or(String::new(), |(_, ty)| brief(ty))
        };
        let width = |f: &dyn Fn(&Row) -> usize| rows.iter().map(f).max().unwrap_or(0);
        let name_w = width(&|r| r.0.len()).max(4);
        let type_w = width(&|r| type_of(&r.0).chars().count()).max(4);
        let count_w = width(&|r| r.1.to_string().len()).max(6);
        let mut out = format!(
            "  | {:name_w$} | {:type_w$} | {:count_w$} | Shapes\n",
            "Name", "Type", "Params"
        );
        let rule = "-".repeat(name_w + type_w + count_w + 40);
        out += &format!("{rule}\n");
        for (i, (name, count, shapes)) in rows.iter().enumerate() {
            out += &format!(
                "{i} | {name:name_w$} | {:type_w$} | {count:count_w$} | {}\n",
                type_of(name),
                shapes.join(", ")
            );
        }
        let count = |trainable: bool| -> usize {
            params
                .iter()
                .filter(|p| p.trainable == trainable)
                .map(|p| p.shape.iter().product::<usize>())
                .sum()
        };
        let (t, n) = (count(true), count(false));
        out += &format!("{rule}\n");
        out += &format!("{t:<9} Trainable params\n{n:<9} Non-trainable params\n");
        out += &format!("{:<9} Total params\n", t + n);
        out += &format!(
            "{:<9.3} Total estimated model params size (MB)\n",
            ((t + n) * bytes) as f64 / 1e6
        );
        out
    }
}

/// A field's type on one short line: the tuples inside a tuple elided, `((Linear<4, 16>,
/// ReLU), Linear<16, 3>)` as `((…), Linear<16, 3>)`, whitespace made single spaces.
fn brief(ty: &str) -> String {
    let mut out = String::new();
    let mut depth = 0usize;
    for c in ty.split_whitespace().collect::<Vec<_>>().join(" ").chars() {
        match c {
            '(' => {
                depth += 1;
                match depth {
                    1 => out.push('('),
                    2 => out.push_str("(…"),
                    _ => {}
                }
            }
            ')' => {
                if depth <= 2 {
                    out.push(')');
                }
                depth = depth.saturating_sub(1);
            }
            c if depth < 2 => out.push(c),
            _ => {}
        }
    }
    out
}

impl Callback for ModelSummary {
    fn on_fit_start(&mut self, trainer: &mut TrainerView) {
        print!(
            "{}",
            self.table(trainer.model_parameters(), trainer.model_layers(), 4)
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(name: &str, shape: &[usize], trainable: bool) -> ParamInfo {
        ParamInfo {
            name: name.into(),
            shape: shape.to_vec(),
            trainable,
        }
    }

    #[test]
    fn rows_group_tensors_by_field_down_to_the_depth() {
        let params = [
            p("block.conv.weight", &[8, 3], true),
            p("block.norm.running_mean", &[8], false),
            p("head.weight", &[2, 8], true),
        ];
        let layers = [("block", "Block"), ("head", "Linear<8, 2>")];
        let table = ModelSummary::new().table(&params, &layers, 4);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(
            lines[2],
            "0 | block | Block        |     32 | conv.weight [8, 3], norm.running_mean [8]"
        );
        assert_eq!(
            lines[3],
            "1 | head  | Linear<8, 2> |     16 | weight [2, 8]"
        );
        assert_eq!(lines[5], "40        Trainable params");
        assert_eq!(lines[6], "8         Non-trainable params");
        let deep = ModelSummary::new().max_depth(2).table(&params, &layers, 4);
        assert!(
            deep.contains("0 | block.conv |              |     24 | weight [8, 3]"),
            "{deep}"
        );
    }

    #[test]
    fn a_nested_tuples_type_stays_on_one_short_line() {
        assert_eq!(
            brief("((Linear<4, 16>, ReLU),\n (Linear<16, 16>, ReLU), Linear<16, 3>)"),
            "((…), (…), Linear<16, 3>)"
        );
        assert_eq!(brief("(Linear<4, 16>, ReLU)"), "(Linear<4, 16>, ReLU)");
        assert_eq!(
            brief("Repeated<(Linear<8, 8>, (ReLU, Dropout)), 3>"),
            "Repeated<(Linear<8, 8>, (…)), 3>"
        );
        let params = [p("body.0.weight", &[16, 4], true)];
        let layers = [("body", "((Linear<4, 16>, ReLU), Linear<16, 3>)")];
        let table = ModelSummary::new().table(&params, &layers, 4);
        assert!(table.contains("| body | ((…), Linear<16, 3>) |"), "{table}");
    }
}

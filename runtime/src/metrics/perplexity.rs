//! [`Perplexity`]: exp of the mean negative log-likelihood of the targets under the
//! predicted logits (a language model's token predictions, flattened to `(tokens, vocab)`),
//! as torchmetrics' `Perplexity`; `ignore_index` leaves out padding.
//!
//! ```
//! use fulmen::metrics::{HostPreds, Metric, Perplexity};
//! let mut ppl = Perplexity::default();
//! // Uniform logits over 4 tokens: perplexity 4.
//! let logits = HostPreds::scores(2, 4, vec![0.0; 8])?;
//! ppl.update(&logits, &[1usize, 3][..])?;
//! assert!((ppl.compute()? - 4.0).abs() < 1e-12);
//! # Ok::<(), fulmen::Error>(())
//! ```

use super::collection::HostUpdate;
use super::inputs::{class_of, HostPreds, HostTargets, Preds, Targets};
use super::scores::Read;
use super::state::{Merge, State};
use super::{Metric, Tracked};
use crate::{Error, Result};

/// exp(mean negative log-likelihood).
#[derive(Debug, Clone, PartialEq)]
pub struct Perplexity {
    ignore_index: Option<i64>,
    tracked: Tracked,
}

impl Default for Perplexity {
    fn default() -> Self {
        Self {
            ignore_index: None,
            tracked: Tracked::new(State::new(&[
                ("sum_nll", Merge::Sum, 1),
                ("count", Merge::Sum, 1),
            ])),
        }
    }
}

impl Perplexity {
    /// Leaves out the tokens whose target is `index` (padding).
    pub fn ignore_index(mut self, index: i64) -> Self {
        self.ignore_index = Some(index);
        self
    }

    /// Adds a batch: logits `(tokens, vocab)` against each token's target index.
    pub fn update(&mut self, logits: impl Preds, target: impl Targets) -> Result<()> {
        self.update_host(&logits.host()?, &target.host())
    }
}

impl HostUpdate for Perplexity {
    fn batch_state(&self, logits: &HostPreds, target: &HostTargets) -> Result<State> {
        let HostPreds::Scores(scores) = logits else {
            return Err(Error::msg(
                "Perplexity: takes logits (tokens, vocab), not class indices",
            ));
        };
        let (rows, cols) = (scores.rows(), scores.cols());
        if rows != target.rows || target.cols != 1 || target.values.len() != rows {
            return Err(Error::msg(format!(
                "Perplexity: {rows} rows of logits for {} targets",
                target.values.len()
            )));
        }
        // Each token's target (None: left out).
        let targets = (target.values.iter().enumerate())
            .map(|(row, &t)| match class_of(t, cols) {
                _ if self.ignore_index.is_some_and(|i| i as f64 == t) => Ok(None),
                Some(t) => Ok(Some(t)),
                None => Err(Error::msg(format!(
                    "Perplexity: target {t} of token {row} is not in 0..{cols}"
                ))),
            })
            .collect::<Result<Vec<_>>>()?;
        // Each token's negative log-likelihood, in f64.
        let nlls = scores.map_rows(Read::Raw, |row, logits| {
            let t = targets[row]?;
            let max = logits.iter().copied().fold(f64::NEG_INFINITY, f64::max);
            if !max.is_finite() || logits.iter().any(|v| v.is_nan()) {
                return Some(Err(row));
            }
            let log_sum = max + logits.iter().map(|v| (v - max).exp()).sum::<f64>().ln();
            Some(Ok(log_sum - logits[t]))
        });
        let (mut nll, mut count) = (0.0, 0.0);
        for token in nlls.into_iter().flatten() {
            let value = token.map_err(|row| {
                Error::msg(format!(
                    "Perplexity: the logits of token {row} are not numbers"
                ))
            })?;
            nll += value;
            count += 1.0;
        }
        let mut batch = self.tracked.total().emptied();
        batch.get_mut(0)[0] = nll;
        batch.get_mut(1)[0] = count;
        Ok(batch)
    }
}

impl Metric for Perplexity {
    fn name(&self) -> &'static str {
        "Perplexity"
    }
    fn tracked(&self) -> &Tracked {
        &self.tracked
    }
    fn tracked_mut(&mut self) -> &mut Tracked {
        &mut self.tracked
    }
    fn value_of(&self, state: &State) -> Result<f64> {
        let (nll, count) = (state.get(0)[0], state.get(1)[0]);
        Ok(if count == 0.0 {
            f64::NAN
        } else {
            (nll / count).exp()
        })
    }
}

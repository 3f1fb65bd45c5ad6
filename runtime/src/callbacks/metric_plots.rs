//! `MetricPlots`: draws the module's metrics that are pictures (`ConfusionMatrix`,
//! `RocCurve`, `PrecisionRecallCurve` fields) at the end of every validation and test epoch:
//! a PNG per field and epoch in its directory, the same image to the logger (TensorBoard's
//! IMAGES tab), drawn by rank 0 from every rank's updates; then resets them, as the trainer
//! resets the metrics it logs.
//!
//! ```
//! use fulmen::callbacks::MetricPlots;
//! use fulmen::prelude::*;
//! let trainer = Trainer::builder().callback(MetricPlots::new()).build();
//! ```

use std::path::PathBuf;

use crate::callback::Callback;
use crate::distributed::Collective;
use crate::metrics::Metric;
use crate::{Error, Stage, TrainerView};

/// Draws the picture metrics at the end of validation and test epochs.
#[derive(Debug, Clone, Default)]
pub struct MetricPlots {
    dir: Option<PathBuf>,
}

impl MetricPlots {
    /// Into `plots/` under the logger's directory (or the working directory without one).
    pub fn new() -> Self {
        Self::default()
    }
    /// Into `dir`.
    pub fn dirpath(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }
}

impl Callback for MetricPlots {
    fn with_metrics(
        &mut self,
        trainer: &mut TrainerView,
        loop_stage: Stage,
        metrics: &mut [(String, &mut dyn Metric)],
        ranks: &dyn Collective,
    ) {
        if loop_stage == Stage::Fit {
            return;
        }
        let mut failed = None;
        for (field, metric) in metrics.iter_mut() {
            if !metric.is_picture() {
                continue;
            }
            if trainer.sanity_checking() {
                metric.reset();
                continue;
            }
            // Every rank's updates (every rank syncs the same metrics, in order); rank 0 draws.
            let drawn = metric.tracked().total().sync(ranks).and_then(|state| {
                // Updated on no rank since the last reset: nothing to draw.
                if state == state.emptied() || !trainer.is_global_zero() {
                    return Ok(());
                }
                let png = metric.picture_of(&state)?;
                let dir = (self.dir.clone())
                    .or_else(|| trainer.log_dir().map(|d| d.join("plots")))
                    .unwrap_or_else(|| PathBuf::from("plots"));
                let file = field.replace('/', "-");
                let path = dir.join(format!("{file}-epoch={}.png", trainer.current_epoch()));
                std::fs::create_dir_all(&dir)
                    .and_then(|()| std::fs::write(&path, &png))
                    .map_err(|e| Error::io(&path, e))?;
                trainer.log_image(field, &png);
                Ok(())
            });
            metric.reset();
            if let Err(e) = drawn {
                failed.get_or_insert(Error::msg(format!("MetricPlots: `{field}`: {e}")));
            }
        }
        // Rank 0 alone draws and writes: every rank learns whether that failed, so that all
        // stop together (one stopping alone would leave the others waiting on it).
        let mut any = [f64::from(u8::from(failed.is_some()))];
        if ranks.world_size() > 1 {
            if let Err(e) = ranks.all_reduce_max_f64(&mut any) {
                failed.get_or_insert(e);
            }
        }
        match failed {
            Some(e) => trainer.fail(e),
            None if any[0] > 0.0 => trainer.fail(Error::msg(
                "MetricPlots: rank 0 could not draw or write a picture (its error names which)",
            )),
            None => {}
        }
    }
}

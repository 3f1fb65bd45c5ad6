//! The progress bar: an indicatif bar on a terminal, one plain line per epoch otherwise.

use std::collections::BTreeMap;
use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub(crate) struct Progress {
    enabled: bool,
    terminal: bool,
    bar: Option<ProgressBar>,
    label: String,
    total: usize,
    done: usize,
    started: Instant,
}

fn format_metrics(metrics: &BTreeMap<String, f64>) -> String {
    metrics
        .iter()
        .map(|(k, v)| format!("{k}={v:.4}"))
        .collect::<Vec<_>>()
        .join(" ")
}

impl Progress {
    pub(crate) fn new(enabled: bool) -> Self {
        Self {
            enabled,
            terminal: std::io::stdout().is_terminal(),
            bar: None,
            label: String::new(),
            total: 0,
            done: 0,
            started: Instant::now(),
        }
    }

    /// Starts a bar of `total` batches labelled `label` ("Epoch 3/10", "Validation").
    pub(crate) fn start(&mut self, label: String, total: usize) {
        if !self.enabled {
            return;
        }
        self.label = label;
        self.total = total;
        self.done = 0;
        self.started = Instant::now();
        if self.terminal {
            let bar =
                ProgressBar::with_draw_target(Some(total as u64), ProgressDrawTarget::stdout());
            let style = ProgressStyle::with_template(
                "{prefix} {bar:25} {pos}/{len} [{elapsed_precise}<{eta_precise}, {per_sec}] {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style);
            bar.set_prefix(self.label.clone());
            self.bar = Some(bar);
        }
    }

    pub(crate) fn advance(&mut self, metrics: &BTreeMap<String, f64>) {
        self.done += 1;
        if let Some(bar) = &self.bar {
            bar.set_message(format_metrics(metrics));
            bar.inc(1);
        }
    }

    pub(crate) fn finish(&mut self, metrics: &BTreeMap<String, f64>) {
        if !self.enabled {
            return;
        }
        let metrics = format_metrics(metrics);
        match self.bar.take() {
            Some(bar) => {
                bar.set_message(metrics);
                bar.finish();
            }
            None => {
                let secs = self.started.elapsed().as_secs_f64();
                let rate = if secs > 0.0 {
                    self.done as f64 / secs
                } else {
                    0.0
                };
                println!(
                    "{}: {}/{} batches [{secs:.2}s, {rate:.1} it/s] {metrics}",
                    self.label, self.done, self.total
                );
            }
        }
    }
}

//! The tutorial's bonus exercise: a callback that measures the wall time of every training
//! epoch, sends it to the logger as `epoch_time_sec` and prints it.

mod common;

use std::collections::BTreeMap;
use std::time::Instant;

use clap::Parser;
use common::{exit_on_error, Args, IrisClassifier, IrisDataModule};
use fulmen::prelude::*;

#[derive(Default)]
struct EpochTimingCallback {
    epoch_start_time: Option<Instant>,
}

impl Callback for EpochTimingCallback {
    fn on_train_epoch_start(&mut self, _trainer: &mut TrainerView) {
        self.epoch_start_time = Some(Instant::now());
    }

    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        let Some(start) = self.epoch_start_time.take() else {
            return;
        };
        let duration = start.elapsed().as_secs_f64();
        let epoch = trainer.current_epoch();
        trainer.log_metrics(
            &BTreeMap::from([("epoch_time_sec".to_string(), duration)]),
            epoch,
        );
        println!("[Timing] Epoch {epoch} took {duration:.2} seconds");
    }
}

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    exit_on_error(|| {
        let mut trainer = args.trainer(|b| b.callback(EpochTimingCallback::default()))?;
        let mut dm = IrisDataModule::new(args.data_dir.clone(), 16, 0.2, 42, true);
        let mut model = IrisClassifier::new(0.01);
        trainer.fit_from(&mut model, &mut dm, args.ckpt_path.as_deref())?;
        if let Some(dir) = trainer.log_dir() {
            println!("metrics written to {}", dir.join("metrics.csv").display());
        }
        Ok(())
    })
}

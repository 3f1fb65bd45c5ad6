//! The tutorial's second program: the same model, fed by `IrisDataModule` (in
//! `common/mod.rs`), which checks for `data/iris.npz`, splits it 80/20 stratified with seed
//! 42, and serves a shuffled training loader and a validation loader.

mod common;

use clap::Parser;
use common::{exit_on_error, Args, IrisClassifier, IrisDataModule};

fn main() -> std::process::ExitCode {
    let args = Args::parse();
    exit_on_error(|| {
        let mut trainer = args.trainer(|b| b)?;
        let mut dm = IrisDataModule::new(args.data_dir.clone(), 16, 0.2, 42, true);
        let mut model = IrisClassifier::new(0.01);
        trainer.fit_from(&mut model, &mut dm, args.ckpt_path.as_deref())?;
        if let Some(acc) = trainer.callback_metrics().get("val_acc") {
            println!("val_acc after {} epochs: {acc:.4}", trainer.current_epoch());
        }
        Ok(())
    })
}

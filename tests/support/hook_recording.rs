//! The hook-order test's recording: a module (automatic and manual), a callback and a data
//! module whose every hook records its call as `who:hook(arg)`, Lightning's fixture's format.

use std::cell::RefCell;
use std::rc::Rc;

use fulmen::optim::{Interval, LrScheduler, StepLR};
use fulmen::prelude::*;
use fulmen::serde_json::{self, Value};

pub type Log = Rc<RefCell<Vec<String>>>;

pub fn rec(log: &Log, who: &str, what: impl AsRef<str>) {
    log.borrow_mut().push(format!("{who}:{}", what.as_ref()));
}

#[lightning_module]
pub struct Recorded {
    layer: Linear<2, 2>,
    #[skip]
    pub log: Log,
    /// `training_step` fails at this batch.
    #[skip]
    pub fail_at: Option<usize>,
    /// A scheduler stepped every optimizer step.
    #[skip]
    pub scheduler: bool,
}

/// `impl` with `body` and every hook the module and the callback share, each recording its
/// call as `who` (written out here, not by inner macros: `#[lightning_module]` must see them).
macro_rules! with_hooks {
    ($who:literal, $(#[$($attr:tt)*])? [$($head:tt)*] { $($body:tt)* }) => {
        $(#[$($attr)*])?
        $($head)* {
            $($body)*
            fn setup(&mut self, _t: &mut TrainerView, stage: Stage) {
                rec(&self.log, $who, format!("setup({stage})"))
            }
            fn teardown(&mut self, _t: &mut TrainerView, stage: Stage) {
                rec(&self.log, $who, format!("teardown({stage})"))
            }
            fn on_fit_start(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_fit_start") }
            fn on_fit_end(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_fit_end") }
            fn on_train_start(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_train_start") }
            fn on_train_end(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_train_end") }
            fn on_train_epoch_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_train_epoch_start")
            }
            fn on_train_epoch_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_train_epoch_end")
            }
            fn on_train_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_train_batch_start({i})"))
            }
            fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, i: usize) {
                rec(&self.log, $who, format!("on_train_batch_end({i})"))
            }
            fn on_before_zero_grad(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_before_zero_grad")
            }
            fn on_before_backward(&mut self, _t: &mut TrainerView, _loss: f64) {
                rec(&self.log, $who, "on_before_backward")
            }
            fn on_after_backward(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_after_backward")
            }
            fn on_before_optimizer_step(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_before_optimizer_step")
            }
            fn on_validation_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_validation_start")
            }
            fn on_validation_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_validation_end")
            }
            fn on_validation_epoch_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_validation_epoch_start")
            }
            fn on_validation_epoch_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_validation_epoch_end")
            }
            fn on_validation_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_validation_batch_start({i})"))
            }
            fn on_validation_batch_end(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_validation_batch_end({i})"))
            }
            fn on_test_start(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_test_start") }
            fn on_test_end(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_test_end") }
            fn on_test_epoch_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_test_epoch_start")
            }
            fn on_test_epoch_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_test_epoch_end")
            }
            fn on_test_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_test_batch_start({i})"))
            }
            fn on_test_batch_end(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_test_batch_end({i})"))
            }
            fn on_predict_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_predict_start")
            }
            fn on_predict_end(&mut self, _t: &mut TrainerView) { rec(&self.log, $who, "on_predict_end") }
            fn on_predict_epoch_start(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_predict_epoch_start")
            }
            fn on_predict_epoch_end(&mut self, _t: &mut TrainerView) {
                rec(&self.log, $who, "on_predict_epoch_end")
            }
            fn on_predict_batch_start(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_predict_batch_start({i})"))
            }
            fn on_predict_batch_end(&mut self, _t: &mut TrainerView, i: usize) {
                rec(&self.log, $who, format!("on_predict_batch_end({i})"))
            }
            fn on_save_checkpoint(
                &mut self,
                _t: &mut TrainerView,
                _c: &mut fulmen::checkpoint::Checkpoint,
            ) {
                rec(&self.log, $who, "on_save_checkpoint")
            }
        }
    };
}

/// A `#[lightning_module]` impl with `body`, the shared hooks and the module's own, recorded.
macro_rules! module_with_hooks {
    (#[$($attr:tt)*] [$($head:tt)*] { $($body:tt)* }) => {
        with_hooks!("module", #[$($attr)*] [$($head)*] {
            $($body)*
            fn prepare_data(&mut self, _t: &mut TrainerView) {
                rec(&self.log, "module", "prepare_data")
            }
            fn train_dataloader(&mut self) -> DataLoader<Sample> {
                rec(&self.log, "module", "train_dataloader");
                DataLoader::new(samples(4), 2)
            }
            fn val_dataloader(&mut self) -> DataLoader<Sample> {
                rec(&self.log, "module", "val_dataloader");
                DataLoader::new(samples(2), 2)
            }
            fn test_dataloader(&mut self) -> DataLoader<Sample> {
                rec(&self.log, "module", "test_dataloader");
                DataLoader::new(samples(2), 2)
            }
            fn predict_dataloader(&mut self) -> DataLoader<Sample> {
                rec(&self.log, "module", "predict_dataloader");
                DataLoader::new(samples(2), 2)
            }
            fn on_before_batch_transfer(
                &mut self,
                batch: ClassBatch<2, 2, f32, Cpu>,
                _dataloader_idx: usize,
            ) -> ClassBatch<2, 2, f32, Cpu> {
                rec(&self.log, "module", "on_before_batch_transfer");
                batch
            }
            fn transfer_batch_to_device(
                &mut self,
                (x, y): ClassBatch<2, 2, f32, Cpu>,
                device: &D,
                _dataloader_idx: usize,
            ) -> ClassBatch<2, 2, E, D> {
                rec(&self.log, "module", "transfer_batch_to_device");
                moved((x, y), device)
            }
            fn on_after_batch_transfer(
                &mut self,
                batch: ClassBatch<2, 2, E, D>,
                _dataloader_idx: usize,
            ) -> ClassBatch<2, 2, E, D> {
                rec(&self.log, "module", "on_after_batch_transfer");
                batch
            }
            fn configure_model(&mut self, _t: &mut TrainerView) {
                rec(&self.log, "module", "configure_model")
            }
            fn on_validation_model_eval(&mut self, _t: &mut TrainerView) {
                rec(&self.log, "module", "on_validation_model_eval")
            }
            fn on_validation_model_train(&mut self, _t: &mut TrainerView) {
                rec(&self.log, "module", "on_validation_model_train")
            }
            fn on_validation_model_zero_grad(&mut self, _t: &mut TrainerView) {
                rec(&self.log, "module", "on_validation_model_zero_grad")
            }
            fn on_test_model_eval(&mut self, _t: &mut TrainerView) {
                rec(&self.log, "module", "on_test_model_eval")
            }
            fn on_test_model_train(&mut self, _t: &mut TrainerView) {
                rec(&self.log, "module", "on_test_model_train")
            }
            fn on_predict_model_eval(&mut self, _t: &mut TrainerView) {
                rec(&self.log, "module", "on_predict_model_eval")
            }
            fn optimizer_step(
                &mut self,
                _t: &mut TrainerView,
                _epoch: usize,
                i: usize,
                optimizer: &mut fulmen::optim::OptimizerStep,
            ) {
                rec(&self.log, "module", format!("optimizer_step({i})"));
                optimizer.step();
            }
            fn optimizer_zero_grad(
                &mut self,
                _t: &mut TrainerView,
                _epoch: usize,
                i: usize,
                optimizer: &mut fulmen::optim::ZeroGrad,
            ) {
                rec(&self.log, "module", format!("optimizer_zero_grad({i})"));
                optimizer.zero_grad();
            }
            fn configure_gradient_clipping(
                &mut self,
                _t: &mut TrainerView,
                _clipping: &mut fulmen::optim::GradientClipping,
            ) {
                rec(&self.log, "module", "configure_gradient_clipping")
            }
            fn lr_scheduler_step(
                &mut self,
                _t: &mut TrainerView,
                scheduler: &mut fulmen::optim::SchedulerStep,
            ) {
                rec(&self.log, "module", "lr_scheduler_step");
                scheduler.step();
            }
        });
    };
}

/// A host batch on `device`, as the trainer would move it.
pub fn moved<E: FloatDtype, D: TrainDevice<E>>(
    (x, y): ClassBatch<2, 2, f32, Cpu>,
    device: &D,
) -> ClassBatch<2, 2, E, D> {
    let x = fulmen::data::host_to_device(&x, device);
    (x, Labels::new(y.into_indices(), device.clone()))
}

pub fn recorded(log: &Log) -> Recorded<f32, Cpu> {
    let mut model = Recorded::new();
    model.log = log.clone();
    model
}

module_with_hooks!(#[lightning_module] [impl Recorded] {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<Loss<E, D>> {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("training_step({i})"));
        if self.fail_at == Some(i) {
            return Err(fulmen::Error::msg("the disk is gone"));
        }
        let logits = self.layer.forward(ctx.trace(x));
        Ok(cross_entropy_with_logits_loss(logits, y.one_hot()))
    }
    fn validation_step(&mut self, _batch: ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("validation_step({i})"));
    }
    fn test_step(&mut self, _batch: ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("test_step({i})"));
    }
    fn predict_step(
        &mut self,
        (x, _): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> usize {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("predict_step({i})"));
        x.shape().0
    }
    fn configure_optimizers(&self) -> Optim {
        rec(&self.log, "module", "configure_optimizers");
        match self.scheduler {
            true => Optim::sgd(0.1)
                .scheduler(LrScheduler::from(StepLR::new(1, 0.5)).interval(Interval::Step)),
            false => Optim::sgd(0.1),
        }
    }
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        rec(&self.log, "module", "configure_callbacks");
        Vec::new()
    }
    fn on_load_checkpoint(
        &mut self,
        _t: &mut TrainerView,
        _c: &mut fulmen::checkpoint::Checkpoint,
    ) {
        rec(&self.log, "module", "on_load_checkpoint")
    }
});

/// A module that steps its optimizer itself.
#[lightning_module]
pub struct ManualRecorded {
    layer: Linear<2, 2>,
    #[skip]
    pub log: Log,
}

module_with_hooks!(#[lightning_module(manual_optimization)] [impl ManualRecorded] {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> fulmen::Result<()> {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("training_step({i})"));
        let [opt] = ctx.optimizers()?;
        let loss = cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot());
        ctx.manual_backward(loss, self)?;
        ctx.step(opt, self)?;
        ctx.zero_grad(opt, self)?;
        rec(&self.log, "module", format!("training_step({i}) returns"));
        Ok(())
    }
    fn validation_step(&mut self, _batch: ClassBatch<2, 2, E, D>, ctx: &mut StepContext<E, D>) {
        let i = ctx.batch_idx();
        rec(&self.log, "module", format!("validation_step({i})"));
    }
    fn configure_optimizers(&self) -> Optim {
        rec(&self.log, "module", "configure_optimizers");
        Optim::sgd(0.1)
    }
    fn configure_callbacks(&mut self) -> Vec<Box<dyn Callback>> {
        rec(&self.log, "module", "configure_callbacks");
        Vec::new()
    }
});

/// A stateful callback recording every hook.
pub struct Spy {
    pub log: Log,
}

with_hooks!("callback", [impl Callback for Spy] {
    fn on_load_checkpoint(&mut self, _t: &mut TrainerView, _c: &fulmen::checkpoint::Checkpoint) {
        rec(&self.log, "callback", "on_load_checkpoint")
    }
    fn on_exception(&mut self, _t: &mut TrainerView, error: &fulmen::Error) {
        rec(&self.log, "callback", format!("on_exception({error})"))
    }
    fn state_dict(&self) -> Option<Value> {
        rec(&self.log, "callback", "state_dict");
        Some(serde_json::json!({ "seen": 1 }))
    }
    fn load_state_dict(&mut self, _state: &Value) -> fulmen::Result<()> {
        rec(&self.log, "callback", "load_state_dict");
        Ok(())
    }
    fn on_sanity_check_start(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "callback", "on_sanity_check_start")
    }
    fn on_sanity_check_end(&mut self, _t: &mut TrainerView) {
        rec(&self.log, "callback", "on_sanity_check_end")
    }
});

pub type Sample = ([f32; 2], Class<2>);

pub fn samples(n: usize) -> InMemoryDataset<Sample> {
    let each = (0..n).map(|i| ([i as f32, 1.0], Class::new(i % 2).unwrap()));
    InMemoryDataset::new(each.collect())
}

/// The fixture's data module: its state (a curriculum stage) goes into checkpoints.
#[data_module]
pub struct Data {
    #[skip]
    pub log: Log,
    #[skip]
    pub stage: u64,
}

#[data_module]
impl Data {
    fn prepare_data(&mut self) {
        rec(&self.log, "datamodule", "prepare_data")
    }
    fn setup(&mut self, stage: Stage) {
        rec(&self.log, "datamodule", format!("setup({stage})"))
    }
    fn teardown(&mut self, stage: Stage) {
        rec(&self.log, "datamodule", format!("teardown({stage})"))
    }
    fn train_dataloader(&mut self) -> DataLoader<Sample> {
        rec(&self.log, "datamodule", "train_dataloader");
        DataLoader::new(samples(4), 2)
    }
    fn val_dataloader(&mut self) -> DataLoader<Sample> {
        rec(&self.log, "datamodule", "val_dataloader");
        DataLoader::new(samples(2), 2)
    }
    fn test_dataloader(&mut self) -> DataLoader<Sample> {
        rec(&self.log, "datamodule", "test_dataloader");
        DataLoader::new(samples(3), 2)
    }
    fn predict_dataloader(&mut self) -> DataLoader<Sample> {
        rec(&self.log, "datamodule", "predict_dataloader");
        DataLoader::new(samples(3), 2)
    }
    fn state_dict(&self) -> Value {
        rec(&self.log, "datamodule", "state_dict");
        serde_json::json!({ "stage": self.stage })
    }
    fn load_state_dict(&mut self, state: &Value) {
        rec(&self.log, "datamodule", "load_state_dict");
        self.stage = state["stage"].as_u64().unwrap_or_default();
    }
    fn on_before_batch_transfer(
        &mut self,
        batch: ClassBatch<2, 2, f32, Cpu>,
        _dataloader_idx: usize,
    ) -> ClassBatch<2, 2, f32, Cpu> {
        rec(&self.log, "datamodule", "on_before_batch_transfer");
        batch
    }
    fn transfer_batch_to_device(
        &mut self,
        batch: ClassBatch<2, 2, f32, Cpu>,
        device: &D,
        _dataloader_idx: usize,
    ) -> ClassBatch<2, 2, E, D> {
        rec(&self.log, "datamodule", "transfer_batch_to_device");
        moved(batch, device)
    }
    fn on_after_batch_transfer(
        &mut self,
        batch: ClassBatch<2, 2, E, D>,
        _dataloader_idx: usize,
    ) -> ClassBatch<2, 2, E, D> {
        rec(&self.log, "datamodule", "on_after_batch_transfer");
        batch
    }
    fn on_exception(&mut self, error: &fulmen::Error) {
        rec(&self.log, "datamodule", format!("on_exception({error})"))
    }
}

pub fn data(log: &Log) -> Data {
    Data {
        log: log.clone(),
        stage: 0,
    }
}

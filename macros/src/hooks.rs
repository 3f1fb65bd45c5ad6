//! The methods `#[lightning_module]` knows, with the signatures the trait declares
//! (`fulmen::LightningModule` and the hook list of `fulmen::Callback`).

/// How a known method takes `self`.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Receiver {
    Ref,
    Mut,
}

pub(crate) struct Known {
    pub name: &'static str,
    pub receiver: Receiver,
    /// The parameters after `self`, as the user should write them.
    pub params: &'static [&'static str],
    pub returns: &'static str,
}

const fn hook(name: &'static str, params: &'static [&'static str]) -> Known {
    Known {
        name,
        receiver: Receiver::Mut,
        params,
        returns: "",
    }
}

/// A module's own loader (`module_data.rs`): as a data module's.
const fn loader(name: &'static str) -> Known {
    Known {
        name,
        receiver: Receiver::Mut,
        params: &[],
        returns: " -> DataLoader<Sample>",
    }
}

const TRAINER: &str = "trainer: &mut TrainerView";

pub(crate) const REQUIRED: [&str; 2] = ["training_step", "configure_optimizers"];

/// The batch-transfer hooks (a module's and a data module's), in the order a batch meets them.
pub(crate) const TRANSFER: [&str; 3] = [
    "on_before_batch_transfer",
    "transfer_batch_to_device",
    "on_after_batch_transfer",
];

pub(crate) const KNOWN: &[Known] = &[
    Known {
        name: "training_step",
        receiver: Receiver::Mut,
        params: &["batch: <your batch type>", "ctx: &mut StepContext<E, D>"],
        returns: " -> Loss<E, D>",
    },
    Known {
        name: "validation_step",
        receiver: Receiver::Mut,
        params: &[
            "batch: <its batch type (by default training_step's)>",
            "ctx: &mut StepContext<E, D>",
        ],
        returns: "",
    },
    Known {
        name: "test_step",
        receiver: Receiver::Mut,
        params: &[
            "batch: <validation_step's batch type (by default training_step's)>",
            "ctx: &mut StepContext<E, D>",
        ],
        returns: "",
    },
    Known {
        name: "predict_step",
        receiver: Receiver::Mut,
        params: &[
            "batch: <its batch type (by default training_step's)>",
            "ctx: &mut StepContext<E, D>",
        ],
        returns: " -> <your prediction type>",
    },
    Known {
        name: "configure_optimizers",
        receiver: Receiver::Ref,
        params: &[],
        returns: " -> Optim",
    },
    Known {
        name: "configure_callbacks",
        receiver: Receiver::Mut,
        params: &[],
        returns: " -> Vec<Box<dyn Callback>>",
    },
    Known {
        name: "on_before_batch_transfer",
        receiver: Receiver::Mut,
        params: &[
            "batch: <your batch type, in f32 on the CPU>",
            "dataloader_idx: usize",
        ],
        returns: " -> <the same>",
    },
    Known {
        name: "transfer_batch_to_device",
        receiver: Receiver::Mut,
        params: &[
            "batch: <your batch type, in f32 on the CPU>",
            "device: &D",
            "dataloader_idx: usize",
        ],
        returns: " -> <your batch type, in E on D>",
    },
    Known {
        name: "on_after_batch_transfer",
        receiver: Receiver::Mut,
        params: &[
            "batch: <your batch type, in E on D>",
            "dataloader_idx: usize",
        ],
        returns: " -> <the same>",
    },
    hook("prepare_data", &[TRAINER]),
    loader("train_dataloader"),
    loader("val_dataloader"),
    loader("test_dataloader"),
    loader("predict_dataloader"),
    hook("setup", &[TRAINER, "stage: Stage"]),
    hook("configure_model", &[TRAINER]),
    hook("on_validation_model_eval", &[TRAINER]),
    hook("on_validation_model_train", &[TRAINER]),
    hook("on_validation_model_zero_grad", &[TRAINER]),
    hook("on_test_model_eval", &[TRAINER]),
    hook("on_test_model_train", &[TRAINER]),
    hook("on_predict_model_eval", &[TRAINER]),
    hook(
        "optimizer_step",
        &[
            TRAINER,
            "epoch: usize",
            "batch_idx: usize",
            "optimizer: &mut fulmen::optim::OptimizerStep",
        ],
    ),
    hook(
        "optimizer_zero_grad",
        &[
            TRAINER,
            "epoch: usize",
            "batch_idx: usize",
            "optimizer: &mut fulmen::optim::ZeroGrad",
        ],
    ),
    hook(
        "configure_gradient_clipping",
        &[TRAINER, "clipping: &mut fulmen::optim::GradientClipping"],
    ),
    hook(
        "lr_scheduler_step",
        &[TRAINER, "scheduler: &mut fulmen::optim::SchedulerStep"],
    ),
    hook("teardown", &[TRAINER, "stage: Stage"]),
    hook("on_fit_start", &[TRAINER]),
    hook("on_fit_end", &[TRAINER]),
    hook("on_train_start", &[TRAINER]),
    hook("on_train_end", &[TRAINER]),
    hook("on_train_epoch_start", &[TRAINER]),
    hook("on_train_epoch_end", &[TRAINER]),
    hook("on_train_batch_start", &[TRAINER, "batch_idx: usize"]),
    hook(
        "on_train_batch_end",
        &[TRAINER, "loss: f64", "batch_idx: usize"],
    ),
    hook("on_before_zero_grad", &[TRAINER]),
    hook("on_before_backward", &[TRAINER, "loss: f64"]),
    hook("on_after_backward", &[TRAINER]),
    hook("on_before_optimizer_step", &[TRAINER]),
    hook("on_validation_start", &[TRAINER]),
    hook("on_validation_end", &[TRAINER]),
    hook("on_validation_epoch_start", &[TRAINER]),
    hook("on_validation_epoch_end", &[TRAINER]),
    hook("on_validation_batch_start", &[TRAINER, "batch_idx: usize"]),
    hook("on_validation_batch_end", &[TRAINER, "batch_idx: usize"]),
    hook("on_test_start", &[TRAINER]),
    hook("on_test_end", &[TRAINER]),
    hook("on_test_epoch_start", &[TRAINER]),
    hook("on_test_epoch_end", &[TRAINER]),
    hook("on_test_batch_start", &[TRAINER, "batch_idx: usize"]),
    hook("on_test_batch_end", &[TRAINER, "batch_idx: usize"]),
    hook("on_predict_start", &[TRAINER]),
    hook("on_predict_end", &[TRAINER]),
    hook("on_predict_epoch_start", &[TRAINER]),
    hook("on_predict_epoch_end", &[TRAINER]),
    hook("on_predict_batch_start", &[TRAINER, "batch_idx: usize"]),
    hook("on_predict_batch_end", &[TRAINER, "batch_idx: usize"]),
    hook(
        "on_save_checkpoint",
        &[TRAINER, "checkpoint: &mut fulmen::checkpoint::Checkpoint"],
    ),
    hook(
        "on_load_checkpoint",
        &[TRAINER, "checkpoint: &mut fulmen::checkpoint::Checkpoint"],
    ),
];

/// Hooks Lightning offers to callbacks alone (and, for `on_exception`, the data module).
pub(crate) const CALLBACK_ONLY: &[&str] = &[
    "on_sanity_check_start",
    "on_sanity_check_end",
    "on_exception",
];

pub(crate) fn find(name: &str) -> Option<&'static Known> {
    KNOWN.iter().find(|k| k.name == name)
}

impl Known {
    /// `fn name(&mut self, trainer: &mut TrainerView) -> ...`, for messages.
    pub(crate) fn signature(&self) -> String {
        let receiver = match self.receiver {
            Receiver::Ref => "&self",
            Receiver::Mut => "&mut self",
        };
        let mut params = vec![receiver];
        params.extend(self.params.iter().copied());
        format!("fn {}({}){}", self.name, params.join(", "), self.returns)
    }
}

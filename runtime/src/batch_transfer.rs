//! Lightning's batch-transfer hooks: `on_before_batch_transfer`, `transfer_batch_to_device`
//! and `on_after_batch_transfer`, on a module or a data module.
//!
//! Every batch of every loop goes the same way before its `on_*_batch_start` hooks: its
//! samples are collated on the CPU into the f32 batch the steps' signatures name (the *host*
//! batch `H`), then
//! 1. `on_before_batch_transfer(batch, dataloader_idx) -> H`: on the host (CPU-side
//!    augmentation, normalization), in f32 in every precision (Lightning casts a 64-true or
//!    16-true batch before this hook; fulmen casts in the transfer), drawing random numbers
//!    from the run's stream on the CPU;
//! 2. `transfer_batch_to_device(batch, device, dataloader_idx) -> B`: onto the run's device in
//!    its dtype (by default [`CastBatch`](crate::data::CastBatch): tensors moved and cast,
//!    labels and host values kept); a custom batch type that does not implement `CastBatch`
//!    moves itself here;
//! 3. `on_after_batch_transfer(batch, dataloader_idx) -> B`: on the device (augmentation on the
//!    GPU).
//!
//! A module writes them in its `#[lightning_module]` impl, where `E` and `D` are the run's
//! dtype and device, and a data module in its `#[data_module]` impl, where they are in scope
//! the same way. As in Lightning, a hook the data module writes replaces the module's (a
//! warning says so when both write it). Under "16-mixed" the batch is transferred for the f32
//! module and cast to half precision on the device (what autocast does): a batch type of the
//! user's own implements [`CastDtype`](crate::data::CastDtype) for that (every module must
//! run in every precision, so it is asked for at compile time), and
//! [`host_to_device`](crate::data::host_to_device) moves its tensors in its
//! `transfer_batch_to_device` (`tests/batch_transfer.rs` has one).
//!
//! ```no_run
//! use fulmen::prelude::*;
//!
//! #[lightning_module]
//! pub struct Scaled {
//!     layer: Linear<4, 3>,
//! }
//!
//! #[lightning_module]
//! impl Scaled {
//!     /// Centimetres to metres, on the host.
//!     fn on_before_batch_transfer(
//!         &mut self,
//!         (x, y): ClassBatch<4, 3, f32, Cpu>,
//!         _dataloader_idx: usize,
//!     ) -> ClassBatch<4, 3, f32, Cpu> {
//!         (x * 0.01, y)
//!     }
//!
//!     fn training_step(&mut self, (x, y): ClassBatch<4, 3, E, D>, ctx: &mut StepContext<E, D>) -> Loss<E, D> {
//!         cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
//!     }
//!
//!     fn configure_optimizers(&self) -> Optim {
//!         Optim::sgd(0.1)
//!     }
//! }
//! ```
//!
//! Every loader's batch passes through the hooks (Lightning's semantics), so a module or data
//! module that writes them gives every step it runs the same batch type; a module whose
//! `predict_step` takes another type than its hooks does not compile with them.

/// Which batch-transfer hooks an implementation wrote (the data module's replace the
/// module's).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Written {
    /// `on_before_batch_transfer`.
    pub before: bool,
    /// `transfer_batch_to_device`.
    pub transfer: bool,
    /// `on_after_batch_transfer`.
    pub after: bool,
}

impl Written {
    /// None of them.
    pub const NONE: Written = Written {
        before: false,
        transfer: false,
        after: false,
    };

    /// The hooks written in both `self` and `other`, by name.
    pub fn both(self, other: Written) -> Vec<&'static str> {
        let pairs = [
            (self.before && other.before, "on_before_batch_transfer"),
            (self.transfer && other.transfer, "transfer_batch_to_device"),
            (self.after && other.after, "on_after_batch_transfer"),
        ];
        pairs
            .into_iter()
            .filter(|(b, _)| *b)
            .map(|(_, n)| n)
            .collect()
    }
}

/// A module's batch-transfer hooks for a batch collated on the host as `H` and run on the
/// device `D` as `B`. `#[lightning_module]` implements it: for every `H`, `B` that
/// [`CastBatch`](crate::data::CastBatch) moves when the impl writes none of the hooks, else for
/// the types the hooks name.
pub trait BatchTransfer<H, B, D> {
    /// The hooks this implementation wrote.
    const WRITTEN: Written = Written::NONE;

    /// The host batch before it moves (Lightning's `on_before_batch_transfer`). By default, as
    /// it is.
    fn on_before_batch_transfer(&mut self, batch: H, _dataloader_idx: usize) -> H {
        batch
    }

    /// The host batch on `device` (Lightning's `transfer_batch_to_device`).
    /// `#[lightning_module]` writes [`CastBatch::cast`](crate::data::CastBatch::cast) where the
    /// impl does not write the hook.
    fn transfer_batch_to_device(&mut self, batch: H, device: &D, dataloader_idx: usize) -> B;

    /// The batch on the device, before its step (Lightning's `on_after_batch_transfer`). By
    /// default, as it is.
    fn on_after_batch_transfer(&mut self, batch: B, _dataloader_idx: usize) -> B {
        batch
    }
}

/// A data module's batch-transfer hooks for a batch collated on the host as `H` and run on
/// the device `D` as `B`: each by default the module's (`module`), which one the data module
/// writes replaces (Lightning's `_DataHookSelector`). `#[data_module]` implements it: for
/// every `H`, `B` and `D` when the impl writes none of the hooks, else for the types the hooks
/// name.
pub trait DataBatchTransfer<H, B, D> {
    /// The hooks this implementation wrote.
    const WRITTEN: Written = Written::NONE;

    /// Lightning's `on_before_batch_transfer`: by default the module's.
    fn on_before_batch_transfer<M: BatchTransfer<H, B, D>>(
        &mut self,
        batch: H,
        dataloader_idx: usize,
        module: &mut M,
    ) -> H {
        module.on_before_batch_transfer(batch, dataloader_idx)
    }

    /// Lightning's `transfer_batch_to_device`: by default the module's.
    fn transfer_batch_to_device<M: BatchTransfer<H, B, D>>(
        &mut self,
        batch: H,
        device: &D,
        dataloader_idx: usize,
        module: &mut M,
    ) -> B {
        module.transfer_batch_to_device(batch, device, dataloader_idx)
    }

    /// Lightning's `on_after_batch_transfer`: by default the module's.
    fn on_after_batch_transfer<M: BatchTransfer<H, B, D>>(
        &mut self,
        batch: B,
        dataloader_idx: usize,
        module: &mut M,
    ) -> B {
        module.on_after_batch_transfer(batch, dataloader_idx)
    }
}

/// Bare loaders have no hooks.
impl<S, H, B, D> DataBatchTransfer<H, B, D> for crate::datamodule::Loaders<S> {}

/// `batch` through the hooks: each the data module's, which by default is the module's.
pub(crate) fn transfer<H, B, D, DM, M>(
    (dm, module): (&mut DM, &mut M),
    batch: H,
    device: &D,
    dataloader_idx: usize,
) -> B
where
    DM: DataBatchTransfer<H, B, D>,
    M: BatchTransfer<H, B, D>,
{
    let batch = dm.on_before_batch_transfer(batch, dataloader_idx, module);
    let batch = dm.transfer_batch_to_device(batch, device, dataloader_idx, module);
    dm.on_after_batch_transfer(batch, dataloader_idx, module)
}

/// Said once per process and message when the module and the data module both write a hook
/// (Lightning's warning): the data module's runs.
pub(crate) fn warn_if_both(module: Written, data: Written) {
    let both = module.both(data);
    if both.is_empty() {
        return;
    }
    let message = format!(
        "warning: both the module and the data module write {}: the data module's runs (as in Lightning)",
        both.join(", ")
    );
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID.lock().unwrap_or_else(|e| e.into_inner());
    if !said.contains(&message) {
        eprintln!("{message}");
        said.push(message);
    }
}

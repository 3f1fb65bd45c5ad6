//! What `#[module]` / `#[lightning_module]` generate works with dfdx's machinery: building,
//! parameter counts, nesting, more than six layers, const generics, safetensors, moves that
//! keep the hyperparameters.

use fulmen::hparams::CarryHParams;
use fulmen::prelude::*;

#[path = "support/quiet.rs"]
mod quiet;

#[module]
pub struct Block<const W: usize> {
    a: Linear<W, W>,
    b: Linear<W, W>,
    c: Linear<W, W>,
    d: Linear<W, W>,
    e: Linear<W, W>,
    f: Linear<W, W>,
    g: Linear<W, W>,
    act: ReLU,
}

#[lightning_module]
pub struct Net {
    stem: (Linear<4, 8>, ReLU),
    block: Block<8>,
    head: Linear<8, 3>,
    #[hparam]
    name: String,
    #[hparam]
    width: usize,
}

#[lightning_module]
impl Net {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<4, 3, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        let h = self.stem.forward(ctx.trace(x));
        let b = &self.block;
        let h = b.act.forward(b.g.forward(
            b.f.forward(b.e.forward(b.d.forward(b.c.forward(b.b.forward(b.a.forward(h)))))),
        ));
        cross_entropy_with_logits_loss(self.head.forward(h), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.01)
    }
}

#[test]
fn nested_modules_build_count_and_train() {
    let mut net = Net::new("deep".to_string(), 8);
    assert_eq!(
        net.num_trainable_params(),
        (4 * 8 + 8) + 7 * (8 * 8 + 8) + (8 * 3 + 3)
    );
    let hp = net.hparams();
    assert_eq!(hp.get::<String>("name").unwrap(), "deep");
    assert_eq!(hp.get::<usize>("width").unwrap(), 8);
    let loader = DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 32);
    let before = net.block.g.weight.as_vec();
    Trainer::builder()
        .max_steps(3)
        .no_logger()
        .enable_checkpointing(false)
        .enable_progress_bar(false)
        .build()
        .unwrap()
        .fit_loaders(&mut net, loader, None)
        .unwrap();
    assert_ne!(
        net.block.g.weight.as_vec(),
        before,
        "the innermost layer of the nested module trained"
    );
}

#[test]
fn safetensors_round_trip_uses_the_field_names() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("net.safetensors");
    let net = Net::new("a".to_string(), 1);
    net.save_safetensors(&path).unwrap();
    let mut other = Net::new("b".to_string(), 2);
    other.load_safetensors(&path).unwrap();
    assert_eq!(other.block.c.bias.as_vec(), net.block.c.bias.as_vec());
    assert_eq!(other.head.weight.as_vec(), net.head.weight.as_vec());
    let bytes = std::fs::read(&path).unwrap();
    let text = String::from_utf8_lossy(&bytes[..2000.min(bytes.len())]).to_string();
    assert!(
        text.contains("block.c.bias") && text.contains("stem.0.weight"),
        "{text}"
    );
}

#[test]
fn moves_keep_hyperparameters() {
    let net = Net::new("kept".to_string(), 5);
    let moved: Net<f32, Cpu> = net.moved_to(&Cpu::default()).unwrap();
    assert_eq!(moved.hparams(), net.hparams());
    assert_eq!(moved.head.weight.as_vec(), net.head.weight.as_vec());
    let plain = net.to_device(&Cpu::default());
    assert_eq!(plain.width, 0, "dfdx's own move rebuilds from tensors only");
}

/// A value that cannot be cloned.
#[derive(Default)]
struct Handle(u32);

thread_local! {
    /// The handle each training step's module held.
    static HANDLES: std::cell::RefCell<Vec<u32>> = const { std::cell::RefCell::new(Vec::new()) };
}

/// State beside the tensors: notes (`Clone`), a handle (not), a cache on the run's device.
#[lightning_module]
struct Keeping {
    layer: Linear<2, 2>,
    #[skip]
    notes: Vec<String>,
    #[skip]
    handle: Handle,
    #[skip]
    cache: Option<Tensor<(usize,), E, D>>,
}

#[lightning_module]
impl Keeping {
    fn training_step(
        &mut self,
        (x, y): ClassBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        self.notes.push(format!("step {}", ctx.batch_idx()));
        HANDLES.with(|h| h.borrow_mut().push(self.handle.0));
        cross_entropy_with_logits_loss(self.layer.forward(ctx.trace(x)), y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

#[test]
fn skip_fields_go_with_a_stages_copy_where_they_can_and_are_never_lost() {
    for precision in ["64-true", "16-true", "16-mixed", "32-true"] {
        let dir = tempfile::tempdir().unwrap();
        let mut model = Keeping::<f32, Cpu>::new();
        model.notes.push("before".into());
        model.handle = Handle(7);
        model.cache = Some(Cpu::default().tensor((vec![1.0], (1,))));
        let each = (0..4).map(|i| ([i as f32, 1.0], Class::<2>::new(i % 2).unwrap()));
        let loader = DataLoader::new(InMemoryDataset::new(each.collect()), 2);
        (quiet::trainer().precision(precision.parse().unwrap()))
            .max_epochs(1)
            .default_root_dir(dir.path())
            .build()
            .unwrap()
            .fit_loaders(&mut model, loader, None)
            .unwrap();
        // What the copy's steps wrote came back; what could not go stayed.
        assert_eq!(model.notes, ["before", "step 0", "step 1"], "{precision}");
        assert_eq!(model.handle.0, 7, "{precision}");
        assert_eq!(
            model.cache.map(|c| c.as_vec()),
            Some(vec![1.0]),
            "{precision}"
        );
        // A copy starts the handle from its Default; the module itself has its own.
        let seen = HANDLES.with(|h| h.take());
        let expected = match precision {
            // In place, and 16-mixed's half step has the f32 module's fields, moved.
            "32-true" | "16-mixed" => [7, 7],
            _ => [0, 0],
        };
        assert_eq!(seen, expected, "{precision}");
    }
}

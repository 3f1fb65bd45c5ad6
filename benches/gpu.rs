//! ResNet-50 (CIFAR stem, 10 classes) training throughput on a CUDA device through the
//! `Trainer`, at batch 128 on random 3×32×32 images, SGD with momentum 0.9:
//!
//!     cargo bench --features cuda --bench gpu -- 32-true     # or 16-mixed
//!
//! Prints `GPU-BENCH resnet50 <precision> images_per_s=<n>` (steady state: the first
//! `WARMUP` steps are not timed); `scripts/gpu-check.sh` runs it on a GPU machine beside
//! PyTorch's ResNet-50 and records the peak GPU memory. Without the `cuda` feature it says so
//! and exits.

#[cfg(feature = "cuda")]
mod bench {
    use std::sync::{Arc, Mutex};
    use std::time::Instant;

    use fulmen::data::{Class, Image, ImageBatch};
    use fulmen::models::resnet::CifarResNet50;
    use fulmen::prelude::*;

    const BATCH: usize = 128;
    const WARMUP: usize = 3;
    const TIMED: usize = 10;

    #[lightning_module]
    struct Net {
        net: CifarResNet50<10>,
    }

    #[lightning_module]
    impl Net {
        fn training_step(
            &mut self,
            (x, y): ImageBatch<3, 10, E, D>,
            ctx: &mut StepContext<E, D>,
        ) -> Loss<E, D> {
            let logits = self.net.forward_mut(ctx.trace(x));
            cross_entropy_with_logits_loss(logits, y.one_hot())
        }
        fn configure_optimizers(&self) -> Optim {
            Optim::sgd(0.1).momentum(0.9)
        }
    }

    /// The end of every training step.
    struct Stamps(Arc<Mutex<Vec<Instant>>>);

    impl Callback for Stamps {
        fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, _batch_idx: usize) {
            self.0.lock().expect("not poisoned").push(Instant::now());
        }
    }

    pub fn run(precision: &str) -> fulmen::Result<()> {
        seed_everything(0);
        let samples: Vec<(Image<3>, Class<10>)> = (0..BATCH * (WARMUP + TIMED))
            .map(|i| {
                let pixels = (0..3 * 32 * 32)
                    .map(|j| ((i * 7919 + j * 104_729) % 1000) as f32 / 500.0 - 1.0)
                    .collect();
                let image = Image::new(pixels, 32, 32)?;
                let class = Class::new(i % 10).ok_or_else(|| fulmen::Error::msg("class"))?;
                Ok((image, class))
            })
            .collect::<fulmen::Result<_>>()?;
        let stamps = Arc::new(Mutex::new(Vec::new()));
        let mut trainer = Trainer::builder()
            .accelerator("gpu")
            .precision(precision.parse()?)
            .max_epochs(1)
            .no_logger()
            .enable_checkpointing(false)
            .enable_progress_bar(false)
            .enable_model_summary(false)
            .callback(Stamps(stamps.clone()))
            .build()?;
        let mut model = Net::new();
        let loader = DataLoader::new(InMemoryDataset::new(samples), BATCH).num_workers(2);
        trainer.fit_loaders(&mut model, loader, None)?;
        let stamps = stamps.lock().expect("not poisoned");
        let (first, last) = (stamps[WARMUP - 1], stamps[stamps.len() - 1]);
        let timed = stamps.len() - WARMUP;
        let per_s = (timed * BATCH) as f64 / (last - first).as_secs_f64();
        println!(
            "GPU-BENCH resnet50 {precision} images_per_s={per_s:.1} steps={timed} batch={BATCH}"
        );
        Ok(())
    }
}

fn main() -> std::process::ExitCode {
    #[cfg(feature = "cuda")]
    {
        let precision = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .unwrap_or_else(|| "32-true".into());
        if let Err(e) = bench::run(&precision) {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    #[cfg(not(feature = "cuda"))]
    println!("the GPU benchmark needs a CUDA build: cargo bench --features cuda --bench gpu");
    std::process::ExitCode::SUCCESS
}

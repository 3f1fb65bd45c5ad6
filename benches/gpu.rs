//! ResNet-50 (CIFAR stem, 10 classes) training throughput on a CUDA device through the
//! `Trainer`, at batch 128 on random 3×32×32 images, SGD with momentum 0.9:
//!
//!     cargo bench --features cuda --bench gpu -- 32-true     # or 16-mixed
//!     cargo bench --features cuda --bench gpu -- 16-mixed phases   # ms per step, phase by phase
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

    /// The end of every training step, and its loss.
    struct Stamps(Arc<Mutex<Vec<(Instant, f64)>>>);

    impl Callback for Stamps {
        fn on_train_batch_end(&mut self, _t: &mut TrainerView, loss: f64, _batch_idx: usize) {
            self.0
                .lock()
                .expect("not poisoned")
                .push((Instant::now(), loss));
        }
    }

    /// `-- phases`: where a training step's time goes, the GPU synchronized at each hook (so
    /// the phases do not overlap, and the step is a little slower than unsynchronized):
    /// loading, forward, backward (with 16-mixed's unscaling), up to the optimizer step, and
    /// the step, in ms per step over the timed steps.
    struct Phases {
        dev: Cuda,
        last: Option<Instant>,
        batch: usize,
        ms: Arc<Mutex<[f64; 5]>>,
    }

    const PHASES: [&str; 5] = ["data", "forward", "backward", "before_step", "step"];

    impl Phases {
        fn mark(&mut self, phase: usize) {
            self.dev.synchronize();
            let now = Instant::now();
            if let (Some(last), true) = (self.last, self.batch >= WARMUP) {
                self.ms.lock().expect("not poisoned")[phase] +=
                    (now - last).as_secs_f64() * 1e3 / TIMED as f64;
            }
            self.last = Some(now);
        }
    }

    impl Callback for Phases {
        fn on_train_batch_start(&mut self, _t: &mut TrainerView, batch_idx: usize) {
            self.batch = batch_idx;
            self.mark(0);
        }
        fn on_before_backward(&mut self, _t: &mut TrainerView, _loss: f64) {
            self.mark(1);
        }
        fn on_after_backward(&mut self, _t: &mut TrainerView) {
            self.mark(2);
        }
        fn on_before_optimizer_step(&mut self, _t: &mut TrainerView) {
            self.mark(3);
        }
        fn on_train_batch_end(&mut self, _t: &mut TrainerView, _loss: f64, _batch_idx: usize) {
            self.mark(4);
        }
    }

    pub fn run(precision: &str, phases: bool) -> fulmen::Result<()> {
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
        let ms = Arc::new(Mutex::new([0.0; 5]));
        let mut builder = Trainer::builder();
        if phases {
            builder = builder.callback(Phases {
                dev: Cuda::seed_from_u64(0),
                last: None,
                batch: 0,
                ms: ms.clone(),
            });
        }
        let mut trainer = builder
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
        if phases {
            let ms = ms.lock().expect("not poisoned");
            let each: Vec<String> = PHASES
                .iter()
                .zip(ms.iter())
                .map(|(p, v)| format!("{p}_ms={v:.1}"))
                .collect();
            println!("GPU-PHASES resnet50 {precision} {}", each.join(" "));
            return Ok(());
        }
        let stamps = stamps.lock().expect("not poisoned");
        let (first, last) = (stamps[WARMUP - 1], stamps[stamps.len() - 1]);
        let timed = stamps.len() - WARMUP;
        let per_s = (timed * BATCH) as f64 / (last.0 - first.0).as_secs_f64();
        // The first and last steps' losses: finite in both precisions, on the same scale.
        println!(
            "GPU-BENCH resnet50 {precision} images_per_s={per_s:.1} steps={timed} batch={BATCH} \
             loss_first={:.3} loss_last={:.3}",
            stamps[0].1, last.1
        );
        Ok(())
    }
}

/// `-- ops`: where a step's time goes on the GPU, op by op: dfdx's ops in f32, f16 and
/// 16-mixed's `AMP<f16>`, fulmen's layers and optimizer steps in f32 and `AMP<f16>`, each
/// timed between device synchronizations (mean of 5 after 2 warm-ups):
/// `GPU-OPS <op> <dtype> ms=<mean>`.
#[cfg(feature = "cuda")]
mod ops {
    use std::time::Instant;

    use fulmen::device::Half;
    use fulmen::kernels::composed::window_pixels;
    use fulmen::layers::{BatchNorm2D, Conv2DNoBias, ConvGeom};
    use fulmen::models::resnet::CifarResNet50;
    use fulmen::prelude::*;

    #[module]
    struct Parts {
        net: CifarResNet50<10>,
        conv3: Conv2DNoBias<64, 64, 3, 1, 1>,
        conv1: Conv2DNoBias<256, 64, 1, 1, 0>,
        bn: BatchNorm2D<64>,
    }

    fn time(dev: &Cuda, op: &str, dtype: &str, mut f: impl FnMut()) {
        for _ in 0..2 {
            f();
        }
        dev.synchronize();
        let start = Instant::now();
        for _ in 0..5 {
            f();
        }
        dev.synchronize();
        let ms = start.elapsed().as_secs_f64() * 1e3 / 5.0;
        println!("GPU-OPS {op} {dtype} ms={ms:.2}");
    }

    /// A tensor of values spread over [-1, 1).
    fn filled<S: Shape, E: Dtype>(dev: &Cuda, shape: S) -> Tensor<S, E, Cuda>
    where
        Cuda: Device<E>,
    {
        let n = shape.num_elements();
        let v = (0..n).map(|i| E::from_f64((i * 7919 % 1000) as f64 / 500.0 - 1.0));
        dev.tensor_from_vec(v.map(|v| v.unwrap_or_default()).collect(), shape)
    }

    /// The loss a forward-and-backward timing differentiates: the sum of `y`, in three stages
    /// of at most 4,096 values each into many outputs (y's size must be a multiple of 4,096).
    /// One sum of millions of values into one takes 45 ms in f16 (`sum_8M_forward`), which
    /// would be most of what those timings measured.
    fn loss<S: Shape, E: Dtype>(
        y: Tensor<S, E, Cuda, OwnedTape<E, Cuda>>,
    ) -> Tensor<Rank0, E, Cuda, OwnedTape<E, Cuda>>
    where
        Cuda: Device<E>,
    {
        let n = y.shape().num_elements();
        y.reshape_like(&(n / 4096, 64, 64))
            .sum::<(usize, usize), Axis<2>>()
            .sum::<(usize,), Axis<1>>()
            .sum()
    }

    /// fulmen's layers and ResNet-50, forward and backward.
    fn layers<E: FloatDtype>(dev: &Cuda, dtype: &str)
    where
        Cuda: TrainDevice<E>,
    {
        let mut m: Parts<E, Cuda> = BuildModule::build(dev);
        let image: Tensor<(usize, Const<3>, usize, usize), E, Cuda> =
            filled(dev, (128, Const, 32, 32));
        time(dev, "resnet50_forward_backward", dtype, || {
            let y = m.net.forward_mut(image.clone().traced(m.alloc_grads()));
            let _ = y.sum::<Rank0, _>().backward();
        });
        time(dev, "resnet50_forward", dtype, || {
            let _ = m.net.forward(image.clone());
        });
        // An optimizer step over ResNet-50's 23.5 M parameters, on the device.
        let y = m.net.forward_mut(image.clone().traced(m.alloc_grads()));
        let mut grads = y.sum::<Rank0, _>().backward();
        for (name, config) in [
            ("resnet50_sgd_momentum_step", Optim::sgd(0.1).momentum(0.9)),
            ("resnet50_adam_step", Optim::adam(1e-3)),
        ] {
            let mut opt = fulmen::optim::Optimizer::<E, Cuda>::new(config).expect("valid");
            time(dev, name, dtype, || {
                opt.step(&mut m.net, &mut grads).expect("a step");
            });
        }
        time(dev, "resnet50_alloc_grads", dtype, || {
            let _ = m.net.alloc_grads();
        });
        // One layer each, its gradients allocated as the backward reaches them.
        let x64: Tensor<(usize, Const<64>, usize, usize), E, Cuda> =
            filled(dev, (128, Const, 32, 32));
        let x256: Tensor<(usize, Const<256>, usize, usize), E, Cuda> =
            filled(dev, (128, Const, 32, 32));
        time(dev, "conv3x3_64_32x32_forward", dtype, || {
            let _ = m.conv3.forward(x64.clone());
        });
        time(dev, "conv3x3_64_32x32_forward_backward", dtype, || {
            let _ = loss(m.conv3.forward_mut(x64.clone().traced(Gradients::leaky()))).backward();
        });
        time(dev, "conv1x1_256to64_32x32_forward_backward", dtype, || {
            let _ = loss(m.conv1.forward_mut(x256.clone().traced(Gradients::leaky()))).backward();
        });
        time(dev, "batchnorm_64_32x32_forward_backward", dtype, || {
            let _ = loss(m.bn.forward_mut(x64.clone().traced(Gradients::leaky()))).backward();
        });
    }

    /// dfdx's own ops, which the layers are made of on CUDA.
    fn raw<E: Dtype>(dev: &Cuda, dtype: &str)
    where
        Cuda: Device<E>,
    {
        let a: Tensor<(usize, usize), E, Cuda> = filled(dev, (131_072, 576));
        let b: Tensor<(usize, usize), E, Cuda> = filled(dev, (576, 64));
        time(dev, "matmul_131072x576x64_forward", dtype, || {
            let _ = a.clone().matmul(b.clone());
        });
        time(dev, "matmul_131072x576x64_forward_backward", dtype, || {
            let _ = loss(a.clone().traced(Gradients::leaky()).matmul(b.clone())).backward();
        });
        let y: Tensor<(usize, usize), E, Cuda> = filled(dev, (131_072, 64));
        time(dev, "sum_8M_forward", dtype, || {
            let _ = y.clone().sum::<Rank0, _>();
        });
        time(dev, "sum_8M_forward_backward", dtype, || {
            let _ = y
                .clone()
                .traced(Gradients::leaky())
                .sum::<Rank0, _>()
                .backward();
        });
        time(dev, "sum_8M_rows_forward", dtype, || {
            let _ = y.clone().sum::<(usize,), Axis<1>>();
        });
        // A column sum (64 outputs, 131,072 values each) in one reduction, and in two: rows
        // of 64 first (many outputs, short chunks), then the 2,048 partial sums.
        time(dev, "sum_8M_cols_forward", dtype, || {
            let _ = y.clone().sum::<(usize,), Axis<0>>();
        });
        time(dev, "sum_8M_cols_staged_forward", dtype, || {
            let _ = y
                .clone()
                .reshape_like(&(2048, 64, 64))
                .sum::<(usize, usize), Axis<1>>()
                .sum::<(usize,), Axis<0>>();
        });
        // The two products of a matmul's backward, each on its own.
        let g: Tensor<(usize, usize), E, Cuda> = filled(dev, (131_072, 64));
        time(dev, "matmul_at_g_576x131072x64_forward", dtype, || {
            let _ = a.clone().permute::<_, Axes2<1, 0>>().matmul(g.clone());
        });
        time(dev, "matmul_g_bt_131072x64x576_forward", dtype, || {
            let _ = g.clone().matmul(b.clone().permute::<_, Axes2<1, 0>>());
        });
        // A hundred ops on one value each: what an op costs when it has no work (dfdx copies
        // each op's shapes and strides to the device and allocates its output), against
        // `relu_8M_forward`, one op with work. A ResNet-50 step runs thousands of ops.
        let one: Tensor<Rank1<1>, E, Cuda> = filled(dev, Rank1::<1>::default());
        time(dev, "add_1_value_100_ops_forward", dtype, || {
            let mut t = one.clone();
            for _ in 0..100 {
                t = t + one.clone();
            }
        });
        time(dev, "relu_8M_forward", dtype, || {
            let _ = y.clone().relu();
        });
        let s: Tensor<Rank1<64>, E, Cuda> = filled(dev, Rank1::<64>::default());
        time(dev, "broadcast_mul_8M_forward_backward", dtype, || {
            let scale = s
                .clone()
                .traced(Gradients::leaky())
                .broadcast_like(&(131_072, Const::<64>));
            let _ = loss(scale * y.clone().realize::<(usize, Const<64>)>()).backward();
        });
        // A 3x3 convolution's pieces on CUDA (kernels/composed/conv.rs), 64 channels of 128 images
        // of 32x32: the images laid out channels last with padding pixels after each one's
        // (a concatenation), their windows gathered by row into [128, 9216, 64] (the
        // backward adds each row's gradient back with atomic adds, nine to every pixel), and
        // the weight times those columns.
        let planes: Tensor<(usize, usize, usize), E, Cuda> = filled(dev, (128, 64, 1024));
        let one_pad: Tensor<(usize, usize, usize), E, Cuda> = filled(dev, (128, 1, 64));
        time(dev, "concat_pixels_pad_forward_backward", dtype, || {
            let pixels = planes
                .clone()
                .traced(Gradients::leaky())
                .permute::<_, Axes3<0, 2, 1>>();
            let _ = loss((pixels, one_pad.clone()).concat_along(Axis::<1>)).backward();
        });
        // Every tap that falls in the padding reads one of many padding pixels, each read by
        // at most nine taps as an image's own pixels are (the layer's), or one padding pixel.
        let geom = ConvGeom {
            batch: 128,
            c_in: 64,
            h: 32,
            w: 32,
            c_out: 64,
            k: 3,
            stride: 1,
            padding: 1,
            dilation: 1,
            groups: 1,
        };
        let (spread_rows, pads) = window_pixels(&geom);
        let one_row = spread_rows.iter().map(|&r| r.min(1024)).collect();
        for (name, rows, len) in [
            ("spread_pad", spread_rows, 1024 + pads),
            ("one_pad", one_row, 1025),
        ] {
            let padded: Tensor<(usize, usize, usize), E, Cuda> = filled(dev, (128, len, 64));
            let idx = dev
                .tensor_from_vec(rows, (9216,))
                .broadcast_like::<_, Axis<0>>(&(128, 9216));
            time(
                dev,
                &format!("gather_windows_3x3_{name}_forward"),
                dtype,
                || {
                    let _ = padded.clone().gather(idx.clone());
                },
            );
            time(
                dev,
                &format!("gather_windows_3x3_{name}_forward_backward"),
                dtype,
                || {
                    let taped = padded.clone().traced(Gradients::leaky());
                    let _ = loss(taped.gather(idx.clone())).backward();
                },
            );
        }
        let cols: Tensor<(usize, usize), E, Cuda> = filled(dev, (131_072, 576));
        let w: Tensor<(usize, usize), E, Cuda> = filled(dev, (64, 576));
        time(
            dev,
            "matmul_w_colst_64x576x131072_forward_backward",
            dtype,
            || {
                let c = cols
                    .clone()
                    .traced(Gradients::leaky())
                    .permute::<_, Axes2<1, 0>>();
                let _ = loss(w.clone().traced(Gradients::leaky()).matmul(c)).backward();
            },
        );
        time(dev, "copy_to_host_75M", dtype, || {
            let _ = a.as_vec().len();
        });
    }

    pub fn run() {
        let dev = Cuda::seed_from_u64(0);
        raw::<f32>(&dev, "f32");
        raw::<fulmen::dfdx::dtypes::f16>(&dev, "f16");
        raw::<Half>(&dev, "amp_f16");
        layers::<f32>(&dev, "f32");
        layers::<Half>(&dev, "amp_f16");
    }
}

fn main() -> std::process::ExitCode {
    #[cfg(feature = "cuda")]
    {
        let precision = std::env::args()
            .skip(1)
            .find(|a| !a.starts_with('-'))
            .unwrap_or_else(|| "32-true".into());
        if precision == "ops" {
            if let Err(e) = fulmen::device::gpu_count() {
                eprintln!("error: {e}");
                return std::process::ExitCode::FAILURE;
            }
            ops::run();
            return std::process::ExitCode::SUCCESS;
        }
        let phases = std::env::args().any(|a| a == "phases");
        if let Err(e) = bench::run(&precision, phases) {
            eprintln!("error: {e}");
            return std::process::ExitCode::FAILURE;
        }
    }
    #[cfg(not(feature = "cuda"))]
    println!("the GPU benchmark needs a CUDA build: cargo bench --features cuda --bench gpu");
    std::process::ExitCode::SUCCESS
}

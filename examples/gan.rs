//! A GAN on scikit-learn's 8×8 digits, with two optimizers stepped by hand (Lightning's
//! "manual optimization" GAN): the generator learns to make digits the discriminator takes for
//! real, the discriminator to tell them apart. Every few epochs a grid of generated digits is
//! saved as a PNG; at the end, `samples.npz` holds 1,000 of them.
//!
//! ```text
//! python3 scripts/make_digits.py          # data/digits.npz, committed (needs scikit-learn)
//! cargo run --release --example gan -- --max-epochs 60 --out gan_out
//! ```

use std::path::{Path, PathBuf};

use clap::Parser;
use fulmen::prelude::*;
use fulmen::Manual;

/// The noise a digit is made from.
const Z: usize = 32;
/// An 8×8 digit's pixels, in [-1, 1].
const PIXELS: usize = 64;
type Digits<E, D, T = NoneTape> = Tensor<(usize, Const<PIXELS>), E, D, T>;

#[derive(Parser)]
struct Args {
    /// The digits, as `scripts/make_digits.py` writes them.
    #[arg(long, default_value = "data/digits.npz")]
    data: PathBuf,
    #[arg(long, default_value_t = 32)]
    batch_size: usize,
    /// Both optimizers' learning rate (Adam, betas (0.5, 0.999)).
    #[arg(long, default_value_t = 1e-3)]
    lr: f64,
    /// Where the grids (`epoch_N.png`) and `samples.npz` go.
    #[arg(long, default_value = "gan_out")]
    out: PathBuf,
    /// Save a grid every this many epochs.
    #[arg(long, default_value_t = 20)]
    grid_every: usize,
    #[arg(long, default_value_t = 1000)]
    samples: usize,
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// The trainer's flags (`--max-epochs`, default 60; `--accelerator`, ...).
    #[command(flatten)]
    trainer: fulmen::trainer::TrainerArgs,
}

/// Noise to digits.
#[module]
struct Generator {
    l1: Linear<Z, 128>,
    l2: Linear<128, 256>,
    l3: Linear<256, PIXELS>,
}

impl<E: FloatDtype, D: TrainDevice<E>> Generator<E, D> {
    fn forward<T: Tape<E, D>>(&self, z: Tensor<(usize, Const<Z>), E, D, T>) -> Digits<E, D, T> {
        let h = self
            .l1
            .forward(z)
            .prelu(E::from_f32(0.2).unwrap_or_else(E::zero));
        let h = self
            .l2
            .forward(h)
            .prelu(E::from_f32(0.2).unwrap_or_else(E::zero));
        self.l3.forward(h).tanh()
    }
}

/// Digits to the logit of "real".
#[module]
struct Discriminator {
    l1: Linear<PIXELS, 256>,
    l2: Linear<256, 128>,
    l3: Linear<128, 1>,
}

impl<E: FloatDtype, D: TrainDevice<E>> Discriminator<E, D> {
    fn forward<T: Tape<E, D>>(&self, x: Digits<E, D, T>) -> Tensor<(usize, Const<1>), E, D, T> {
        let h = self
            .l1
            .forward(x)
            .prelu(E::from_f32(0.2).unwrap_or_else(E::zero));
        let h = self
            .l2
            .forward(h)
            .prelu(E::from_f32(0.2).unwrap_or_else(E::zero));
        self.l3.forward(h)
    }
}

#[lightning_module]
struct Gan {
    generator: Generator,
    discriminator: Discriminator,
    #[hparam]
    lr: f64,
    /// Where the grids go, and how often.
    #[skip]
    out: PathBuf,
    #[skip]
    grid_every: usize,
}

#[lightning_module(manual_optimization)]
impl Gan {
    fn training_step(
        &mut self,
        (real, _): ClassBatch<PIXELS, 10, E, D>,
        ctx: &mut StepContext<E, D, Manual>,
    ) -> fulmen::Result<()> {
        let [opt_g, opt_d] = ctx.optimizers()?;
        let n = real.shape().0;
        let ones = ctx.device().ones_like(&(n, Const::<1>));
        let zeros = ctx.device().zeros_like(&(n, Const::<1>));

        // The generator: have the discriminator call its digits real.
        ctx.toggle_optimizer(opt_g);
        let fake = self.generator.forward(ctx.trace(ctx.randn((n, Const))));
        let g_loss =
            binary_cross_entropy_with_logits_loss(self.discriminator.forward(fake), ones.clone());
        ctx.log("g_loss", &g_loss).prog_bar(true);
        ctx.manual_backward(g_loss, self)?;
        ctx.step(opt_g, self)?;
        ctx.zero_grad(opt_g, self)?;
        ctx.untoggle_optimizer(opt_g);

        // The discriminator: real digits are real, generated ones are not.
        ctx.toggle_optimizer(opt_d);
        let fake = self.generator.forward(ctx.randn((n, Const)));
        let real_loss = binary_cross_entropy_with_logits_loss(
            self.discriminator.forward(ctx.trace(real)),
            ones,
        );
        let fake_loss = binary_cross_entropy_with_logits_loss(
            self.discriminator.forward(ctx.trace(fake)),
            zeros,
        );
        let d_loss = (real_loss + fake_loss) * E::from_f32(0.5).unwrap_or_else(E::one);
        ctx.log("d_loss", &d_loss).prog_bar(true);
        ctx.manual_backward(d_loss, self)?;
        ctx.step(opt_d, self)?;
        ctx.zero_grad(opt_d, self)?;
        ctx.untoggle_optimizer(opt_d);
        Ok(())
    }

    fn configure_optimizers(&self) -> [Optim; 2] {
        [
            Optim::adam(self.lr).betas(0.5, 0.999).params(["generator"]),
            Optim::adam(self.lr)
                .betas(0.5, 0.999)
                .params(["discriminator"]),
        ]
    }

    fn on_train_epoch_end(&mut self, trainer: &mut TrainerView) {
        let epoch = trainer.current_epoch() + 1;
        if self.grid_every > 0 && epoch.is_multiple_of(self.grid_every) {
            let path = self.out.join(format!("epoch_{epoch}.png"));
            if let Err(e) = save_grid(&self.sample(64), &path) {
                trainer.fail(e);
            }
        }
    }

    /// `n` generated digits, as pixels in [-1, 1].
    fn sample(&self, n: usize) -> Vec<[f32; PIXELS]> {
        let dev = self.generator.l1.weight.device().clone();
        let digits = self
            .generator
            .forward(fulmen::device::randn(&dev, (n, Const)));
        digits
            .as_vec()
            .chunks_exact(PIXELS)
            .map(|d| std::array::from_fn(|i| d[i].to_f32().unwrap_or(0.0)))
            .collect()
    }
}

/// `digits` as a PNG grid, 8 to a row, each pixel 4×4.
fn save_grid(digits: &[[f32; PIXELS]], path: &Path) -> fulmen::Result<()> {
    const SCALE: u32 = 4;
    let cols = 8u32;
    let rows = (digits.len() as u32).div_ceil(cols);
    let side = 8 * SCALE + 2;
    let grid = image::GrayImage::from_fn(cols * side, rows * side, |x, y| {
        let (i, px, py) = ((y / side) * cols + x / side, x % side, y % side);
        let inside = (1..=8 * SCALE).contains(&px) && (1..=8 * SCALE).contains(&py);
        match digits.get(i as usize) {
            Some(d) if inside => {
                let v = d[(((py - 1) / SCALE) * 8 + (px - 1) / SCALE) as usize];
                image::Luma([((v.clamp(-1.0, 1.0) + 1.0) * 127.5) as u8])
            }
            _ => image::Luma([0]),
        }
    });
    grid.save(path)
        .map_err(|e| fulmen::Error::msg(format!("writing {}: {e}", path.display())))
}

fn main() -> std::process::ExitCode {
    match run(Args::parse()) {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            std::process::ExitCode::from(e.exit_code())
        }
    }
}

fn run(args: Args) -> fulmen::Result<()> {
    seed_everything(args.seed);
    let digits = fulmen::data::npz::read_classification::<PIXELS, 10>(&args.data, "X", "y")?;
    // Pixels 0..16 to [-1, 1], the generator's tanh range.
    let digits: Vec<_> = digits
        .into_iter()
        .map(|(x, y)| (x.map(|v| v / 8.0 - 1.0), y))
        .collect();
    std::fs::create_dir_all(&args.out).map_err(|source| fulmen::Error::Io {
        path: args.out.clone(),
        source,
    })?;
    let mut gan = Gan::new(args.lr);
    gan.out = args.out.clone();
    gan.grid_every = args.grid_every;
    let loader = DataLoader::new(InMemoryDataset::new(digits), args.batch_size)
        .shuffle(true)
        .drop_last(true);
    let mut trainer = Trainer::builder()
        .max_epochs(60)
        .default_root_dir(&args.out)
        .args(&args.trainer)
        .build()?;
    trainer.fit_loaders(&mut gan, loader, None)?;

    let samples = gan.sample(args.samples);
    let path = args.out.join("samples.npz");
    let flat: Vec<f32> = samples.iter().flatten().copied().collect();
    fulmen::data::npz::write_array(&path, "X", &[samples.len(), PIXELS], &flat)?;
    save_grid(
        &samples[..64.min(samples.len())],
        &args.out.join("final.png"),
    )?;
    println!(
        "wrote {} generated digits to {}",
        samples.len(),
        path.display()
    );
    Ok(())
}

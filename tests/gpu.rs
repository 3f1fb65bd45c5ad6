//! The GPU suite: built with `--features cuda`, run by `scripts/gpu-check.sh` on a machine
//! with an NVIDIA GPU (CI builds it; no CI machine can run it). Each test compares the GPU
//! against the CPU on the same seed and prints a `GPU-CHECK` line with its largest error,
//! which the script gathers into its table.
#![cfg(feature = "cuda")]

#[path = "../examples/common/mod.rs"]
mod common;
#[path = "gpu/control.rs"]
mod control;
#[path = "gpu/cudnn.rs"]
mod cudnn;
#[path = "support/quiet.rs"]
mod quiet;
#[path = "support/runs.rs"]
mod runs;

use std::sync::{Arc, Mutex};

use common::IrisClassifier as Iris;
use fulmen::layers::{AdaptiveAvgPool2D, Conv2D, Conv2DNoBias, Flatten, MaxPool2D};
use fulmen::models::resnet::BasicBlockDown;
use fulmen::optim::Clip;
use fulmen::prelude::*;
use runs::{iris_weights as weights, max_abs_diff, EpochLosses};

/// Five epochs of Iris from seed 5 on `accelerator` in `precision`: the epoch losses and the
/// final weights (back on the CPU).
fn iris(
    accelerator: &str,
    precision: &str,
    ckpt_dir: Option<&std::path::Path>,
) -> (Vec<f64>, Iris) {
    iris_with(accelerator, precision, ckpt_dir, |b| b)
}

/// [`iris`] with more settings, which `settings` adds to the trainer.
fn iris_with(
    accelerator: &str,
    precision: &str,
    ckpt_dir: Option<&std::path::Path>,
    settings: impl FnOnce(fulmen::TrainerBuilder) -> fulmen::TrainerBuilder,
) -> (Vec<f64>, Iris) {
    seed_everything(5);
    let mut model = Iris::new(0.01);
    let losses = Arc::new(Mutex::new(Vec::new()));
    let mut builder = quiet::trainer()
        .max_epochs(5)
        .accelerator(accelerator)
        .precision(precision.parse().expect("a precision"))
        .callback(EpochLosses(losses.clone()));
    if let Some(dir) = ckpt_dir {
        builder = builder
            .enable_checkpointing(true)
            .default_root_dir(dir.to_path_buf());
    }
    let mut trainer = settings(builder).build().expect("valid settings");
    let data = fulmen::data::iris::bundled();
    let loader = DataLoader::new(InMemoryDataset::new(data), 16).shuffle(true);
    trainer.fit_loaders(&mut model, loader, None).expect("fit");
    let losses = losses.lock().expect("not poisoned").clone();
    (losses, model)
}

/// Fails the test, saying why, when there is no GPU. Asked first, because dfdx's `Cuda`
/// constructors panic without a driver, and cudarc's error then panics again while it is
/// printed (asking the absent driver to describe it), which aborts the process.
fn require_gpu() {
    fulmen::device::gpu_count().expect("a GPU");
}

/// Whether the suite rehearses its own logic (settings, files, assertions) on the CPU:
/// `FULMEN_GPU_TESTS_ON_CPU`, which `scripts/gpu-check.sh build` sets on the build machine,
/// so that a mistake in a test is found there and not in the GPU machine's scarce time.
fn rehearsing() -> bool {
    std::env::var_os("FULMEN_GPU_TESTS_ON_CPU").is_some()
}

/// The accelerator the tests train on: "gpu" (there must be one), or "cpu" when rehearsing.
fn gpu() -> &'static str {
    if rehearsing() {
        return "cpu";
    }
    require_gpu();
    "gpu"
}

/// For a test that needs CUDA itself (its own CUDA tensors, `auto`, NCCL): whether it skips,
/// which it does only when rehearsing on the CPU; otherwise there must be a GPU.
fn skips_without_cuda() -> bool {
    if rehearsing() {
        println!("rehearsal on the CPU: skipped, this test needs CUDA itself");
        return true;
    }
    require_gpu();
    false
}

#[test]
fn auto_picks_the_gpu_and_a_missing_ordinal_is_named() {
    if skips_without_cuda() {
        return;
    }
    let trainer = quiet::trainer().accelerator("auto").build().expect("a GPU");
    assert!(matches!(
        trainer.device(),
        fulmen::device::RunDevice::Cuda(0)
    ));
    let err = quiet::trainer()
        .accelerator(gpu())
        .devices([1000])
        .build()
        .err()
        .expect("no device 1000");
    assert!(err.to_string().contains("CUDA device 1000"), "{err}");
}

/// The GPU's Iris run follows the CPU's: epoch losses within 1e-4, final weights within 1e-3.
/// Prints the `GPU-CHECK <check>` line.
fn assert_follows(
    check: &str,
    (cpu_losses, cpu): (Vec<f64>, Iris),
    (gpu_losses, gpu): (Vec<f64>, Iris),
) {
    assert_eq!(cpu_losses.len(), 5);
    let loss_err = max_abs_diff(&cpu_losses, &gpu_losses);
    let weight_err = max_abs_diff(&weights(&cpu), &weights(&gpu));
    println!("GPU-CHECK {check} loss_err={loss_err:.2e} weight_err={weight_err:.2e}");
    assert!(loss_err < 1e-4, "losses {cpu_losses:?} vs {gpu_losses:?}");
    assert!(weight_err < 1e-3, "weights differ by {weight_err}");
}

#[test]
fn iris_on_the_gpu_follows_the_cpu_run() {
    let cpu = iris("cpu", "32-true", None);
    assert_follows("iris_parity_32", cpu, iris(gpu(), "32-true", None));
}

/// Gradient clipping (its norm summed on the device, its scaling done by the optimizer's step
/// there) and accumulation (across three backward passes) on CUDA follow the CPU's run.
#[test]
fn clipping_and_accumulation_on_the_gpu_follow_the_cpu_run() {
    let settings = |b: fulmen::TrainerBuilder| b.gradient_clip_val(0.05).accumulate_grad_batches(3);
    let (plain, _) = iris("cpu", "32-true", None);
    let cpu = iris_with("cpu", "32-true", None, settings);
    assert_ne!(plain, cpu.0, "clipping and accumulation change the run");
    let gpu = iris_with(gpu(), "32-true", None, settings);
    assert_follows("iris_clip_accumulate", cpu, gpu);
}

/// Every update rule, run where the parameters live (on CUDA, as dfdx tensor ops), follows the
/// CPU's host rules over several steps, with each kind of clipping: parameters and buffers.
#[test]
fn every_optimizer_steps_on_the_gpu_as_on_the_cpu() {
    if skips_without_cuda() {
        return;
    }
    let cpu = Cpu::seed_from_u64(4);
    let gpu = Cuda::seed_from_u64(4);
    let settings = [
        Optim::sgd(0.1)
            .momentum(0.9)
            .dampening(0.25)
            .weight_decay(0.01),
        Optim::sgd(0.05).momentum(0.8).nesterov(true),
        Optim::adam(0.01).weight_decay(0.1),
        Optim::adamw(0.01).weight_decay(0.3),
        Optim::rmsprop(0.01).centered(true).momentum(0.5),
    ];
    let mut worst = 0.0f64;
    for o in settings {
        let mut a: fulmen::dfdx::nn::modules::Linear<4, 3, f32, Cpu> = BuildModule::build(&cpu);
        let mut b = a.to_device(&gpu);
        let mut on_cpu = fulmen::optim::Optimizer::<f32, Cpu>::new(o.clone()).expect("valid");
        let mut on_gpu = fulmen::optim::Optimizer::<f32, Cuda>::new(o.clone()).expect("valid");
        for step in 0..5 {
            let x: Tensor<Rank2<6, 4>, f32, Cpu> = cpu.sample_normal();
            let mut ga = a
                .forward(x.clone().traced(a.alloc_grads()))
                .square()
                .sum()
                .backward();
            let mut gb = b
                .forward(x.to_device(&gpu).traced(b.alloc_grads()))
                .square()
                .sum()
                .backward();
            let clip = [Clip::None, Clip::Scale(0.5), Clip::Clamp(0.3)][step % 3];
            (on_cpu.step_clipped(&mut a, &mut ga, clip)).expect("steps on the CPU");
            (on_gpu.step_clipped(&mut b, &mut gb, clip)).expect("steps on the GPU");
            let mut errs = vec![
                max_abs_diff(&a.weight.as_vec(), &b.weight.as_vec()),
                max_abs_diff(&a.bias.as_vec(), &b.bias.as_vec()),
            ];
            let (ha, hb) = (on_cpu.buffers("weight"), on_gpu.buffers("weight"));
            let (ha, hb) = (
                ha.expect("buffers on the CPU"),
                hb.expect("buffers on the GPU"),
            );
            assert_eq!(ha.len(), hb.len(), "{o:?}");
            errs.extend(ha.iter().zip(&hb).map(|(x, y)| max_abs_diff(x, y)));
            let err = errs.into_iter().fold(0.0, f64::max);
            assert!(
                err < 1e-5,
                "{o:?}, step {step} ({clip:?}): the GPU differs by {err}"
            );
            worst = worst.max(err);
        }
    }
    println!("GPU-CHECK optimizers_on_device max_err={worst:.2e}");
}

/// A run continued on the GPU from its checkpoint (the optimizer's buffers go back to the
/// device) ends where the uninterrupted GPU run does.
#[test]
fn a_run_resumed_on_the_gpu_ends_as_the_uninterrupted_one() {
    let on_gpu = |b: fulmen::TrainerBuilder| b.accelerator(gpu());
    let (full, resumed) = runs::checkpointed_and_resumed(on_gpu, || (), || ());
    let err = max_abs_diff(&full, &resumed);
    println!("GPU-CHECK resume_on_gpu weight_err={err:.2e}");
    assert!(err < 1e-5, "the resumed run differs by {err}");
}

/// The anomaly check and the clipping norm, both reduced on the device, find NaN gradients:
/// the run stops naming them, and no step is taken.
#[test]
fn non_finite_gradients_on_the_gpu_are_named_and_not_applied() {
    runs::assert_nan_gradients_named(|settings| {
        runs::stopped_by_nan_gradients(|b| settings(b.accelerator(gpu())))
    });
    println!("GPU-CHECK non_finite_gradients named");
}

#[test]
fn sixteen_mixed_trains_on_the_gpu_like_on_the_cpu() {
    let (cpu_losses, _) = iris("cpu", "16-mixed", None);
    let (gpu_losses, _) = iris(gpu(), "16-mixed", None);
    let err = max_abs_diff(&cpu_losses, &gpu_losses);
    println!("GPU-CHECK iris_parity_16mixed loss_err={err:.2e}");
    assert!(gpu_losses.iter().all(|l| l.is_finite()), "{gpu_losses:?}");
    assert!(gpu_losses[4] < gpu_losses[0], "it learns: {gpu_losses:?}");
    assert!(err < 1e-2, "losses {cpu_losses:?} vs {gpu_losses:?}");
}

#[test]
fn a_checkpoint_saved_on_the_gpu_loads_on_the_cpu_and_back() {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let (_, trained) = iris(gpu(), "32-true", Some(dir.path()));
    let path = std::fs::read_dir(dir.path().join("checkpoints"))
        .expect("a checkpoint directory")
        .flatten()
        .map(|e| e.path())
        .find(|p| p.extension().is_some_and(|e| e == "ckpt"))
        .expect("a checkpoint");
    let checkpoint = fulmen::checkpoint::Checkpoint::read(&path).expect("readable");
    let mut on_cpu = Iris::new(0.01);
    checkpoint
        .load_weights(&mut on_cpu)
        .expect("loads on the CPU");
    let err = max_abs_diff(&weights(&on_cpu), &weights(&trained));
    println!("GPU-CHECK checkpoint_gpu_to_cpu weight_err={err:.2e}");
    assert_eq!(err, 0.0, "the checkpoint holds the trained weights");
    // And back: validating the CPU-loaded weights on the GPU gives the CPU's accuracy.
    let val = || DataLoader::new(InMemoryDataset::new(fulmen::data::iris::bundled()), 16);
    let mut cpu_trainer = quiet::trainer().accelerator("cpu").build().expect("valid");
    let mut gpu_trainer = quiet::trainer().accelerator(gpu()).build().expect("valid");
    let cpu_acc = cpu_trainer
        .validate_loader(&mut on_cpu, val())
        .expect("validates")["val_acc"];
    let gpu_acc = gpu_trainer
        .validate_loader(&mut on_cpu, val())
        .expect("validates")["val_acc"];
    println!(
        "GPU-CHECK checkpoint_cpu_to_gpu acc_err={:.2e}",
        (cpu_acc - gpu_acc).abs()
    );
    assert_eq!(cpu_acc, gpu_acc);
}

#[module]
struct Convs {
    stem: (Conv2DNoBias<3, 8, 3, 1, 1>, BatchNorm2D<8>, ReLU),
    pool: MaxPool2D<2, 2>,
    down: BasicBlockDown<8, 16, 2>,
    /// A pointwise convolution with a bias: the GPU's matrix product over planes.
    mix: Conv2D<16, 16, 1, 1, 0>,
    head: (AdaptiveAvgPool2D<2>, Flatten<64>, Linear<64, 5>),
}

#[test]
fn conv_layers_on_the_gpu_match_the_cpu_forward_and_backward() {
    if skips_without_cuda() {
        return;
    }
    let cpu = Cpu::seed_from_u64(3);
    let gpu = Cuda::seed_from_u64(3);
    let mut a: Convs<f32, Cpu> = BuildModule::build(&cpu);
    let mut b = a.to_device(&gpu);
    let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
        cpu.sample_normal_like(&(6, Const, 17, 15));
    let run_cpu = a.head.forward_mut(
        a.mix.forward_mut(
            a.down.forward_mut(
                a.pool
                    .forward_mut(a.stem.forward_mut(x.clone().traced(a.alloc_grads()))),
            ),
        ),
    );
    let x_gpu = x.to_device(&gpu);
    let run_gpu = b.head.forward_mut(
        b.mix.forward_mut(
            b.down.forward_mut(
                b.pool
                    .forward_mut(b.stem.forward_mut(x_gpu.traced(b.alloc_grads()))),
            ),
        ),
    );
    let out_err = max_abs_diff(&run_cpu.as_vec(), &run_gpu.as_vec());
    let g_cpu = run_cpu.square().sum::<Rank0, _>().backward();
    let g_gpu = run_gpu.square().sum::<Rank0, _>().backward();
    let pairs = [
        (
            g_cpu.get(&a.stem.0.weight).as_vec(),
            g_gpu.get(&b.stem.0.weight).as_vec(),
        ),
        (
            g_cpu.get(&a.stem.1.weight).as_vec(),
            g_gpu.get(&b.stem.1.weight).as_vec(),
        ),
        (
            g_cpu.get(&a.mix.weight).as_vec(),
            g_gpu.get(&b.mix.weight).as_vec(),
        ),
        (
            g_cpu.get(&a.mix.bias).as_vec(),
            g_gpu.get(&b.mix.bias).as_vec(),
        ),
        (
            g_cpu.get(&a.head.2.weight).as_vec(),
            g_gpu.get(&b.head.2.weight).as_vec(),
        ),
    ];
    let grad_err = pairs
        .iter()
        .map(|(c, g)| max_abs_diff(c, g))
        .fold(0.0, f64::max);
    let stats_err = max_abs_diff(
        &a.stem.1.running_var.as_vec(),
        &b.stem.1.running_var.as_vec(),
    );
    println!("GPU-CHECK conv_layers out_err={out_err:.2e} grad_err={grad_err:.2e} bn_stats_err={stats_err:.2e}");
    assert!(out_err < 1e-4, "outputs differ by {out_err}");
    assert!(grad_err < 1e-3, "gradients differ by {grad_err}");
    assert!(
        stats_err < 1e-5,
        "batch norm statistics differ by {stats_err}"
    );
}

/// The DDP test program (`tests/programs/iris_ranks.rs`) built with NCCL (`scripts/gpu-check.sh`
/// builds it and sets this).
fn iris_ranks() -> std::process::Command {
    let exe = std::env::var_os("FULMEN_GPU_IRIS_RANKS")
        .expect("FULMEN_GPU_IRIS_RANKS names the iris_ranks test program built with --features nccl (scripts/gpu-check.sh sets it)");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--accelerator",
        "gpu",
        "--enable-model-summary",
        "false",
        "--batch-size",
        "32",
    ]);
    cmd
}

/// The FSDP example built with NCCL (`scripts/gpu-check.sh` builds it and sets this).
fn fsdp() -> std::process::Command {
    let exe = std::env::var_os("FULMEN_GPU_FSDP")
        .expect("FULMEN_GPU_FSDP names the fsdp example built with --features nccl (scripts/gpu-check.sh sets it)");
    let mut cmd = std::process::Command::new(exe);
    cmd.args([
        "--accelerator",
        "gpu",
        "--enable-model-summary",
        "false",
        "--size",
        "small",
    ]);
    cmd
}

/// Rank 0's weights after `cmd` (an example) with `args`, written under `dir/name`, and what
/// it printed; it must succeed.
fn run_example(
    mut cmd: std::process::Command,
    dir: &std::path::Path,
    name: &str,
    args: &[&str],
) -> (Vec<f32>, String) {
    let out_dir = dir.join(name);
    std::fs::create_dir_all(&out_dir).expect("mkdir");
    let out = cmd
        .args(args)
        .arg("--out")
        .arg(&out_dir)
        .arg("--default-root-dir")
        .arg(&out_dir)
        .output()
        .expect("the example starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{name}: {text}");
    (rank_weights(&out_dir, 0), text)
}

/// FULL_SHARD started as one plain process on one GPU takes the launcher's path and NCCL, a
/// world of one: on Iris (parameters outside any unit, gathered for the step) and on the
/// FSDP example (units gathered, recomputed and reduce-scattered through NCCL), with the
/// optimizer's state on the GPU and offloaded to the host. Each must train as one GPU alone.
#[test]
fn full_shard_over_nccl_launched_by_fulmen_trains_as_one_gpu_alone() {
    if skips_without_cuda() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    for (example, name) in [(iris_ranks as fn() -> _, "iris"), (fsdp, "mlp")] {
        let alone = ["--strategy", "single_device", "--devices", "1"];
        let (want, _) = run_example(example(), dir.path(), &format!("{name}_alone"), &alone);
        for offload in [false, true] {
            let mut args = vec!["--strategy", "fsdp", "--devices", "1"];
            args.extend(offload.then_some("--cpu-offload"));
            let tag = format!("{name}_fsdp{}", if offload { "_offload" } else { "" });
            let (got, _) = run_example(example(), dir.path(), &tag, &args);
            let err = max_abs_diff(&got, &want);
            println!("GPU-CHECK nccl_{tag}_world_1 weight_err={err:.2e}");
            assert!(
                err < 1e-6,
                "{tag}: FULL_SHARD over NCCL on one GPU drifted from one GPU alone by {err}"
            );
        }
    }
}

fn rank_weights(dir: &std::path::Path, rank: usize) -> Vec<f32> {
    let path = dir.join(format!("rank{rank}.weights"));
    std::fs::read(&path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .chunks_exact(4)
        .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
        .collect()
}

/// `--strategy ddp` started as one plain process takes the launcher's path (rank 0 holds the
/// rendezvous, joins NCCL, averages every step's gradients on the GPU with NCCL's all-reduce);
/// with one GPU the world is one rank, and it must train exactly as one GPU alone.
#[test]
fn ddp_over_nccl_launched_by_fulmen_trains_as_one_gpu_alone() {
    if skips_without_cuda() {
        return;
    }
    let dir = tempfile::tempdir().expect("a temporary directory");
    let run = |name: &str, strategy: &str| {
        let args = ["--strategy", strategy, "--devices", "1"];
        run_example(iris_ranks(), dir.path(), name, &args)
    };
    let (ddp, text) = run("ddp", "ddp");
    let (alone, _) = run("alone", "single_device");
    let err = max_abs_diff(&ddp, &alone);
    let line = text
        .lines()
        .find(|l| l.starts_with("rank 0 of"))
        .unwrap_or("");
    println!(
        "GPU-CHECK nccl_ddp_world_1 weight_err={err:.2e} {}",
        line.trim()
    );
    assert!(
        err < 1e-6,
        "DDP over NCCL on one GPU drifted from one GPU alone by {err}"
    );

    // More GPUs than the machine has: refused before any rank starts.
    let out = iris_ranks()
        .args(["--strategy", "ddp", "--devices", "64"])
        .output()
        .expect("the example starts");
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        text.contains("asks for 64 GPU(s) for Ddp, but this machine has"),
        "{text}"
    );
    assert!(!text.contains("rank 1"), "no rank was started: {text}");
}

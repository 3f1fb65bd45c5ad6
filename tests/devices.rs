//! `accelerator` and `devices`: what they resolve to on a machine without a GPU, and the
//! errors that name what cannot run (the GPU side is in tests/gpu.rs).

use fulmen::device::RunDevice;
use fulmen::{Devices, Trainer};

fn error(b: fulmen::TrainerBuilder) -> String {
    b.build().err().expect("refused").to_string()
}

#[test]
fn devices_parse_as_lightning_writes_them() {
    let parse = |s: &str| s.parse::<Devices>();
    assert_eq!(parse("auto"), Ok(Devices::Auto));
    assert_eq!(parse("-1"), Ok(Devices::Auto));
    assert_eq!(parse("2"), Ok(Devices::Count(2)));
    assert_eq!(parse("1,"), Ok(Devices::Ordinals(vec![1])));
    assert_eq!(parse("[0, 2]"), Ok(Devices::Ordinals(vec![0, 2])));
    let err = parse("two").expect_err("not a count");
    assert!(err.contains("`two`"), "{err}");
    assert!(parse("[]").is_err());
}

#[test]
fn auto_runs_on_the_cpu_without_a_gpu() {
    let trainer = Trainer::builder().build().expect("the defaults");
    assert_eq!(trainer.device(), RunDevice::Cpu);
    let trainer = Trainer::builder()
        .accelerator("cpu")
        .devices(Devices::Auto)
        .build()
        .expect("cpu");
    assert_eq!(trainer.device(), RunDevice::Cpu);
}

#[test]
fn what_cannot_run_is_named() {
    let e = error(Trainer::builder().devices(2));
    assert!(e.contains("2 devices requested"), "{e}");
    let e = error(Trainer::builder().devices(0));
    assert!(e.contains("0 devices"), "{e}");
    let e = error(Trainer::builder().num_nodes(0));
    assert!(e.contains("num_nodes") && e.contains("0 nodes"), "{e}");
    let e = error(Trainer::builder().accelerator("cpu").devices([1]));
    assert!(e.contains("device ordinal 1") && e.contains("CPU"), "{e}");
    let e = error(Trainer::builder().accelerator("tpu"));
    assert!(e.contains("`tpu` is not an accelerator"), "{e}");
}

#[cfg(not(feature = "cuda"))]
#[test]
fn a_gpu_without_cuda_support_says_how_to_get_it() {
    let e = error(Trainer::builder().accelerator("gpu"));
    assert!(
        e.contains("built without CUDA support") && e.contains("--features cuda"),
        "{e}"
    );
}

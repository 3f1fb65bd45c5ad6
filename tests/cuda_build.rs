//! The CUDA build compiles and links. CI has no GPU, so this is where a break in the GPU path
//! fails CI: with `CUDA_ROOT` set by `scripts/cuda-toolchain.sh` (`.ci/run` sets it), every
//! target is built with `--features nccl` (CUDA and NCCL) into `target/cuda-build`; without it the test says
//! it was skipped. What the build makes runs on a GPU machine (`scripts/gpu-check.sh`), whose
//! run is rehearsed here under the driver stub.
#![cfg(not(feature = "cuda"))]

#[path = "support/nested_build.rs"]
mod nested_build;
use nested_build::cargo_build;

#[test]
fn every_target_builds_and_links_with_cuda() {
    if std::env::var_os("CUDA_ROOT").is_none() {
        eprintln!(
            "skipped: no CUDA_ROOT; run `eval \"$(scripts/cuda-toolchain.sh)\"` first (.ci/run does)"
        );
        return;
    }
    let target = cargo_build(
        "cuda-build",
        &["--workspace", "--all-targets", "--features", "nccl"],
        "with CUDA and NCCL",
    );
    // The GPU check's own build, in this profile, and its rehearsal under the driver stub:
    // every GPU test and the benchmark must reach the driver, and the table must come out.
    let out = std::process::Command::new("scripts/gpu-check.sh")
        .args(["build", "--profile", "dev"])
        .env("CARGO_TARGET_DIR", &target)
        .env("FULMEN_GPU_CHECK_DIR", target.join("gpu-check"))
        .current_dir(env!("CARGO_MANIFEST_DIR"))
        .output()
        .expect("scripts/gpu-check.sh starts");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && text.contains("gpu-check: rehearsed"),
        "scripts/gpu-check.sh build failed:\n{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

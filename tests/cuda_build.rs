//! The CUDA build compiles and links. CI has no GPU, so this is where a break in the GPU path
//! fails CI: with `CUDA_ROOT` set by `scripts/cuda-toolchain.sh` (`.ci/run` sets it), every
//! target is built with `--features nccl` (CUDA and NCCL) into `target/cuda-build`; without it the test says
//! it was skipped. What the build makes runs on a GPU machine (`scripts/gpu-check.sh`).
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
    cargo_build(
        "cuda-build",
        &["--workspace", "--all-targets", "--features", "nccl"],
        "with CUDA and NCCL",
    );
}

//! The CUDA build compiles and links. CI has no GPU, so this is where a break in the GPU path
//! fails CI: with `CUDA_ROOT` set by `scripts/cuda-toolchain.sh` (`.ci/run` sets it), every
//! target is built with `--features cuda` into `target/cuda-build`; without it the test says
//! it was skipped. What the build makes runs on a GPU machine (`scripts/gpu-check.sh`).
#![cfg(not(feature = "cuda"))]

use std::process::Command;

#[test]
fn every_target_builds_and_links_with_cuda() {
    if std::env::var_os("CUDA_ROOT").is_none() {
        eprintln!(
            "skipped: no CUDA_ROOT; run `eval \"$(scripts/cuda-toolchain.sh)\"` first (.ci/run does)"
        );
        return;
    }
    let root = env!("CARGO_MANIFEST_DIR");
    let out = Command::new(env!("CARGO"))
        .args([
            "build",
            "--workspace",
            "--all-targets",
            "--features",
            "cuda",
        ])
        .env("CARGO_TARGET_DIR", format!("{root}/target/cuda-build"))
        .current_dir(root)
        .output()
        .expect("cargo starts");
    assert!(
        out.status.success(),
        "the CUDA build failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

//! The host kernels on every instruction set, not only the machine's widest: a test runs itself
//! again in processes of its own, since the kernels choose theirs once per process.

use std::process::Command;

/// Runs `test` (this binary's test of that name) again as on a CPU without AVX-512 (the tiles
/// on AVX2: `FULMEN_NO_AVX512`) and as on one without AVX2 either (the `gemm` crate and dfdx:
/// `FULMEN_NO_AVX2` too), and asserts that it passes in each the CPU does not already run
/// as its default. Inside such a run, nothing.
pub fn again_on_narrower_instruction_sets(test: &str) {
    if std::env::var_os("FULMEN_NO_AVX512").is_some() {
        return;
    }
    // Where the tiles already run on AVX2, that setting is the run that just passed.
    let narrower: &[&[&str]] = match fulmen::kernels::instruction_set() {
        Some("AVX-512") => &[
            &["FULMEN_NO_AVX512"],
            &["FULMEN_NO_AVX512", "FULMEN_NO_AVX2"],
        ],
        Some(_) => &[&["FULMEN_NO_AVX512", "FULMEN_NO_AVX2"]],
        None => &[],
    };
    for &off in narrower {
        let out = Command::new(std::env::current_exe().expect("the test binary's path"))
            .args(["--exact", test, "--test-threads=1"])
            .envs(off.iter().map(|name| (name, "1")))
            .output()
            .expect("the test binary starts again");
        let (stdout, stderr) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(
            out.status.success() && stdout.contains("1 passed"),
            "{test} with {off:?} set:\n{stdout}\n{stderr}"
        );
    }
}

//! Building the workspace again inside a test, with other features, into a target directory
//! of its own (the outer build's directory is locked by the `cargo test` running it).

use std::path::PathBuf;
use std::process::Command;

/// Runs `cargo build <args>` in the workspace into `target/<dir>` and returns that directory;
/// panics with cargo's errors, naming `what`, when the build fails.
pub fn cargo_build(dir: &str, args: &[&str], what: &str) -> PathBuf {
    let root = env!("CARGO_MANIFEST_DIR");
    let target = PathBuf::from(root).join("target").join(dir);
    let out = Command::new(env!("CARGO"))
        .arg("build")
        .args(args)
        .env("CARGO_TARGET_DIR", &target)
        .current_dir(root)
        .output()
        .expect("cargo starts");
    assert!(
        out.status.success(),
        "building {what} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    target
}

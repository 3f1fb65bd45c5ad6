//! A crate of a user's own, as the README's "Use fulmen in your project" writes it: the one
//! dependency line, the README's model and `main`, built in debug without the profile
//! setting, so the trainer's start-up warning about the unoptimized build shows; it trains.

use std::path::Path;
use std::process::Command;

/// The README's model (its first Rust block) and its `main` (the block after "Use fulmen in
/// your project"), as they stand.
fn readme_blocks() -> (String, String) {
    let readme = include_str!("../README.md");
    let blocks: Vec<&str> = readme
        .split("```rust\n")
        .skip(1)
        .map(|b| b.split("```").next().unwrap())
        .collect();
    let main = blocks
        .iter()
        .find(|b| b.contains("fn main() -> fulmen::Result<()>"))
        .expect("the README's main");
    (blocks[0].to_string(), main.to_string())
}

#[test]
fn the_readmes_own_crate_builds_trains_and_warns_about_its_debug_build() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    // Outside the repository, whose `.cargo/config.toml` would apply; built into its target.
    let dir = tempfile::tempdir().unwrap();
    let krate = dir.path();
    std::fs::create_dir_all(krate.join("src")).unwrap();
    let manifest = format!(
        "[package]\nname = \"own\"\nversion = \"0.1.0\"\nedition = \"2021\"\n\n[dependencies]\nfulmen = {{ path = {:?} }}\n\n[workspace]\n",
        root.join("runtime")
    );
    std::fs::write(krate.join("Cargo.toml"), manifest).unwrap();
    let (model, main) = readme_blocks();
    let source = format!("use fulmen::prelude::*;\n\n{model}\n{main}");
    std::fs::write(krate.join("src/main.rs"), source).unwrap();
    // The same lock file as the workspace: the versions its tests ran with.
    std::fs::copy(root.join("Cargo.lock"), krate.join("Cargo.lock")).unwrap();
    let out = Command::new(env!("CARGO"))
        .args(["run", "--quiet"])
        .current_dir(krate)
        .env("CARGO_TARGET_DIR", root.join("target/own-crate"))
        .env_remove("FULMEN_DEPS_OPTIMIZED")
        .output()
        .expect("cargo starts");
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(out.status.success(), "{text}");
    assert!(
        text.contains("warning: fulmen and dfdx were compiled without optimizations")
            && text.contains("[profile.dev.package.\"*\"]\nopt-level = 3"),
        "{text}"
    );
    assert_eq!(
        text.matches("compiled without optimizations").count(),
        1,
        "{text}"
    );
}

//! Whether the runtime is compiled without optimizations (`cfg(fulmen_unoptimized)`): in a
//! debug build of a user's crate, fulmen and dfdx are then unoptimized too and train many
//! times slower, and the trainer says so once, with the profile setting that fixes it. A
//! workspace that optimizes its dependencies in debug builds by other means says so with
//! `FULMEN_DEPS_OPTIMIZED` (fulmen's own does, in `.cargo/config.toml`).

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fulmen_unoptimized)");
    println!("cargo::rerun-if-env-changed=OPT_LEVEL");
    println!("cargo::rerun-if-env-changed=FULMEN_DEPS_OPTIMIZED");
    let unoptimized = std::env::var("OPT_LEVEL").as_deref() == Ok("0");
    if unoptimized && std::env::var_os("FULMEN_DEPS_OPTIMIZED").is_none() {
        println!("cargo::rustc-cfg=fulmen_unoptimized");
    }
}

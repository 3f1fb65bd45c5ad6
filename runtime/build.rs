//! Whether the runtime is compiled without optimizations (`cfg(fulmen_unoptimized)`): in a
//! debug build of a user's crate, fulmen and dfdx are then unoptimized too and train many
//! times slower, and the trainer says so once, with the profile setting that fixes it.

fn main() {
    println!("cargo::rustc-check-cfg=cfg(fulmen_unoptimized)");
    println!("cargo::rerun-if-env-changed=OPT_LEVEL");
    if std::env::var("OPT_LEVEL").as_deref() == Ok("0") {
        println!("cargo::rustc-cfg=fulmen_unoptimized");
    }
}

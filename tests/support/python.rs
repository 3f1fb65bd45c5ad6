//! The Python interpreter the interop tests run: FULMEN_PYTHON (which `.ci/run` sets, making
//! the package required) or `python3` (where a missing package skips the test, saying so).

/// The interpreter, if it can `import module`.
pub fn with_module(module: &str) -> Option<String> {
    let required = std::env::var("FULMEN_PYTHON").ok();
    let python = required.clone().unwrap_or_else(|| "python3".into());
    let found = std::process::Command::new(&python)
        .args(["-c", &format!("import {module}")])
        .status()
        .is_ok_and(|s| s.success());
    if found {
        return Some(python);
    }
    assert!(required.is_none(), "{python} cannot import {module}");
    eprintln!("skipped: no Python with {module} (.ci/run installs one)");
    None
}

//! Compile-fail cases: each mistake in `ui-tests/` must give the one message in its `.stderr`.

#[test]
fn ui() {
    let t = trybuild::TestCases::new();
    t.compile_fail("ui-tests/*.rs");
}

//! Reading the PyTorch fixtures in `tests/fixtures/` (JSON written by the `.py` files beside
//! them) and comparing against them.

use fulmen::serde_json::Value;

/// A flattened tensor of the fixture, as f32.
pub fn floats(v: &Value) -> Vec<f32> {
    v.as_array()
        .expect("a list of numbers")
        .iter()
        .map(|x| x.as_f64().expect("a number") as f32)
        .collect()
}

/// A shape of the fixture.
pub fn dims(v: &Value) -> Vec<usize> {
    v.as_array()
        .expect("a list of sizes")
        .iter()
        .map(|x| x.as_u64().expect("a size") as usize)
        .collect()
}

/// Asserts `got` equals PyTorch's `want` to within `tol`, absolute and relative.
pub fn close(got: &[f32], want: &[f32], tol: f32, what: &str) {
    assert_eq!(got.len(), want.len(), "{what}: length");
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() <= tol + tol * w.abs(),
            "{what}[{i}]: {g} vs PyTorch's {w}"
        );
    }
}

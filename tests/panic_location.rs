//! A layer refusing its input's run-time shape panics (dfdx's way) with fulmen's message, and
//! the panic's location is that layer's file, so that the report points at what failed.

use std::sync::{Arc, Mutex};

use fulmen::layers::Flatten;
use fulmen::prelude::*;

#[test]
fn a_flatten_mismatch_is_reported_at_flatten() {
    let seen: Arc<Mutex<Option<String>>> = Arc::default();
    let record = seen.clone();
    std::panic::set_hook(Box::new(move |info| {
        *record.lock().unwrap() = info.location().map(|l| l.file().to_string());
    }));
    let dev = Cpu::default();
    let x: Tensor<(usize, Const<8>, usize, usize), f32, Cpu> = dev.zeros_like(&(2, Const, 3, 3));
    let flat = Flatten::<64>;
    let caught = std::panic::catch_unwind(|| flat.forward(x));
    let _ = std::panic::take_hook();
    let message = fulmen_message(caught.expect_err("8×3×3 is not 64"));
    assert!(
        message.contains("Flatten<64>") && message.contains("72 values, not 64"),
        "{message}"
    );
    let file = seen.lock().unwrap().clone().unwrap_or_default();
    assert!(
        file.ends_with("flatten.rs"),
        "the panic is located at {file}"
    );
}

fn fulmen_message(payload: Box<dyn std::any::Any + Send>) -> String {
    payload
        .downcast_ref::<String>()
        .cloned()
        .unwrap_or_default()
}

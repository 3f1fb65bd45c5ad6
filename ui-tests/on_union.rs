use fulmen::prelude::*;

#[lightning_module]
pub union Net {
    a: u32,
    b: f32,
}

fn main() {}

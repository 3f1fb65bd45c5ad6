use fulmen::prelude::*;

#[lightning_module]
pub enum Net {
    Small,
    Large,
}

fn main() {}

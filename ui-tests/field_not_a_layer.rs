use fulmen::prelude::*;

pub struct Settings {
    pub depth: usize,
}

#[module]
pub struct Block {
    layer: Linear<4, 4>,
    settings: Settings,
}

fn main() {}

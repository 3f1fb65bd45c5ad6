use fulmen::prelude::*;

#[module]
pub struct Block {
    layer: Linear<4, 4>,
}

#[module]
impl Block {
    fn helper(&self) {}
}

fn main() {}

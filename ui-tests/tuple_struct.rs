use fulmen::prelude::*;

#[module]
pub struct Block(Linear<4, 4>, ReLU);

fn main() {}

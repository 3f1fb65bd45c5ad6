use fulmen::prelude::*;

#[lightning_module]
pub struct Net {
    layer: Linear<4, 3>,
    #[hparam]
    #[skip]
    lr: f64,
}

fn main() {}

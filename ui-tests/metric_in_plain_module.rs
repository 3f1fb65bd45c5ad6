use fulmen::metrics::Accuracy;
use fulmen::prelude::*;

#[module]
pub struct Block {
    layer: Linear<4, 3>,
    #[metric(Accuracy::multiclass(3))]
    acc: Accuracy,
}

fn main() {}

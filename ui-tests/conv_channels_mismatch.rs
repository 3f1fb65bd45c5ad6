use fulmen::layers::Conv2D;
use fulmen::prelude::*;

#[module]
struct Net {
    a: Conv2D<3, 8, 3>,
    b: Conv2D<16, 4, 3>,
}

fn run(net: &Net, x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu>) {
    // `a` writes 8 channels; `b` reads 16.
    let _ = net.b.forward(net.a.forward(x));
}

fn main() {}

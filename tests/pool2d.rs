//! Pooling windows against PyTorch: `tests/fixtures/pool2d.json` holds torch 2.15's
//! `max_pool2d` / `avg_pool2d` / `adaptive_avg_pool2d` outputs and input gradients
//! (`pool2d.py` beside it made it); and `Flatten`.

#[path = "support/quiet.rs"]
mod quiet;

use fulmen::layers::{AdaptiveAvgPool2D, AvgPool2D, Flatten, MaxPool2D};
use fulmen::prelude::*;
use fulmen::serde_json::Value;

#[path = "support/fixtures.rs"]
mod fixtures;
use fixtures::{dims, floats};

fn close(got: &[f32], want: &[f32], what: &str) {
    fixtures::close(got, want, 1e-5, what)
}

/// Runs `pool` on a case with `C` channels: output and input gradient.
fn run<const C: usize, P>(case: &Value, pool: P) -> (Vec<f32>, Vec<f32>, Vec<usize>)
where
    P: Module<
        Tensor<(usize, Const<C>, usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>,
        Output = Tensor<(usize, Const<C>, usize, usize), f32, Cpu, OwnedTape<f32, Cpu>>,
    >,
{
    let dev = Cpu::default();
    let s = dims(&case["x_shape"]);
    let x: Tensor<(usize, Const<C>, usize, usize), f32, Cpu> =
        dev.tensor_from_vec(floats(&case["x"]), (s[0], Const, s[2], s[3]));
    let y = pool
        .try_forward(x.clone().traced(Gradients::leaky()))
        .unwrap();
    let shape = y.shape();
    let out_dims = vec![shape.0, C, shape.2, shape.3];
    let dy: Tensor<(usize, Const<C>, usize, usize), f32, Cpu> =
        dev.tensor_from_vec(floats(&case["dy"]), *y.shape());
    let values = y.as_vec();
    let grads = (y * dy).sum().backward();
    (values, grads.get(&x).as_vec(), out_dims)
}

#[test]
fn pooling_matches_pytorch() {
    let cases: Value = fulmen::serde_json::from_str(include_str!("fixtures/pool2d.json")).unwrap();
    for case in cases.as_array().unwrap() {
        let name = case["name"].as_str().unwrap();
        let (y, dx, out) = match name {
            "max_3_2_1_stem" => run::<4, _>(case, MaxPool2D::<3, 2, 1>),
            "max_2_2_0" => run::<3, _>(case, MaxPool2D::<2, 2>),
            "avg_3_1_1_pads_count" => run::<2, _>(case, AvgPool2D::<3, 1, 1>),
            "avg_2_2_0_floor" => run::<3, _>(case, AvgPool2D::<2, 2>),
            "adaptive_3x2_overlapping" => run::<3, _>(case, AdaptiveAvgPool2D::<3, 2>),
            "adaptive_1_global" => run::<4, _>(case, AdaptiveAvgPool2D::<1>),
            "adaptive_4x4_upsampling" => run::<2, _>(case, AdaptiveAvgPool2D::<4, 4>),
            other => panic!("no layer for case {other}"),
        };
        assert_eq!(out, dims(&case["y_shape"]), "{name}: output shape");
        close(&y, &floats(&case["y"]), &format!("{name} y"));
        close(&dx, &floats(&case["dx"]), &format!("{name} dx"));
    }
}

#[test]
fn a_window_larger_than_the_input_is_an_error() {
    let x: Tensor<(usize, Const<1>, usize, usize), f32, Cpu> =
        Cpu::default().zeros_like(&(1, Const, 2, 2));
    let err = fulmen::layers::pool2d(x, fulmen::layers::PoolKind::Max, 3, 1, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("kernel_size") && err.contains("2×2"), "{err}");
}

#[test]
#[should_panic(expected = "is smaller than the 3×3 window")]
fn the_layer_panics_with_the_message_as_dfdx_layers_do() {
    let x: Tensor<(usize, Const<1>, usize, usize), f32, Cpu> =
        Cpu::default().zeros_like(&(1, Const, 2, 2));
    let _ = MaxPool2D::<3, 1>.forward(x);
}

#[test]
fn flatten_keeps_pytorch_order_and_names_a_size_mismatch() {
    let dev = Cpu::default();
    let values: Vec<f32> = (0..2 * 3 * 2 * 2).map(|v| v as f32).collect();
    let x: Tensor<(usize, Const<3>, usize, usize), f32, Cpu> =
        dev.tensor_from_vec(values.clone(), (2, Const, 2, 2));
    let rows = Flatten::<12>.forward(x.clone());
    assert_eq!(*rows.shape(), (2, Const::<12>));
    assert_eq!(rows.as_vec(), values, "row i is image i, channel-major");
    let err = fulmen::layers::flatten::<10, 3, _, _, _>(x)
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("Flatten<10>") && err.contains("3×2×2 image has 12 values"),
        "{err}"
    );
}

#[lightning_module]
struct TooSmall {
    head: Linear<2, 2>,
}

#[lightning_module]
impl TooSmall {
    fn training_step(
        &mut self,
        (x, y): fulmen::data::ImageBatch<2, 2, E, D>,
        ctx: &mut StepContext<E, D>,
    ) -> Loss<E, D> {
        // A 5×5 window on 3×3 images: the layer refuses it at run time.
        let pooled = MaxPool2D::<5, 1>.forward(ctx.trace(x));
        let logits = self
            .head
            .forward(pooled.mean::<(usize, Const<2>), Axes2<2, 3>>());
        cross_entropy_with_logits_loss(logits, y.one_hot())
    }
    fn configure_optimizers(&self) -> Optim {
        Optim::sgd(0.1)
    }
}

#[test]
fn a_layer_refusing_its_input_stops_fit_with_an_error_not_a_panic() {
    use fulmen::data::Image;
    let samples: Vec<(Image<2>, Class<2>)> = (0..4)
        .map(|i| {
            (
                Image::new(vec![0.5; 2 * 3 * 3], 3, 3).unwrap(),
                Class::new(i % 2).unwrap(),
            )
        })
        .collect();
    let loader = DataLoader::new(InMemoryDataset::new(samples), 2);
    let err = quiet::trainer()
        .max_epochs(1)
        .build()
        .unwrap()
        .fit_loaders(&mut TooSmall::new(), loader, None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("training_step panicked on batch 0"), "{err}");
    assert!(err.contains("smaller than the 5×5 window"), "{err}");
}

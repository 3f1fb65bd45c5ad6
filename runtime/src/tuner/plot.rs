//! The range test's curve as a PNG (Lightning's `lr_finder.plot(suggest=True)`): drawn by
//! plotters into a pixel buffer, written by `image`. Its text needs a font, taken from the
//! system (DejaVu Sans, Liberation Sans, Arial, Helvetica, or what `fc-match` names); without
//! one the plot is drawn without text, with a warning.

use std::path::Path;

use plotters::prelude::*;

use super::LrFound;
use crate::{Error, Result};

const SIZE: (u32, u32) = (800, 560);

/// Writes `found`'s curve, with `suggestion` marked, as a PNG at `path`.
pub(super) fn write(found: &LrFound, suggestion: Option<f64>, path: &Path) -> Result<()> {
    let points: Vec<(f64, f64)> = (found.lrs.iter().copied())
        .zip(found.losses.iter().copied())
        .filter(|(lr, loss)| lr.is_finite() && loss.is_finite() && *lr > 0.0)
        .collect();
    if points.len() < 2 {
        return Err(Error::msg(format!(
            "lr_find: {} finite points cannot make a plot for {}",
            points.len(),
            path.display()
        )));
    }
    let mut pixels = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    let text = crate::drawing::font_registered();
    draw(&mut pixels, &points, suggestion, found.log_x(), text)
        .map_err(|e| Error::msg(format!("lr_find: drawing {}: {e}", path.display())))?;
    image::save_buffer(
        path,
        &pixels,
        SIZE.0,
        SIZE.1,
        image::ExtendedColorType::Rgb8,
    )
    .map_err(|e| Error::msg(format!("lr_find: writing {}: {e}", path.display())))
}

type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

fn draw(
    pixels: &mut [u8],
    points: &[(f64, f64)],
    suggestion: Option<f64>,
    log_x: bool,
    text: bool,
) -> Drawn {
    let root = BitMapBackend::with_buffer(pixels, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let (lo, hi) = points
        .iter()
        .fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), p| {
            (lo.min(p.1), hi.max(p.1))
        });
    let pad = ((hi - lo) * 0.05).max(1e-12);
    let (x0, x1) = (points[0].0, points[points.len() - 1].0);
    let mut chart = ChartBuilder::on(&root);
    chart.margin(20);
    if text {
        chart.caption("Learning rate range test", ("sans-serif", 24));
        chart.x_label_area_size(50).y_label_area_size(70);
    }
    let marker = suggestion.and_then(|lr| points.iter().find(|p| p.0 == lr).copied());
    macro_rules! plot {
        ($x:expr) => {{
            let mut chart = chart.build_cartesian_2d($x, (lo - pad)..(hi + pad))?;
            if text {
                chart
                    .configure_mesh()
                    .x_desc("Learning rate")
                    .y_desc("Loss")
                    .x_label_formatter(&|x| format!("{x:.0e}"))
                    .draw()?;
            } else {
                chart
                    .configure_mesh()
                    .disable_x_mesh()
                    .disable_y_mesh()
                    .x_labels(0)
                    .y_labels(0)
                    .draw()?;
            }
            chart.draw_series(LineSeries::new(
                points.iter().copied(),
                BLUE.stroke_width(2),
            ))?;
            if let Some(p) = marker {
                chart.draw_series(std::iter::once(Circle::new(p, 7, RED.filled())))?;
            }
        }};
    }
    match log_x {
        true => plot!((x0..x1).log_scale()),
        false => plot!(x0..x1),
    }
    root.present()?;
    Ok(())
}

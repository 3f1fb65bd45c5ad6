//! Metrics that are pictures: a confusion matrix as a grid of cells shaded by their value, and
//! curves (ROC, precision-recall) as lines, each as PNG bytes (what
//! [`MetricPlots`](crate::callbacks::MetricPlots) writes to files and to the logger).
//!
//! ```
//! use fulmen::metrics::{plot, ConfusionMatrix};
//! let mut cm = ConfusionMatrix::multiclass(2);
//! cm.update(&[0usize, 1, 1][..], &[0usize, 1, 0][..])?;
//! let png = plot::confusion_matrix(&cm.matrix()?)?;
//! assert_eq!(&png[1..4], b"PNG");
//! # Ok::<(), fulmen::Error>(())
//! ```

use plotters::prelude::*;
use plotters::style::text_anchor::{HPos, Pos, VPos};

use super::Curve;
use crate::{Error, Result};

/// The size of every plot.
pub const SIZE: (u32, u32) = (640, 560);

type Drawn = std::result::Result<(), Box<dyn std::error::Error>>;

/// `matrix` (rows: targets, columns: predictions) as a PNG: darker cells hold more, each
/// with its value when a font is found.
pub fn confusion_matrix(matrix: &[Vec<f64>]) -> Result<Vec<u8>> {
    confusion_matrices(&[("Confusion matrix".to_string(), matrix.to_vec())])
}

/// Several named matrices (a multilabel task's, one per label) as panels of one PNG.
pub fn confusion_matrices(panels: &[(String, Vec<Vec<f64>>)]) -> Result<Vec<u8>> {
    let square = |m: &Vec<Vec<f64>>| !m.is_empty() && m.iter().all(|r| r.len() == m.len());
    if panels.is_empty() || !panels.iter().all(|(_, m)| square(m)) {
        return Err(Error::msg(
            "a confusion matrix to draw is square and not empty",
        ));
    }
    let mut pixels = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    let text = crate::drawing::font_registered();
    let mut drawn = || -> Drawn {
        let root = BitMapBackend::with_buffer(&mut pixels, SIZE).into_drawing_area();
        root.fill(&WHITE)?;
        // As square a grid as the panels fill.
        let cols = (panels.len() as f64).sqrt().ceil() as usize;
        let rows = panels.len().div_ceil(cols);
        for (area, (name, matrix)) in root.split_evenly((rows, cols)).iter().zip(panels) {
            draw_matrix(area, matrix, name, text && panels.len() <= 16)?;
        }
        root.present()?;
        Ok(())
    };
    drawn().map_err(|e| Error::msg(format!("drawing a confusion matrix: {e}")))?;
    crate::drawing::png(&pixels, SIZE)
}

fn draw_matrix(
    area: &DrawingArea<BitMapBackend<'_>, plotters::coord::Shift>,
    matrix: &[Vec<f64>],
    name: &str,
    text: bool,
) -> Drawn {
    let n = matrix.len();
    let mut chart = ChartBuilder::on(area);
    chart.margin(20);
    if text {
        chart.caption(name, ("sans-serif", 22));
        chart.x_label_area_size(40).y_label_area_size(50);
    }
    // Segmented axes: each class's label at the middle of its cells; targets from the top.
    let mut chart =
        chart.build_cartesian_2d((0..n - 1).into_segmented(), (0..n - 1).into_segmented())?;
    if text {
        let centre = |v: &SegmentValue<usize>, f: &dyn Fn(usize) -> usize| match v {
            SegmentValue::CenterOf(i) if *i < n => f(*i).to_string(),
            _ => String::new(),
        };
        chart
            .configure_mesh()
            .disable_mesh()
            .x_desc("Predicted")
            .y_desc("Target")
            .x_labels(n.min(20))
            .y_labels(n.min(20))
            .x_label_formatter(&|v| centre(v, &|i| i))
            .y_label_formatter(&|v| centre(v, &|i| n - 1 - i))
            .draw()?;
    }
    let max = matrix.iter().flatten().copied().fold(0.0f64, f64::max);
    for (t, row) in matrix.iter().enumerate() {
        for (p, &v) in row.iter().enumerate() {
            let y = n - 1 - t;
            let shade = if max > 0.0 { v / max } else { 0.0 };
            let c = (255.0 * (1.0 - 0.85 * shade)) as u8;
            let cell = [
                (SegmentValue::Exact(p), SegmentValue::Exact(y)),
                (SegmentValue::Exact(p + 1), SegmentValue::Exact(y + 1)),
            ];
            chart.draw_series(std::iter::once(Rectangle::new(
                cell,
                RGBColor(c, c, 255).filled(),
            )))?;
            if text && n <= 20 {
                let label = if v.fract() == 0.0 {
                    format!("{v}")
                } else {
                    format!("{v:.2}")
                };
                let ink = if shade > 0.6 { WHITE } else { BLACK };
                let style = ("sans-serif", 18)
                    .into_font()
                    .color(&ink)
                    .pos(Pos::new(HPos::Center, VPos::Center));
                let at = (SegmentValue::CenterOf(p), SegmentValue::CenterOf(y));
                chart.draw_series(std::iter::once(Text::new(label, at, style)))?;
            }
        }
    }
    Ok(())
}

/// `curves` (one per class or label) as lines over `[0, 1]²`, with the axes' names.
pub fn curves(curves: &[Curve], x_name: &str, y_name: &str) -> Result<Vec<u8>> {
    if curves.iter().all(|c| c.x.len() < 2) {
        return Err(Error::msg("the curves to draw have fewer than two points"));
    }
    let mut pixels = vec![255u8; (SIZE.0 * SIZE.1 * 3) as usize];
    let text = crate::drawing::font_registered();
    draw_curves(&mut pixels, curves, (x_name, y_name), text)
        .map_err(|e| Error::msg(format!("drawing curves: {e}")))?;
    crate::drawing::png(&pixels, SIZE)
}

fn draw_curves(pixels: &mut [u8], curves: &[Curve], names: (&str, &str), text: bool) -> Drawn {
    let root = BitMapBackend::with_buffer(pixels, SIZE).into_drawing_area();
    root.fill(&WHITE)?;
    let mut chart = ChartBuilder::on(&root);
    chart.margin(20);
    if text {
        chart.caption(
            format!("{} against {}", names.1, names.0),
            ("sans-serif", 22),
        );
        chart.x_label_area_size(40).y_label_area_size(50);
    }
    let mut chart = chart.build_cartesian_2d(0.0..1.0, 0.0..1.0)?;
    if text {
        chart
            .configure_mesh()
            .x_desc(names.0)
            .y_desc(names.1)
            .draw()?;
    }
    for (i, c) in curves.iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        let points =
            c.x.iter()
                .copied()
                .zip(c.y.iter().copied())
                .filter(|p| p.0.is_finite() && p.1.is_finite());
        chart.draw_series(LineSeries::new(points, color.stroke_width(2)))?;
    }
    root.present()?;
    Ok(())
}

//! What the PNG plots share (the learning-rate range test's, the metrics'): a system font for
//! their text, registered once as plotters' `sans-serif`, and pixels encoded as PNG.

use std::sync::OnceLock;

use plotters::style::FontStyle;

use crate::{Error, Result};

/// Whether a system font is registered as plotters' `sans-serif` (looked for once).
pub(crate) fn font_registered() -> bool {
    static FOUND: OnceLock<bool> = OnceLock::new();
    *FOUND.get_or_init(|| {
        let Some(bytes) = system_font() else {
            eprintln!("warning: no system font found (DejaVu Sans, Liberation Sans, Arial or fc-match's sans-serif): plots are drawn without text");
            return false;
        };
        // plotters keeps fonts for the life of the process.
        let bytes: &'static [u8] = Box::leak(bytes.into_boxed_slice());
        plotters::style::register_font("sans-serif", FontStyle::Normal, bytes).is_ok()
    })
}

/// A sans-serif TrueType font of this machine.
fn system_font() -> Option<Vec<u8>> {
    const KNOWN: [&str; 6] = [
        "/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/TTF/DejaVuSans.ttf",
        "/usr/share/fonts/dejavu/DejaVuSans.ttf",
        "/usr/share/fonts/truetype/liberation/LiberationSans-Regular.ttf",
        "/System/Library/Fonts/Supplemental/Arial.ttf",
        "/Library/Fonts/Arial.ttf",
    ];
    let matched = std::process::Command::new("fc-match")
        .args(["-f", "%{file}", "sans-serif:fontformat=TrueType"])
        .output()
        .ok()
        .and_then(|out| String::from_utf8(out.stdout).ok());
    (KNOWN.iter().map(|p| p.to_string()))
        .chain(matched)
        .find_map(|path| std::fs::read(path).ok())
}

/// RGB pixels of `size` as PNG bytes.
pub(crate) fn png(pixels: &[u8], size: (u32, u32)) -> Result<Vec<u8>> {
    let mut out = std::io::Cursor::new(Vec::new());
    image::write_buffer_with_format(
        &mut out,
        pixels,
        size.0,
        size.1,
        image::ExtendedColorType::Rgb8,
        image::ImageFormat::Png,
    )
    .map_err(|e| Error::msg(format!("encoding a PNG: {e}")))?;
    Ok(out.into_inner())
}

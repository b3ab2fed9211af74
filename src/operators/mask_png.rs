//! Inpainting with a mask read from a PNG: white pixels are observed, black ones missing.

use std::path::Path;

use super::PixelSelection;
use crate::data::ImageShape;
use crate::{Error, Result};

/// Inpainting whose observed pixel locations are the white pixels of the PNG at `path`
/// (resolved against `base_dir` when relative). Every pixel must be pure black (0, missing)
/// or pure white (255 in every colour channel, observed); alpha is ignored. The PNG must be
/// H×W like the images. A Aᵀ = I. Spec `mask:PATH.png`, with `path` kept as written.
pub fn mask_from_png(shape: ImageShape, path: &str, base_dir: &Path) -> Result<PixelSelection> {
    let full = base_dir.join(path);
    let img = image::open(&full).map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io(&full, io),
        other => Error::data(
            &full,
            format!("not a readable image for `mask:` ({other}); save the mask as a PNG"),
        ),
    })?;
    let (w, h) = (img.width() as usize, img.height() as usize);
    if (h, w) != (shape.height, shape.width) {
        return Err(Error::data(
            &full,
            format!(
                "mask is {h}×{w} (height×width) but the images are {}×{}; make the mask the image size",
                shape.height, shape.width
            ),
        ));
    }
    let rgba = img.to_rgba8();
    let mut observed = Vec::with_capacity(h * w);
    for (col, row, px) in rgba.enumerate_pixels() {
        let [r, g, b, _] = px.0;
        let v = match (r, g, b) {
            (0, 0, 0) => false,
            (255, 255, 255) => true,
            _ => {
                return Err(Error::data(
                    &full,
                    format!(
                        "pixel at row {row}, column {col} has colour ({r}, {g}, {b}); a mask holds only black (0, missing) and white (255, observed)"
                    ),
                ));
            }
        };
        observed.push(v);
    }
    PixelSelection::new(shape, &observed, format!("mask:{path}"))
}

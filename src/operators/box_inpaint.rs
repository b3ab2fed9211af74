//! Box inpainting: a rectangle of the image is missing, everything else is observed.

use super::{PixelSelection, spec_error};
use crate::data::ImageShape;

/// Inpainting with the `w`×`h` box whose top-left pixel is column `x`, row `y` missing: A
/// keeps all channels of every pixel outside the box, m = (H·W − w·h)·C, A Aᵀ = I.
/// Spec `box:x=8,y=8,w=12,h=12`. Fails when the box is empty or leaves the image.
pub fn box_inpainting(
    shape: ImageShape,
    x: usize,
    y: usize,
    w: usize,
    h: usize,
) -> crate::Result<PixelSelection> {
    let spec = format!("box:x={x},y={y},w={w},h={h}");
    if w == 0 || h == 0 {
        return Err(spec_error(
            &spec,
            "the box is empty (w and h must be at least 1); use `identity` for no missing pixels",
        ));
    }
    if x + w > shape.width || y + h > shape.height {
        return Err(spec_error(
            &spec,
            format!(
                "the box spans columns {x}..{} and rows {y}..{} but the image is {}×{} (height×width); it must satisfy x + w ≤ {} and y + h ≤ {}",
                x + w,
                y + h,
                shape.height,
                shape.width,
                shape.width,
                shape.height
            ),
        ));
    }
    let observed: Vec<bool> = (0..shape.height * shape.width)
        .map(|p| {
            let (row, col) = (p / shape.width, p % shape.width);
            !(row >= y && row < y + h && col >= x && col < x + w)
        })
        .collect();
    PixelSelection::new(shape, &observed, spec)
}

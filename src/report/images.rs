//! PNG rendering of images in [-1, 1]: single images and grids.

use std::path::Path;

use crate::data::ImageShape;
use crate::output::write_atomic;
use crate::{Error, Result};

/// Maps a pixel in [-1, 1] to 0..=255 (clamping outside values): k = round((p + 1)·127.5).
pub fn to_u8(p: f32) -> u8 {
    (((p + 1.0) * 127.5).round()).clamp(0.0, 255.0) as u8
}

/// Writes `images` (count × D, HWC, [-1, 1]) as one PNG grid with `columns` columns,
/// each image enlarged `scale`× (nearest neighbour) and separated by a 2-pixel border.
pub fn save_grid(
    path: &Path,
    images: &[f32],
    shape: ImageShape,
    columns: usize,
    scale: usize,
) -> Result<()> {
    let d = shape.dim();
    if d == 0 || images.is_empty() || !images.len().is_multiple_of(d) {
        return Err(Error::input(format!(
            "{}: {} pixel values are not a whole number of {shape} images",
            path.display(),
            images.len()
        )));
    }
    let count = images.len() / d;
    let columns = columns.clamp(1, count);
    let rows = count.div_ceil(columns);
    let (h, w, c) = (shape.height * scale, shape.width * scale, shape.channels);
    let border = 2;
    let width = columns * (w + border) + border;
    let height = rows * (h + border) + border;
    // A mid-grey border separates images without being mistaken for black or white pixels.
    let mut rgb = vec![96u8; width * height * 3];
    for k in 0..count {
        let img = &images[k * d..(k + 1) * d];
        let (oy, ox) = (
            (k / columns) * (h + border) + border,
            (k % columns) * (w + border) + border,
        );
        for y in 0..h {
            for x in 0..w {
                let base = ((y / scale) * shape.width + x / scale) * c;
                let px = if c >= 3 {
                    [to_u8(img[base]), to_u8(img[base + 1]), to_u8(img[base + 2])]
                } else {
                    let g = to_u8(img[base]);
                    [g, g, g]
                };
                let o = ((oy + y) * width + ox + x) * 3;
                rgb[o..o + 3].copy_from_slice(&px);
            }
        }
    }
    let mut png = Vec::new();
    image::codecs::png::PngEncoder::new(&mut png)
        .write_image(
            &rgb,
            width as u32,
            height as u32,
            image::ExtendedColorType::Rgb8,
        )
        .map_err(|e| Error::data(path, format!("PNG encoding failed: {e}")))?;
    write_atomic(path, &png)
}

use image::ImageEncoder;

/// A scale that makes small images (16×16, 28×28) viewable: about 64 pixels per side.
pub fn default_scale(shape: ImageShape) -> usize {
    (64 / shape.height.max(shape.width).max(1)).clamp(1, 4)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grid_layout_and_pixel_mapping() {
        let dir = std::env::temp_dir().join(format!("fslens-grid-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shape = ImageShape::new(2, 3, 1);
        // Three images: all -1, all 0, all +1.
        let mut imgs = vec![-1.0f32; 6];
        imgs.extend(vec![0.0; 6]);
        imgs.extend(vec![1.0; 6]);
        let p = dir.join("g.png");
        save_grid(&p, &imgs, shape, 2, 1).unwrap();
        let img = image::open(&p).unwrap().to_rgb8();
        // 2 columns × (3 + 2) + 2 = 12 wide; 2 rows × (2 + 2) + 2 = 10 high.
        assert_eq!((img.width(), img.height()), (12, 10));
        assert_eq!(img.get_pixel(2, 2).0, [0, 0, 0]);
        assert_eq!(img.get_pixel(7, 2).0, [128, 128, 128]);
        assert_eq!(img.get_pixel(2, 6).0, [255, 255, 255]);
        assert_eq!(img.get_pixel(0, 0).0, [96, 96, 96]);
        assert!(save_grid(&p, &imgs[..5], shape, 2, 1).is_err());
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

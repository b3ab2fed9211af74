//! A single image file as a ground truth: PNG/JPEG of the data set's size, or a `.npy` of
//! D values already in [-1, 1].

use std::path::Path;

use super::{ImageShape, pixel_from_u8};
use crate::{Error, Result};

/// Loads one image of `shape` (HWC, [-1, 1]). PNG/JPEG pixels k map to 2k/255 − 1 and are
/// converted to the data set's channel count (luma for 1 channel, RGB for 3).
pub fn load(path: &Path, shape: ImageShape) -> Result<Vec<f32>> {
    let is_npy = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("npy"));
    if is_npy {
        let a = crate::arrays::read_npy(path)?;
        if a.data.len() != shape.dim() {
            return Err(Error::data(
                path,
                format!(
                    "holds {} values (shape {:?}) but the data set's images have {} ({shape}, HWC)",
                    a.data.len(),
                    a.shape,
                    shape.dim()
                ),
            ));
        }
        if let Some(i) = a.data.iter().position(|v| v.abs() > 1.0 + 1e-6) {
            return Err(Error::data(
                path,
                format!(
                    "value {} at index {i} is outside [-1, 1]; map pixels to [-1, 1] first",
                    a.data[i]
                ),
            ));
        }
        return Ok(a.data.iter().map(|&v| v as f32).collect());
    }
    let img = image::open(path).map_err(|e| match e {
        image::ImageError::IoError(io) => Error::io(path, io),
        other => Error::data(path, format!("not a readable PNG/JPEG image ({other})")),
    })?;
    if (img.height() as usize, img.width() as usize) != (shape.height, shape.width) {
        return Err(Error::data(
            path,
            format!(
                "is {}x{} (HxW) but the data set's images are {}x{}; resize it first",
                img.height(),
                img.width(),
                shape.height,
                shape.width
            ),
        ));
    }
    let pixels: Vec<u8> = match shape.channels {
        1 => img.to_luma8().into_raw(),
        3 => img.to_rgb8().into_raw(),
        c => {
            return Err(Error::data(
                path,
                format!("the data set has {c} channels; only 1 or 3 can come from an image file"),
            ));
        }
    };
    Ok(pixels.into_iter().map(pixel_from_u8).collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn png_and_npy_truths_load_and_check_their_size() {
        let dir = std::env::temp_dir().join(format!("fslens-imgfile-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("t.png");
        let mut g = image::GrayImage::new(3, 2);
        g.put_pixel(2, 1, image::Luma([255]));
        g.save(&p).unwrap();
        let v = load(&p, ImageShape::new(2, 3, 1)).unwrap();
        assert_eq!(v, vec![-1.0, -1.0, -1.0, -1.0, -1.0, 1.0]);
        let e = load(&p, ImageShape::new(3, 3, 1)).unwrap_err().to_string();
        assert!(e.contains("t.png") && e.contains("2x3"), "{e}");
        let n = dir.join("t.npy");
        crate::arrays::write_npy_f32(&n, &[6], &[0.5; 6]).unwrap();
        assert_eq!(load(&n, ImageShape::new(2, 3, 1)).unwrap(), vec![0.5; 6]);
        assert!(
            load(&n, ImageShape::new(2, 2, 1))
                .unwrap_err()
                .to_string()
                .contains("t.npy")
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

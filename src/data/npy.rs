//! Images from a `.npy` array (uint8, float32 or float64, C order), with optional labels
//! from a second `.npy` of N non-negative integers.
//!
//! Shapes: (N, H, W) → C = 1; (N, H, W, C) channels-last with C = 1 or 3; (N, D) with an
//! explicit `shape = [h, w, c]` (h·w·c = D), or else D a perfect square → h = w = √D, c = 1.
//!
//! Values: uint8 k → 2k/255 − 1 (8-bit). Floats are read in the declared [`Range`] and
//! mapped affinely onto [-1, 1]; a value outside the range by more than 1e-5 of its width is
//! an error, smaller excursions (rounding) are clamped. A float set is flagged `eight_bit`
//! when every mapped value is exactly some 2k/255 − 1.

use std::path::Path;

use super::{Dataset, ImageShape, all_eight_bit, u8_pixel_table};
use crate::arrays::read_npy;
use crate::{Error, Result};

/// The value range of a float array (`data.range`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Range {
    /// "-1..1": used as is.
    #[default]
    MinusOneToOne,
    /// "0..1": x ↦ 2x − 1.
    ZeroToOne,
    /// "0..255": x ↦ 2x/255 − 1.
    ZeroTo255,
}

impl Range {
    /// Parses "-1..1", "0..1" or "0..255"; anything else is a config error on `data.range`.
    pub fn parse(s: &str) -> Result<Range> {
        match s.trim() {
            "-1..1" => Ok(Range::MinusOneToOne),
            "0..1" => Ok(Range::ZeroToOne),
            "0..255" => Ok(Range::ZeroTo255),
            other => Err(Error::config(
                "data.range",
                format!(
                    "\"{other}\" is not a range fslens knows; use \"-1..1\", \"0..1\" or \"0..255\""
                ),
            )),
        }
    }
    /// (low, high) of the declared range.
    pub fn bounds(self) -> (f64, f64) {
        match self {
            Range::MinusOneToOne => (-1.0, 1.0),
            Range::ZeroToOne => (0.0, 1.0),
            Range::ZeroTo255 => (0.0, 255.0),
        }
    }
    pub fn name(self) -> &'static str {
        match self {
            Range::MinusOneToOne => "-1..1",
            Range::ZeroToOne => "0..1",
            Range::ZeroTo255 => "0..255",
        }
    }
}

/// Options of the `.npy` loader.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct NpyOptions {
    /// Declared range of float data (ignored for uint8, which is always 0..255).
    pub range: Range,
    /// [h, w, c] for an (N, D) array.
    pub shape: Option<[usize; 3]>,
}

/// The image shape of an array of shape `dims` (see the module notes).
pub(crate) fn image_shape(
    path: &Path,
    dims: &[usize],
    hint: Option<[usize; 3]>,
) -> Result<ImageShape> {
    let s = match (dims.len(), hint) {
        (3, _) => ImageShape::new(dims[1], dims[2], 1),
        (4, _) => {
            if !matches!(dims[3], 1 | 3) {
                return Err(Error::data(
                    path,
                    format!(
                        "shape {dims:?} has {} channels in the last axis; fslens takes channels-last (N, H, W, C) with C = 1 or 3 (for channels-first data save numpy.transpose(a, (0, 2, 3, 1)))",
                        dims[3]
                    ),
                ));
            }
            ImageShape::new(dims[1], dims[2], dims[3])
        }
        (2, Some([h, w, c])) => {
            if h * w * c != dims[1] {
                return Err(Error::config(
                    "data.shape",
                    format!(
                        "[{h}, {w}, {c}] holds {} values but each row of {} holds {}; choose h·w·c = {}",
                        h * w * c,
                        path.display(),
                        dims[1],
                        dims[1]
                    ),
                ));
            }
            ImageShape::new(h, w, c)
        }
        (2, None) => {
            let d = dims[1];
            let side = (d as f64).sqrt().round() as usize;
            if side * side != d {
                return Err(Error::data(
                    path,
                    format!(
                        "rows of {d} values are not square images; set data.shape = [h, w, c] with h·w·c = {d}"
                    ),
                ));
            }
            ImageShape::new(side, side, 1)
        }
        _ => {
            return Err(Error::data(
                path,
                format!("shape {dims:?} is not (N, H, W), (N, H, W, C) or (N, D)"),
            ));
        }
    };
    if let (Some([h, w, c]), 3 | 4) = (hint, dims.len())
        && ImageShape::new(h, w, c) != s
    {
        return Err(Error::config(
            "data.shape",
            format!(
                "[{h}, {w}, {c}] disagrees with the array shape {dims:?} of {}; data.shape is only for (N, D) arrays, remove it",
                path.display()
            ),
        ));
    }
    Ok(s)
}

/// Loads images from `path` and, when given, labels from `labels` (see the module notes).
pub fn load(path: &Path, labels: Option<&Path>, opts: &NpyOptions) -> Result<Dataset> {
    let a = read_npy(path)?;
    let shape = image_shape(path, &a.shape, opts.shape)?;
    let n = a.shape.first().copied().unwrap_or(0);
    if n == 0 || shape.dim() == 0 {
        return Err(Error::data(
            path,
            format!("shape {:?} holds no images; the data set is empty", a.shape),
        ));
    }
    let (images, eight_bit) = match a.dtype.as_str() {
        "u8" => {
            let table = u8_pixel_table();
            (a.data.iter().map(|&k| table[k as usize]).collect(), true)
        }
        "f32" | "f64" => {
            let (lo, hi) = opts.range.bounds();
            let tol = 1e-5 * (hi - lo);
            let mut out = Vec::with_capacity(a.data.len());
            for (i, &x) in a.data.iter().enumerate() {
                if x < lo - tol || x > hi + tol {
                    let hint = if (0.0..=255.0).contains(&x) {
                        " (values up to 255 suggest data.range = \"0..255\"; up to 1, \"0..1\")"
                    } else {
                        ""
                    };
                    return Err(Error::data(
                        path,
                        format!(
                            "value {x} at flat index {i} (image {}) lies outside the declared range {}; set data.range to the range the data uses{hint}",
                            i / shape.dim(),
                            opts.range.name()
                        ),
                    ));
                }
                let m = 2.0 * (x.clamp(lo, hi) - lo) / (hi - lo) - 1.0;
                out.push(m as f32);
            }
            let eight = all_eight_bit(&out);
            (out, eight)
        }
        other => {
            return Err(Error::data(
                path,
                format!(
                    "image dtype {other} is not supported; save the images as uint8, float32 or float64"
                ),
            ));
        }
    };
    let labels = match labels {
        Some(lp) => {
            let l = read_npy(lp)?;
            if l.shape.len() != 1 || l.shape[0] != n {
                return Err(Error::data(
                    lp,
                    format!(
                        "labels have shape {:?} but {} holds {n} images; labels must be a 1-D array of {n} integers",
                        l.shape,
                        path.display()
                    ),
                ));
            }
            let mut v = Vec::with_capacity(n);
            for (i, &x) in l.data.iter().enumerate() {
                if x < 0.0 || x.fract() != 0.0 || x > f64::from(u32::MAX) {
                    return Err(Error::data(
                        lp,
                        format!("label {x} at index {i} is not a non-negative integer"),
                    ));
                }
                v.push(x as u32);
            }
            Some(v)
        }
        None => None,
    };
    let class_names = labels.as_ref().map(|l| {
        let k = l.iter().max().map_or(0, |&m| m + 1);
        (0..k).map(|c| c.to_string()).collect()
    });
    Ok(Dataset {
        source: path.display().to_string(),
        shape,
        images,
        labels,
        class_names,
        eight_bit,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::arrays::write_npy_f32;
    use crate::data::pixel_from_u8;
    use crate::data::testutil::tmpdir;

    fn write<T: npyz::Serialize + npyz::AutoSerialize + Copy>(p: &Path, shape: &[u64], data: &[T]) {
        let shape: Vec<usize> = shape.iter().map(|&s| s as usize).collect();
        crate::arrays::write_npy(p, &shape, data).unwrap();
    }

    #[test]
    fn u8_every_pixel_with_labels() {
        let d = tmpdir("npy-u8");
        let px: Vec<u8> = (0..3 * 2 * 2 * 3).map(|i| (i * 23 % 256) as u8).collect();
        write(&d.join("x.npy"), &[3, 2, 2, 3], &px);
        write(&d.join("y.npy"), &[3], &[2i64, 0, 2]);
        let ds = load(
            &d.join("x.npy"),
            Some(&d.join("y.npy")),
            &NpyOptions::default(),
        )
        .unwrap();
        assert_eq!(ds.shape, ImageShape::new(2, 2, 3));
        assert!(ds.eight_bit);
        for (i, &k) in px.iter().enumerate() {
            assert_eq!(ds.images[i], (2.0 * k as f64 / 255.0 - 1.0) as f32);
        }
        assert_eq!(ds.labels.as_deref(), Some(&[2u32, 0, 2][..]));
        assert_eq!(ds.class_names.as_ref().unwrap().len(), 3);
        // (N, H, W) → one channel.
        write(&d.join("g.npy"), &[2, 3, 2], &px[..12]);
        let ds = load(&d.join("g.npy"), None, &NpyOptions::default()).unwrap();
        assert_eq!(ds.shape, ImageShape::new(3, 2, 1));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn floats_ranges_and_flat_shapes() {
        let d = tmpdir("npy-float");
        // (N, D) with D = 9 square, range 0..1, f64 (i/19 is not some k/255: not 8-bit).
        let v: Vec<f64> = (0..18).map(|i| i as f64 / 19.0).collect();
        write(&d.join("sq.npy"), &[2, 9], &v);
        let opts = NpyOptions {
            range: Range::ZeroToOne,
            shape: None,
        };
        let ds = load(&d.join("sq.npy"), None, &opts).unwrap();
        assert_eq!(ds.shape, ImageShape::new(3, 3, 1));
        for (i, &x) in v.iter().enumerate() {
            assert_eq!(ds.images[i], (2.0 * x - 1.0) as f32);
        }
        assert!(!ds.eight_bit);
        // i/17 = 15i/255 is exactly 8-bit, and detected as such.
        let v17: Vec<f64> = (0..18).map(|i| i as f64 / 17.0).collect();
        write(&d.join("sq17.npy"), &[2, 9], &v17);
        assert!(load(&d.join("sq17.npy"), None, &opts).unwrap().eight_bit);
        // Same data, explicit shape.
        let opts2 = NpyOptions {
            range: Range::ZeroToOne,
            shape: Some([1, 3, 3]),
        };
        assert_eq!(
            load(&d.join("sq.npy"), None, &opts2).unwrap().shape,
            ImageShape::new(1, 3, 3)
        );
        // 0..255 floats that are integers are flagged 8-bit; f32 default range as is.
        let ints: Vec<f32> = (0..8).map(|i| (i * 30) as f32).collect();
        write(&d.join("ints.npy"), &[2, 2, 2], &ints);
        let opts = NpyOptions {
            range: Range::ZeroTo255,
            shape: None,
        };
        let ds = load(&d.join("ints.npy"), None, &opts).unwrap();
        assert!(ds.eight_bit);
        assert_eq!(ds.images[3], pixel_from_u8(90));
        let m: Vec<f32> = vec![-1.0, -0.25, 0.5, 1.0];
        write_npy_f32(&d.join("m.npy"), &[1, 2, 2], &m).unwrap();
        assert_eq!(
            load(&d.join("m.npy"), None, &NpyOptions::default())
                .unwrap()
                .images,
            m
        );

        // Non-square D without a shape; a wrong shape hint.
        write(&d.join("flat.npy"), &[1, 6], &[0u8; 6]);
        let e = load(&d.join("flat.npy"), None, &NpyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("flat.npy") && e.contains("data.shape"), "{e}");
        let bad = NpyOptions {
            range: Range::default(),
            shape: Some([2, 2, 2]),
        };
        let e = load(&d.join("flat.npy"), None, &bad)
            .unwrap_err()
            .to_string();
        assert!(e.contains("data.shape") && e.contains("flat.npy"), "{e}");
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_arrays_name_the_file() {
        let d = tmpdir("npy-bad");
        // Out of the declared range: names file, index and the option.
        write_npy_f32(
            &d.join("big.npy"),
            &[2, 2, 2],
            &[0.0, 0.5, 0.25, 0.0, 0.0, 200.0, 0.0, 0.0],
        )
        .unwrap();
        let e = load(&d.join("big.npy"), None, &NpyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("big.npy")
                && e.contains("index 5")
                && e.contains("image 1")
                && e.contains("data.range")
                && e.contains("0..255"),
            "{e}"
        );
        // Non-finite.
        write_npy_f32(&d.join("nan.npy"), &[1, 2, 2], &[0.0, f32::NAN, 0.0, 0.0]).unwrap();
        let e = load(&d.join("nan.npy"), None, &NpyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("nan.npy") && e.contains("not finite"), "{e}");
        // Channels-first, wrong rank, empty, integer images.
        write(&d.join("chw.npy"), &[1, 3, 4, 4], &[0u8; 48]);
        let e = load(&d.join("chw.npy"), None, &NpyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("chw.npy") && e.contains("transpose"), "{e}");
        write(&d.join("r1.npy"), &[4], &[0u8; 4]);
        assert!(
            load(&d.join("r1.npy"), None, &NpyOptions::default())
                .unwrap_err()
                .to_string()
                .contains("r1.npy")
        );
        write::<u8>(&d.join("empty.npy"), &[0, 4, 4], &[]);
        let e = load(&d.join("empty.npy"), None, &NpyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("empty.npy") && e.contains("empty"), "{e}");
        write(&d.join("i32.npy"), &[1, 2, 2], &[0i32; 4]);
        let e = load(&d.join("i32.npy"), None, &NpyOptions::default())
            .unwrap_err()
            .to_string();
        assert!(e.contains("i32.npy") && e.contains("uint8"), "{e}");
        // Labels: wrong count, negative.
        write(&d.join("x.npy"), &[2, 2, 2], &[0u8; 8]);
        write(&d.join("l3.npy"), &[3], &[0i64, 1, 2]);
        let e = load(
            &d.join("x.npy"),
            Some(&d.join("l3.npy")),
            &NpyOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("l3.npy") && e.contains("2 images"), "{e}");
        write(&d.join("neg.npy"), &[2], &[0i64, -1]);
        let e = load(
            &d.join("x.npy"),
            Some(&d.join("neg.npy")),
            &NpyOptions::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("neg.npy") && e.contains("index 1"), "{e}");
        // Range strings.
        assert_eq!(Range::parse("0..255").unwrap(), Range::ZeroTo255);
        assert!(
            Range::parse("0..2")
                .unwrap_err()
                .to_string()
                .contains("data.range")
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}

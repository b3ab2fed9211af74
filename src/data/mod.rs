//! Image data sets: loaders, built-in synthetic sets, preprocessing and the held-out split.
//!
//! Every data set ends as a [`Dataset`]: N images of H×W×C pixels, flattened row-major in
//! HWC order (channel fastest) to D = H·W·C numbers mapped to [-1, 1]. The data module knows
//! no backend and no operator.
//!
//! Sources: [`idx`] (MNIST/Fashion-MNIST), [`cifar`] (CIFAR-10 binary batches), [`folder`]
//! (PNG/JPEG files), [`npy`] (numpy arrays), [`imagenet_npz`] (downsampled ImageNet .npz
//! batches), [`synthetic`] (built-in seeded shapes and glyphs). [`mapped`] keeps an atom set
//! larger than RAM on disk, memory-mapped. Then [`preprocess`] (subset, centre crop, resize, grayscale), [`split`] (the
//! held-out ground truth) and [`spec`] (the `[data]` table of a run config).

pub mod analytic;
pub mod cache;
pub mod cifar;
pub mod expected;
pub mod folder;
pub mod idx;
pub mod image_file;
pub mod imagenet_npz;
pub mod mapped;
pub mod npy;
pub mod preprocess;
pub mod spec;
pub mod split;
pub mod synthetic;

pub use spec::{DataConfig, DataKind, load, load_with_progress};

/// The pixel value of an 8-bit intensity: x = 2k/255 − 1, the float32 nearest to the exact
/// rational (computed in float64, rounded once).
pub fn pixel_from_u8(k: u8) -> f32 {
    (2.0 * f64::from(k) / 255.0 - 1.0) as f32
}

/// The 8-bit intensity nearest to a pixel value: k = round((x + 1)·255/2), clamped to 0..=255.
/// `pixel_from_u8(pixel_to_u8(x)) == x` exactly when x is an 8-bit pixel.
pub fn pixel_to_u8(x: f32) -> u8 {
    ((f64::from(x) + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8
}

/// Table of [`pixel_from_u8`] for all 256 intensities (loaders convert through it).
pub fn u8_pixel_table() -> [f32; 256] {
    std::array::from_fn(|k| pixel_from_u8(k as u8))
}

/// True when every value is exactly some 2k/255 − 1 (so the set is losslessly 8-bit).
pub fn all_eight_bit(values: &[f32]) -> bool {
    values
        .iter()
        .all(|&x| x.is_finite() && pixel_from_u8(pixel_to_u8(x)) == x)
}

/// Height, width and channels of one image; D = h·w·c numbers in HWC order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ImageShape {
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl ImageShape {
    pub fn new(height: usize, width: usize, channels: usize) -> Self {
        ImageShape {
            height,
            width,
            channels,
        }
    }
    /// D = H·W·C.
    pub fn dim(&self) -> usize {
        self.height * self.width * self.channels
    }
}

impl std::fmt::Display for ImageShape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}x{}x{}", self.height, self.width, self.channels)
    }
}

/// A set of images in [-1, 1], with optional class labels.
#[derive(Clone, Debug)]
pub struct Dataset {
    /// Where it came from, for messages and summary.json (a path or `synthetic:…`).
    pub source: String,
    pub shape: ImageShape,
    /// N × D, row-major, values in [-1, 1].
    pub images: Vec<f32>,
    /// One label per image, indices into `class_names` when that is present.
    pub labels: Option<Vec<u32>>,
    pub class_names: Option<Vec<String>>,
    /// True when every pixel came from an 8-bit source and is exactly 2k/255 − 1 (k ∈ 0..=255):
    /// a u8 atom store then represents the set without loss.
    pub eight_bit: bool,
}

impl Dataset {
    /// N, the number of images.
    pub fn len(&self) -> usize {
        let d = self.shape.dim();
        self.images.len().checked_div(d).unwrap_or(0)
    }
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
    /// D = H·W·C.
    pub fn dim(&self) -> usize {
        self.shape.dim()
    }
    /// Image i as D numbers.
    pub fn image(&self, i: usize) -> &[f32] {
        let d = self.dim();
        &self.images[i * d..(i + 1) * d]
    }

    /// A new data set holding images `indices` (in that order), with their labels; class
    /// names, shape, source and the 8-bit flag carry over. Panics on an index ≥ N (callers
    /// pass indices they drew from 0..N).
    pub fn select(&self, indices: &[usize]) -> Dataset {
        let d = self.dim();
        let mut images = Vec::with_capacity(indices.len() * d);
        for &i in indices {
            images.extend_from_slice(self.image(i));
        }
        Dataset {
            source: self.source.clone(),
            shape: self.shape,
            images,
            labels: self
                .labels
                .as_ref()
                .map(|l| indices.iter().map(|&i| l[i]).collect()),
            class_names: self.class_names.clone(),
            eight_bit: self.eight_bit,
        }
    }

    /// Images per label: `counts[c]` = #{i : label_i = c}, over max(label + 1, #class_names)
    /// classes; `None` without labels.
    pub fn label_counts(&self) -> Option<Vec<usize>> {
        let labels = self.labels.as_ref()?;
        let k = labels
            .iter()
            .map(|&l| l as usize + 1)
            .max()
            .unwrap_or(0)
            .max(self.class_names.as_ref().map_or(0, |c| c.len()));
        let mut counts = vec![0usize; k];
        for &l in labels {
            counts[l as usize] += 1;
        }
        Some(counts)
    }
}

/// Common test fixtures: a fresh temporary folder per test.
#[cfg(test)]
pub(crate) mod testutil {
    use std::path::PathBuf;

    /// `$TMP/fslens-data-<tag>-<pid>`, emptied and created.
    pub fn tmpdir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("fslens-data-{tag}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        std::fs::create_dir_all(&d).unwrap();
        d
    }
}

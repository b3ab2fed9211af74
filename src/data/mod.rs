//! Image data sets: loaders, built-in synthetic sets, preprocessing and the held-out split.
//!
//! Every data set ends as a [`Dataset`]: N images of H×W×C pixels, flattened row-major in
//! HWC order (channel fastest) to D = H·W·C numbers mapped to [-1, 1]. The data module knows
//! no backend and no operator.

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
        if d == 0 { 0 } else { self.images.len() / d }
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
}

//! Super-resolution: block-average downsampling by an integer factor k.

use super::{Gram, MeasurementView, Operator, spec_error};
use crate::data::ImageShape;

/// y[I, J, c] = (1/k²) Σ_{0≤a,b<k} x[kI + a, kJ + b, c], an (H/k)×(W/k)×C image in HWC order.
/// Aᵀ spreads y[I, J, c]/k² over its block, so A Aᵀ = I/k². Spec `downsample:4`.
#[derive(Clone, Debug)]
pub struct Downsample {
    shape: ImageShape,
    k: usize,
}

impl Downsample {
    /// Fails unless k ≥ 1 divides both H and W.
    pub fn new(shape: ImageShape, k: usize) -> crate::Result<Self> {
        let spec = format!("downsample:{k}");
        if k == 0 {
            return Err(spec_error(
                &spec,
                "the factor k must be a positive integer; expected form `downsample:4`",
            ));
        }
        if !shape.height.is_multiple_of(k) || !shape.width.is_multiple_of(k) {
            return Err(spec_error(
                &spec,
                format!(
                    "the image is {}×{} (height×width), not divisible by the factor {k}; pick a k that divides both, or resize/crop the data set",
                    shape.height, shape.width
                ),
            ));
        }
        Ok(Downsample { shape, k })
    }

    /// The shape of the low-resolution measurement, (H/k)×(W/k)×C.
    pub fn output_shape(&self) -> ImageShape {
        ImageShape::new(
            self.shape.height / self.k,
            self.shape.width / self.k,
            self.shape.channels,
        )
    }
}

impl Operator for Downsample {
    fn spec(&self) -> String {
        format!("downsample:{}", self.k)
    }
    fn input_shape(&self) -> ImageShape {
        self.shape
    }
    fn output_len(&self) -> usize {
        self.output_shape().dim()
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn gram(&self) -> Gram {
        Gram::ScaledIdentity(1.0 / (self.k * self.k) as f64)
    }
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        let (k, w, c) = (self.k, self.shape.width, self.shape.channels);
        let lo = self.output_shape();
        let scale = 1.0 / (k * k) as f64;
        // Accumulate in f64 so the block sums are exact enough for the 1e-5 adjoint tests.
        let mut acc = vec![0.0f64; lo.width * c];
        for bi in 0..lo.height {
            acc.fill(0.0);
            for row in bi * k..(bi + 1) * k {
                let line = &x[row * w * c..(row + 1) * w * c];
                for (col, px) in line.chunks_exact(c).enumerate() {
                    let a = &mut acc[(col / k) * c..(col / k + 1) * c];
                    for (s, &v) in a.iter_mut().zip(px) {
                        *s += f64::from(v);
                    }
                }
            }
            for (o, &s) in out[bi * lo.width * c..(bi + 1) * lo.width * c]
                .iter_mut()
                .zip(&acc)
            {
                *o = (s * scale) as f32;
            }
        }
    }
    fn adjoint(&self, _x: &[f32], r: &[f32], out: &mut [f32]) {
        let (k, w, c) = (self.k, self.shape.width, self.shape.channels);
        let lo_w = self.shape.width / k;
        let scale = 1.0 / (k * k) as f32;
        for row in 0..self.shape.height {
            let lo_row = &r[(row / k) * lo_w * c..(row / k + 1) * lo_w * c];
            let line = &mut out[row * w * c..(row + 1) * w * c];
            for (col, px) in line.chunks_exact_mut(c).enumerate() {
                for (o, &v) in px.iter_mut().zip(&lo_row[(col / k) * c..(col / k + 1) * c]) {
                    *o = v * scale;
                }
            }
        }
    }
    /// The low-resolution image y itself.
    fn view(&self, y: &[f32]) -> Option<MeasurementView> {
        Some(MeasurementView {
            shape: self.output_shape(),
            pixels: y.to_vec(),
        })
    }
}

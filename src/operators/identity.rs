//! Denoising: A = I, so y = x + noise and A Aᵀ = I.

use super::{Gram, MeasurementView, Operator};
use crate::data::ImageShape;

/// A x = x.
#[derive(Clone, Debug)]
pub struct Identity {
    shape: ImageShape,
}

impl Identity {
    pub fn new(shape: ImageShape) -> Self {
        Identity { shape }
    }
}

impl Operator for Identity {
    fn spec(&self) -> String {
        "identity".to_string()
    }
    fn input_shape(&self) -> ImageShape {
        self.shape
    }
    fn output_len(&self) -> usize {
        self.shape.dim()
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn gram(&self) -> Gram {
        Gram::ScaledIdentity(1.0)
    }
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        out.copy_from_slice(x);
    }
    fn adjoint(&self, _x: &[f32], r: &[f32], out: &mut [f32]) {
        out.copy_from_slice(r);
    }
    /// The noisy image itself.
    fn view(&self, y: &[f32]) -> Option<MeasurementView> {
        Some(MeasurementView {
            shape: self.shape,
            pixels: y.to_vec(),
        })
    }
}

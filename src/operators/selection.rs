//! Inpainting operators: A keeps a subset of pixel locations (all channels of each).
//!
//! Box, random-pixel and PNG-mask inpainting differ only in which pixels they keep, so they
//! share this one operator. A is a row selection of the identity, hence A Aᵀ = I exactly.

use super::{Gram, MeasurementView, Operator};
use crate::data::ImageShape;

/// y = (x[p_1, ·], x[p_2, ·], …): the C channels of each observed pixel location p_j (in
/// row-major order), so m = (number of observed pixels)·C. Aᵀ scatters back and fills the
/// missing pixels with 0.
#[derive(Clone, Debug)]
pub struct PixelSelection {
    shape: ImageShape,
    /// Observed pixel locations i·W + j, increasing.
    observed: Vec<usize>,
    spec: String,
}

impl PixelSelection {
    /// Keeps the pixel locations where `observed[i·W + j]` is true. `spec` is the text that
    /// rebuilds this operator through [`super::parse`]. Fails when no pixel is observed.
    pub fn new(shape: ImageShape, observed: &[bool], spec: String) -> crate::Result<Self> {
        let pixels = shape.height * shape.width;
        if observed.len() != pixels {
            return Err(crate::Error::input(format!(
                "`{spec}`: the mask has {} entries but the image has {pixels} pixel locations ({}×{})",
                observed.len(),
                shape.height,
                shape.width
            )));
        }
        let observed: Vec<usize> = (0..pixels).filter(|&p| observed[p]).collect();
        if observed.is_empty() {
            return Err(super::spec_error(
                &spec,
                "no pixel is observed, so the measurement would be empty; observe at least one pixel",
            ));
        }
        Ok(PixelSelection {
            shape,
            observed,
            spec,
        })
    }

    /// The observed pixel locations i·W + j, increasing.
    pub fn observed_pixels(&self) -> &[usize] {
        &self.observed
    }
}

impl Operator for PixelSelection {
    fn spec(&self) -> String {
        self.spec.clone()
    }
    fn input_shape(&self) -> ImageShape {
        self.shape
    }
    fn output_len(&self) -> usize {
        self.observed.len() * self.shape.channels
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn gram(&self) -> Gram {
        Gram::ScaledIdentity(1.0)
    }
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        let c = self.shape.channels;
        for (o, &p) in out.chunks_exact_mut(c).zip(&self.observed) {
            o.copy_from_slice(&x[p * c..(p + 1) * c]);
        }
    }
    fn adjoint(&self, _x: &[f32], r: &[f32], out: &mut [f32]) {
        let c = self.shape.channels;
        out.fill(0.0);
        for (ri, &p) in r.chunks_exact(c).zip(&self.observed) {
            out[p * c..(p + 1) * c].copy_from_slice(ri);
        }
    }
    /// The zero-filled image Aᵀy: observed pixels as measured, missing ones at 0 (mid grey,
    /// which stands out against the black and white of most image sets).
    fn view(&self, y: &[f32]) -> Option<MeasurementView> {
        let mut pixels = vec![0.0; self.shape.dim()];
        self.adjoint(&[], y, &mut pixels);
        Some(MeasurementView {
            shape: self.shape,
            pixels,
        })
    }
}

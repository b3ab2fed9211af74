//! Forward models y = A(x) + noise on flat images of a known shape (HWC order).
//!
//! Each operator gives the forward map A, the adjoint Aᵀ (for a nonlinear A, the transposed
//! Jacobian J_A(x)ᵀ at a point x), whether it is linear, and the structure of A Aᵀ when it is
//! known (c·I), which lets ΠGDM skip a linear solve. Operators are plain maths: no backend.

use crate::data::ImageShape;

/// What is known about A Aᵀ (m × m).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Gram {
    /// A Aᵀ = c·I (inpainting masks: c = 1; block-average downsampling by k: c = 1/k²).
    ScaledIdentity(f64),
    /// No structure known: solve with conjugate gradients or a dense factorisation.
    General,
}

/// A measurement that can be shown as an image (for measurement.png).
#[derive(Clone, Debug)]
pub struct MeasurementView {
    pub shape: ImageShape,
    /// shape.dim() values, nominally in [-1, 1] (rendering clamps).
    pub pixels: Vec<f32>,
}

pub trait Operator: Send + Sync {
    /// The canonical text spec, e.g. `box:x=8,y=8,w=12,h=12` (round-trips through [`parse`]).
    fn spec(&self) -> String;
    /// Shape of the images it acts on.
    fn input_shape(&self) -> ImageShape;
    /// m, the length of a measurement.
    fn output_len(&self) -> usize;
    fn is_linear(&self) -> bool;
    fn gram(&self) -> Gram;
    /// out = A(x); x has input_shape().dim() values, out has output_len().
    fn forward(&self, x: &[f32], out: &mut [f32]);
    /// out = J_A(x)ᵀ r (= Aᵀ r for a linear A, which ignores x).
    fn adjoint(&self, x: &[f32], r: &[f32], out: &mut [f32]);
    /// A viewable rendering of a measurement y (or None when y is not image-like).
    fn view(&self, y: &[f32]) -> Option<MeasurementView>;

    /// A(x_k) for n images stored one after another; the default runs [`Operator::forward`]
    /// on rayon threads. Dense operators override it with a GEMM.
    fn forward_batch(&self, xs: &[f32], out: &mut [f32]) {
        use rayon::prelude::*;
        let d = self.input_shape().dim();
        let m = self.output_len();
        out.par_chunks_mut(m)
            .zip(xs.par_chunks(d))
            .for_each(|(o, x)| self.forward(x, o));
    }
}

/// Builds an operator from its text spec for images of `shape`. Relative file names in the
/// spec (`matrix:M.npy`, `mask:M.png`) are resolved against `base_dir`.
pub fn parse(
    spec: &str,
    shape: ImageShape,
    base_dir: &std::path::Path,
) -> crate::Result<Box<dyn Operator>> {
    let _ = (spec, shape, base_dir);
    Err(crate::Error::config(
        "operator",
        "operators are not built yet",
    ))
}

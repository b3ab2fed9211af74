//! A dense measurement matrix: from a `.npy` file, or generated (Gaussian projection).

use std::path::Path;

use super::{Gram, MeasurementView, Operator, spec_error};
use crate::data::ImageShape;
use crate::{Error, Result};

/// y = M x for a dense m × D matrix M (row-major f32). Single images go through float64 dot
/// products; [`Operator::forward_batch`] is one f32 GEMM Y = X Mᵀ (n × D times D × m), which
/// is how the measured atoms of a whole training set are computed. No structure is assumed
/// for M Mᵀ.
#[derive(Clone, Debug)]
pub struct DenseMatrix {
    shape: ImageShape,
    m: usize,
    matrix: Vec<f32>,
    spec: String,
}

impl DenseMatrix {
    /// Wraps an m × D row-major matrix; `spec` is the text that rebuilds it through
    /// [`super::parse`].
    pub fn new(shape: ImageShape, m: usize, matrix: Vec<f32>, spec: String) -> Result<Self> {
        let d = shape.dim();
        if m == 0 || matrix.len() != m * d {
            return Err(spec_error(
                &spec,
                format!(
                    "a {m} × {d} matrix needs {} values but {} were given",
                    m * d,
                    matrix.len()
                ),
            ));
        }
        if let Some(i) = matrix.iter().position(|v| !v.is_finite()) {
            return Err(spec_error(
                &spec,
                format!("matrix entry at flat index {i} is not finite"),
            ));
        }
        Ok(DenseMatrix {
            shape,
            m,
            matrix,
            spec,
        })
    }

    /// Reads M from a 2-D `.npy` file of shape (m, D) (float32 or float64; integer types are
    /// converted too) at `path`, resolved against `base_dir` when relative. Spec
    /// `matrix:PATH`, with `path` kept as written.
    pub fn from_npy(shape: ImageShape, path: &str, base_dir: &Path) -> Result<Self> {
        let full = base_dir.join(path);
        let array = crate::arrays::read_npy(&full)?;
        let d = shape.dim();
        if array.shape.len() != 2 || array.shape[1] != d || array.shape[0] == 0 {
            return Err(Error::data(
                &full,
                format!(
                    "matrix has shape {:?} but the operator needs (m, D) with m ≥ 1 and D = {d} (images {shape}); save an (m, {d}) array",
                    array.shape
                ),
            ));
        }
        let m = array.shape[0];
        let matrix = array.data.iter().map(|&v| v as f32).collect();
        DenseMatrix::new(shape, m, matrix, format!("matrix:{path}"))
    }

    /// M as m × D row-major.
    pub fn matrix(&self) -> &[f32] {
        &self.matrix
    }
}

impl Operator for DenseMatrix {
    fn spec(&self) -> String {
        self.spec.clone()
    }
    fn input_shape(&self) -> ImageShape {
        self.shape
    }
    fn output_len(&self) -> usize {
        self.m
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn gram(&self) -> Gram {
        Gram::General
    }
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        let d = self.shape.dim();
        for (o, row) in out.iter_mut().zip(self.matrix.chunks_exact(d)) {
            let s: f64 = row
                .iter()
                .zip(x)
                .map(|(&a, &b)| f64::from(a) * f64::from(b))
                .sum();
            *o = s as f32;
        }
    }
    /// out = Mᵀ r, accumulated in f64.
    fn adjoint(&self, _x: &[f32], r: &[f32], out: &mut [f32]) {
        let d = self.shape.dim();
        let mut acc = vec![0.0f64; d];
        for (&rj, row) in r.iter().zip(self.matrix.chunks_exact(d)) {
            let rj = f64::from(rj);
            for (a, &v) in acc.iter_mut().zip(row) {
                *a += rj * f64::from(v);
            }
        }
        for (o, a) in out.iter_mut().zip(acc) {
            *o = a as f32;
        }
    }
    /// The back-projection Mᵀy, contrast-stretched to [-1, 1] (for a Gaussian projection with
    /// entries N(0, 1/m), E[MᵀM] = I, so it is a noisy picture of x).
    fn view(&self, y: &[f32]) -> Option<MeasurementView> {
        let mut pixels = vec![0.0f32; self.shape.dim()];
        self.adjoint(&[], y, &mut pixels);
        stretch_to_unit_range(&mut pixels);
        Some(MeasurementView {
            shape: self.shape,
            pixels,
        })
    }
    /// Y = X Mᵀ as one GEMM on the rayon pool: X is n × D (row-major), Y is n × m.
    fn forward_batch(&self, xs: &[f32], out: &mut [f32]) {
        let d = self.shape.dim();
        let n = xs.len() / d;
        assert_eq!(xs.len(), n * d, "forward_batch: input is not whole images");
        assert_eq!(
            out.len(),
            n * self.m,
            "forward_batch: output has the wrong length"
        );
        if n == 0 {
            return;
        }
        // SAFETY: dst is n × m with row stride m, lhs n × D with row stride D, rhs = Mᵀ is
        // D × m read from M (m × D row-major) with row stride 1 and column stride D; all three
        // buffers are exactly that large (asserted above / by construction) and `out` does
        // not alias the inputs.
        unsafe {
            gemm::gemm(
                n,
                self.m,
                d,
                out.as_mut_ptr(),
                1,
                self.m as isize,
                false,
                xs.as_ptr(),
                1,
                d as isize,
                self.matrix.as_ptr(),
                d as isize,
                1,
                0.0f32,
                1.0f32,
                false,
                false,
                false,
                gemm::Parallelism::Rayon(0),
            );
        }
    }
}

/// Maps the values affinely so that min → −1 and max → 1 (all zeros when constant).
pub(crate) fn stretch_to_unit_range(v: &mut [f32]) {
    let lo = v.iter().copied().fold(f32::INFINITY, f32::min);
    let hi = v.iter().copied().fold(f32::NEG_INFINITY, f32::max);
    if hi.partial_cmp(&lo) != Some(std::cmp::Ordering::Greater) {
        v.fill(0.0);
        return;
    }
    let scale = 2.0 / (hi - lo);
    for x in v.iter_mut() {
        *x = (*x - lo) * scale - 1.0;
    }
}

//! Compressed sensing: a seeded Gaussian random projection to m numbers.

use rand::{Rng, SeedableRng};

use super::{DenseMatrix, spec_error};
use crate::data::ImageShape;

/// y = M x with M (m × D) of independent N(0, 1/m) entries, so E‖Mx‖² = ‖x‖² and
/// E[MᵀM] = I. The entries are drawn row by row from a ChaCha8 generator seeded with `seed`
/// (float64 standard normals scaled by 1/√m, then rounded to f32): the same spec gives the
/// same matrix on every machine. Spec `projection:m=64,seed=0`.
pub fn gaussian_projection(shape: ImageShape, m: usize, seed: u64) -> crate::Result<DenseMatrix> {
    let spec = format!("projection:m={m},seed={seed}");
    let d = shape.dim();
    const MAX_ENTRIES: usize = 1 << 30;
    if m == 0 {
        return Err(spec_error(
            &spec,
            "parameter `m` must be a positive integer",
        ));
    }
    if m.checked_mul(d).is_none_or(|e| e > MAX_ENTRIES) {
        return Err(spec_error(
            &spec,
            format!(
                "parameter `m` = {m} times D = {d} exceeds {MAX_ENTRIES} matrix entries (4 GiB); use a smaller m"
            ),
        ));
    }
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let scale = 1.0 / (m as f64).sqrt();
    let matrix: Vec<f32> = (0..m * d)
        .map(|_| {
            let z: f64 = rng.sample(rand_distr::StandardNormal);
            (z * scale) as f32
        })
        .collect();
    DenseMatrix::new(shape, m, matrix, spec)
}

//! Scores of the empirical prior and of the exact posterior (design §3).
//!
//!   prior:     ∇ log p(x_t)     = (s m(x) − x)/v,  m = Σ_i w_i a_i,  w = softmax(−‖x − s a_i‖²/(2v))
//!   posterior: ∇ log p(x_t | y) = (s m̃(x) − x)/v, m̃ = Σ_i w̃_i a_i, w̃ = softmax(ℓ_i + b_i)
//!
//! One weighted pass over the atoms each: the prior mean cancels out of the exact posterior
//! score.

use crate::Result;
use crate::engine::{Backend, Noise, WeightSet};

/// (s m − x)/v for every row of x, with m the weighted mean under `set`.
pub fn tweedie_score(
    backend: &dyn Backend,
    x: &[f32],
    noise: Noise,
    set: WeightSet,
) -> Result<Vec<f32>> {
    let pass = backend.weighted_means(x, noise, &[set])?;
    Ok(score_from_means(x, &pass.sets[0].means, noise))
}

/// (s m − x)/v elementwise, in float64 before rounding (v can be 1e-5).
pub fn score_from_means(x: &[f32], means: &[f32], noise: Noise) -> Vec<f32> {
    x.iter()
        .zip(means)
        .map(|(&xi, &mi)| ((noise.s * mi as f64 - xi as f64) / noise.v) as f32)
        .collect()
}

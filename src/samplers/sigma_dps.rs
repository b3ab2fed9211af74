//! `sigma-dps`: DPS (Chung et al. 2023) with the textbook σ⁻² weight (design §4). The
//! likelihood p(y | x_t) ≈ N(y; A(m(x_t)), σ² I) (a Dirac at the denoiser mean), whose score is
//!
//!   ∇ₓ log N(y; A(m(x)), σ² I) = (∂m/∂x)ᵀ J_A(m)ᵀ r / σ² = (s/v) C J_A(m)ᵀ r / σ²,
//!
//! r = y − A(m). Any differentiable A (J_Aᵀ comes from [`crate::operators::Operator::adjoint`]).
//! Two passes per step: the prior mean m and C·g.

use super::likelihood::{Context, Likelihood, denoiser_vjp, pull_back, residuals};
use crate::Result;
use crate::engine::Noise;

#[derive(Clone, Debug, Default)]
pub struct SigmaDps {
    passes: usize,
}

impl SigmaDps {
    /// (s/v) C J_A(m)ᵀ r/σ² per row, and ‖r_b‖ per row (ζ-DPS rescales by it).
    pub fn score_and_residual_norms(
        &mut self,
        ctx: &Context,
        x: &[f32],
        means: &[f32],
        noise: Noise,
    ) -> Result<(Vec<f64>, Vec<f64>)> {
        let r = residuals(ctx, means);
        let g = pull_back(ctx, means, &r, 1.0 / (ctx.sigma * ctx.sigma));
        let score = denoiser_vjp(ctx, x, means, &g, noise)?;
        self.passes += 1;
        let m = ctx.operator.output_len();
        let norms = r
            .chunks(m)
            .map(|rb| rb.iter().map(|v| v * v).sum::<f64>().sqrt())
            .collect();
        Ok((score, norms))
    }
}

impl Likelihood for SigmaDps {
    fn name(&self) -> &'static str {
        "sigma-dps"
    }
    fn likelihood_score(
        &mut self,
        ctx: &Context,
        x: &[f32],
        means: &[f32],
        noise: Noise,
    ) -> Result<Vec<f64>> {
        Ok(self.score_and_residual_norms(ctx, x, means, noise)?.0)
    }
    fn passes(&self) -> usize {
        self.passes
    }
}

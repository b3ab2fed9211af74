//! `zeta-dps`: the DPS step rule as published (Chung et al. 2023), written as a likelihood
//! score (design §4): the σ-DPS score rescaled per particle by 2ζ/‖r‖,
//!
//!   L(x) = (2ζ/‖r‖) · (s/v) C J_A(m)ᵀ r / σ²,   r = y − A(m(x)),
//!
//! so the step length no longer grows as the residual shrinks. ζ defaults to 1.0
//! (`sampling.zeta`). A zero residual gives a zero likelihood score (r = 0 makes the σ-DPS
//! score vanish too). Any differentiable A; two passes per step.

use super::likelihood::{Context, Likelihood};
use super::sigma_dps::SigmaDps;
use crate::Result;
use crate::engine::Noise;

#[derive(Clone, Debug)]
pub struct ZetaDps {
    zeta: f64,
    inner: SigmaDps,
}

impl ZetaDps {
    /// ζ-DPS with step ζ (a positive finite number: [`crate::samplers::SamplerOptions::validate`]).
    pub fn new(zeta: f64) -> Self {
        debug_assert!(
            zeta.is_finite() && zeta > 0.0,
            "ζ = {zeta} was not validated"
        );
        ZetaDps {
            zeta,
            inner: SigmaDps::default(),
        }
    }
    pub fn zeta(&self) -> f64 {
        self.zeta
    }
}

impl Likelihood for ZetaDps {
    fn name(&self) -> &'static str {
        "zeta-dps"
    }
    fn likelihood_score(
        &mut self,
        ctx: &Context,
        x: &[f32],
        means: &[f32],
        noise: Noise,
    ) -> Result<Vec<f64>> {
        let (mut score, norms) = self.inner.score_and_residual_norms(ctx, x, means, noise)?;
        let d = ctx.operator.input_shape().dim();
        for (row, &rn) in score.chunks_mut(d).zip(&norms) {
            let k = if rn > 0.0 { 2.0 * self.zeta / rn } else { 0.0 };
            row.iter_mut().for_each(|v| *v *= k);
        }
        Ok(score)
    }
    fn passes(&self) -> usize {
        self.inner.passes()
    }
    /// −ζ ∇ₓ‖r‖ = ζ (s/v) C J_Aᵀ r/‖r‖ = (σ²/2) L(x).
    fn dps_update_scale(&self, ctx: &Context) -> Option<f64> {
        Some(0.5 * ctx.sigma * ctx.sigma)
    }
}

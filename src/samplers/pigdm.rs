//! `pigdm`: ΠGDM (Song et al. 2023) on the empirical prior (design §4). The likelihood is the
//! Gaussian p(y | x_t) ≈ N(y; A m, Σ_y) with Σ_y = σ² I + r_t² A Aᵀ, r_t² = v/ᾱ, giving
//!
//!   L(x) = (s/v) C Aᵀ Σ_y⁻¹ r,   r = y − A m.
//!
//! Linear A only. When A Aᵀ = c·I (masks, block averages) Σ_y⁻¹ r = r/(σ² + (v/ᾱ) c);
//! otherwise conjugate gradients with the matvec σ² u + (v/ᾱ) A(Aᵀ u) (no engine pass), so a
//! step is two passes whatever the operator.

use rayon::prelude::*;

use super::likelihood::{Context, Likelihood, denoiser_vjp, pull_back, residuals};
use super::solve::{CgOptions, SolveStats, conjugate_gradients};
use crate::Result;
use crate::engine::Noise;
use crate::operators::Gram;

#[derive(Clone, Debug, Default)]
pub struct Pigdm {
    pub cg: CgOptions,
    stats: SolveStats,
    passes: usize,
}

impl Pigdm {
    pub fn new(cg: CgOptions) -> Self {
        Pigdm {
            cg,
            ..Default::default()
        }
    }

    /// u_b = Σ_y⁻¹ r_b for every row (r: B × m).
    pub fn solve(
        &mut self,
        ctx: &Context,
        means: &[f32],
        r: &[f64],
        noise: Noise,
    ) -> Result<Vec<f64>> {
        let sigma2 = ctx.sigma * ctx.sigma;
        // ᾱ = s²; v/ᾱ is large (≈ 2·10⁴) near t = 1 but finite: s ≥ e^-5 on the default schedule.
        let rt2 = noise.v / (noise.s * noise.s);
        match ctx.operator.gram() {
            Gram::ScaledIdentity(c) => {
                let k = 1.0 / (sigma2 + rt2 * c);
                Ok(r.iter().map(|v| v * k).collect())
            }
            Gram::General => {
                let op = ctx.operator;
                let d = op.input_shape().dim();
                let m = op.output_len();
                let rows = r.len() / m;
                let (u, solves) =
                    conjugate_gradients(rows, m, r, None, &self.cg, &mut |act, p| {
                        let mut out = vec![0.0f64; p.len()];
                        out.par_chunks_mut(m)
                            .zip(p.par_chunks(m))
                            .zip(act.par_iter())
                            .for_each(|((o, pb), &b)| {
                                let pf: Vec<f32> = pb.iter().map(|&v| v as f32).collect();
                                let mut at = vec![0.0f32; d];
                                // Linear A: the adjoint ignores the point; pass the row's mean anyway.
                                op.adjoint(&means[b * d..(b + 1) * d], &pf, &mut at);
                                let mut aat = vec![0.0f32; m];
                                op.forward(&at, &mut aat);
                                for ((oi, &pi), &qi) in o.iter_mut().zip(pb).zip(&aat) {
                                    *oi = sigma2 * pi + rt2 * f64::from(qi);
                                }
                            });
                        Ok(out)
                    })?;
                self.stats.record(&solves);
                Ok(u)
            }
        }
    }
}

impl Likelihood for Pigdm {
    fn name(&self) -> &'static str {
        "pigdm"
    }
    fn linear_only(&self) -> bool {
        true
    }
    fn likelihood_score(
        &mut self,
        ctx: &Context,
        x: &[f32],
        means: &[f32],
        noise: Noise,
    ) -> Result<Vec<f64>> {
        let r = residuals(ctx, means);
        let u = self.solve(ctx, means, &r, noise)?;
        let g = pull_back(ctx, means, &u, 1.0);
        self.passes += 1;
        denoiser_vjp(ctx, x, means, &g, noise)
    }
    fn passes(&self) -> usize {
        self.passes
    }
    fn solve_stats(&self) -> Option<&SolveStats> {
        (self.stats.solves > 0).then_some(&self.stats)
    }
    fn solve_warning(&self) -> Option<String> {
        self.stats.warning("pigdm", &self.cg)
    }
}

//! `diffpir`: DiffPIR (Zhu et al. 2023), half-quadratic splitting on the empirical prior
//! (design §4). At each level, from x_j at noise (s, v) to the next level (s′, v′):
//!
//!   x̂_0  = m(x_j)                                   (the prior denoiser, one engine pass)
//!   x̂_0′ = argmin_x ‖y − A x‖² + ρ ‖x − x̂_0‖²,      ρ = λ σ²/σ̄², σ̄² = v/s² = (1 − ᾱ)/ᾱ
//!        = (AᵀA + ρ I)⁻¹(Aᵀ y + ρ x̂_0) = x̂_0 + Aᵀ (A Aᵀ + ρ I)⁻¹ (y − A x̂_0)
//!   ε̂    = (x_j − s x̂_0′)/√v
//!   x_{j+1} = s′ x̂_0′ + √v′ (√(1 − ζ) ε̂ + √ζ ξ),   ξ ~ N(0, I).
//!
//! The data step is solved in measurement space: for A Aᵀ = c I (masks, block averages) it is
//! (y − A x̂_0)/(c + ρ); otherwise conjugate gradients with the matvec A(Aᵀ u) + ρ u, which
//! costs no engine pass. Linear A only. λ = `sampling.diffpir_lambda`, ζ =
//! `sampling.diffpir_zeta`. On the discrete chain the last level (v′ = 0, s′ = 1) returns x̂_0′.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::annealed::{LevelStep, linear_only};
use super::likelihood::{Context, residuals};
use super::solve::{CgOptions, SolveStats, conjugate_gradients, shifted_gram};
use crate::Result;
use crate::engine::Noise;
use crate::operators::{Gram, Operator};

#[derive(Clone, Debug)]
pub struct Diffpir {
    /// λ: the weight of the prior term, ρ = λ σ²/σ̄².
    pub lambda: f64,
    /// ζ ∈ [0, 1]: the share of fresh noise in the re-noising (0 deterministic, 1 DDPM-like).
    pub zeta: f64,
    pub cg: CgOptions,
    stats: SolveStats,
}

impl Diffpir {
    pub fn new(lambda: f64, zeta: f64, cg: CgOptions) -> Self {
        Diffpir {
            lambda,
            zeta,
            cg,
            stats: SolveStats::default(),
        }
    }

    /// x̂_0′ = x̂_0 + Aᵀ (A Aᵀ + ρ I)⁻¹ (y − A x̂_0) for every row of `means` (B × D), float64.
    pub fn data_step(&mut self, ctx: &Context, means: &[f32], rho: f64) -> Result<Vec<f64>> {
        let op = ctx.operator;
        let d = op.input_shape().dim();
        let m = op.output_len();
        let r = residuals(ctx, means);
        let u = match op.gram() {
            Gram::ScaledIdentity(c) => {
                let k = 1.0 / (c + rho);
                r.iter().map(|v| v * k).collect()
            }
            Gram::General => {
                let rows = r.len() / m;
                let (u, solves) =
                    conjugate_gradients(rows, m, &r, None, &self.cg, &mut |act, p| {
                        Ok(shifted_gram(op, act, p, means, 1.0, rho))
                    })?;
                self.stats.record(&solves);
                u
            }
        };
        let mut out = vec![0.0f64; means.len()];
        out.par_chunks_mut(d)
            .zip(means.par_chunks(d))
            .zip(u.par_chunks(m))
            .for_each(|((o, row), ub)| {
                let uf: Vec<f32> = ub.iter().map(|&v| v as f32).collect();
                let mut at = vec![0.0f32; d];
                op.adjoint(row, &uf, &mut at);
                for ((oi, &mi), &ai) in o.iter_mut().zip(row).zip(&at) {
                    *oi = f64::from(mi) + f64::from(ai);
                }
            });
        Ok(out)
    }
}

impl LevelStep for Diffpir {
    fn name(&self) -> &'static str {
        "diffpir"
    }

    fn check_operator(&self, operator: &dyn Operator) -> Result<()> {
        linear_only(
            "diffpir",
            operator,
            "its data step solves (AᵀA + ρI) x = Aᵀy + ρ x̂_0 in closed form or by CG",
        )
    }

    fn step(
        &mut self,
        ctx: &Context,
        x: &mut [f32],
        means: &[f32],
        from: Noise,
        to: Noise,
        rng: &mut ChaCha8Rng,
    ) -> Result<()> {
        // σ̄² = v/s²: large (≈ 2·10⁴) near t = 1 under the default schedule but finite.
        let sigma_bar2 = from.v / (from.s * from.s);
        let rho = self.lambda * ctx.sigma * ctx.sigma / sigma_bar2;
        let x0 = self.data_step(ctx, means, rho)?;
        let keep = (1.0 - self.zeta).sqrt() * to.v.sqrt();
        let fresh = self.zeta.sqrt() * to.v.sqrt();
        let inv_sd = 1.0 / from.v.sqrt();
        for (xi, &x0i) in x.iter_mut().zip(&x0) {
            let eps = (f64::from(*xi) - from.s * x0i) * inv_sd;
            let mut next = to.s * x0i + keep * eps;
            if fresh > 0.0 {
                let z: f64 = rng.sample(StandardNormal);
                next += fresh * z;
            }
            *xi = next as f32;
        }
        Ok(())
    }

    fn diagnostics(&self) -> Vec<(String, f64)> {
        if self.stats.solves > 0 {
            self.stats.diagnostics()
        } else {
            Vec::new()
        }
    }

    fn warning(&self) -> Option<String> {
        self.stats.warning("diffpir", &self.cg)
    }
}

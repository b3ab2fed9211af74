//! `daps`: decoupled annealing posterior sampling (Zhang et al. 2024) on the empirical prior
//! (design §4). At each level, from x_j at noise (s, v) to the next level (s′, v′):
//!
//!   x̂_0 = m(x_j)                         (the exact prior denoiser E[x_0 | x_j], one pass)
//!   x_0 ← x̂_0, then N_L Langevin steps on p(x_0 | x_j, y) ∝ N(x_0; x̂_0, r² I) p(y | x_0):
//!     x_0 ← x_0 + η (Aᵀ(y − A x_0)/σ² − (x_0 − x̂_0)/r²) + √(2η) ξ
//!   x_{j+1} = s′ x_0 + √v′ ξ′                (the forward process from the new x_0)
//!
//! r² = v/s² = σ_t², the paper's choice (its r_t is σ_t of the VE process, and the VP state
//! x_t/s is the VE state at σ_t² = v/s²). The step size is a fraction c (`sampling.daps_step`)
//! of the stable step of the target's stiffest direction:
//! η = c / (1/r² + L/σ²), L ≥ λ_max(AᵀA) (c for A Aᵀ = c I; otherwise 1.2 × a power-iteration
//! estimate). Where the likelihood dominates, η ∝ r² no longer holds: that keeps the walk
//! stable at small σ and large r, where η = c r² would diverge. N_L =
//! `sampling.daps_langevin_steps`. The Langevin steps touch only A and Aᵀ (no engine pass).
//! Linear A only (a bound on J_Aᵀ J_A for nonlinear A is not built). On the discrete chain
//! the last level (v′ = 0) returns x_0 itself.

use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::annealed::{LevelStep, linear_only};
use super::likelihood::Context;
use crate::Result;
use crate::engine::Noise;
use crate::operators::{Gram, Operator};

#[derive(Clone, Debug)]
pub struct Daps {
    /// N_L, Langevin steps per level.
    pub langevin_steps: usize,
    /// c ∈ (0, 1]: the step as a fraction of 1/λ_max of the target's precision.
    pub step_fraction: f64,
    /// L ≥ λ_max(AᵀA), found on the first level.
    curvature: Option<f64>,
    /// The smallest and largest η used, for summary.json.
    eta_range: (f64, f64),
}

/// Power iterations for λ_max(AᵀA) of a general linear operator.
const POWER_ITERATIONS: usize = 50;
/// Safety factor on the power-iteration estimate (which approaches λ_max from below).
const POWER_MARGIN: f64 = 1.2;

impl Daps {
    pub fn new(langevin_steps: usize, step_fraction: f64) -> Self {
        Daps {
            langevin_steps,
            step_fraction,
            curvature: None,
            eta_range: (f64::INFINITY, 0.0),
        }
    }

    /// The step size η at noise (s, v): c / (1/r² + L/σ²), r² = v/s².
    pub fn step_size(&self, noise: Noise, sigma: f64, curvature: f64) -> f64 {
        let r2 = noise.v / (noise.s * noise.s);
        self.step_fraction / (1.0 / r2 + curvature / (sigma * sigma))
    }
}

/// L ≥ λ_max(AᵀA): c when A Aᵀ = c I, else 1.2 × the power-iteration estimate from a fixed
/// start (deterministic).
pub fn curvature_bound(op: &dyn Operator) -> f64 {
    if let Gram::ScaledIdentity(c) = op.gram() {
        return c;
    }
    let d = op.input_shape().dim();
    let mut ax = vec![0.0f32; op.output_len()];
    let mut v: Vec<f32> = (0..d)
        .map(|i| 1.0 + ((i * 7919) % 13) as f32 / 13.0)
        .collect();
    let mut lambda = 0.0f64;
    for _ in 0..POWER_ITERATIONS {
        let n = v.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>().sqrt();
        if n == 0.0 {
            break;
        }
        v.iter_mut().for_each(|a| *a = (f64::from(*a) / n) as f32);
        op.forward(&v, &mut ax);
        let mut w = vec![0.0f32; d];
        op.adjoint(&v, &ax, &mut w);
        lambda = ax.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>();
        v = w;
    }
    POWER_MARGIN * lambda
}

impl LevelStep for Daps {
    fn name(&self) -> &'static str {
        "daps"
    }

    fn check_operator(&self, operator: &dyn Operator) -> Result<()> {
        linear_only(
            "daps",
            operator,
            "its Langevin step size needs a bound on AᵀA; nonlinear DAPS is not built",
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
        let op = ctx.operator;
        let d = op.input_shape().dim();
        let curvature = *self.curvature.get_or_insert_with(|| curvature_bound(op));
        let sigma2 = ctx.sigma * ctx.sigma;
        let r2 = from.v / (from.s * from.s);
        let eta = self.step_size(from, ctx.sigma, curvature);
        self.eta_range = (self.eta_range.0.min(eta), self.eta_range.1.max(eta));
        let jitter = (2.0 * eta).sqrt();
        let mut x0: Vec<f64> = means.iter().map(|&m| f64::from(m)).collect();
        for _ in 0..self.langevin_steps {
            // One normal per entry, drawn in row-major order before the (parallel) update.
            let xi: Vec<f64> = (0..x0.len()).map(|_| rng.sample(StandardNormal)).collect();
            x0.par_chunks_mut(d)
                .zip(means.par_chunks(d))
                .zip(xi.par_chunks(d))
                .for_each(|((row, m), z)| {
                    let grad = likelihood_gradient(ctx, row, sigma2);
                    for (((xi, &mi), &gi), &zi) in row.iter_mut().zip(m).zip(&grad).zip(z) {
                        let prior = (*xi - f64::from(mi)) / r2;
                        *xi += eta * (gi - prior) + jitter * zi;
                    }
                });
        }
        let sd = to.v.sqrt();
        for (xi, &x0i) in x.iter_mut().zip(&x0) {
            let mut next = to.s * x0i;
            if sd > 0.0 {
                let z: f64 = rng.sample(StandardNormal);
                next += sd * z;
            }
            *xi = next as f32;
        }
        Ok(())
    }

    fn diagnostics(&self) -> Vec<(String, f64)> {
        vec![
            ("daps_curvature_bound".into(), self.curvature.unwrap_or(0.0)),
            (
                "daps_step_min".into(),
                self.eta_range.0.min(self.eta_range.1),
            ),
            ("daps_step_max".into(), self.eta_range.1),
        ]
    }
}

/// ∇ log p(y | x_0) = Aᵀ(y − A x_0)/σ² for one row, float64 out (A applied in float32).
fn likelihood_gradient(ctx: &Context, row: &[f64], sigma2: f64) -> Vec<f64> {
    let op = ctx.operator;
    let xf: Vec<f32> = row.iter().map(|&v| v as f32).collect();
    let mut ax = vec![0.0f32; op.output_len()];
    op.forward(&xf, &mut ax);
    let r: Vec<f32> = ctx
        .y
        .iter()
        .zip(&ax)
        .map(|(&yi, &ai)| ((f64::from(yi) - f64::from(ai)) / sigma2) as f32)
        .collect();
    let mut g = vec![0.0f32; row.len()];
    op.adjoint(&xf, &r, &mut g);
    g.into_iter().map(f64::from).collect()
}

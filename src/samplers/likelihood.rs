//! Approximate likelihood scores ∇ₓ log p(y | x_t) on the empirical prior (design §3–4), and
//! the reverse-SDE sampler they drive.
//!
//! Every approximate sampler uses the prior score plus its likelihood score:
//!
//!   score(x) = (s m − x)/v + L(x),   m = Σ_i w_i a_i,  w = softmax_i(−‖x − s a_i‖²/(2v)),
//!
//! and every L is (s/v) C g for some g, C = Σ_i w_i (a_i − m)(a_i − m)ᵀ the prior covariance
//! (the denoiser Jacobian is ∂m/∂x = (s/v) C). One step costs a prior pass for m, a second
//! pass for C·g, plus whatever the solve for g needs (TMPD's CG: one pass per iteration).
//! No autodiff and no D × D matrix: C·g comes from [`Backend::covariance_products`].
//!
//! The DPS paper's own update (`zeta-dps` with `sampling.dps_update = true`, DDPM/DDIM only)
//! steps with the prior score and then moves each particle by
//!
//!   x_{k−1} = x′ − ζ ∇_{x_k}‖y − A(m(x_k))‖,   ∇ₓ‖r‖ = −(s/v) C J_A(m)ᵀ r/‖r‖
//!
//! (∂m/∂x = (s/v) C; the norm, not its square), i.e. x′ + (σ²/2)·L_ζ(x_k) with L_ζ the
//! zeta-dps likelihood score (2ζ/‖r‖)(s/v) C J_Aᵀ r/σ². The score form instead adds
//! β_k L_ζ/√α_k inside the step: the two differ by the factor 2β_k/(σ²√α_k) in the guidance's
//! size at each level.

use super::solve::SolveStats;
use super::{Problem, Progress, Run, Sampler, Settings, reverse_sde};
use crate::diffusion::integrate::Score;
use crate::engine::{Backend, Noise, WeightSet};
use crate::operators::Operator;
use crate::{Error, Result};

/// What a likelihood score needs: the engine over the atoms and the measurement model.
#[derive(Clone, Copy)]
pub struct Context<'a> {
    pub backend: &'a dyn Backend,
    pub operator: &'a dyn Operator,
    pub y: &'a [f32],
    pub sigma: f64,
}

/// One likelihood approximation. Implementations may keep state between calls (warm starts,
/// solve statistics); a sampler clones a fresh one per run.
pub trait Likelihood: Send {
    /// The sampler's config name (`sigma-dps`, …).
    fn name(&self) -> &'static str;
    /// ΠGDM and TMPD use A and Aᵀ as matrices: they refuse a nonlinear operator.
    fn linear_only(&self) -> bool {
        false
    }
    /// L(x) for every row of x (B × D, float64), given the prior means m (B × D) of the same
    /// rows at the same noise.
    fn likelihood_score(
        &mut self,
        ctx: &Context,
        x: &[f32],
        means: &[f32],
        noise: Noise,
    ) -> Result<Vec<f64>>;
    /// Engine passes made by `likelihood_score` so far (the prior pass not included).
    fn passes(&self) -> usize;
    /// Linear-solve statistics, for samplers that solve.
    fn solve_stats(&self) -> Option<&SolveStats> {
        None
    }
    /// Further named numbers about the solves (e.g. TMPD's dense solve count).
    fn solve_diagnostics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// A warning about the solves so far (non-convergence), if any.
    fn solve_warning(&self) -> Option<String> {
        None
    }
    /// The factor c for which the DPS paper's post-step update −ζ ∇ₓ‖y − A(m(x))‖ equals
    /// c · L(x) (zeta-dps: c = σ²/2), or None for likelihoods without that update.
    fn dps_update_scale(&self, _ctx: &Context) -> Option<f64> {
        None
    }
}

/// The DPS paper's displacement −ζ ∇ₓ‖y − A(m(x))‖ = c · L(x) per row (float64), with the
/// prior means of x; None when `likelihood` has no such update (see
/// [`Likelihood::dps_update_scale`]).
pub fn dps_update_displacement(
    likelihood: &mut dyn Likelihood,
    ctx: &Context,
    x: &[f32],
    means: &[f32],
    noise: Noise,
) -> Result<Option<Vec<f64>>> {
    let Some(c) = likelihood.dps_update_scale(ctx) else {
        return Ok(None);
    };
    let mut l = likelihood.likelihood_score(ctx, x, means, noise)?;
    l.iter_mut().for_each(|v| *v *= c);
    Ok(Some(l))
}

/// The error for ΠGDM/TMPD with a nonlinear operator, raised before any work.
pub fn check_operator(likelihood: &dyn Likelihood, operator: &dyn Operator) -> Result<()> {
    if likelihood.linear_only() && !operator.is_linear() {
        return Err(Error::config(
            "sampling.samplers",
            format!(
                "sampler {} needs a linear operator (it uses A Aᵀ and Σ = σ²I + A·Aᵀ as matrices), but the operator {} is nonlinear; use sigma-dps or zeta-dps (or fsr/exact) with it",
                likelihood.name(),
                operator.spec()
            ),
        ));
    }
    Ok(())
}

/// The approximate posterior score (s m − x)/v + L(x) of every row of x: a prior pass for m,
/// then the likelihood. Returned in f32, combined in float64.
pub fn posterior_score(
    likelihood: &mut dyn Likelihood,
    ctx: &Context,
    x: &[f32],
    noise: Noise,
) -> Result<Vec<f32>> {
    let pass = ctx.backend.weighted_means(x, noise, &[WeightSet::Prior])?;
    let means = &pass.sets[0].means;
    let l = likelihood.likelihood_score(ctx, x, means, noise)?;
    Ok(x.iter()
        .zip(means)
        .zip(&l)
        .map(|((&xi, &mi), &li)| ((noise.s * f64::from(mi) - f64::from(xi)) / noise.v + li) as f32)
        .collect())
}

/// r_b = y − A(m_b) for every row of `means` (B × D) → B × m, float64.
pub fn residuals(ctx: &Context, means: &[f32]) -> Vec<f64> {
    let d = ctx.operator.input_shape().dim();
    let m = ctx.operator.output_len();
    let mut am = vec![0.0f32; m];
    let mut out = Vec::with_capacity(means.len() / d * m);
    for row in means.chunks(d) {
        ctx.operator.forward(row, &mut am);
        out.extend(
            ctx.y
                .iter()
                .zip(&am)
                .map(|(&yi, &ai)| f64::from(yi) - f64::from(ai)),
        );
    }
    out
}

/// scale · J_A(m_b)ᵀ u_b for every row (u: B × m) → B × D in f32, ready for the engine.
pub fn pull_back(ctx: &Context, means: &[f32], u: &[f64], scale: f64) -> Vec<f32> {
    let d = ctx.operator.input_shape().dim();
    let m = ctx.operator.output_len();
    let mut uf = vec![0.0f32; m];
    let mut out = vec![0.0f32; means.len()];
    for ((row, ub), o) in means.chunks(d).zip(u.chunks(m)).zip(out.chunks_mut(d)) {
        for (a, &b) in uf.iter_mut().zip(ub) {
            *a = (scale * b) as f32;
        }
        ctx.operator.adjoint(row, &uf, o);
    }
    out
}

/// (s/v) C g per row, with the prior weights of x and their means: one engine pass.
pub fn denoiser_vjp(
    ctx: &Context,
    x: &[f32],
    means: &[f32],
    g: &[f32],
    noise: Noise,
) -> Result<Vec<f64>> {
    let cg = ctx
        .backend
        .covariance_products(x, noise, WeightSet::Prior, means, g)?;
    let k = noise.s / noise.v;
    Ok(cg.iter().map(|&c| k * f64::from(c)).collect())
}

/// The reverse process (the run's integrator) driven by prior score + a likelihood score, for
/// any [`Likelihood`].
#[derive(Clone)]
pub struct Approximate<L> {
    pub likelihood: L,
}

struct DrivenScore<'a, L> {
    ctx: Context<'a>,
    likelihood: L,
    calls: usize,
    /// Run the DPS paper's post-step update instead of the score form (zeta-dps on the
    /// discrete schedule, `sampling.dps_update`).
    dps_update: bool,
}

impl<L: Likelihood> Score for DrivenScore<'_, L> {
    fn score(&mut self, x: &[f32], noise: Noise, out: &mut [f32]) -> Result<()> {
        self.calls += 1;
        let s = posterior_score(&mut self.likelihood, &self.ctx, x, noise)?;
        out.copy_from_slice(&s);
        Ok(())
    }

    fn prior_and_update(
        &mut self,
        x: &[f32],
        noise: Noise,
        prior: &mut [f32],
        after: &mut [f32],
    ) -> Result<bool> {
        if !self.dps_update {
            return Ok(false);
        }
        let pass = self
            .ctx
            .backend
            .weighted_means(x, noise, &[WeightSet::Prior])?;
        let means = &pass.sets[0].means;
        let Some(d) = dps_update_displacement(&mut self.likelihood, &self.ctx, x, means, noise)?
        else {
            return Ok(false);
        };
        self.calls += 1;
        prior.copy_from_slice(&super::score::score_from_means(x, means, noise));
        after.iter_mut().zip(&d).for_each(|(a, &v)| *a = v as f32);
        Ok(true)
    }
}

impl<L: Likelihood + Clone + Sync> Sampler for Approximate<L> {
    fn name(&self) -> &'static str {
        self.likelihood.name()
    }

    fn check_operator(&self, operator: &dyn Operator) -> Result<()> {
        check_operator(&self.likelihood, operator)
    }

    fn sample(
        &self,
        problem: &Problem,
        settings: &Settings,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Run> {
        check_operator(&self.likelihood, problem.operator)?;
        let mut score = DrivenScore {
            ctx: Context {
                backend: problem.backend,
                operator: problem.operator,
                y: problem.y,
                sigma: problem.sigma,
            },
            dps_update: settings.dps_update
                && self
                    .likelihood
                    .dps_update_scale(&Context {
                        backend: problem.backend,
                        operator: problem.operator,
                        y: problem.y,
                        sigma: problem.sigma,
                    })
                    .is_some(),
            likelihood: self.likelihood.clone(),
            calls: 0,
        };
        let (x, snapshots) = reverse_sde(&mut score, problem, settings, progress)?;
        let calls = score.calls.max(1) as f64;
        let lik = &score.likelihood;
        let passes = (score.calls + lik.passes()) as f64 / calls * settings.evaluations_per_step();
        let mut diagnostics = vec![("engine_passes_per_step".to_string(), passes)];
        if let Some(stats) = lik.solve_stats() {
            diagnostics.extend(stats.diagnostics());
        }
        diagnostics.extend(lik.solve_diagnostics());
        Ok(Run {
            samples: x,
            snapshots,
            passes_per_step: passes,
            diagnostics,
            warnings: lik.solve_warning().into_iter().collect(),
        })
    }
}

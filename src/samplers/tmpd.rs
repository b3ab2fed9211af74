//! `tmpd`: Tweedie moment projection (Boys et al. 2024) on the empirical prior (design §4).
//! The likelihood is N(y; A m, Σ_f) with the denoiser's own covariance pushed through A,
//! Σ_f = σ² I + A C Aᵀ, C = Cov[x_0 | x_t] = Σ_i w_i (a_i − m)(a_i − m)ᵀ, giving
//!
//!   L(x) = (s/v) C Aᵀ Σ_f⁻¹ r,   r = y − A m.
//!
//! Linear A only. Σ_f is SPD and never diagonal (C is not), so every step solves, per
//! particle ([`TmpdSolver`]):
//! - conjugate gradients, matrix-free: Σ_f p = σ² p + A (C (Aᵀ p)) with C·(Aᵀp) from
//!   [`crate::engine::Backend::covariance_products`]: ONE ENGINE PASS PER ITERATION (only over
//!   the rows still iterating), warm-started from the previous step's solution (Σ_f moves
//!   little between steps); a step costs 2 + iterations (+1 for the warm-start residual)
//!   passes. C has rank below the number of atoms with non-negligible weight, so CG needs one
//!   or two iterations at small t and up to m + 1 (or more: float32 matvecs lose
//!   conjugacy) at large t.
//! - dense: the m columns C Aᵀ e_j of every row in one engine call over B·m rows (the
//!   particle repeated m times); A applied to them gives A C Aᵀ exactly, then Cholesky. It
//!   costs about m passes (measured on the CPU backend: linear in m, no batch gain).
//! - auto (default): for m ≤ [`DENSE_FALLBACK_MAX_M`], CG capped at m + 1 iterations, then
//!   dense for the rows still unconverged; plain CG above. Measured on Fashion-MNIST (10000
//!   atoms, B = 64, projections m = 8…64, CPU): CG alone wins at t = 0.05 (1–2 iterations,
//!   3–25× faster than dense) and at t = 0.8 (m+1 iterations, 1.2–2.4× faster), dense wins at
//!   t = 0.3 for m ≤ 16 (CG needs 15–57 iterations there, 2–3× slower); the cap keeps CG's
//!   cost within about twice the dense one wherever it loses conjugacy, and after a step
//!   where most rows fell back, the next [`DENSE_STREAK`] steps go dense directly.

use super::likelihood::{Context, Likelihood, denoiser_vjp, pull_back, residuals};
use super::solve::{CgOptions, RowSolve, SolveStats, cholesky_solve, conjugate_gradients};
use crate::engine::{Noise, WeightSet};
use crate::{Error, Result};

/// Largest m for which [`TmpdSolver::Auto`] falls back to dense solves (the B·m-row pass
/// holds B·m·D floats: 13 MB at B = 64, m = 64, D = 784).
pub const DENSE_FALLBACK_MAX_M: usize = 64;

/// Auto mode: after a call where most rows needed the dense fallback, this many calls solve
/// densely straight away before CG is tried again (t moves little between steps).
pub const DENSE_STREAK: usize = 8;

/// How TMPD solves Σ_f u = r (module notes).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TmpdSolver {
    Auto,
    Cg,
    Dense,
}

#[derive(Clone, Debug)]
pub struct Tmpd {
    pub cg: CgOptions,
    pub solver: TmpdSolver,
    /// Start CG from the previous call's solution when the batch has the same shape.
    pub warm_start: bool,
    stats: SolveStats,
    dense_solves: usize,
    /// Calls left that go straight to dense solves (auto mode, after CG lost on most rows).
    dense_streak: usize,
    passes: usize,
    previous: Option<Vec<f64>>,
}

impl Default for Tmpd {
    fn default() -> Self {
        Tmpd::new(CgOptions::default())
    }
}

impl Tmpd {
    pub fn new(cg: CgOptions) -> Self {
        Tmpd {
            cg,
            solver: TmpdSolver::Auto,
            warm_start: true,
            stats: SolveStats::default(),
            dense_solves: 0,
            dense_streak: 0,
            passes: 0,
            previous: None,
        }
    }

    /// Rows of the matrix or vector `v` (row length `len`) picked by `rows`.
    fn gather<T: Copy>(v: &[T], len: usize, rows: &[usize]) -> Vec<T> {
        rows.iter()
            .flat_map(|&b| v[b * len..(b + 1) * len].iter().copied())
            .collect()
    }

    /// u_b = Σ_f⁻¹ r_b by conjugate gradients with `options` (statistics not recorded).
    fn solve_cg(
        &mut self,
        ctx: &Context,
        x: &[f32],
        means: &[f32],
        r: &[f64],
        noise: Noise,
        options: &CgOptions,
    ) -> Result<(Vec<f64>, Vec<RowSolve>)> {
        let op = ctx.operator;
        let d = op.input_shape().dim();
        let m = op.output_len();
        let rows = r.len() / m;
        let sigma2 = ctx.sigma * ctx.sigma;
        let guess = self
            .previous
            .take()
            .filter(|p| self.warm_start && p.len() == r.len());
        let mut passes = 0;
        let (u, solves) =
            conjugate_gradients(rows, m, r, guess.as_deref(), options, &mut |act, p| {
                let xa = Self::gather(x, d, act);
                let ma = Self::gather(means, d, act);
                let mut g = vec![0.0f32; act.len() * d];
                let mut pf = vec![0.0f32; m];
                for ((gb, pb), mb) in g.chunks_mut(d).zip(p.chunks(m)).zip(ma.chunks(d)) {
                    for (a, &b) in pf.iter_mut().zip(pb) {
                        *a = b as f32;
                    }
                    op.adjoint(mb, &pf, gb);
                }
                let cg = ctx
                    .backend
                    .covariance_products(&xa, noise, WeightSet::Prior, &ma, &g)?;
                passes += 1;
                let mut q = vec![0.0f64; p.len()];
                let mut acg = vec![0.0f32; m];
                for ((qb, pb), cb) in q.chunks_mut(m).zip(p.chunks(m)).zip(cg.chunks(d)) {
                    op.forward(cb, &mut acg);
                    for ((qi, &pi), &ai) in qb.iter_mut().zip(pb).zip(&acg) {
                        *qi = sigma2 * pi + f64::from(ai);
                    }
                }
                Ok(q)
            })?;
        self.passes += passes;
        Ok((u, solves))
    }

    /// Σ_f for every row, built from one engine pass over B·m rows: column j of A C_b Aᵀ is
    /// A (C_b (Aᵀ e_j)). Returns rows × m × m, symmetrised (f32 rounding breaks symmetry).
    pub fn dense_covariances(
        &mut self,
        ctx: &Context,
        x: &[f32],
        means: &[f32],
        noise: Noise,
    ) -> Result<Vec<f64>> {
        let op = ctx.operator;
        let d = op.input_shape().dim();
        let m = op.output_len();
        let rows = x.len() / d;
        // Aᵀ e_j, the same for every row (A is linear).
        let mut columns = vec![0.0f32; m * d];
        let mut e = vec![0.0f32; m];
        for (j, col) in columns.chunks_mut(d).enumerate() {
            e.fill(0.0);
            e[j] = 1.0;
            op.adjoint(&means[..d], &e, col);
        }
        let mut xr = Vec::with_capacity(rows * m * d);
        let mut mr = Vec::with_capacity(rows * m * d);
        let mut g = Vec::with_capacity(rows * m * d);
        for b in 0..rows {
            for _ in 0..m {
                xr.extend_from_slice(&x[b * d..(b + 1) * d]);
                mr.extend_from_slice(&means[b * d..(b + 1) * d]);
            }
            g.extend_from_slice(&columns);
        }
        let c = ctx
            .backend
            .covariance_products(&xr, noise, WeightSet::Prior, &mr, &g)?;
        self.passes += 1;
        let sigma2 = ctx.sigma * ctx.sigma;
        let mut out = vec![0.0f64; rows * m * m];
        let mut col = vec![0.0f32; m];
        for b in 0..rows {
            let s = &mut out[b * m * m..(b + 1) * m * m];
            for j in 0..m {
                op.forward(&c[(b * m + j) * d..(b * m + j + 1) * d], &mut col);
                for (i, &v) in col.iter().enumerate() {
                    s[i * m + j] = f64::from(v);
                }
            }
            for i in 0..m {
                for j in 0..i {
                    let avg = 0.5 * (s[i * m + j] + s[j * m + i]);
                    s[i * m + j] = avg;
                    s[j * m + i] = avg;
                }
                s[i * m + i] += sigma2;
            }
        }
        Ok(out)
    }

    /// u_b = Σ_f⁻¹ r_b by Cholesky of the dense Σ_f.
    fn solve_dense(
        &mut self,
        ctx: &Context,
        x: &[f32],
        means: &[f32],
        r: &[f64],
        noise: Noise,
    ) -> Result<Vec<f64>> {
        let m = ctx.operator.output_len();
        let mut sigma = self.dense_covariances(ctx, x, means, noise)?;
        let mut u = r.to_vec();
        for (b, (s, ub)) in sigma.chunks_mut(m * m).zip(u.chunks_mut(m)).enumerate() {
            if !cholesky_solve(s, m, ub) {
                return Err(Error::input(format!(
                    "tmpd: Σ_f = σ²I + A C Aᵀ of particle {b} is not numerically positive definite (σ = {} is too small for float32 covariances); raise the measurement σ",
                    ctx.sigma
                )));
            }
        }
        self.dense_solves += r.len() / m;
        Ok(u)
    }
}

impl Likelihood for Tmpd {
    fn name(&self) -> &'static str {
        "tmpd"
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
        let m = ctx.operator.output_len();
        let hybrid = self.solver == TmpdSolver::Auto && m <= DENSE_FALLBACK_MAX_M;
        let u = if self.solver == TmpdSolver::Dense {
            self.solve_dense(ctx, x, means, &r, noise)?
        } else if hybrid && self.dense_streak > 0 {
            self.dense_streak -= 1;
            let u = self.solve_dense(ctx, x, means, &r, noise)?;
            if self.warm_start {
                self.previous = Some(u.clone());
            }
            u
        } else {
            let mut options = self.cg;
            if hybrid {
                options.max_iterations = options.max_iterations.min(m + 1);
            }
            let (mut u, solves) = self.solve_cg(ctx, x, means, &r, noise, &options)?;
            if hybrid {
                let d = ctx.operator.input_shape().dim();
                let (done, left): (Vec<usize>, Vec<usize>) =
                    (0..solves.len()).partition(|&b| solves[b].converged);
                let converged: Vec<RowSolve> = done.iter().map(|&b| solves[b]).collect();
                self.stats.record(&converged);
                if 2 * left.len() > solves.len() {
                    // CG is losing here: solve densely for the next few steps, then retry.
                    self.dense_streak = DENSE_STREAK;
                }
                if !left.is_empty() {
                    let ul = self.solve_dense(
                        ctx,
                        &Self::gather(x, d, &left),
                        &Self::gather(means, d, &left),
                        &Self::gather(&r, m, &left),
                        noise,
                    )?;
                    for (k, &b) in left.iter().enumerate() {
                        u[b * m..(b + 1) * m].copy_from_slice(&ul[k * m..(k + 1) * m]);
                    }
                }
            } else {
                self.stats.record(&solves);
            }
            if self.warm_start {
                self.previous = Some(u.clone());
            }
            u
        };
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
    fn solve_diagnostics(&self) -> Vec<(String, f64)> {
        vec![("dense_solves".into(), self.dense_solves as f64)]
    }
    fn solve_warning(&self) -> Option<String> {
        self.stats.warning("tmpd", &self.cg)
    }
}

impl Tmpd {
    /// Calls left that skip CG (auto mode).
    pub fn dense_streak(&self) -> usize {
        self.dense_streak
    }
    /// Dense (Cholesky) solves so far.
    pub fn dense_solves(&self) -> usize {
        self.dense_solves
    }
    /// The per-row results of CG solves recorded so far, summarised.
    pub fn cg_stats(&self) -> &SolveStats {
        &self.stats
    }
}

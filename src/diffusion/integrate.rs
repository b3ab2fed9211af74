//! Reverse-time integration with a given score (design §5). Four integrators, chosen per run
//! by [`Integrator`] (config `[sampling] integrator`):
//!
//! - `euler-maruyama` (default): the reverse VP-SDE on a uniform grid from t_max = 1 down to
//!   t_min, K steps, dt = (1 − t_min)/K:
//!   ```text
//!   x ← x + (½ β(t) x + β(t) score(x, t)) dt + √(β(t) dt) ε,   ε ~ N(0, I).
//!   ```
//! - `heun-ode`: the probability-flow ODE dx/dt = −½ β(t) (x + score(x, t)) on the same grid,
//!   integrated backward with Heun's method (predictor x̃ = x − h f(x, t), corrector
//!   x ← x − ½h (f(x, t) + f(x̃, t − h))): two score evaluations per step, the last step
//!   included (2K evaluations). An Euler last step would save one evaluation but, measured on
//!   a clustered empirical prior at K = 200, leaves twice the noise v(t_min) around the atoms,
//!   where the Heun last step leaves 1.1 ×. Deterministic given the initial noise.
//! - `ddpm`: ancestral sampling on the DPS paper's discrete schedule ([`super::discrete`]):
//!   ```text
//!   x_{k−1} = (x_k + β_k score(x_k))/√α_k + √β̃_k z,   β̃_k = (1 − ᾱ_{k−1})/(1 − ᾱ_k) β_k,
//!   ```
//!   the posterior variance (as DPS does), α_k = 1 − β_k.
//! - `ddim` (η): x̂_0 = (x_k + (1 − ᾱ_k) score)/√ᾱ_k, ε̂ = −√(1 − ᾱ_k) score,
//!   ```text
//!   x_{k−1} = √ᾱ_{k−1} x̂_0 + √(1 − ᾱ_{k−1} − σ_k²) ε̂ + σ_k z,
//!   σ_k = η √((1 − ᾱ_{k−1})/(1 − ᾱ_k)) √(1 − ᾱ_k/ᾱ_{k−1});
//!   ```
//!   η = 0 is deterministic, η = 1 is `ddpm`.
//!
//! On the discrete schedule a score may instead split itself into a prior score, which drives
//! the step, and a displacement added after it ([`Score::prior_and_update`]): `zeta-dps` with
//! `dps_update = true` runs the DPS paper's own update x_{k−1} = x′ − ζ ∇_{x_k}‖y − A(m(x_k))‖
//! that way (see [`crate::samplers::likelihood`]).
//!
//! The continuous integrators use the run's schedule (β_min, β_max) and t_min. The discrete
//! ones ignore all three: they walk the fixed 1000-level schedule from level 999 down to
//! level 0 and then take the DPS code's last step to the clean state, which returns x̂_0
//! without noise, so their final samples are at t = 0, v = 0; `steps` = K keeps K levels by
//! guided-diffusion's spacing (K = 1000 walks every level; [`super::discrete`]).
//! The score is asked for by noise (s, v), not by time, so the empirical scores serve both.
//!
//! Checkpoints record the particle cloud at the step nearest each requested time: by time on
//! the continuous grid, and by noise on the discrete schedule (the level whose 1 − ᾱ_k is
//! nearest v(t) of the requested t under the run's continuous schedule). A discrete snapshot's
//! `t` is the continuous time with the same noise as its level.

use rand::Rng;
use rand_distr::StandardNormal;

use super::Schedule;
use super::discrete::DiscreteSchedule;
use crate::choices::Choice;
use crate::engine::Noise;
use crate::{Error, Result};

/// A uniform time grid from `t_max` down to `t_min` in `steps` steps.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct TimeGrid {
    pub t_max: f64,
    pub t_min: f64,
    pub steps: usize,
}

impl TimeGrid {
    /// Time after `k` steps: t_k = t_max − k (t_max − t_min)/K, k = 0..=K.
    pub fn time(&self, k: usize) -> f64 {
        if k == self.steps {
            return self.t_min;
        }
        self.t_max - k as f64 * (self.t_max - self.t_min) / self.steps as f64
    }
    pub fn dt(&self) -> f64 {
        (self.t_max - self.t_min) / self.steps as f64
    }
    /// The step indices k (0..=K) whose times are nearest to each requested time, deduplicated
    /// and in increasing k (decreasing t).
    pub fn checkpoint_steps(&self, times: &[f64]) -> Vec<usize> {
        let mut ks: Vec<usize> = times
            .iter()
            .map(|&t| {
                let k = ((self.t_max - t) / self.dt()).round();
                k.clamp(0.0, self.steps as f64) as usize
            })
            .collect();
        ks.sort_unstable();
        ks.dedup();
        ks
    }

    /// The default checkpoint times: up to `count` distinct grid times t_k, k = 0..K−1 (t_max
    /// down to the last step before t_min, which every run records anyway), spaced evenly in
    /// log t, so denser toward t_min where the posterior sharpens. Log-spaced times closer
    /// together than a step snap to the same t_k; the candidate count grows until `count`
    /// distinct steps are found or every step is taken. Decreasing t.
    pub fn log_spaced_checkpoints(&self, count: usize) -> Vec<f64> {
        let available = self.steps; // k = 0..K−1
        let want = count.min(available);
        if want == 0 {
            return Vec::new();
        }
        let (lo, hi) = (self.t_min.ln(), self.t_max.ln());
        let mut candidates = want;
        loop {
            let times: Vec<f64> = (0..candidates)
                .map(|j| {
                    let f = if candidates == 1 {
                        0.0
                    } else {
                        j as f64 / (candidates - 1) as f64
                    };
                    (hi + f * (lo - hi)).exp()
                })
                .collect();
            let ks: Vec<usize> = self
                .checkpoint_steps(&times)
                .into_iter()
                .filter(|&k| k < self.steps)
                .collect();
            if ks.len() >= want || candidates >= 64 * want.max(1) {
                // An overshoot keeps an evenly indexed subset, so both ends stay covered.
                let picked = (0..want.min(ks.len())).map(|j| {
                    if want == 1 {
                        ks[0]
                    } else {
                        ks[(j * (ks.len() - 1) + (want - 1) / 2) / (want - 1)]
                    }
                });
                return picked.map(|k| self.time(k)).collect();
            }
            candidates += (want - ks.len()).max(1);
        }
    }
}

/// How the reverse process is integrated (config `[sampling] integrator`, plus `eta`).
#[derive(Clone, Copy, Debug, Default, PartialEq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Integrator {
    /// Reverse-SDE Euler–Maruyama on the continuous schedule.
    #[default]
    EulerMaruyama,
    /// Probability-flow ODE with Heun's method on the continuous schedule.
    HeunOde,
    /// DDPM ancestral sampling on the discrete DPS schedule.
    Ddpm,
    /// DDIM(η) on the discrete DPS schedule, η ∈ [0, 1].
    Ddim { eta: f64 },
}

/// The integrator's name alone (config `sampling.integrator`); η comes from `sampling.eta`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum IntegratorKind {
    #[default]
    EulerMaruyama,
    HeunOde,
    Ddpm,
    Ddim,
}

impl Choice for IntegratorKind {
    const KEY: &'static str = "sampling.integrator";
    const WHAT: &'static str = "integrator";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("euler-maruyama", IntegratorKind::EulerMaruyama),
        ("heun-ode", IntegratorKind::HeunOde),
        ("ddpm", IntegratorKind::Ddpm),
        ("ddim", IntegratorKind::Ddim),
    ];
}
crate::choice_by_name!(IntegratorKind);

impl Integrator {
    /// The config name.
    pub fn name(&self) -> &'static str {
        self.kind().name()
    }

    /// The integrator without its parameters.
    pub fn kind(&self) -> IntegratorKind {
        match self {
            Integrator::EulerMaruyama => IntegratorKind::EulerMaruyama,
            Integrator::HeunOde => IntegratorKind::HeunOde,
            Integrator::Ddpm => IntegratorKind::Ddpm,
            Integrator::Ddim { .. } => IntegratorKind::Ddim,
        }
    }

    /// From the config keys `integrator` and `eta` (η applies to `ddim` only; elsewhere it
    /// must stay 0).
    pub fn new(kind: IntegratorKind, eta: f64) -> Result<Self> {
        if !(eta.is_finite() && (0.0..=1.0).contains(&eta)) {
            return Err(Error::config(
                "sampling.eta",
                format!("DDIM's η must lie in [0, 1] (0 deterministic, 1 = DDPM), got {eta}"),
            ));
        }
        let integrator = match kind {
            IntegratorKind::EulerMaruyama => Integrator::EulerMaruyama,
            IntegratorKind::HeunOde => Integrator::HeunOde,
            IntegratorKind::Ddpm => Integrator::Ddpm,
            IntegratorKind::Ddim => Integrator::Ddim { eta },
        };
        if eta != 0.0 && kind != IntegratorKind::Ddim {
            return Err(Error::config(
                "sampling.eta",
                format!(
                    "η = {eta} applies to integrator = \"ddim\" only, but the integrator is {:?}; remove eta or set integrator = \"ddim\"",
                    kind.name()
                ),
            ));
        }
        Ok(integrator)
    }

    /// True for the integrators on the discrete DPS schedule (which ignore t_min, β_min, β_max).
    pub fn is_discrete(&self) -> bool {
        matches!(self, Integrator::Ddpm | Integrator::Ddim { .. })
    }

    /// The number of steps walked when a run asks for `steps` (all of them; the discrete
    /// schedule takes at most 1000, one per level).
    pub fn steps(&self, steps: usize) -> usize {
        if self.is_discrete() {
            DiscreteSchedule::new(steps).steps()
        } else {
            steps
        }
    }

    /// Score evaluations of a run of `steps` steps (Heun: 2K).
    pub fn score_evaluations(&self, steps: usize) -> usize {
        match self {
            Integrator::HeunOde => 2 * steps,
            _ => self.steps(steps),
        }
    }
}

/// A recorded point of an integration: its (equivalent) time and noise.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Level {
    pub t: f64,
    pub noise: Noise,
}

/// The levels `integrator` records for the requested checkpoint times (deduplicated, in
/// decreasing t) and the final level, under the run's continuous `schedule` and `grid`. The
/// exact sampler draws at the same levels so that its clouds compare one to one.
pub fn recorded_levels(
    integrator: Integrator,
    schedule: &Schedule,
    grid: &TimeGrid,
    checkpoints: &[f64],
) -> (Vec<Level>, Level) {
    if integrator.is_discrete() {
        let sched = DiscreteSchedule::new(grid.steps);
        let level = |j: usize| discrete_level(&sched, schedule, j);
        let vs: Vec<f64> = checkpoints.iter().map(|&t| schedule.noise(t).v).collect();
        let ks = sched.checkpoint_steps(&vs);
        (ks.into_iter().map(level).collect(), level(sched.steps()))
    } else {
        let level = |k: usize| Level {
            t: grid.time(k),
            noise: schedule.noise(grid.time(k)),
        };
        let ks = grid.checkpoint_steps(checkpoints);
        (ks.into_iter().map(level).collect(), level(grid.steps))
    }
}

/// Every state `integrator` visits, j = 0..=K (the continuous grid's times, or the discrete
/// chain's levels and its final clean state), and the state indices recorded at the requested
/// checkpoint times (as [`integrate`] records them). Samplers that walk the levels themselves
/// (DAPS, DiffPIR) use it, so that their clouds sit at the same times as every other's.
pub fn states(
    integrator: Integrator,
    schedule: &Schedule,
    grid: &TimeGrid,
    checkpoints: &[f64],
) -> (Vec<Level>, Vec<usize>) {
    if integrator.is_discrete() {
        let sched = DiscreteSchedule::new(grid.steps);
        let vs: Vec<f64> = checkpoints.iter().map(|&t| schedule.noise(t).v).collect();
        let levels = (0..=sched.steps())
            .map(|j| discrete_level(&sched, schedule, j))
            .collect();
        (levels, sched.checkpoint_steps(&vs))
    } else {
        let levels = (0..=grid.steps)
            .map(|k| Level {
                t: grid.time(k),
                noise: schedule.noise(grid.time(k)),
            })
            .collect();
        (levels, grid.checkpoint_steps(checkpoints))
    }
}

/// The state after `j` steps of the discrete chain as a [`Level`]: its noise and the
/// continuous time with the same ᾱ (t = 0, v = 0 for the clean state after the last step).
fn discrete_level(sched: &DiscreteSchedule, schedule: &Schedule, j: usize) -> Level {
    Level {
        t: schedule.time_of_log_alpha_bar(sched.log_alpha_bar_after(j)),
        noise: sched.noise_after(j),
    }
}

/// The particle cloud at one time.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub t: f64,
    /// K × D particles.
    pub particles: Vec<f32>,
}

/// A score ∇ log p(x) under x = s x_0 + √v ε, row by row, for a batch of particles.
pub trait Score {
    /// Writes the score of each row of `x` (B × D) at noise (s, v) into `out` (B × D).
    fn score(&mut self, x: &[f32], noise: Noise, out: &mut [f32]) -> Result<()>;

    /// For the DPS paper's update on the discrete schedule: writes the prior score into
    /// `prior` and a displacement into `after` that the integrator adds after its step (both
    /// B × D), and returns true; false (writing nothing) for scores without that split, which
    /// the integrator then asks for [`Score::score`].
    fn prior_and_update(
        &mut self,
        _x: &[f32],
        _noise: Noise,
        _prior: &mut [f32],
        _after: &mut [f32],
    ) -> Result<bool> {
        Ok(false)
    }
}

/// Runs `integrator` in place on `x` (B × D, initialised by the caller, usually N(0, I)), with
/// snapshots at the steps nearest the requested `checkpoints` times (see the module docs).
/// `on_step(j)` is called after each step j = 1..=K.
#[allow(clippy::too_many_arguments)]
pub fn integrate<S: Score + ?Sized, R: Rng>(
    integrator: Integrator,
    score: &mut S,
    schedule: &Schedule,
    grid: &TimeGrid,
    x: &mut [f32],
    rng: &mut R,
    checkpoints: &[f64],
    on_step: &mut dyn FnMut(usize),
) -> Result<Vec<Snapshot>> {
    match integrator {
        Integrator::EulerMaruyama => {
            let ks = grid.checkpoint_steps(checkpoints);
            euler_maruyama(score, schedule, grid, x, rng, &ks, on_step)
        }
        Integrator::HeunOde => {
            let ks = grid.checkpoint_steps(checkpoints);
            heun_ode(score, schedule, grid, x, &ks, on_step)
        }
        Integrator::Ddpm | Integrator::Ddim { .. } => {
            let sched = DiscreteSchedule::new(grid.steps);
            let vs: Vec<f64> = checkpoints.iter().map(|&t| schedule.noise(t).v).collect();
            let js = sched.checkpoint_steps(&vs);
            let eta = match integrator {
                Integrator::Ddim { eta } => Some(eta),
                _ => None,
            };
            discrete(score, &sched, schedule, eta, x, rng, &js, on_step)
        }
    }
}

/// Walks `steps` steps, recording the cloud after the step counts in `checkpoint_steps`
/// (0 = the initial state) at the time `time_of(j)`.
fn walk(
    steps: usize,
    checkpoint_steps: &[usize],
    time_of: &dyn Fn(usize) -> f64,
    x: &mut [f32],
    on_step: &mut dyn FnMut(usize),
    step: &mut dyn FnMut(usize, &mut [f32]) -> Result<()>,
) -> Result<Vec<Snapshot>> {
    let mut snapshots = Vec::new();
    let record = |j: usize, x: &[f32], snaps: &mut Vec<Snapshot>| {
        if checkpoint_steps.contains(&j) {
            snaps.push(Snapshot {
                t: time_of(j),
                particles: x.to_vec(),
            });
        }
    };
    record(0, x, &mut snapshots);
    for j in 0..steps {
        step(j, x)?;
        record(j + 1, x, &mut snapshots);
        on_step(j + 1);
    }
    Ok(snapshots)
}

/// Runs reverse Euler–Maruyama in place on `x` (B × D, initialised by the caller, usually
/// N(0, I)). Returns the snapshots at the grid steps in `checkpoint_steps` (step K is the
/// final state). `on_step(k)` is called after each of the K steps (progress reporting).
pub fn euler_maruyama<S: Score + ?Sized, R: Rng>(
    score: &mut S,
    schedule: &Schedule,
    grid: &TimeGrid,
    x: &mut [f32],
    rng: &mut R,
    checkpoint_steps: &[usize],
    on_step: &mut dyn FnMut(usize),
) -> Result<Vec<Snapshot>> {
    let dt = grid.dt();
    let mut sc = vec![0.0f32; x.len()];
    walk(
        grid.steps,
        checkpoint_steps,
        &|k| grid.time(k),
        x,
        on_step,
        &mut |k, x| {
            let t = grid.time(k);
            score.score(x, schedule.noise(t), &mut sc)?;
            let beta = schedule.beta(t);
            let drift_x = (0.5 * beta * dt) as f32;
            let drift_s = (beta * dt) as f32;
            let diffusion = (beta * dt).sqrt() as f32;
            for (xi, &si) in x.iter_mut().zip(&sc) {
                let eps: f32 = rng.sample(StandardNormal);
                *xi += drift_x * *xi + drift_s * si + diffusion * eps;
            }
            Ok(())
        },
    )
}

/// The probability-flow ODE dx/dt = −½β(t)(x + score) integrated backward by Heun's method
/// on `grid` (two score evaluations per step). Deterministic.
pub fn heun_ode<S: Score + ?Sized>(
    score: &mut S,
    schedule: &Schedule,
    grid: &TimeGrid,
    x: &mut [f32],
    checkpoint_steps: &[usize],
    on_step: &mut dyn FnMut(usize),
) -> Result<Vec<Snapshot>> {
    let h = grid.dt();
    let n = x.len();
    let (mut sc, mut d1, mut pred) = (vec![0.0f32; n], vec![0.0f64; n], vec![0.0f32; n]);
    walk(
        grid.steps,
        checkpoint_steps,
        &|k| grid.time(k),
        x,
        on_step,
        &mut |k, x| {
            let (t, t_next) = (grid.time(k), grid.time(k + 1));
            score.score(x, schedule.noise(t), &mut sc)?;
            let half_beta = 0.5 * schedule.beta(t);
            // Backward in time: x(t − h) ≈ x − h f with f = dx/dt = −½β(x + score).
            for (((d, p), &xi), &si) in d1.iter_mut().zip(pred.iter_mut()).zip(x.iter()).zip(&sc) {
                *d = -half_beta * (f64::from(xi) + f64::from(si));
                *p = (f64::from(xi) - h * *d) as f32;
            }
            score.score(&pred, schedule.noise(t_next), &mut sc)?;
            let half_beta_next = 0.5 * schedule.beta(t_next);
            for (((xi, &d), &pi), &si) in x.iter_mut().zip(&d1).zip(&pred).zip(&sc) {
                let d2 = -half_beta_next * (f64::from(pi) + f64::from(si));
                *xi = (f64::from(*xi) - 0.5 * h * (d + d2)) as f32;
            }
            Ok(())
        },
    )
}

/// DDPM ancestral (`eta` = None) or DDIM(η) on the discrete schedule `sched`; snapshot times
/// are the continuous times of `schedule` with the same noise.
#[allow(clippy::too_many_arguments)]
pub fn discrete<S: Score + ?Sized, R: Rng>(
    score: &mut S,
    sched: &DiscreteSchedule,
    schedule: &Schedule,
    eta: Option<f64>,
    x: &mut [f32],
    rng: &mut R,
    checkpoint_steps: &[usize],
    on_step: &mut dyn FnMut(usize),
) -> Result<Vec<Snapshot>> {
    let mut sc = vec![0.0f32; x.len()];
    let mut after = vec![0.0f32; x.len()];
    walk(
        sched.steps(),
        checkpoint_steps,
        &|j| discrete_level(sched, schedule, j).t,
        x,
        on_step,
        &mut |j, x| {
            let noise = sched.noise_after(j);
            let split = score.prior_and_update(x, noise, &mut sc, &mut after)?;
            if !split {
                score.score(x, noise, &mut sc)?;
            }
            let st = sched.step(j);
            match eta {
                None => ddpm_step(&st, x, &sc, rng),
                Some(eta) => ddim_step(&st, eta, x, &sc, rng),
            }
            if split {
                x.iter_mut().zip(&after).for_each(|(xi, &a)| *xi += a);
            }
            Ok(())
        },
    )
}

/// x ← (x + β score)/√(1 − β) + √β̃ z (= coef1·x̂_0 + coef2·x + √β̃ z of guided-diffusion's
/// q_posterior; on the last step β = 1 − ᾱ_0, β̃ = 0 and x ← x̂_0).
pub fn ddpm_step<R: Rng>(
    st: &super::discrete::DiscreteStep,
    x: &mut [f32],
    score: &[f32],
    rng: &mut R,
) {
    let inv_sqrt_alpha = 1.0 / (1.0 - st.beta).sqrt();
    let sd = st.posterior_variance().sqrt();
    for (xi, &si) in x.iter_mut().zip(score) {
        let mean = inv_sqrt_alpha * (f64::from(*xi) + st.beta * f64::from(si));
        // The last step (to the clean state) has β̃ = 0: it returns x̂_0 and draws nothing.
        let z: f64 = if sd > 0.0 {
            rng.sample(StandardNormal)
        } else {
            0.0
        };
        *xi = (mean + sd * z) as f32;
    }
}

/// x ← √ᾱ_prev x̂_0 + √(1 − ᾱ_prev − σ²) ε̂ + σ z (no z drawn when σ = 0: η = 0, or the
/// last step, where ᾱ_prev = 1 and x ← x̂_0).
pub fn ddim_step<R: Rng>(
    st: &super::discrete::DiscreteStep,
    eta: f64,
    x: &mut [f32],
    score: &[f32],
    rng: &mut R,
) {
    let var = st.ddim_variance(eta);
    let sd = var.sqrt();
    let sqrt_ab = st.alpha_bar.sqrt();
    let sqrt_abp = st.alpha_bar_prev.sqrt();
    let sqrt_1m_ab = st.one_minus_alpha_bar.sqrt();
    let dir = (st.one_minus_alpha_bar_prev - var).max(0.0).sqrt();
    for (xi, &si) in x.iter_mut().zip(score) {
        let (xv, sv) = (f64::from(*xi), f64::from(si));
        let x0 = (xv + st.one_minus_alpha_bar * sv) / sqrt_ab;
        let eps = -sqrt_1m_ab * sv;
        let mut next = sqrt_abp * x0 + dir * eps;
        if sd > 0.0 {
            let z: f64 = rng.sample(StandardNormal);
            next += sd * z;
        }
        *xi = next as f32;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// The default checkpoints: the requested count of distinct grid times, decreasing, on the
    /// grid, never t_min itself, denser toward t_min (log spacing: the gap ratio between the
    /// first and last gaps is large), and every step when the grid has fewer.
    #[test]
    fn log_spaced_checkpoints_are_distinct_grid_times_dense_near_t_min() {
        for (steps, t_min) in [(500usize, 1e-3), (60, 1e-3), (1000, 1e-2), (2000, 1e-4)] {
            let grid = TimeGrid {
                t_max: 1.0,
                t_min,
                steps,
            };
            let ts = grid.log_spaced_checkpoints(50);
            assert_eq!(ts.len(), 50.min(steps), "steps {steps}");
            assert!(ts.windows(2).all(|w| w[0] > w[1]), "{ts:?}");
            assert!(ts.iter().all(|&t| t > t_min && t <= 1.0));
            let ks = grid.checkpoint_steps(&ts);
            assert_eq!(ks.len(), ts.len(), "times on distinct steps");
            for (&k, &t) in ks.iter().zip(&ts) {
                assert_eq!(grid.time(k), t, "on the grid");
            }
            assert_eq!(ts[0], 1.0);
            let first_gap = ts[0] - ts[1];
            let last_gap = ts[ts.len() - 2] - ts[ts.len() - 1];
            if steps >= 10 * ts.len() {
                assert!(first_gap > 5.0 * last_gap, "{first_gap} vs {last_gap}");
            }
        }
        let tiny = TimeGrid {
            t_max: 1.0,
            t_min: 1e-3,
            steps: 7,
        };
        let ts = tiny.log_spaced_checkpoints(50);
        let all: Vec<f64> = (0..7).map(|k| tiny.time(k)).collect();
        assert_eq!(ts, all);
    }

    /// For a Gaussian data distribution x_0 ~ N(μ, τ²) the marginal is
    /// x_t ~ N(s μ, s² τ² + v) with score −(x − s μ)/(s² τ² + v); reverse EM from N(0, 1)
    /// must land on N(s μ, s² τ² + v) at t_min (up to O(dt) bias and sampling error).
    struct GaussianScore {
        mu: f64,
        tau2: f64,
    }
    impl Score for GaussianScore {
        fn score(&mut self, x: &[f32], n: Noise, out: &mut [f32]) -> Result<()> {
            let var = n.s * n.s * self.tau2 + n.v;
            for (o, &xi) in out.iter_mut().zip(x) {
                *o = (-(xi as f64 - n.s * self.mu) / var) as f32;
            }
            Ok(())
        }
    }

    #[test]
    fn euler_maruyama_recovers_gaussian_marginal() {
        let schedule = Schedule::default();
        let grid = TimeGrid {
            t_max: 1.0,
            t_min: 1e-3,
            steps: 500,
        };
        let mut score = GaussianScore {
            mu: 0.7,
            tau2: 0.04,
        };
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
        let n = 20000;
        let mut x: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
        let snaps = euler_maruyama(
            &mut score,
            &schedule,
            &grid,
            &mut x,
            &mut rng,
            &[0, 250, 500],
            &mut |_| {},
        )
        .unwrap();
        assert_eq!(snaps.len(), 3);
        assert_eq!(snaps[2].t, 1e-3);
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n as f64;
        let nz = schedule.noise(1e-3);
        let want_var = nz.s * nz.s * 0.04 + nz.v;
        // Standard error of the mean ≈ 0.2/√20000 = 1.4e-3; of the variance ≈ 0.04·√(2/20000) = 4e-4.
        assert!((mean - nz.s * 0.7).abs() < 6e-3, "mean {mean}");
        assert!(
            (var / want_var - 1.0).abs() < 0.05,
            "var {var} want {want_var}"
        );
    }

    fn mean_var(x: &[f32]) -> (f64, f64) {
        let n = x.len() as f64;
        let mean = x.iter().map(|&v| v as f64).sum::<f64>() / n;
        let var = x.iter().map(|&v| (v as f64 - mean).powi(2)).sum::<f64>() / n;
        (mean, var)
    }

    /// Every integrator carries N(0, 1) to the Gaussian marginal N(s μ, s² τ² + v) at its
    /// final level (the deterministic ones included: the flow maps marginals to marginals).
    #[test]
    fn every_integrator_recovers_gaussian_marginal() {
        let schedule = Schedule::default();
        for integrator in [
            Integrator::EulerMaruyama,
            Integrator::HeunOde,
            Integrator::Ddpm,
            Integrator::Ddim { eta: 0.0 },
            Integrator::Ddim { eta: 0.5 },
        ] {
            // The discrete updates lose variance at O(1/K) with the exact score: DDPM's
            // posterior variance β̃ leaves out the (√ᾱ_{k−1} β_k/(1 − ᾱ_k))² Var[x_0 | x_k] of the
            // true reverse transition, and a DDIM(0) step maps a Gaussian of variance
            // s²τ² + v to (s s′τ² + √(v v′))²/(s²τ² + v) ≤ s′²τ² + v′ (Cauchy–Schwarz). With
            // 200 respaced steps DDPM loses ≈ 14 % here and DDIM(0) ≈ 6 %; the full
            // 1000-level chain ≈ 3 % and ≈ 1 %.
            let steps = if integrator.is_discrete() { 1000 } else { 200 };
            let grid = TimeGrid {
                t_max: 1.0,
                t_min: 1e-3,
                steps,
            };
            let mut score = GaussianScore {
                mu: 0.7,
                tau2: 0.04,
            };
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
            let n = 20000;
            let mut x: Vec<f32> = (0..n).map(|_| rng.sample(StandardNormal)).collect();
            let mut calls = 0;
            let snaps = integrate(
                integrator,
                &mut score,
                &schedule,
                &grid,
                &mut x,
                &mut rng,
                &[0.5, 1e-3],
                &mut |_| calls += 1,
            )
            .unwrap();
            let (levels, last) = recorded_levels(integrator, &schedule, &grid, &[0.5, 1e-3]);
            assert_eq!(calls, integrator.steps(steps));
            assert_eq!(snaps.len(), 2);
            assert_eq!(levels.len(), 2);
            assert_eq!(levels[1], last);
            assert_eq!(snaps[1].particles, x);
            assert!(
                (snaps[0].t - 0.5).abs() < 0.01,
                "{integrator:?}: {}",
                snaps[0].t
            );
            assert!((snaps[1].t - last.t).abs() < 1e-15);
            let nz = last.noise;
            let (mean, var) = mean_var(&x);
            let want_var = nz.s * nz.s * 0.04 + nz.v;
            assert!(
                (mean - nz.s * 0.7).abs() < 6e-3,
                "{integrator:?}: mean {mean}"
            );
            eprintln!(
                "{integrator:?}: mean {mean} (want {}), var {var} (want {want_var})",
                nz.s * 0.7
            );
            assert!(
                (var / want_var - 1.0).abs() < 0.05,
                "{integrator:?}: var {var} want {want_var}"
            );
        }
    }

    #[test]
    fn ddim_with_eta_one_is_ddpm() {
        let sched = DiscreteSchedule::new(50);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f32> = (0..64).map(|_| rng.sample(StandardNormal)).collect();
        let sc: Vec<f32> = (0..64).map(|_| rng.sample(StandardNormal)).collect();
        for j in [0, 25, 49] {
            let st = sched.step(j);
            let (mut a, mut b) = (x.clone(), x.clone());
            ddpm_step(
                &st,
                &mut a,
                &sc,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(7),
            );
            ddim_step(
                &st,
                1.0,
                &mut b,
                &sc,
                &mut rand_chacha::ChaCha8Rng::seed_from_u64(7),
            );
            for (p, q) in a.iter().zip(&b) {
                assert!(
                    (p - q).abs() <= 2e-5 * (1.0 + p.abs()),
                    "step {j}: {p} vs {q}"
                );
            }
        }
    }

    #[test]
    fn integrator_names_and_bad_config() {
        let from_config = |name: &str, eta: f64| Integrator::new(IntegratorKind::parse(name)?, eta);
        for &(name, _) in IntegratorKind::NAMES {
            assert_eq!(from_config(name, 0.0).unwrap().name(), name);
        }
        assert_eq!(
            from_config("ddim", 0.3).unwrap(),
            Integrator::Ddim { eta: 0.3 }
        );
        assert!(from_config("rk4", 0.0).is_err());
        assert!(from_config("ddim", 1.5).is_err());
        assert!(from_config("ddpm", 0.5).is_err());
        assert_eq!(Integrator::HeunOde.score_evaluations(10), 20);
        assert_eq!(Integrator::Ddpm.steps(1000), 1000);
        assert_eq!(Integrator::Ddpm.steps(7), 7);
    }

    #[test]
    fn checkpoint_steps_snap_to_grid() {
        let g = TimeGrid {
            t_max: 1.0,
            t_min: 0.0,
            steps: 10,
        };
        assert_eq!(g.checkpoint_steps(&[0.5, 0.01, 1.0, 0.49]), vec![0, 5, 10]);
        assert_eq!(g.time(10), 0.0);
    }
}

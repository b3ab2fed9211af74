//! The discrete schedule of DDPM/DDIM as used by the DPS paper (Ho et al. 2020; Chung et al.
//! 2023): T = 1000 levels k = 0..T−1 with β_k linear from 1e-4 (k = 0) to 0.02 (k = T−1) and
//!
//!   ᾱ_k = Π_{j=0..k} (1 − β_j),   x_k | x_0 ~ N(√ᾱ_k x_0, (1 − ᾱ_k) I),
//!
//! so ᾱ_0 = 1 − 1e-4 (the last level keeps v = 1e-4 of noise) and ᾱ_{T−1} ≈ 4.0e-5.
//!
//! A run with K < T − 1 steps walks an evenly spaced subsequence of levels
//! τ_i = round(i (T − 1)/K), i = K..0 (DDIM's respacing); the step from τ_i down to τ_{i−1}
//! uses the effective α = ᾱ_{τ_i}/ᾱ_{τ_{i−1}}, β = 1 − α, which is the exact DDPM transition
//! between those two levels. K ≥ T − 1 walks every level (T − 1 = 999 steps).
//! The run's `beta_min`/`beta_max` and `t_min` do not enter: they belong to the continuous
//! schedule only.

use crate::engine::Noise;

/// Levels of the DPS schedule.
pub const LEVELS: usize = 1000;
/// β at level 0 and at level T − 1.
pub const BETA_FIRST: f64 = 1e-4;
pub const BETA_LAST: f64 = 0.02;

/// The discrete schedule and the subsequence of levels a run walks.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteSchedule {
    /// log ᾱ_k for k = 0..T−1 (summed as Σ ln(1 − β_j) so that 1 − ᾱ_k keeps its digits).
    log_alpha_bar: Vec<f64>,
    /// The levels walked, τ_0 = 0 < τ_1 < … < τ_K = T − 1.
    levels: Vec<usize>,
}

impl DiscreteSchedule {
    /// The DPS schedule walked in `steps` steps. There are T − 1 = 999 transitions between
    /// the T levels: `steps` = 999 and `steps` = T both walk every level, fewer respace.
    ///
    /// # Panics
    /// When `steps` is 0 or more than T: the run plan refuses those (`sampling.steps`), so a
    /// caller passing one has skipped the plan.
    pub fn new(steps: usize) -> Self {
        let t = LEVELS;
        assert!(
            (1..=t).contains(&steps),
            "DiscreteSchedule::new: {steps} steps, expected 1..={t} (checked by the run plan)"
        );
        let mut log_alpha_bar = Vec::with_capacity(t);
        let mut acc = 0.0f64;
        for k in 0..t {
            acc += (-Self::beta(k)).ln_1p();
            log_alpha_bar.push(acc);
        }
        let k_steps = steps.min(t - 1);
        let levels = (0..=k_steps)
            .map(|i| ((i * (t - 1)) as f64 / k_steps as f64).round() as usize)
            .collect();
        DiscreteSchedule {
            log_alpha_bar,
            levels,
        }
    }

    /// β_k = β_first + k (β_last − β_first)/(T − 1).
    pub fn beta(k: usize) -> f64 {
        BETA_FIRST + k as f64 * (BETA_LAST - BETA_FIRST) / (LEVELS - 1) as f64
    }

    /// Number of steps K walked.
    pub fn steps(&self) -> usize {
        self.levels.len() - 1
    }

    /// The level reached after `j` of the K steps: τ_{K−j}.
    pub fn level_after(&self, j: usize) -> usize {
        self.levels[self.steps() - j]
    }

    /// ᾱ_k.
    pub fn alpha_bar(&self, k: usize) -> f64 {
        self.log_alpha_bar[k].exp()
    }

    /// The noise of level k: s = √ᾱ_k, v = 1 − ᾱ_k (by expm1).
    pub fn noise(&self, k: usize) -> Noise {
        let la = self.log_alpha_bar[k];
        Noise {
            s: (0.5 * la).exp(),
            v: -la.exp_m1(),
        }
    }

    /// log ᾱ_k, for mapping a level to the continuous time with the same noise.
    pub fn log_alpha_bar(&self, k: usize) -> f64 {
        self.log_alpha_bar[k]
    }

    /// The step from level `k` down to level `prev` (< k): its (ᾱ, ᾱ_prev, β) with
    /// β = 1 − ᾱ_k/ᾱ_prev.
    pub fn step(&self, k: usize, prev: usize) -> DiscreteStep {
        let (la, lp) = (self.log_alpha_bar[k], self.log_alpha_bar[prev]);
        DiscreteStep {
            alpha_bar: la.exp(),
            alpha_bar_prev: lp.exp(),
            one_minus_alpha_bar: -la.exp_m1(),
            one_minus_alpha_bar_prev: -lp.exp_m1(),
            beta: -(la - lp).exp_m1(),
        }
    }

    /// The step counts j (0..=K) whose level's v = 1 − ᾱ is nearest to each of `vs`,
    /// deduplicated and increasing.
    pub fn checkpoint_steps(&self, vs: &[f64]) -> Vec<usize> {
        let mut js: Vec<usize> = vs
            .iter()
            .map(|&v| {
                (0..=self.steps())
                    .min_by(|&a, &b| {
                        let da = (self.noise(self.level_after(a)).v - v).abs();
                        let db = (self.noise(self.level_after(b)).v - v).abs();
                        da.total_cmp(&db)
                    })
                    .unwrap_or(0)
            })
            .collect();
        js.sort_unstable();
        js.dedup();
        js
    }
}

/// The scalars of one discrete step from level k to an earlier level.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DiscreteStep {
    pub alpha_bar: f64,
    pub alpha_bar_prev: f64,
    pub one_minus_alpha_bar: f64,
    pub one_minus_alpha_bar_prev: f64,
    /// β = 1 − ᾱ/ᾱ_prev (the single-level β_k when the levels are adjacent).
    pub beta: f64,
}

impl DiscreteStep {
    /// DDPM's posterior variance β̃ = (1 − ᾱ_prev)/(1 − ᾱ) · β.
    pub fn posterior_variance(&self) -> f64 {
        self.one_minus_alpha_bar_prev / self.one_minus_alpha_bar * self.beta
    }

    /// DDIM's σ² = η² (1 − ᾱ_prev)/(1 − ᾱ) (1 − ᾱ/ᾱ_prev) (= β̃ at η = 1).
    pub fn ddim_variance(&self, eta: f64) -> f64 {
        eta * eta * self.posterior_variance()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_bars_are_the_running_products() {
        let sched = DiscreteSchedule::new(1000);
        assert_eq!(sched.steps(), 999);
        let mut prod = 1.0f64;
        for k in 0..LEVELS {
            let beta = 1e-4 + (0.02 - 1e-4) * k as f64 / 999.0;
            prod *= 1.0 - beta;
            assert!((DiscreteSchedule::beta(k) - beta).abs() < 1e-17);
            assert!(
                (sched.alpha_bar(k) / prod - 1.0).abs() < 1e-12,
                "k={k}: {} vs {prod}",
                sched.alpha_bar(k)
            );
            let n = sched.noise(k);
            assert!((n.s * n.s - prod).abs() < 1e-14);
            assert!((n.v - (1.0 - prod)).abs() <= 1e-12 * (1.0 - prod));
        }
        assert!((sched.noise(0).v - 1e-4).abs() < 1e-15);
        assert!((sched.alpha_bar(999) - 4.035e-5).abs() < 1e-7);
    }

    #[test]
    fn steps_and_posterior_variance_match_direct_formulas() {
        let full = DiscreteSchedule::new(999);
        // Adjacent levels: β of the step is the level's own β_k.
        for k in [1usize, 2, 500, 999] {
            let st = full.step(k, k - 1);
            let beta = DiscreteSchedule::beta(k);
            assert!((st.beta - beta).abs() < 1e-12 * beta.max(1e-3));
            let (ab, abp) = (full.alpha_bar(k), full.alpha_bar(k - 1));
            let tilde = (1.0 - abp) / (1.0 - ab) * beta;
            assert!((st.posterior_variance() / tilde - 1.0).abs() < 1e-10);
            let eta = 0.37;
            let sigma = eta * ((1.0 - abp) / (1.0 - ab)).sqrt() * (1.0 - ab / abp).sqrt();
            assert!((st.ddim_variance(eta) / (sigma * sigma) - 1.0).abs() < 1e-10);
        }
        // Respaced: 10 steps over levels 0, 100 (rounded 99.9), …, 999.
        let coarse = DiscreteSchedule::new(10);
        assert_eq!(coarse.steps(), 10);
        assert_eq!(coarse.level_after(0), 999);
        assert_eq!(coarse.level_after(10), 0);
        assert_eq!(coarse.level_after(9), 100);
        let st = coarse.step(coarse.level_after(0), coarse.level_after(1));
        let want = 1.0 - full.alpha_bar(999) / full.alpha_bar(coarse.level_after(1));
        assert!((st.beta - want).abs() < 1e-12);
    }

    #[test]
    fn checkpoints_snap_to_the_nearest_noise_level() {
        let sched = DiscreteSchedule::new(999);
        let js = sched.checkpoint_steps(&[sched.noise(500).v, 2.0, 0.0]);
        // v = 2 is nearest the first level (v ≈ 1), v = 0 the last (level 0).
        assert_eq!(js, vec![0, 499, 999]);
    }
}

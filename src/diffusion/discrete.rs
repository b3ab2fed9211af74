//! The discrete schedule of DDPM/DDIM as the DPS code runs it (Ho et al. 2020; guided-diffusion;
//! Chung et al. 2023): T = 1000 levels k = 0..T−1 with β_k linear from 1e-4 (k = 0) to 0.02
//! (k = T−1) and
//!
//!   ᾱ_k = Π_{j=0..k} (1 − β_j),   x_k | x_0 ~ N(√ᾱ_k x_0, (1 − ᾱ_k) I),
//!
//! so ᾱ_0 = 1 − 1e-4 and ᾱ_{T−1} ≈ 4.0e-5.
//!
//! A run of K steps keeps K levels by guided-diffusion's `space_timesteps(T, "K")`:
//! τ_i = round(i (T − 1)/(K − 1)), i = 0..K−1 (Python's round, ties to even), so level 0 and
//! level T − 1 are both kept and K = T walks every level. The respaced chain's β are
//! β′_i = 1 − ᾱ_{τ_i}/ᾱ_{τ_{i−1}} with ᾱ_{τ_{−1}} = 1: the first kept level keeps
//! β′_0 = 1 − ᾱ_0. The loop makes K model evaluations at τ_{K−1} … τ_0; the step from τ_i goes to
//! τ_{i−1}, and the last step (from level 0) goes to the clean state (ᾱ_prev = 1): its DDPM
//! posterior mean has coef1 = 1, coef2 = 0 and variance 0, so it returns x̂_0, the Tweedie
//! estimate, without noise (DDIM likewise). The final samples are at t = 0 with v = 0.
//! K = 1 keeps level 0 alone, as guided-diffusion does; the run plan refuses it.
//! The run's `beta_min`/`beta_max` and `t_min` do not enter: they belong to the continuous
//! schedule only.

use crate::engine::Noise;

/// Levels of the DPS schedule.
pub const LEVELS: usize = 1000;
/// β at level 0 and at level T − 1.
pub const BETA_FIRST: f64 = 1e-4;
pub const BETA_LAST: f64 = 0.02;

/// The noise of the clean state after the last step: s = 1, v = 0.
pub const CLEAN: Noise = Noise { s: 1.0, v: 0.0 };

/// The discrete schedule and the subsequence of levels a run walks.
#[derive(Clone, Debug, PartialEq)]
pub struct DiscreteSchedule {
    /// log ᾱ_k for k = 0..T−1 (summed as Σ ln(1 − β_j) so that 1 − ᾱ_k keeps its digits).
    log_alpha_bar: Vec<f64>,
    /// The levels kept, τ_0 = 0 < τ_1 < … < τ_{K−1} = T − 1.
    levels: Vec<usize>,
}

impl DiscreteSchedule {
    /// The DPS schedule walked in `steps` = K steps over K kept levels (guided-diffusion's
    /// spacing, see the module docs); K = T walks every level.
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
        DiscreteSchedule {
            log_alpha_bar,
            levels: spaced_levels(steps),
        }
    }

    /// β_k = β_first + k (β_last − β_first)/(T − 1).
    pub fn beta(k: usize) -> f64 {
        BETA_FIRST + k as f64 * (BETA_LAST - BETA_FIRST) / (LEVELS - 1) as f64
    }

    /// Number of steps K walked (= model evaluations = kept levels).
    pub fn steps(&self) -> usize {
        self.levels.len()
    }

    /// The kept levels, increasing.
    pub fn levels(&self) -> &[usize] {
        &self.levels
    }

    /// The level of the state after `j` of the K steps: τ_{K−1−j}, or None after the last
    /// step (j = K, the clean state).
    pub fn level_after(&self, j: usize) -> Option<usize> {
        let k = self.steps();
        (j < k).then(|| self.levels[k - 1 - j])
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

    /// The noise of the state after `j` steps ([`CLEAN`] after the last).
    pub fn noise_after(&self, j: usize) -> Noise {
        self.level_after(j).map_or(CLEAN, |k| self.noise(k))
    }

    /// log ᾱ_k, for mapping a level to the continuous time with the same noise.
    pub fn log_alpha_bar(&self, k: usize) -> f64 {
        self.log_alpha_bar[k]
    }

    /// log ᾱ of the state after `j` steps (0 for the clean state).
    pub fn log_alpha_bar_after(&self, j: usize) -> f64 {
        self.level_after(j).map_or(0.0, |k| self.log_alpha_bar[k])
    }

    /// Step `j` (0..K): from the level after j steps to the one after j + 1 (the clean state,
    /// ᾱ_prev = 1, for the last).
    pub fn step(&self, j: usize) -> DiscreteStep {
        let k = self
            .level_after(j)
            .expect("a step starts at a kept level (j < K)");
        self.transition(k, self.level_after(j + 1))
    }

    /// The transition from level `k` down to level `prev` (< k), or to the clean state when
    /// `prev` is None: its (ᾱ, ᾱ_prev, β) with β = 1 − ᾱ_k/ᾱ_prev.
    pub fn transition(&self, k: usize, prev: Option<usize>) -> DiscreteStep {
        let la = self.log_alpha_bar[k];
        let lp = prev.map_or(0.0, |p| self.log_alpha_bar[p]);
        DiscreteStep {
            alpha_bar: la.exp(),
            alpha_bar_prev: lp.exp(),
            one_minus_alpha_bar: -la.exp_m1(),
            one_minus_alpha_bar_prev: -lp.exp_m1(),
            beta: -(la - lp).exp_m1(),
        }
    }

    /// The step counts j (0..=K) whose state's v = 1 − ᾱ is nearest to each of `vs`,
    /// deduplicated and increasing (j = K is the clean state, v = 0).
    pub fn checkpoint_steps(&self, vs: &[f64]) -> Vec<usize> {
        let mut js: Vec<usize> = vs
            .iter()
            .map(|&v| {
                (0..=self.steps())
                    .min_by(|&a, &b| {
                        let da = (self.noise_after(a).v - v).abs();
                        let db = (self.noise_after(b).v - v).abs();
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

/// guided-diffusion's `space_timesteps(T, "K")` for one section: frac_stride = (T − 1)/(K − 1)
/// and τ_i = round(i · frac_stride), Python's round (ties to even: K = 7 keeps 166, not 167),
/// increasing; K = 1 keeps level 0.
pub fn spaced_levels(k: usize) -> Vec<usize> {
    if k <= 1 {
        return vec![0; k];
    }
    let stride = (LEVELS - 1) as f64 / (k - 1) as f64;
    let mut cur = 0.0f64;
    let mut out = Vec::with_capacity(k);
    for _ in 0..k {
        // Accumulated as guided-diffusion does (cur_idx += frac_stride).
        out.push(cur.round_ties_even() as usize);
        cur += stride;
    }
    out
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
        assert_eq!(sched.steps(), 1000);
        assert_eq!(sched.levels(), (0..1000).collect::<Vec<_>>().as_slice());
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
        // After the last step: the clean state.
        assert_eq!(sched.level_after(1000), None);
        assert_eq!(sched.noise_after(1000), CLEAN);
        assert_eq!(sched.log_alpha_bar_after(1000), 0.0);
    }

    /// guided-diffusion's space_timesteps(1000, "K"), written out in Python's terms (the list
    /// below was produced by `[round(i * 999 / (K - 1)) for i in range(K)]`, ties to even).
    #[test]
    fn respacing_follows_guided_diffusion() {
        assert_eq!(spaced_levels(2), vec![0, 999]);
        assert_eq!(spaced_levels(3), vec![0, 500, 999]); // 499.5 → 500 (even)
        assert_eq!(spaced_levels(7), vec![0, 166, 333, 500, 666, 832, 999]); // 166.5 → 166, 832.5 → 832
        assert_eq!(spaced_levels(5), vec![0, 250, 500, 749, 999]); // 249.75, 499.5 → 500, 749.25
        assert_eq!(spaced_levels(1), vec![0]);
        for k in [2usize, 10, 100, 250, 999, 1000] {
            let lv = spaced_levels(k);
            assert_eq!(lv.len(), k);
            assert_eq!((lv[0], lv[k - 1]), (0, 999));
            assert!(lv.windows(2).all(|w| w[0] < w[1]), "K = {k}");
        }
    }

    #[test]
    fn steps_and_posterior_variance_match_direct_formulas() {
        let full = DiscreteSchedule::new(1000);
        // Adjacent levels: β of the step is the level's own β_k.
        for k in [1usize, 2, 500, 999] {
            let st = full.transition(k, Some(k - 1));
            let beta = DiscreteSchedule::beta(k);
            assert!((st.beta - beta).abs() < 1e-12 * beta.max(1e-3));
            let (ab, abp) = (full.alpha_bar(k), full.alpha_bar(k - 1));
            let tilde = (1.0 - abp) / (1.0 - ab) * beta;
            assert!((st.posterior_variance() / tilde - 1.0).abs() < 1e-10);
            let eta = 0.37;
            let sigma = eta * ((1.0 - abp) / (1.0 - ab)).sqrt() * (1.0 - ab / abp).sqrt();
            assert!((st.ddim_variance(eta) / (sigma * sigma) - 1.0).abs() < 1e-10);
        }
        // The last step goes from level 0 to the clean state: β′ = 1 − ᾱ_0 = β_0, no noise.
        let last = full.step(999);
        assert!((last.beta - 1e-4).abs() < 1e-16);
        assert_eq!(last.alpha_bar_prev, 1.0);
        assert_eq!(last.posterior_variance(), 0.0);
        assert_eq!(last.ddim_variance(1.0), 0.0);
        // Respaced: 11 steps over levels 0, 100 (rounded 99.9), …, 999.
        let coarse = DiscreteSchedule::new(11);
        assert_eq!(coarse.steps(), 11);
        assert_eq!(coarse.level_after(0), Some(999));
        assert_eq!(coarse.level_after(10), Some(0));
        assert_eq!(coarse.level_after(9), Some(100));
        let st = coarse.step(0);
        let want = 1.0 - full.alpha_bar(999) / full.alpha_bar(899);
        assert_eq!(coarse.level_after(1), Some(899));
        assert!((st.beta - want).abs() < 1e-12);
    }

    #[test]
    fn checkpoints_snap_to_the_nearest_noise_level() {
        let sched = DiscreteSchedule::new(1000);
        let js = sched.checkpoint_steps(&[sched.noise(500).v, 2.0, 0.0, 1e-4]);
        // v = 2 is nearest the first level (v ≈ 1), v = 1e-4 level 0 (step 999), v = 0 the
        // clean state after the last step.
        assert_eq!(js, vec![0, 499, 999, 1000]);
    }
}

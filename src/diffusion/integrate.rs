//! Reverse-time integration of the VP-SDE with a given score (design §5).
//!
//! Euler–Maruyama from t_max = 1 down to t_min on a uniform grid of K steps, dt = (1 − t_min)/K:
//!
//!   x ← x + (½ β(t) x + β(t) score(x, t)) dt + √(β(t) dt) ε,   ε ~ N(0, I).
//!
//! The state after the last step is the sample at t_min. Checkpoints record the particle
//! cloud at chosen times (the grid time nearest to each requested one).

use rand::Rng;
use rand_distr::StandardNormal;

use super::Schedule;
use crate::Result;

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
}

/// The particle cloud at one time.
#[derive(Clone, Debug)]
pub struct Snapshot {
    pub t: f64,
    /// K × D particles.
    pub particles: Vec<f32>,
}

/// A score ∇ log p_t(x), row by row, for a batch of particles.
pub trait Score {
    /// Writes the score of each row of `x` (B × D) at time `t` into `out` (B × D).
    fn score(&mut self, x: &[f32], t: f64, out: &mut [f32]) -> Result<()>;
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
    let mut snapshots = Vec::new();
    let mut sc = vec![0.0f32; x.len()];
    let record = |k: usize, x: &[f32], snaps: &mut Vec<Snapshot>| {
        if checkpoint_steps.contains(&k) {
            snaps.push(Snapshot {
                t: grid.time(k),
                particles: x.to_vec(),
            });
        }
    };
    record(0, x, &mut snapshots);
    for k in 0..grid.steps {
        let t = grid.time(k);
        score.score(x, t, &mut sc)?;
        let beta = schedule.beta(t);
        let drift_x = (0.5 * beta * dt) as f32;
        let drift_s = (beta * dt) as f32;
        let diffusion = (beta * dt).sqrt() as f32;
        for (xi, &si) in x.iter_mut().zip(&sc) {
            let eps: f32 = rng.sample(StandardNormal);
            *xi += drift_x * *xi + drift_s * si + diffusion * eps;
        }
        record(k + 1, x, &mut snapshots);
        on_step(k + 1);
    }
    Ok(snapshots)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    /// For a Gaussian data distribution x_0 ~ N(μ, τ²) the marginal is
    /// x_t ~ N(s μ, s² τ² + v) with score −(x − s μ)/(s² τ² + v); reverse EM from N(0, 1)
    /// must land on N(s μ, s² τ² + v) at t_min (up to O(dt) bias and sampling error).
    struct GaussianScore {
        mu: f64,
        tau2: f64,
        schedule: Schedule,
    }
    impl Score for GaussianScore {
        fn score(&mut self, x: &[f32], t: f64, out: &mut [f32]) -> Result<()> {
            let n = self.schedule.noise(t);
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
            schedule,
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

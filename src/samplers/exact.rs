//! The exact ("direct") sampler: draws from p(x_t | y) = Σ_i ω_i N(x_t; s a_i, v I) with
//! ω = softmax(b), no SDE at all (design §3).
//!
//! Each particle draws an atom index i ~ Cat(ω) once and keeps it; at every recorded time it
//! is s(t) a_i + √v(t) ε with fresh ε, so each snapshot is an exact draw of that marginal.
//! The recorded levels are those of the run's integrator (for DDPM/DDIM the discrete levels'
//! noise, ending at v = 1e-4), so the exact clouds sit at the same (s, v) as the others.

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::{Problem, Progress, Run, Sampler, Settings};
use crate::Result;
use crate::diffusion::integrate::Snapshot;

pub struct Exact;

impl Exact {
    /// The atom indices drawn for each particle: inverse-CDF sampling of Cat(ω) in float64.
    pub fn draw_atoms(omega: &[f64], count: usize, rng: &mut impl Rng) -> Vec<usize> {
        let mut cdf = Vec::with_capacity(omega.len());
        let mut acc = 0.0;
        for &w in omega {
            acc += w;
            cdf.push(acc);
        }
        (0..count)
            .map(|_| {
                let u: f64 = rng.random::<f64>() * acc;
                cdf.partition_point(|&c| c <= u).min(omega.len() - 1)
            })
            .collect()
    }
}

impl Sampler for Exact {
    fn name(&self) -> &'static str {
        "exact"
    }

    fn sample(
        &self,
        problem: &Problem,
        settings: &Settings,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Run> {
        let d = problem.dim;
        let omega = problem.posterior_weights();
        // A different stream from the SDE samplers' initial noise, derived from the same seed.
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(settings.seed ^ 0x5eed_e8ac_7000_0001);
        let picks = Self::draw_atoms(&omega, settings.particles, &mut rng);
        // The same levels the run's integrator records, so that the clouds compare one to one.
        let (requested, last) = settings.recorded_levels(&problem.schedule);
        let mut levels = requested.clone();
        if !levels.contains(&last) {
            levels.push(last);
        }
        let mut snapshots = Vec::with_capacity(requested.len());
        let mut samples = Vec::new();
        for (done, level) in levels.iter().enumerate() {
            let (t, noise) = (level.t, level.noise);
            let sd = noise.v.sqrt();
            let mut particles = Vec::with_capacity(settings.particles * d);
            for &i in &picks {
                let a = &problem.atoms[i * d..(i + 1) * d];
                particles.extend(a.iter().map(|&av| {
                    let e: f64 = rng.sample(StandardNormal);
                    (noise.s * av as f64 + sd * e) as f32
                }));
            }
            if *level == last {
                samples = particles.clone();
            }
            if requested.contains(level) {
                snapshots.push(Snapshot { t, particles });
            }
            progress(Progress {
                done: done + 1,
                total: levels.len(),
            });
        }
        Ok(Run {
            samples,
            snapshots,
            passes_per_step: 0.0,
            diagnostics: Vec::new(),
            warnings: Vec::new(),
        })
    }
}

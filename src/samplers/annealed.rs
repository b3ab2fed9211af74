//! Samplers that are not a reverse SDE with a score but a walk over the run's noise levels
//! (DAPS, DiffPIR; design §4): at each level the prior denoiser x̂_0 = m(x_j) = E[x_0 | x_j]
//! (one engine pass), then the sampler's own update from x_j and x̂_0 to the next level's
//! state x_{j+1}.
//!
//! The levels are the states the run's integrator visits (`diffusion::integrate::states`): the
//! continuous grid t_0 = 1 > … > t_K = t_min, or the discrete chain's kept levels followed by
//! the clean state (t = 0, v = 0). So the clouds are recorded at the same times as every other
//! sampler's, the exact sampler's included, and `sampling.steps` counts the levels.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

use super::likelihood::Context;
use super::{Problem, Progress, Run, Sampler, Settings, initial_noise};
use crate::diffusion::integrate::{Snapshot, states};
use crate::engine::{Noise, WeightSet};
use crate::operators::Operator;
use crate::{Error, Result};

/// One level's update of a level-walking sampler.
pub trait LevelStep: Send {
    /// The sampler's config name.
    fn name(&self) -> &'static str;
    /// Fails when the update cannot use `operator`.
    fn check_operator(&self, operator: &dyn Operator) -> Result<()>;
    /// Maps x (B × D, the state at noise `from`) to the state at noise `to`, given the prior
    /// Tweedie means of x; all noise comes from `rng`.
    fn step(
        &mut self,
        ctx: &Context,
        x: &mut [f32],
        means: &[f32],
        from: Noise,
        to: Noise,
        rng: &mut ChaCha8Rng,
    ) -> Result<()>;
    /// Named numbers about the run (CG statistics, step sizes) for summary.json.
    fn diagnostics(&self) -> Vec<(String, f64)> {
        Vec::new()
    }
    /// A warning about the run (non-converged solves), if any.
    fn warning(&self) -> Option<String> {
        None
    }
}

/// The error for a level-walking sampler that needs a linear operator.
pub fn linear_only(name: &str, operator: &dyn Operator, why: &str) -> Result<()> {
    if operator.is_linear() {
        return Ok(());
    }
    Err(Error::config(
        "sampling.samplers",
        format!(
            "sampler {name} needs a linear operator ({why}), but the operator {} is nonlinear; \
             use sigma-dps or zeta-dps (or fsr/exact) with it",
            operator.spec()
        ),
    ))
}

/// A [`LevelStep`] walked over the run's levels from the shared N(0, I) start.
#[derive(Clone)]
pub struct Annealed<S> {
    pub step: S,
}

impl<S: LevelStep + Clone + Sync> Sampler for Annealed<S> {
    fn name(&self) -> &'static str {
        self.step.name()
    }

    fn check_operator(&self, operator: &dyn Operator) -> Result<()> {
        self.step.check_operator(operator)
    }

    fn sample(
        &self,
        problem: &Problem,
        settings: &Settings,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Run> {
        self.step.check_operator(problem.operator)?;
        let mut step = self.step.clone();
        let ctx = Context {
            backend: problem.backend,
            operator: problem.operator,
            y: problem.y,
            sigma: problem.sigma,
        };
        let (levels, recorded) = states(
            settings.integrator,
            &problem.schedule,
            &settings.grid(),
            &settings.checkpoints,
        );
        let total = levels.len() - 1;
        let mut x = initial_noise(settings.particles, problem.dim, settings.seed);
        // The same noise stream as the score-based samplers' integrators.
        let mut rng = ChaCha8Rng::seed_from_u64(settings.seed.wrapping_add(1));
        let mut snapshots = Vec::new();
        let record = |j: usize, x: &[f32], snaps: &mut Vec<Snapshot>| {
            if recorded.contains(&j) {
                snaps.push(Snapshot {
                    t: levels[j].t,
                    particles: x.to_vec(),
                });
            }
        };
        record(0, &x, &mut snapshots);
        for j in 0..total {
            let (from, to) = (levels[j].noise, levels[j + 1].noise);
            let pass = problem
                .backend
                .weighted_means(&x, from, &[WeightSet::Prior])?;
            step.step(&ctx, &mut x, &pass.sets[0].means, from, to, &mut rng)?;
            record(j + 1, &x, &mut snapshots);
            progress(Progress { done: j + 1, total });
        }
        let mut diagnostics = vec![("engine_passes_per_step".to_string(), 1.0)];
        diagnostics.extend(step.diagnostics());
        Ok(Run {
            samples: x,
            snapshots,
            passes_per_step: 1.0,
            diagnostics,
            warnings: step.warning().into_iter().collect(),
        })
    }
}

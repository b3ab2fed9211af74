//! `fsr`: the reverse SDE (or the run's integrator) driven by the exact finite-sample posterior score
//! ∇ log p(x_t | y) = (s m̃(x) − x)/v, m̃ = Σ_i softmax_i(ℓ_i(x) + b_i) a_i (design §3–5).

use super::score::tweedie_score;
use super::{Problem, Progress, Run, Sampler, Settings, reverse_sde};
use crate::Result;
use crate::diffusion::integrate::Score;
use crate::engine::{Noise, WeightSet};

pub struct Fsr;

struct PosteriorScore<'a> {
    problem: &'a Problem<'a>,
}

impl Score for PosteriorScore<'_> {
    fn score(&mut self, x: &[f32], noise: Noise, out: &mut [f32]) -> Result<()> {
        let s = tweedie_score(
            self.problem.backend,
            x,
            noise,
            WeightSet::Biased(self.problem.posterior),
        )?;
        out.copy_from_slice(&s);
        Ok(())
    }
}

impl Sampler for Fsr {
    fn name(&self) -> &'static str {
        "fsr"
    }

    fn sample(
        &self,
        problem: &Problem,
        settings: &Settings,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Run> {
        let mut score = PosteriorScore { problem };
        let (x, snapshots) = reverse_sde(&mut score, problem, settings, progress)?;
        Ok(Run {
            samples: x,
            snapshots,
            passes_per_step: settings.evaluations_per_step(),
            diagnostics: Vec::new(),
            warnings: Vec::new(),
        })
    }
}

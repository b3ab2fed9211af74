//! Posterior samplers on the empirical prior, behind one trait.
//!
//! Every sampler gets the same [`Problem`] (the engine over the atoms, the measurement's
//! log-likelihoods b_i = log p(y | a_i), the schedule) and the same [`Settings`] (particles,
//! steps, seed, checkpoints), and returns the particle cloud at t_min with snapshots on the
//! way. Samplers print nothing: progress goes through a callback.

pub mod annealed;
pub mod daps;
pub mod diffpir;
pub mod exact;
pub mod fsr;
pub mod likelihood;
pub mod pigdm;
pub mod score;
pub mod sigma_dps;
pub mod solve;
pub mod tmpd;
pub mod zeta_dps;

use crate::choices::Choice;
use crate::diffusion::Schedule;
use crate::diffusion::integrate::{Integrator, Snapshot, TimeGrid};
use crate::engine::{Backend, BiasId};
use crate::operators::Operator;
use crate::{Error, Result};

/// What every sampler is given: the empirical prior, the measurement and the schedule.
pub struct Problem<'a> {
    /// The engine over the N atoms.
    pub backend: &'a dyn Backend,
    /// The atoms themselves, N × D (the exact sampler draws from them directly).
    pub atoms: &'a [f32],
    pub dim: usize,
    /// b_i = log p(y | a_i) = −‖y − A(a_i)‖²/(2σ²), float64.
    pub log_likelihoods: &'a [f64],
    /// The same vector registered with the backend.
    pub posterior: BiasId,
    pub operator: &'a dyn Operator,
    pub y: &'a [f32],
    pub sigma: f64,
    pub schedule: Schedule,
}

impl Problem<'_> {
    /// ω_i = softmax_i(b_i): the exact posterior at t = 0, in float64.
    pub fn posterior_weights(&self) -> Vec<f64> {
        crate::engine::logsumexp::softmax(self.log_likelihoods)
    }
}

/// The most integrator steps a run takes. At K = 10⁶ the step dt ≈ 10⁻⁶ already moves a
/// float32 particle by a drift ½β(t)·dt·x below its rounding (2⁻²⁴ x) wherever β(t) < 0.12
/// (under the default schedule the last 0.5 % of the time grid, where the posterior
/// sharpens): more steps cost one or more passes over every atom each and gain nothing.
pub const MAX_STEPS: usize = 1_000_000;

/// How a sampler runs.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Settings {
    pub particles: usize,
    /// Steps of the integrator (the discrete ones: 2 to 1000, one model evaluation per kept
    /// level; 1000 walks every level).
    pub steps: usize,
    /// The final time of the continuous integrators (the discrete ones end at t = 0: x̂_0).
    pub t_min: f64,
    pub seed: u64,
    /// Times at which to record the cloud (snapped to the step grid).
    pub checkpoints: Vec<f64>,
    /// How every score-based sampler integrates the reverse process.
    pub integrator: Integrator,
    /// `zeta-dps` on DDPM/DDIM runs the DPS paper's post-step update instead of the score
    /// form (see [`likelihood`]); other samplers ignore it.
    pub dps_update: bool,
}

impl Settings {
    pub fn grid(&self) -> TimeGrid {
        TimeGrid {
            t_max: 1.0,
            t_min: self.t_min,
            steps: self.steps,
        }
    }
    /// Checks the ranges, naming the `sampling.*` keys. The run plan calls it once; samplers
    /// trust their settings.
    pub fn validate(&self) -> Result<()> {
        if self.particles == 0 {
            return Err(Error::config("sampling.particles", "must be at least 1"));
        }
        if self.steps == 0 {
            return Err(Error::config("sampling.steps", "must be at least 1"));
        }
        if self.steps > MAX_STEPS {
            let dt = (1.0 - self.t_min) / self.steps as f64;
            return Err(Error::config(
                "sampling.steps",
                format!(
                    "{} is more than the {MAX_STEPS} steps fslens runs: at dt = (1 − t_min)/K = \
                     {dt:.1e} the drift of a step, ½β(t)·dt of x, is below the rounding of a \
                     float32 particle (2⁻²⁴ of x) wherever β(t) < {:.3e}, so more steps add \
                     passes over the atoms (at least one per step, {} here) but no accuracy; \
                     lower sampling.steps (default 1000)",
                    self.steps,
                    2f64.powi(-23) / dt,
                    self.steps
                ),
            ));
        }
        if !(self.t_min > 0.0 && self.t_min < 1.0) {
            return Err(Error::config(
                "sampling.t_min",
                format!("must lie in (0, 1), got {}", self.t_min),
            ));
        }
        for &t in &self.checkpoints {
            crate::diffusion::check_time("sampling.checkpoints", t)?;
        }
        let levels = crate::diffusion::discrete::LEVELS;
        if self.integrator.is_discrete() && !(2..=levels).contains(&self.steps) {
            return Err(Error::config(
                "sampling.steps",
                format!(
                    "is {} but {} keeps one discrete level per step, from level {} down to \
                     level 0 (guided-diffusion's spacing): between 2 and {levels} steps \
                     ({levels} walks every level, fewer respace them); set sampling.steps = \
                     {levels}, or use integrator = \"euler-maruyama\" for a finer grid",
                    self.steps,
                    self.integrator.name(),
                    levels - 1
                ),
            ));
        }
        if let Integrator::Ddim { eta } = self.integrator {
            Integrator::new(crate::diffusion::integrate::IntegratorKind::Ddim, eta)?;
        }
        if self.dps_update && !self.integrator.is_discrete() {
            return Err(Error::config(
                "sampling.dps_update",
                format!(
                    "the DPS paper's update runs on the discrete schedule only, but the integrator is {:?}; set integrator = \"ddpm\" (as in the paper) or \"ddim\", or drop dps_update",
                    self.integrator.name()
                ),
            ));
        }
        Ok(())
    }

    /// The levels recorded at the checkpoints and at the end under `schedule` (see
    /// [`crate::diffusion::integrate::recorded_levels`]).
    pub fn recorded_levels(
        &self,
        schedule: &Schedule,
    ) -> (
        Vec<crate::diffusion::integrate::Level>,
        crate::diffusion::integrate::Level,
    ) {
        crate::diffusion::integrate::recorded_levels(
            self.integrator,
            schedule,
            &self.grid(),
            &self.checkpoints,
        )
    }

    /// Score evaluations per integrator step (2 for the Heun ODE, else 1).
    pub fn evaluations_per_step(&self) -> f64 {
        self.integrator.score_evaluations(self.steps) as f64
            / self.integrator.steps(self.steps) as f64
    }

    /// The (equivalent) time and noise of the final samples.
    pub fn final_level(&self, schedule: &Schedule) -> crate::diffusion::integrate::Level {
        self.recorded_levels(schedule).1
    }
}

/// What a sampler returns.
#[derive(Clone, Debug)]
pub struct Run {
    /// K × D particles at t_min.
    pub samples: Vec<f32>,
    /// Snapshots of the cloud at the requested checkpoints (decreasing t).
    pub snapshots: Vec<Snapshot>,
    /// Passes over the atom set per step (the cost model: fsr 1, DPS family 2, TMPD by CG
    /// 2 + its iterations, per score evaluation; the Heun ODE makes two evaluations a step),
    /// measured.
    pub passes_per_step: f64,
    /// Named numbers about the run (CG iterations and residuals, …) for summary.json.
    pub diagnostics: Vec<(String, f64)>,
    /// Things the user must hear about (non-converged solves), for stderr and summary.json.
    pub warnings: Vec<String>,
}

/// Parameters of the approximate samplers (config `[sampling]`: `zeta`, `cg_tolerance`,
/// `cg_max_iterations`, `diffpir_lambda`, `diffpir_zeta`, `daps_langevin_steps`,
/// `daps_step`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct SamplerOptions {
    /// ζ of `zeta-dps` (default 1.0).
    pub zeta: f64,
    /// Conjugate gradients of `pigdm` (general A Aᵀ), `tmpd` and `diffpir` (general A Aᵀ).
    pub cg: solve::CgOptions,
    /// λ of `diffpir`, ρ = λσ²/σ̄² (default 1.0).
    pub diffpir_lambda: f64,
    /// ζ of `diffpir`, the share of fresh noise, in [0, 1] (default 0.3).
    pub diffpir_zeta: f64,
    /// Langevin steps per level of `daps` (default 20).
    pub daps_langevin_steps: usize,
    /// `daps`'s step as a fraction of the stable step, in (0, 1] (default 0.2).
    pub daps_step: f64,
}

impl SamplerOptions {
    /// Checks the ranges once (the run plan and `fslens score` call it; samplers then trust
    /// their options); `key` spells a field's name as the user wrote it (`sampling.zeta`,
    /// `--zeta`) in errors.
    pub fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<()> {
        if !(self.zeta.is_finite() && self.zeta > 0.0) {
            return Err(Error::config(
                key("zeta"),
                format!(
                    "ζ must be a positive number (default 1.0), got {}",
                    self.zeta
                ),
            ));
        }
        if !(self.diffpir_lambda.is_finite() && self.diffpir_lambda > 0.0) {
            return Err(Error::config(
                key("diffpir_lambda"),
                format!(
                    "DiffPIR's λ must be a positive number (default 1.0), got {}",
                    self.diffpir_lambda
                ),
            ));
        }
        if !(0.0..=1.0).contains(&self.diffpir_zeta) {
            return Err(Error::config(
                key("diffpir_zeta"),
                format!(
                    "DiffPIR's ζ must lie in [0, 1] (0 deterministic, default 0.3), got {}",
                    self.diffpir_zeta
                ),
            ));
        }
        if self.daps_langevin_steps == 0 {
            return Err(Error::config(
                key("daps_langevin_steps"),
                "DAPS needs at least 1 Langevin step per level (default 20)",
            ));
        }
        if !(self.daps_step > 0.0 && self.daps_step <= 1.0) {
            return Err(Error::config(
                key("daps_step"),
                format!(
                    "DAPS's step fraction must lie in (0, 1] (beyond 1 the Langevin walk is \
                     unstable in the likelihood's stiffest direction; default 0.2), got {}",
                    self.daps_step
                ),
            ));
        }
        self.cg.validate(key)
    }
}

impl Default for SamplerOptions {
    fn default() -> Self {
        SamplerOptions {
            zeta: 1.0,
            cg: solve::CgOptions::default(),
            diffpir_lambda: 1.0,
            diffpir_zeta: 0.3,
            daps_langevin_steps: 20,
            daps_step: 0.2,
        }
    }
}

/// Progress of one sampler: `done` of `total` steps.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

pub trait Sampler {
    /// The name used in configs and file names (`exact`, `fsr`, …).
    fn name(&self) -> &'static str;
    /// Fails when this sampler cannot use `operator` (ΠGDM and TMPD need a linear one), so a
    /// run can refuse before any work.
    fn check_operator(&self, _operator: &dyn Operator) -> Result<()> {
        Ok(())
    }
    fn sample(
        &self,
        problem: &Problem,
        settings: &Settings,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Run>;
}

/// The samplers this build knows (config `sampling.samplers`, `compare --samplers`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum SamplerKind {
    /// Exact draws of p(x_t | y) at every time: no SDE.
    Exact,
    /// The reverse diffusion with the exact posterior score.
    Fsr,
    SigmaDps,
    ZetaDps,
    Pigdm,
    Tmpd,
    /// Decoupled annealing: Langevin on x_0 around the denoiser at each level.
    Daps,
    /// Half-quadratic splitting with a closed-form data step.
    Diffpir,
}

impl Choice for SamplerKind {
    const KEY: &'static str = "sampling.samplers";
    const WHAT: &'static str = "sampler";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("exact", SamplerKind::Exact),
        ("fsr", SamplerKind::Fsr),
        ("sigma-dps", SamplerKind::SigmaDps),
        ("zeta-dps", SamplerKind::ZetaDps),
        ("pigdm", SamplerKind::Pigdm),
        ("tmpd", SamplerKind::Tmpd),
        ("daps", SamplerKind::Daps),
        ("diffpir", SamplerKind::Diffpir),
    ];
}
crate::choice_by_name!(SamplerKind);

impl SamplerKind {
    /// Every sampler, in the order runs and reports list them.
    pub fn all() -> impl Iterator<Item = SamplerKind> {
        Self::NAMES.iter().map(|&(_, k)| k)
    }

    /// The sampler, with the approximate samplers' parameters from `options` (validated by
    /// the run plan or the caller: see [`SamplerOptions::validate`]).
    pub fn build(self, options: &SamplerOptions) -> Box<dyn Sampler> {
        use likelihood::Approximate;
        match self {
            SamplerKind::Exact => Box::new(exact::Exact),
            SamplerKind::Fsr => Box::new(fsr::Fsr),
            SamplerKind::SigmaDps => Box::new(Approximate {
                likelihood: sigma_dps::SigmaDps::default(),
            }),
            SamplerKind::ZetaDps => Box::new(Approximate {
                likelihood: zeta_dps::ZetaDps::new(options.zeta),
            }),
            SamplerKind::Pigdm => Box::new(Approximate {
                likelihood: pigdm::Pigdm::new(options.cg),
            }),
            SamplerKind::Tmpd => Box::new(Approximate {
                likelihood: tmpd::Tmpd::new(options.cg),
            }),
            SamplerKind::Daps | SamplerKind::Diffpir => Box::new(
                self.level_step(options)
                    .expect("daps and diffpir walk the levels"),
            ),
        }
    }

    /// The level update of a sampler that walks the levels itself (`daps`, `diffpir`), boxed
    /// as a sampler; `None` for the others.
    pub fn level_step(self, options: &SamplerOptions) -> Option<LevelSampler> {
        match self {
            SamplerKind::Daps => Some(LevelSampler::Daps(annealed::Annealed {
                step: daps::Daps::new(options.daps_langevin_steps, options.daps_step),
            })),
            SamplerKind::Diffpir => Some(LevelSampler::Diffpir(annealed::Annealed {
                step: diffpir::Diffpir::new(
                    options.diffpir_lambda,
                    options.diffpir_zeta,
                    options.cg,
                ),
            })),
            _ => None,
        }
    }

    /// The likelihood score of an approximate sampler; `None` for `exact`, `fsr` and the
    /// level-walking `daps` and `diffpir`, which have none.
    pub fn likelihood(self, options: &SamplerOptions) -> Option<Box<dyn likelihood::Likelihood>> {
        match self {
            SamplerKind::Exact | SamplerKind::Fsr | SamplerKind::Daps | SamplerKind::Diffpir => {
                None
            }
            SamplerKind::SigmaDps => Some(Box::new(sigma_dps::SigmaDps::default())),
            SamplerKind::ZetaDps => Some(Box::new(zeta_dps::ZetaDps::new(options.zeta))),
            SamplerKind::Pigdm => Some(Box::new(pigdm::Pigdm::new(options.cg))),
            SamplerKind::Tmpd => Some(Box::new(tmpd::Tmpd::new(options.cg))),
        }
    }

    /// Fails when this sampler cannot use `operator` (ΠGDM and TMPD need a linear one).
    pub fn check_operator(self, operator: &dyn Operator) -> Result<()> {
        self.build(&SamplerOptions::default())
            .check_operator(operator)
    }
}

/// A level-walking sampler ([`annealed`]), by kind: its level update is reachable for the
/// plan's time estimate.
#[derive(Clone)]
pub enum LevelSampler {
    Daps(annealed::Annealed<daps::Daps>),
    Diffpir(annealed::Annealed<diffpir::Diffpir>),
}

impl LevelSampler {
    /// The level update alone.
    pub fn into_step(self) -> Box<dyn annealed::LevelStep> {
        match self {
            LevelSampler::Daps(a) => Box::new(a.step),
            LevelSampler::Diffpir(a) => Box::new(a.step),
        }
    }
}

impl Sampler for LevelSampler {
    fn name(&self) -> &'static str {
        match self {
            LevelSampler::Daps(a) => a.name(),
            LevelSampler::Diffpir(a) => a.name(),
        }
    }
    fn check_operator(&self, operator: &dyn Operator) -> Result<()> {
        match self {
            LevelSampler::Daps(a) => a.check_operator(operator),
            LevelSampler::Diffpir(a) => a.check_operator(operator),
        }
    }
    fn sample(
        &self,
        problem: &Problem,
        settings: &Settings,
        progress: &mut dyn FnMut(Progress),
    ) -> Result<Run> {
        match self {
            LevelSampler::Daps(a) => a.sample(problem, settings, progress),
            LevelSampler::Diffpir(a) => a.sample(problem, settings, progress),
        }
    }
}

/// Runs the integrator of `settings` (Euler–Maruyama, probability-flow ODE, DDPM, DDIM) with
/// `score` from the shared initial noise of `settings` (the same N(0, I) start and noise
/// stream for every score-based sampler of a run, so that their differences come from the
/// likelihood approximation alone). Returns the final particles (at t_min, or the clean
/// x̂_0 after the discrete chain's last step) and the snapshots at the checkpoints.
pub fn reverse_sde(
    score: &mut dyn crate::diffusion::integrate::Score,
    problem: &Problem,
    settings: &Settings,
    progress: &mut dyn FnMut(Progress),
) -> Result<(Vec<f32>, Vec<crate::diffusion::integrate::Snapshot>)> {
    use rand::SeedableRng;
    let grid = settings.grid();
    let mut x = initial_noise(settings.particles, problem.dim, settings.seed);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(settings.seed.wrapping_add(1));
    let total = settings.integrator.steps(grid.steps);
    let snapshots = crate::diffusion::integrate::integrate(
        settings.integrator,
        score,
        &problem.schedule,
        &grid,
        &mut x,
        &mut rng,
        &settings.checkpoints,
        &mut |k| progress(Progress { done: k, total }),
    )?;
    Ok((x, snapshots))
}

/// N(0, I) initial particles, K × D, from the sampler's seed (the same for every sampler of
/// a run, so their differences come from the likelihood approximation alone).
pub fn initial_noise(particles: usize, dim: usize, seed: u64) -> Vec<f32> {
    use rand::{Rng, SeedableRng};
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    (0..particles * dim)
        .map(|_| rng.sample(rand_distr::StandardNormal))
        .collect()
}

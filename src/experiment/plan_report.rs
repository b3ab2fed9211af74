//! `fslens plan`: what a run config will do, before any sampling. The problem's size (N atoms
//! of D values), the exact posterior ω = softmax(b) at t = 0 with its effective atom count
//! 1/Σ_i ω_i², the mode masses Σ_{i∈mode} ω_i as the diagnostics group the atoms
//! ([`crate::diagnostics::Modes`]: classes, or k-means clusters) and their entropy
//! H = −Σ_m p_m ln p_m, the time each configured sampler will take on this machine, and
//! warnings with advice when the problem cannot tell samplers apart.
//!
//! The time of a sampler is estimated from ONE timed score evaluation at B = particles, on
//! exact posterior draws x = s a_i + √v ε, i ~ Cat(ω), at the middle of the run's time grid:
//!
//!   sampler seconds ≈ (one evaluation) × (score evaluations of the run)
//!                     + (one prior pass at B) × (clouds scored: checkpoints + final),
//!
//! the second term being the metrics' one engine pass per recorded cloud. The exact sampler
//! draws directly (no engine pass) and costs its scoring only. A step's cost moves along t
//! (TMPD's conjugate-gradient iterations, warm-started in a run but cold here; the C·g pass
//! skipping weightless atom chunks near t_min), so the figure is an estimate, not a promise.

use std::time::Instant;

use rand::{Rng, SeedableRng};
use serde::Serialize;

use super::Observer;
use super::classes::{top_atom_summary, top_atoms};
use super::execute::samplers_to_run;
use super::setup::setup;
use super::summary::{DatasetSummary, MeasurementSummary, ModesSummary, SkippedSampler, TopAtom};
use crate::Result;
use crate::choices::Choice;
use crate::diagnostics::Modes;
use crate::diffusion::integrate::{Level, recorded_levels};
use crate::engine::WeightSet;
use crate::plan::RunPlan;
use crate::samplers::exact::Exact;
use crate::samplers::likelihood::{Context, posterior_score};
use crate::samplers::score::tweedie_score;
use crate::samplers::{Problem, SamplerKind};

/// Below this effective atom count 1/Σ ω² the exact posterior is one atom: every sampler that
/// ends near it scores perfectly, and the run cannot tell samplers apart.
pub const DEGENERATE_EFFECTIVE_ATOMS: f64 = 1.5;

/// What `fslens plan` reports (serialised as is by `--json`).
#[derive(Clone, Debug, Serialize)]
pub struct PlanReport {
    pub dataset: DatasetSummary,
    /// D, values per image.
    pub dim: usize,
    pub measurement: MeasurementSummary,
    /// 1/Σ_i ω_i², ω = softmax(b): how many atoms the exact posterior spreads over.
    pub exact_effective_atoms: f64,
    /// The five heaviest atoms of ω.
    pub exact_top_atoms: Vec<TopAtom>,
    /// The modes the metrics will use, with their exact mass.
    pub modes: ModesSummary,
    /// H = −Σ_m p_m ln p_m of the exact mode masses, in nats (0: one mode holds everything;
    /// ln M: M equal modes).
    pub mode_entropy: f64,
    /// The engine, in words.
    pub backend: String,
    pub particles: usize,
    /// Integrator steps the run walks.
    pub steps: usize,
    /// Clouds scored per sampler: the recorded checkpoints and the final samples.
    pub scored_clouds: usize,
    /// The configured samplers (for `compare`: every one that applies), in run order.
    pub samplers: Vec<SamplerEstimate>,
    /// Samplers that `compare` would skip, with the reason.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_samplers: Vec<SkippedSampler>,
    /// Measured here: loading the data, holding out the truth, measuring the atoms.
    pub setup_seconds: f64,
    /// Measured here: building the engine (uploading the atoms).
    pub engine_seconds: f64,
    /// Setup, engine, every sampler and the exact reference clouds.
    pub estimated_seconds: f64,
    /// How the estimate was made, in words.
    pub estimate_method: String,
    /// Problems and what to change (also printed by `run` and `compare` before sampling).
    pub warnings: Vec<String>,
}

/// The estimated cost of one sampler of the run.
#[derive(Clone, Debug, Serialize)]
pub struct SamplerEstimate {
    pub name: String,
    /// Score evaluations of the whole run (0 for `exact`; Heun: 2 per step).
    pub score_evaluations: usize,
    /// The timed evaluation at B = particles.
    pub seconds_per_evaluation: f64,
    /// Engine passes that evaluation made (fsr 1, DPS family 2, TMPD 2 + CG iterations).
    pub passes_per_evaluation: f64,
    /// The metrics' prior passes: one per scored cloud.
    pub scoring_seconds: f64,
    pub estimated_seconds: f64,
    /// How to read this estimate, where it is biased (TMPD: cold-start conjugate gradients).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub note: Option<String>,
}

/// Sets up `plan`'s problem, builds its engine and times one step of each sampler: see the
/// module notes. The report holds the warnings (`observer` hears the stages).
pub fn plan_report(plan: &RunPlan, observer: &mut dyn Observer) -> Result<PlanReport> {
    let started = Instant::now();
    let setup = setup(plan, observer, None)?;
    let setup_seconds = started.elapsed().as_secs_f64();
    let (kinds, skipped) = samplers_to_run(plan, &setup, observer);
    let omega = crate::engine::logsumexp::softmax(&setup.log_likelihoods);
    let warnings = posterior_warnings(plan, &omega);
    observer.stage("grouping the atoms into modes");
    let g = &plan.diagnostics;
    let modes = Modes::for_dataset(&setup.atoms, &omega, g.clusters, g.seed);
    let exact_weights = modes.exact_weights(&omega);
    observer.stage("building the engine");
    let built = Instant::now();
    let mut engine = crate::engine::create(
        plan.engine.backend,
        plan.engine.storage,
        plan.engine.devices,
        &setup.atoms,
    )?;
    let posterior = engine.add_bias(&setup.log_likelihoods)?;
    let engine_seconds = built.elapsed().as_secs_f64();
    observer.stage("timing one step of each sampler");
    let problem = setup.problem(plan, engine.as_ref(), posterior);
    let timing = time_samplers(plan, &problem, &omega, &kinds)?;
    let estimated_seconds = setup_seconds
        + engine_seconds
        + timing.reference_seconds
        + timing
            .samplers
            .iter()
            .map(|s| s.estimated_seconds)
            .sum::<f64>();
    Ok(PlanReport {
        dataset: DatasetSummary::of(&setup.atoms),
        dim: setup.atoms.dim(),
        measurement: MeasurementSummary::of(&setup),
        exact_effective_atoms: effective_atoms(&omega),
        exact_top_atoms: top_atom_summary(&setup.atoms, &top_atoms(&omega, 5)),
        mode_entropy: entropy(&exact_weights),
        modes: ModesSummary {
            source: modes.source,
            names: modes.names,
            exact_weights,
            hallucination_threshold: g.hallucination_threshold,
        },
        backend: engine.describe(),
        particles: plan.settings.particles,
        steps: plan.settings.integrator.steps(plan.settings.steps),
        scored_clouds: timing.clouds,
        samplers: timing.samplers,
        skipped_samplers: skipped,
        setup_seconds,
        engine_seconds,
        estimated_seconds,
        estimate_method: timing.method,
        warnings,
    })
}

/// 1/Σ_i ω_i².
pub fn effective_atoms(omega: &[f64]) -> f64 {
    1.0 / omega.iter().map(|w| w * w).sum::<f64>()
}

/// −Σ p ln p over the positive entries, in nats (0, not −0, for a single mode).
pub fn entropy(p: &[f64]) -> f64 {
    p.iter()
        .filter(|&&v| v > 0.0)
        .map(|&v| -v * v.ln())
        .sum::<f64>()
        .max(0.0)
}

/// What the problem of `plan` with exact posterior `omega` cannot show, with the config keys
/// that fix it: today a posterior on fewer than [`DEGENERATE_EFFECTIVE_ATOMS`] effective
/// atoms. `run`, `compare` and `plan` print these before any sampling.
pub fn posterior_warnings(plan: &RunPlan, omega: &[f64]) -> Vec<String> {
    let n_eff = effective_atoms(omega);
    if n_eff >= DEGENERATE_EFFECTIVE_ATOMS {
        return Vec::new();
    }
    let heaviest = omega.iter().copied().fold(0.0, f64::max);
    let cfg = &plan.config;
    let atoms_key = match (cfg.data.kind, cfg.data.subset) {
        (_, Some(_)) => "data.subset",
        (kind, None) if kind.uses_count() => "data.count",
        (_, None) => "data.subset",
    };
    let truth_key = if cfg.truth.file.is_some() {
        "truth.file"
    } else {
        "truth.index"
    };
    vec![format!(
        "the exact posterior sits on {n_eff:.2} effective atom(s) (1/Σω²; the heaviest atom \
         holds ω = {heaviest:.4}): nearly one atom, so mode weights and the spread near t_min \
         say little (a sampler that lands on that atom scores well) and mainly hallucination \
         and off-support can separate samplers; for a posterior that separates them, raise \
         measurement.sigma (now {}), enlarge the subset ({atoms_key}), or choose another truth \
         ({truth_key})",
        plan.sigma()
    )]
}

/// The samplers' estimates and the shared terms.
struct Timing {
    samplers: Vec<SamplerEstimate>,
    /// Clouds scored per sampler.
    clouds: usize,
    /// Exact reference clouds drawn and analysed when the run has no exact sampler.
    reference_seconds: f64,
    method: String,
}

/// Times one prior pass and one score evaluation of each of `kinds` at B = particles on exact
/// draws at the middle of the time grid (see the module notes).
fn time_samplers(
    plan: &RunPlan,
    problem: &Problem,
    omega: &[f64],
    kinds: &[SamplerKind],
) -> Result<Timing> {
    let settings = &plan.settings;
    let k = settings.particles;
    let grid = settings.grid();
    let middle = 0.5 * (grid.t_max + grid.t_min);
    let (levels, _) = recorded_levels(settings.integrator, &plan.schedule, &grid, &[middle]);
    let level = levels[0];
    let x = exact_draws(problem, omega, level, k, plan.config.seed);
    // The metrics' pass, once untimed to warm the engine up (thread pool, buffers), then timed.
    let prior_pass = || {
        problem
            .backend
            .weighted_means(&x, level.noise, &[WeightSet::Prior])
    };
    prior_pass()?;
    let started = Instant::now();
    prior_pass()?;
    let pass_seconds = started.elapsed().as_secs_f64();
    let clouds = settings.recorded_levels(&plan.schedule).0.len() + 1;
    let evaluations = settings.integrator.score_evaluations(settings.steps);
    let mut samplers = Vec::new();
    for &kind in kinds {
        let (seconds, passes) = time_one_evaluation(plan, problem, kind, &x, level)?;
        let score_evaluations = if kind == SamplerKind::Exact {
            0
        } else if kind.level_step(&plan.options).is_some() {
            // DAPS and DiffPIR: one level update per state of the walk (not Heun's 2 a step).
            settings.integrator.steps(settings.steps)
        } else {
            evaluations
        };
        let scoring_seconds = pass_seconds * clouds as f64;
        samplers.push(SamplerEstimate {
            name: kind.name().to_string(),
            score_evaluations,
            seconds_per_evaluation: seconds,
            passes_per_evaluation: passes,
            scoring_seconds,
            estimated_seconds: seconds * score_evaluations as f64 + scoring_seconds,
            note: (kind == SamplerKind::Tmpd).then(|| {
                "an upper bound: the timed step's conjugate gradients start cold, while a run \
                 warm-starts each step's from the previous one and needs fewer passes"
                    .to_string()
            }),
        });
    }
    // Without an exact sampler every time's exact cloud is drawn (at least 1000 particles)
    // and analysed once.
    let reference_seconds = if kinds.contains(&SamplerKind::Exact) {
        0.0
    } else {
        pass_seconds * clouds as f64 * (k.max(1000) as f64 / k as f64)
    };
    let method = format!(
        "one score evaluation of each sampler at B = {k} particles on exact posterior draws at \
         t = {:.3} (the middle of the time grid), timed on this engine, times the run's {} \
         evaluations; plus one prior pass at B = {k} (timed the same way after an untimed \
         warm-up pass, {:.3} s) per scored \
         cloud, {clouds} per sampler; setup and engine as measured here. A step's cost varies \
         along t (CG iterations, chunks skipped near t_min), so this is an estimate",
        level.t, evaluations, pass_seconds
    );
    Ok(Timing {
        samplers,
        clouds,
        reference_seconds,
        method,
    })
}

/// One score evaluation of `kind` on `x` at `level`: (seconds, engine passes); (0, 0) for the
/// exact sampler, which draws without the engine.
fn time_one_evaluation(
    plan: &RunPlan,
    problem: &Problem,
    kind: SamplerKind,
    x: &[f32],
    level: Level,
) -> Result<(f64, f64)> {
    let started = Instant::now();
    let passes = match kind {
        SamplerKind::Exact => return Ok((0.0, 0.0)),
        SamplerKind::Fsr => {
            let set = WeightSet::Biased(problem.posterior);
            tweedie_score(problem.backend, x, level.noise, set)?;
            1.0
        }
        walking if walking.level_step(&plan.options).is_some() => {
            // One level update: the prior pass, then the sampler's own work on the host.
            let mut step = walking
                .level_step(&plan.options)
                .expect("checked by the guard")
                .into_step();
            let ctx = Context {
                backend: problem.backend,
                operator: problem.operator,
                y: problem.y,
                sigma: problem.sigma,
            };
            let pass = problem
                .backend
                .weighted_means(x, level.noise, &[WeightSet::Prior])?;
            let mut next = x.to_vec();
            let mut rng = <rand_chacha::ChaCha8Rng as rand::SeedableRng>::seed_from_u64(0);
            // To the same level: the cost is that of any level's update.
            let (from, to) = (level.noise, level.noise);
            step.step(&ctx, &mut next, &pass.sets[0].means, from, to, &mut rng)?;
            1.0
        }
        approximate => {
            let mut likelihood = approximate
                .likelihood(&plan.options)
                .expect("every approximate sampler has a likelihood");
            let ctx = Context {
                backend: problem.backend,
                operator: problem.operator,
                y: problem.y,
                sigma: problem.sigma,
            };
            posterior_score(likelihood.as_mut(), &ctx, x, level.noise)?;
            1.0 + likelihood.passes() as f64
        }
    };
    Ok((started.elapsed().as_secs_f64(), passes))
}

/// `count` exact draws of p(x_t | y) at `level`: x = s a_i + √v ε, i ~ Cat(ω).
fn exact_draws(
    problem: &Problem,
    omega: &[f64],
    level: Level,
    count: usize,
    seed: u64,
) -> Vec<f32> {
    let d = problem.dim;
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x706c_616e);
    let picks = Exact::draw_atoms(omega, count, &mut rng);
    let (s, sd) = (level.noise.s, level.noise.v.sqrt());
    let mut x = Vec::with_capacity(count * d);
    for i in picks {
        for &a in &problem.atoms[i * d..(i + 1) * d] {
            let e: f64 = rng.sample(rand_distr::StandardNormal);
            x.push((s * f64::from(a) + sd * e) as f32);
        }
    }
    x
}

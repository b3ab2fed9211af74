//! Execute a run plan: set the problem up, build the engine, run every sampler on the same y
//! and seed, and score each recorded cloud against the exact posterior. No file is written
//! here: the [`Outcome`] holds the samples, clouds, metrics and timings, and
//! [`super::outputs`] writes them.

use std::time::Instant;

use super::Observer;
use super::classes::class_weights_of_samples;
use super::outcome::modes_summary;
pub use super::outcome::{Outcome, ProblemOutcome, SamplerId, SamplerOutcome};
use super::plan_report::posterior_warnings;
use super::setup::{Setup, setup};
use super::summary::{PruningSteps, SkippedSampler};
use crate::choices::Choice;
use crate::data::Dataset;
use crate::data::cache::AtomCache;
use crate::diagnostics::projection::Direction;
use crate::diagnostics::{Analysis, ExactCloudAt, ExactPosterior};
use crate::engine::Backend;
use crate::engine::logsumexp::softmax;
use crate::plan::{RunPlan, SamplerSelection};
use crate::report::plots::ProjectionSeries;
use crate::samplers::{Problem, Run, SamplerKind};
use crate::{Error, Result};

/// Runs `plan`: with a `cache`, the atoms and measured atoms come from it (bit for bit the
/// same as without).
pub fn execute(
    plan: &RunPlan,
    observer: &mut dyn Observer,
    cache: Option<&AtomCache>,
) -> Result<Outcome> {
    let started = Instant::now();
    let setup = setup(plan, observer, cache)?;
    let (kinds, skipped) = samplers_to_run(plan, &setup, observer);
    // Before any sampling: what this problem cannot show (a one-atom posterior, …).
    let warnings = posterior_warnings(plan, &softmax(&setup.log_likelihoods));
    for w in &warnings {
        observer.warning(w);
    }
    observer.stage("building the engine");
    let mut engine = crate::engine::create_pruned(
        plan.engine.backend,
        plan.engine.storage,
        plan.engine.devices,
        plan.prune,
        &setup.atoms,
    )?;
    let posterior = engine.add_bias(&setup.log_likelihoods)?;
    let engine: &dyn Backend = engine.as_ref();
    let problem = setup.problem(plan, engine, posterior);
    let omega = problem.posterior_weights();
    let exact_view = setup.exact_posterior(plan, &omega);
    let direction = Direction::new(&exact_view, plan.config.diagnostics.direction)?;
    let final_level = plan.settings.final_level(&plan.schedule);
    let mut scoring = Scoring {
        plan,
        atoms: &setup.atoms,
        problem: &problem,
        exact: &exact_view,
        direction: &direction,
        t_end: final_level.t,
        exact_clouds: ExactClouds::default(),
    };
    // The exact sampler runs first (it is cheap) so that every sampler's checkpoints are
    // compared with exact particles at the same times; its analyses are kept for its own
    // metrics, so each cloud costs one engine pass.
    let mut exact_done = if kinds.contains(&SamplerKind::Exact) {
        Some(scoring.run_exact(observer)?)
    } else {
        None
    };
    let mut samplers = Vec::new();
    for &kind in &kinds {
        let (run, wall, analyses, pruning) = match exact_done.take() {
            Some(done) if kind == SamplerKind::Exact => (done.0, done.1, Some(done.2), done.3),
            kept => {
                exact_done = kept;
                let (run, wall, pruning) = scoring.run_sampler(kind, observer)?;
                (run, wall, None, pruning)
            }
        };
        for w in &run.warnings {
            observer.warning(w);
        }
        observer.stage(&format!("metrics of {}", kind.name()));
        let mut scored = scoring.score_run(kind, run, wall, analyses)?;
        scored.pruning = pruning;
        samplers.push(scored);
    }
    let exact_projection = exact_projection(plan, &exact_view, &direction, &samplers);
    let modes = modes_summary(&exact_view);
    let atom_scale = exact_view.atom_scale;
    let backend = engine.describe();
    Ok(Outcome {
        problem: ProblemOutcome::new(started, setup, backend, omega, modes, atom_scale),
        direction,
        final_level,
        walked: plan.settings.integrator.steps(plan.settings.steps),
        samplers,
        skipped,
        exact_projection,
        external: None,
        warnings,
    })
}

/// The samplers of the plan; for [`SamplerSelection::EveryApplicable`] those that can use the
/// operator, the others returned with the reason.
pub(super) fn samplers_to_run(
    plan: &RunPlan,
    setup: &Setup,
    observer: &mut dyn Observer,
) -> (Vec<SamplerKind>, Vec<SkippedSampler>) {
    let listed = match &plan.samplers {
        SamplerSelection::Listed(kinds) | SamplerSelection::Chosen { kinds, .. } => {
            return (kinds.clone(), Vec::new());
        }
        SamplerSelection::EveryApplicable => SamplerKind::all(),
    };
    let mut kinds = Vec::new();
    let mut skipped = Vec::new();
    for kind in listed {
        match kind.check_operator(setup.operator.as_ref()) {
            Ok(()) => kinds.push(kind),
            Err(e) => {
                // The config key the error names is moot here: compare chose the sampler.
                let reason = match e {
                    Error::Config { problem, .. } => problem,
                    other => other.to_string(),
                };
                observer.warning(&format!("compare: skipping {}: {reason}", kind.name()));
                skipped.push(SkippedSampler {
                    name: kind.name().to_string(),
                    reason,
                });
            }
        }
    }
    (kinds, skipped)
}

/// Runs samplers and scores their clouds against the exact posterior of one problem.
struct Scoring<'a> {
    plan: &'a RunPlan,
    atoms: &'a Dataset,
    problem: &'a Problem<'a>,
    exact: &'a ExactPosterior<'a>,
    direction: &'a Direction,
    /// The time of the final samples.
    t_end: f64,
    exact_clouds: ExactClouds,
}

impl Scoring<'_> {
    /// Runs `kind` with progress to `observer`; the run, its wall time and, when the engine
    /// prunes, what pruning did in each step (read from the engine after every step).
    fn run_sampler(
        &self,
        kind: SamplerKind,
        observer: &mut dyn Observer,
    ) -> Result<(Run, f64, Option<PruningSteps>)> {
        let sampler = kind.build(&self.plan.options);
        let name = kind.name();
        observer.stage(&format!("sampler {name}"));
        let backend = self.problem.backend;
        let mut pruning = backend.take_pruning().map(|_| PruningSteps {
            atoms: backend.atoms(),
            ..Default::default()
        });
        let settings = &self.plan.settings;
        let grid = settings.grid();
        let continuous = !settings.integrator.is_discrete();
        let t0 = Instant::now();
        let run = sampler.sample(self.problem, settings, &mut |p| {
            if let (Some(steps), Some(c)) = (pruning.as_mut(), backend.take_pruning()) {
                let k = p.done.max(1) - 1;
                steps
                    .t
                    .push((continuous && kind != SamplerKind::Exact).then(|| grid.time(k)));
                steps.passes.push(c.passes);
                steps.atoms_visited.push(c.atoms_visited);
                steps.bound.push(c.max_bound);
                steps.nearest_checked.push(c.nearest_checked);
            }
            observer.progress(name, p)
        })?;
        Ok((run, t0.elapsed().as_secs_f64(), pruning))
    }

    /// Runs the exact sampler and keeps each of its clouds as the exact cloud at that time.
    #[allow(clippy::type_complexity)]
    fn run_exact(
        &mut self,
        observer: &mut dyn Observer,
    ) -> Result<(Run, f64, Vec<Analysis>, Option<PruningSteps>)> {
        let (run, wall, pruning) = self.run_sampler(SamplerKind::Exact, observer)?;
        let mut analyses = Vec::new();
        for (t, cloud) in clouds(&run, self.t_end) {
            let analysis = self.analyse(t, cloud)?;
            self.exact_clouds
                .by_time
                .push(self.exact.exact_cloud_from(t, cloud, &analysis, true));
            analyses.push(analysis);
        }
        Ok((run, wall, analyses, pruning))
    }

    /// One engine pass over a cloud at t: Tweedie means and nearest atoms.
    fn analyse(&self, t: f64, cloud: &[f32]) -> Result<Analysis> {
        // t = 0: the clean x̂_0 that DDPM/DDIM end with.
        self.exact.analyse_at(self.problem.backend, cloud, t)
    }

    /// Scores every cloud of `run` (checkpoints, then the final samples), reusing `analyses`
    /// where the run already has them (the exact sampler's).
    fn score_run(
        &mut self,
        kind: SamplerKind,
        run: Run,
        wall_seconds: f64,
        analyses: Option<Vec<Analysis>>,
    ) -> Result<SamplerOutcome> {
        let recorded = clouds(&run, self.t_end);
        let projection = ProjectionSeries {
            times: recorded.iter().map(|&(t, _)| t).collect(),
            values: recorded
                .iter()
                .map(|&(_, cloud)| self.direction.project(cloud))
                .collect(),
        };
        let mut analyses = analyses.map(|a| a.into_iter());
        let mut checkpoints = Vec::new();
        let mut last = None;
        let count = self.plan.settings.particles.max(1000);
        for (t, cloud) in recorded {
            let analysis = match analyses.as_mut().and_then(|a| a.next()) {
                Some(a) => a,
                None => self.analyse(t, cloud)?,
            };
            let exact = self
                .exact_clouds
                .at(self.exact, self.problem.backend, t, count)?;
            checkpoints.push(self.exact.metrics(t, cloud, &analysis, exact));
            last = Some(analysis);
        }
        let metrics = checkpoints.pop().expect("clouds always end with t_min");
        let last = last.expect("clouds always end with t_min");
        let nearest: Vec<usize> = last.nearest.iter().map(|n| n.index).collect();
        Ok(SamplerOutcome {
            sampler: SamplerId::BuiltIn(kind),
            classes: class_weights_of_samples(self.atoms, &nearest),
            pruning: None,
            run,
            wall_seconds,
            denoised: last.denoised,
            projection,
            checkpoints,
            metrics,
        })
    }
}

/// The heatmap's exact panel: the exact sampler's projections, or fresh exact draws at the
/// first sampler's times when the run has no exact sampler.
fn exact_projection(
    plan: &RunPlan,
    exact: &ExactPosterior,
    direction: &Direction,
    samplers: &[SamplerOutcome],
) -> Option<(String, ProjectionSeries)> {
    if let Some(s) = samplers.iter().find(|s| s.sampler.is_exact()) {
        return Some(("exact".to_string(), s.projection.clone()));
    }
    let first = &samplers.first()?.projection;
    let k = plan.settings.particles;
    let values = first
        .times
        .iter()
        .map(|&t| {
            let noise = plan.schedule.noise(t);
            let seed = plan.config.seed ^ t.to_bits() ^ 0x0068_6561_746d_6170;
            direction.project(&exact.draw(noise, k, seed))
        })
        .collect();
    Some((
        "exact (drawn)".to_string(),
        ProjectionSeries {
            times: first.times.clone(),
            values,
        },
    ))
}

/// A run's clouds in time order: its checkpoint snapshots, then the final samples at `t_end`
/// (t_min, or 0 for a discrete integrator, whose last step returns x̂_0).
fn clouds(run: &Run, t_end: f64) -> Vec<(f64, &[f32])> {
    run.snapshots
        .iter()
        .map(|snap| (snap.t, snap.particles.as_slice()))
        .chain(std::iter::once((t_end, run.samples.as_slice())))
        .collect()
}

/// The exact posterior's own clouds by time: from the exact run where it recorded that time,
/// else drawn on first use.
#[derive(Default)]
struct ExactClouds {
    by_time: Vec<ExactCloudAt>,
}

impl ExactClouds {
    fn at(
        &mut self,
        exact: &ExactPosterior,
        backend: &dyn Backend,
        t: f64,
        count: usize,
    ) -> Result<&ExactCloudAt> {
        // Every sampler snaps its checkpoints to the same grid, so equal times are equal bits;
        // the tolerance only absorbs a t_min written differently.
        let found = self
            .by_time
            .iter()
            .position(|r| (r.t - t).abs() <= 1e-12 * t.abs().max(1.0));
        let i = match found {
            Some(i) => i,
            None => {
                self.by_time
                    .push(exact.exact_cloud_drawn(backend, t, count)?);
                self.by_time.len() - 1
            }
        };
        Ok(&self.by_time[i])
    }
}

//! `fslens diagnose --trajectory`: another program's clouds recorded at several times, scored
//! against the exact posterior of a config's measurement at each of those times, into the
//! folder and report of a run.
//!
//! The config fixes the atoms, the truth, the operator and y as `fslens run` would (same seed,
//! same y). Each cloud x_t is scored as a run scores a checkpoint
//! ([`ExactPosterior::score_cloud`]: one analysis pass at t, and a fresh exact cloud of
//! max(K, [`EXACT_DRAWS`]) draws at t for q99(t) and the exact particles' mode weights; t = 0
//! scores clean samples as `--samples` does). Beside it sits an `exact` row: K fresh exact
//! draws x_t = s(t) a_i + √v(t) ε, i ~ Cat(ω), at each of the same times, scored the same way,
//! so the report shows the exact posterior at every t as a run shows its exact sampler. Both
//! rows are built into the outcome of a run (the clouds at the smallest t are the final
//! samples, the others the checkpoints) and written by [`super::outputs::write_run`].

use std::path::PathBuf;
use std::time::Instant;

use super::Observer;
use super::classes::class_weights_of_samples;
use super::diagnose::{EXACT_DRAWS, PixelConvention, check_label};
use super::outcome::{Outcome, ProblemOutcome, SamplerId, SamplerOutcome, modes_summary};
use super::summary::{ExternalSource, Summary};
use super::trajectory::{Trajectory, check_pixels, load_trajectory, read_times};
use crate::Result;
use crate::data::Dataset;
use crate::diagnostics::ExactPosterior;
use crate::diagnostics::projection::Direction;
use crate::diffusion::integrate::{Level, Snapshot};
use crate::engine::Backend;
use crate::output::{Destination, OutputDir};
use crate::plan::RunPlan;
use crate::report::plots::ProjectionSeries;
use crate::samplers::{Progress, Run, SamplerKind};

/// What `fslens diagnose --trajectory` is asked to do (the config's plan gives the problem
/// and the engine).
#[derive(Clone, Debug)]
pub struct TrajectoryRequest {
    /// X.npy: the clouds, (T, K, D), (T, K, H, W, C) or (T, K, H, W).
    pub clouds: PathBuf,
    /// T.npy: the T times of the clouds, in the order of X's first axis.
    pub times: PathBuf,
    /// `--pixels`: only minus-one-to-one (or none) is accepted ([`check_pixels`]).
    pub pixels: Option<PixelConvention>,
    /// The name the clouds are listed under (samples_<label>.npy, projections_<label>.npy …).
    pub label: String,
    /// Output folder (staged, put in place when complete; see [`crate::output`]).
    pub out: Destination,
}

/// Scores the trajectory of `req` against the exact posterior of `plan`'s measurement and
/// writes the output folder (see the module notes). Nothing is written when the input is
/// rejected.
pub fn diagnose_trajectory(
    plan: &RunPlan,
    req: &TrajectoryRequest,
    observer: &mut dyn Observer,
) -> Result<(PathBuf, Summary)> {
    check_label(&req.label)?;
    check_pixels(req.pixels)?;
    let plan = plan.clone().exact_only();
    // Refuse the output folder before the work, not after it.
    let mut inputs = plan.input_files();
    inputs.extend([req.clouds.clone(), req.times.clone()]);
    let staging = OutputDir::create(&req.out.clone().inputs(inputs))?;
    let outcome = score_trajectory(&plan, req, observer)?;
    observer.stage("writing the output");
    let summary = super::outputs::write_run(staging.path(), &plan, &outcome)?;
    let path = staging.finish()?;
    Ok((path, summary))
}

/// Reads the trajectory and scores it, and fresh exact draws at the same times, into the
/// outcome of a run.
pub fn score_trajectory(
    plan: &RunPlan,
    req: &TrajectoryRequest,
    observer: &mut dyn Observer,
) -> Result<Outcome> {
    let started = Instant::now();
    // The times need no data: a bad times file fails before the data set loads.
    let file_times = read_times(&req.times, &plan.schedule)?;
    let setup = super::setup::setup(plan, observer, None)?;
    observer.stage("reading the trajectory");
    let trajectory = load_trajectory(
        &req.clouds,
        &req.times,
        &file_times,
        setup.atoms.shape,
        &plan.schedule,
    )?;
    observer.stage("building the engine");
    let engine = crate::engine::create(
        plan.engine.backend,
        plan.engine.storage,
        plan.engine.devices,
        &setup.atoms,
    )?;
    let omega = crate::engine::logsumexp::softmax(&setup.log_likelihoods);
    let exact = setup.exact_posterior(plan, &omega);
    let direction = Direction::new(&exact, plan.config.diagnostics.direction)?;
    let scorer = SeriesScorer {
        exact: &exact,
        backend: engine.as_ref(),
        atoms: &setup.atoms,
        direction: &direction,
        times: &trajectory.times,
        exact_draws: trajectory.count.max(EXACT_DRAWS),
    };
    let t0 = Instant::now();
    let exact_clouds = trajectory
        .times
        .iter()
        .map(|&t| {
            exact.draw(
                plan.schedule.noise(t),
                trajectory.count,
                exact_row_seed(plan, t),
            )
        })
        .collect();
    let drawn = t0.elapsed().as_secs_f64();
    let exact_row = scorer.score(
        SamplerId::BuiltIn(SamplerKind::Exact),
        exact_clouds,
        drawn,
        observer,
    )?;
    let source = external_source(req, &trajectory);
    let label = SamplerId::External(req.label.clone());
    let external = scorer.score(label, trajectory.clouds, f64::NAN, observer)?;
    let t_final = *trajectory.times.last().expect("a trajectory has a time");
    let modes = modes_summary(&exact);
    let atom_scale = exact.atom_scale;
    let backend = engine.describe();
    let exact_projection = Some(("exact".to_string(), exact_row.projection.clone()));
    let warnings = super::plan_report::posterior_warnings(plan, &omega);
    Ok(Outcome {
        problem: ProblemOutcome::new(started, setup, backend, omega, modes, atom_scale),
        direction,
        final_level: Level {
            t: t_final,
            noise: plan.schedule.noise(t_final),
        },
        walked: 0,
        samplers: vec![exact_row, external],
        skipped: Vec::new(),
        exact_projection,
        external: Some(source),
        warnings,
    })
}

/// The seed of the exact row's draws at t: apart from the seeds of the exact clouds that
/// [`ExactPosterior::score_cloud`] draws as references, so that the row is an independent
/// sample of the same law.
fn exact_row_seed(plan: &RunPlan, t: f64) -> u64 {
    plan.config.seed ^ t.to_bits() ^ 0x6578_6163_7472_6f77
}

/// summary.json's `external` block for a trajectory.
fn external_source(req: &TrajectoryRequest, trajectory: &Trajectory) -> ExternalSource {
    ExternalSource {
        path: req.clouds.display().to_string(),
        format: trajectory.format.clone(),
        pixels: PixelConvention::MinusOneToOne.name().to_string(),
        label: req.label.clone(),
        note: "a trajectory: each cloud is the sampler's state x_t = s(t) x_0 + √v(t) ε on \
               the [-1, 1] scale, scored at its time from the times file as a run scores a \
               checkpoint (t = 0 as clean samples: nearest atom argmin_i ‖x − a_i‖, the \
               *_denoised fields are the samples' own); the cloud at the smallest time is the \
               final samples (`metrics`), the others are `checkpoints`; the exact row is fresh \
               exact draws at the same times; wall_seconds of the external sampler is unknown \
               (null)"
            .to_string(),
        times_path: Some(req.times.display().to_string()),
        times: Some(trajectory.times.clone()),
    }
}

/// Scores series of clouds at the trajectory's times (decreasing) against one exact
/// posterior.
struct SeriesScorer<'a> {
    exact: &'a ExactPosterior<'a>,
    backend: &'a dyn Backend,
    atoms: &'a Dataset,
    direction: &'a Direction,
    times: &'a [f64],
    /// Fresh exact draws behind q99(t) and the exact particles' mode weights at each t.
    exact_draws: usize,
}

impl SeriesScorer<'_> {
    /// One sampler's clouds (one per time, in the order of `times`) scored as a run scores
    /// its checkpoints: the last cloud is the final samples (their metrics, Tweedie means and
    /// classes), the others the checkpoints.
    fn score(
        &self,
        sampler: SamplerId,
        mut clouds: Vec<Vec<f32>>,
        wall_seconds: f64,
        observer: &mut dyn Observer,
    ) -> Result<SamplerOutcome> {
        let name = sampler.name().to_string();
        observer.stage(&format!("scoring {name} at {} times", self.times.len()));
        let total = self.times.len();
        let mut checkpoints = Vec::with_capacity(total);
        let mut last = None;
        for (i, (&t, cloud)) in self.times.iter().zip(&clouds).enumerate() {
            let (metrics, analysis) =
                self.exact
                    .score_cloud_analysed(self.backend, t, cloud, self.exact_draws)?;
            checkpoints.push(metrics);
            last = Some(analysis);
            observer.progress(&name, Progress { done: i + 1, total });
        }
        let metrics = checkpoints.pop().expect("a trajectory has a time");
        let last = last.expect("a trajectory has a time");
        let projection = ProjectionSeries {
            times: self.times.to_vec(),
            values: clouds.iter().map(|c| self.direction.project(c)).collect(),
        };
        let samples = clouds.pop().expect("a trajectory has a time");
        let snapshots = self
            .times
            .iter()
            .zip(clouds)
            .map(|(&t, particles)| Snapshot { t, particles })
            .collect();
        let nearest: Vec<usize> = last.nearest.iter().map(|n| n.index).collect();
        Ok(SamplerOutcome {
            sampler,
            run: Run {
                samples,
                snapshots,
                passes_per_step: 0.0,
                diagnostics: Vec::new(),
                warnings: Vec::new(),
            },
            wall_seconds,
            denoised: last.denoised,
            projection,
            checkpoints,
            metrics,
            classes: class_weights_of_samples(self.atoms, &nearest),
            pruning: None,
        })
    }
}

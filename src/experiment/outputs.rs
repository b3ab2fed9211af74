//! The output folder of `run`, `compare` and `diagnose` (README: "Output folder"): the
//! samples and clouds as .npy, the pictures, metrics.json, config.toml, report.html and
//! summary.json, written from an outcome into a staged folder (the caller renames it into
//! place when this returns Ok). summary.json comes last: a folder with it is complete.

use std::collections::BTreeMap;
use std::path::Path;

use super::classes::{named_weights, top_atom_summary, top_atoms};
use super::outcome::{Diagnosis, Outcome, ProblemOutcome, SamplerOutcome};
use super::page::run_page;
use super::setup::Setup;
use super::summary::{
    DatasetSummary, MeasurementSummary, MetricsFile, ModesSummary, SamplerMetrics, SamplerSummary,
    Summary,
};
use crate::arrays::write_npy_f32;
use crate::data::ImageShape;
use crate::diagnostics::image_quality::ssim_window;
use crate::diagnostics::{
    LIKELIHOOD_HALLUCINATION_RULE, OFF_SUPPORT_MARGIN, OFF_SUPPORT_QUANTILE, OFF_SUPPORT_RULE,
    total_variation,
};
use crate::output::write_atomic;
use crate::plan::RunPlan;
use crate::report::images::{default_scale, save_grid};
use crate::{Error, Result};

/// At most this many full checkpoint clouds (K × D each) are written per sampler; the
/// projections and metrics cover every checkpoint.
pub const FULL_CHECKPOINTS: usize = 8;

/// Writes the folder of a run, a compare or a diagnosed trajectory (an outcome with
/// `external` set) into `dir`; returns its summary.
pub fn write_run(dir: &Path, plan: &RunPlan, outcome: &Outcome) -> Result<Summary> {
    let problem = &outcome.problem;
    let setup = &problem.setup;
    let d = setup.atoms.dim();
    let u: Vec<f32> = outcome.direction.u.iter().map(|&v| v as f32).collect();
    write_npy_f32(&dir.join("projection_direction.npy"), &[d], &u)?;
    let mut rows = Vec::new();
    let mut metrics = BTreeMap::new();
    for s in &outcome.samplers {
        rows.push(write_sampler(dir, plan, outcome, s)?);
        metrics.insert(
            s.sampler.name().to_string(),
            SamplerMetrics {
                metrics: s.metrics.clone(),
                checkpoints: s.checkpoints.clone(),
            },
        );
    }
    let mut summary = write_problem(dir, problem, metrics)?;
    summary.samplers = rows;
    summary.projection_direction = outcome.direction.label.clone();
    summary.skipped_samplers = outcome.skipped.clone();
    summary.external = outcome.external.clone();
    summary.warnings = outcome.warnings.clone();
    summary.total_seconds = problem.started.elapsed().as_secs_f64();
    // config.toml records the built-in samplers that ran (compare chose them).
    let mut config = plan.config.clone();
    config.sampling.samplers = outcome
        .samplers
        .iter()
        .filter_map(|s| s.sampler.kind())
        .collect();
    let config_toml = write_config(dir, &config)?;
    let projections: Vec<_> = outcome
        .samplers
        .iter()
        .map(|s| (s.sampler.name().to_string(), s.projection.clone()))
        .collect();
    let command = match &outcome.external {
        Some(_) => "fslens diagnose",
        None if plan.samplers.is_compare() => "fslens compare",
        None => "fslens run",
    };
    let page = run_page(
        &summary,
        &config_toml,
        &projections,
        outcome
            .exact_projection
            .as_ref()
            .map(|(n, p)| (n.as_str(), p)),
        dir,
        command,
        true,
    )?;
    write_report_and_summary(dir, &page, &summary)?;
    Ok(summary)
}

/// One sampler's files (samples, Tweedie means, full checkpoint clouds, projections, grid)
/// and its summary row.
fn write_sampler(
    dir: &Path,
    plan: &RunPlan,
    outcome: &Outcome,
    s: &SamplerOutcome,
) -> Result<SamplerSummary> {
    let name = s.sampler.name();
    let problem = &outcome.problem;
    let shape = problem.shape();
    let d = shape.dim();
    let run = &s.run;
    let k = run.samples.len() / d;
    write_cloud(dir, name, &run.samples, shape)?;
    write_npy_f32(
        &dir.join(format!("denoised_{name}.npy")),
        &[k, d],
        &s.denoised,
    )?;
    let checkpoint_times: Vec<f64> = run.snapshots.iter().map(|snap| snap.t).collect();
    let full = spread_in_log_time(&checkpoint_times, FULL_CHECKPOINTS);
    if !full.is_empty() {
        let cloud: Vec<f32> = full
            .iter()
            .flat_map(|&i| run.snapshots[i].particles.iter().copied())
            .collect();
        write_npy_f32(
            &dir.join(format!("checkpoints_{name}.npy")),
            &[full.len(), k, d],
            &cloud,
        )?;
    }
    let flat: Vec<f32> = s.projection.values.iter().flatten().copied().collect();
    write_npy_f32(
        &dir.join(format!("projections_{name}.npy")),
        &[s.projection.times.len(), k],
        &flat,
    )?;
    // Only samplers fslens integrated have steps: exact draws directly, and an external
    // sampler's steps are unknown.
    let integrated = s.sampler.integrated();
    let walked = outcome.walked;
    let mut row = clean_row(name, k, problem, s.classes.clone(), &s.metrics);
    row.wall_seconds = s.wall_seconds;
    row.steps = if integrated { walked } else { 0 };
    row.seconds_per_step = integrated.then(|| s.wall_seconds / walked as f64);
    row.integrator = integrated.then_some(plan.settings.integrator);
    row.final_time = outcome.final_level.t;
    row.final_noise_variance = outcome.final_level.noise.v;
    row.passes_per_step = run.passes_per_step;
    row.pruning = s.pruning.clone();
    row.full_checkpoint_times = full.iter().map(|&i| checkpoint_times[i]).collect();
    row.checkpoint_times = checkpoint_times;
    row.projection_times = s.projection.times.clone();
    row.diagnostics = run.diagnostics.iter().cloned().collect();
    row.warnings = run.warnings.clone();
    row.checkpoints = s.checkpoints.clone();
    let mut records = s.checkpoints.clone();
    records.push(s.metrics.clone());
    row.flags = super::flags::sampler_flags(name, &records);
    Ok(row)
}

/// Writes the folder of `fslens diagnose` into `dir`; returns its summary.
pub fn write_diagnosis(dir: &Path, plan: &RunPlan, diagnosis: &Diagnosis) -> Result<Summary> {
    let problem = &diagnosis.problem;
    let mut rows = Vec::new();
    let mut metrics = BTreeMap::new();
    for cloud in &diagnosis.clouds {
        let count = cloud.pixels.len() / problem.shape().dim();
        write_cloud(dir, &cloud.name, &cloud.pixels, problem.shape())?;
        let mut row = clean_row(
            &cloud.name,
            count,
            problem,
            cloud.classes.clone(),
            &cloud.metrics,
        );
        // Unknown for samples made elsewhere (written as null); the exact draws take no time
        // worth reporting.
        row.wall_seconds = if cloud.name == "exact" { 0.0 } else { f64::NAN };
        rows.push(row);
        metrics.insert(
            cloud.name.clone(),
            SamplerMetrics {
                metrics: cloud.metrics.clone(),
                checkpoints: Vec::new(),
            },
        );
    }
    let mut summary = write_problem(dir, problem, metrics)?;
    summary.samplers = rows;
    summary.external = Some(diagnosis.source.clone());
    summary.warnings = diagnosis.warnings.clone();
    summary.total_seconds = problem.started.elapsed().as_secs_f64();
    let config_toml = write_config(dir, &plan.config)?;
    let page = run_page(
        &summary,
        &config_toml,
        &[],
        None,
        dir,
        "fslens diagnose",
        false,
    )?;
    write_report_and_summary(dir, &page, &summary)?;
    Ok(summary)
}

/// samples_<name>.npy (K × D) and grid_<name>.png (the first 64).
fn write_cloud(dir: &Path, name: &str, cloud: &[f32], shape: ImageShape) -> Result<()> {
    let d = shape.dim();
    let count = cloud.len() / d;
    write_npy_f32(&dir.join(format!("samples_{name}.npy")), &[count, d], cloud)?;
    let shown = count.min(64);
    save_grid(
        &dir.join(format!("grid_{name}.png")),
        &cloud[..shown * d],
        shape,
        8,
        default_scale(shape),
    )
}

/// A summary row for a cloud with no time course (scored clean samples; the fields of a
/// sampler run are filled in by [`write_sampler`]).
fn clean_row(
    name: &str,
    count: usize,
    problem: &ProblemOutcome,
    classes: Option<Vec<f64>>,
    metrics: &crate::diagnostics::CheckpointMetrics,
) -> SamplerSummary {
    let tv = match (&problem.exact_classes, &classes) {
        (Some(e), Some(c)) => Some(total_variation(e, c)),
        _ => None,
    };
    SamplerSummary {
        name: name.to_string(),
        wall_seconds: 0.0,
        particles: count,
        steps: 0,
        seconds_per_step: None,
        passes_per_step: 0.0,
        pruning: None,
        integrator: None,
        final_time: 0.0,
        final_noise_variance: 0.0,
        checkpoint_times: Vec::new(),
        full_checkpoint_times: Vec::new(),
        projection_times: Vec::new(),
        class_weights: classes.map(|c| named_weights(&problem.setup.atoms, &c)),
        class_tv_to_exact: tv,
        diagnostics: Default::default(),
        warnings: Vec::new(),
        metrics: metrics.clone(),
        checkpoints: Vec::new(),
        flags: super::flags::sampler_flags(name, std::slice::from_ref(metrics)),
    }
}

/// Writes the pictures of the problem and metrics.json; returns the summary's description of
/// the problem and the exact posterior (no sampler rows yet).
fn write_problem(
    dir: &Path,
    problem: &ProblemOutcome,
    metrics: BTreeMap<String, SamplerMetrics>,
) -> Result<Summary> {
    let setup = &problem.setup;
    let omega = &problem.omega;
    let top = write_problem_images(dir, setup, omega)?;
    write_metrics(
        dir,
        &problem.modes,
        problem.shape(),
        problem.atom_scale,
        metrics,
    )?;
    Ok(Summary {
        fslens_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: problem.backend.clone(),
        dataset: DatasetSummary::of(&setup.atoms),
        measurement: MeasurementSummary::of(setup),
        exact_effective_atoms: 1.0 / omega.iter().map(|w| w * w).sum::<f64>(),
        exact_top_atoms: top_atom_summary(&setup.atoms, &top),
        exact_class_weights: problem
            .exact_classes
            .as_ref()
            .map(|c| named_weights(&setup.atoms, c)),
        modes: problem.modes.clone(),
        samplers: Vec::new(),
        projection_direction: String::new(),
        skipped_samplers: Vec::new(),
        total_seconds: 0.0,
        external: None,
        warnings: Vec::new(),
        ranks: crate::engine::ranks::layout(setup.atoms.len()),
    })
}

/// Writes truth.png, measurement.png (where the operator has a view of y) and
/// exact_top_atoms.png into `dir`; returns the ten heaviest atoms (index, ω_i).
fn write_problem_images(dir: &Path, setup: &Setup, omega: &[f64]) -> Result<Vec<(usize, f64)>> {
    let shape = setup.atoms.shape;
    let scale = default_scale(shape);
    // A measured y has no truth: no truth.png (the report says so in its place).
    if let Some(truth) = &setup.truth {
        save_grid(&dir.join("truth.png"), truth, shape, 1, scale)?;
    }
    if let Some(view) = setup.operator.view(&setup.y) {
        save_grid(
            &dir.join("measurement.png"),
            &view.pixels,
            view.shape,
            1,
            default_scale(view.shape),
        )?;
    }
    let top = top_atoms(omega, 10);
    let top_pixels: Vec<f32> = top
        .iter()
        .flat_map(|&(i, _)| setup.atoms.image(i).iter().copied())
        .collect();
    save_grid(
        &dir.join("exact_top_atoms.png"),
        &top_pixels,
        shape,
        10,
        scale,
    )?;
    Ok(top)
}

/// Writes metrics.json into `dir`: the modes, how SSIM and off-support are measured, and every
/// sampler's records.
fn write_metrics(
    dir: &Path,
    modes: &ModesSummary,
    shape: ImageShape,
    atom_scale: f64,
    samplers: BTreeMap<String, SamplerMetrics>,
) -> Result<()> {
    let metrics_file = MetricsFile {
        modes: modes.clone(),
        ssim: format!(
            "mean SSIM, {w}x{w} uniform window, sample covariances, K1 = 0.01, K2 = 0.03, \
             data range 2 (pixels in [-1, 1]), per channel",
            w = ssim_window(shape)
        ),
        off_support_quantile: OFF_SUPPORT_QUANTILE,
        off_support_rule: OFF_SUPPORT_RULE.to_string(),
        atom_scale,
        off_support_margin: OFF_SUPPORT_MARGIN,
        likelihood_hallucination_rule: LIKELIHOOD_HALLUCINATION_RULE.to_string(),
        samplers,
    };
    write_atomic(
        &dir.join("metrics.json"),
        serde_json::to_string_pretty(&metrics_file)
            .expect("metrics serialise")
            .as_bytes(),
    )
}

/// Writes config.toml (the resolved config) and returns its text.
fn write_config(dir: &Path, config: &crate::config::RunConfig) -> Result<String> {
    let text = config.to_toml();
    std::fs::write(dir.join("config.toml"), &text)
        .map_err(|e| Error::io(dir.join("config.toml"), e))?;
    Ok(text)
}

/// Writes report.html and summary.json, the last files of a finished output folder.
fn write_report_and_summary(
    dir: &Path,
    report: &crate::report::html::ReportPage,
    summary: &Summary,
) -> Result<()> {
    write_atomic(
        &dir.join("report.html"),
        crate::report::html::render(report).as_bytes(),
    )?;
    write_atomic(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(summary)
            .expect("summary serialises")
            .as_bytes(),
    )
}

/// Indices of at most `count` of `times` (decreasing) spread evenly in log t: the nearest
/// index to each of `count` log-spaced targets between the first and last time, deduplicated.
/// All of them when there are no more than `count`.
pub fn spread_in_log_time(times: &[f64], count: usize) -> Vec<usize> {
    if times.len() <= count {
        return (0..times.len()).collect();
    }
    if count == 0 {
        return Vec::new();
    }
    let logs: Vec<f64> = times
        .iter()
        .map(|t| t.max(f64::MIN_POSITIVE).ln())
        .collect();
    let (first, last) = (logs[0], logs[logs.len() - 1]);
    let mut picked: Vec<usize> = (0..count)
        .map(|j| {
            let target = if count == 1 {
                last
            } else {
                first + (last - first) * j as f64 / (count - 1) as f64
            };
            (0..logs.len())
                .min_by(|&a, &b| {
                    (logs[a] - target)
                        .abs()
                        .total_cmp(&(logs[b] - target).abs())
                })
                .expect("times is not empty")
        })
        .collect();
    picked.sort_unstable();
    picked.dedup();
    picked
}

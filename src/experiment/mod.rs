//! One run of the finite-sample lens, from a config to a finished output folder:
//! load the atoms, hold out the truth, measure it, build the engine, run every sampler on the
//! same y and seed, and write what they produced (README: "Output folder").

mod cache_keys;
pub mod diagnose;
pub mod page;
pub mod score;
pub mod summary;

use std::path::{Path, PathBuf};
use std::time::Instant;

use rand::{Rng, SeedableRng};

use crate::arrays::write_npy_f32;
use crate::config::RunConfig;
use crate::data::cache::{AtomCache, Lookup};
use crate::data::{Dataset, ImageShape};
use crate::diagnostics::image_quality::ssim_window;
use crate::diagnostics::projection::{Direction, DirectionSpec};
use crate::diagnostics::{
    Analysis, ExactPosterior, OFF_SUPPORT_MARGIN, OFF_SUPPORT_QUANTILE, OFF_SUPPORT_RULE,
    ReferenceAt,
};
use crate::engine::Backend;
use crate::operators::{self, Operator};
use crate::report::images::{default_scale, save_grid};
use crate::report::output::OutputDir;
use crate::report::plots::ProjectionSeries;
use crate::samplers::{self, Problem, Progress};
use crate::{Error, Result};
use summary::{
    ClassWeight, DatasetSummary, MeasurementSummary, MetricsFile, ModesSummary, SamplerMetrics,
    SamplerSummary, SkippedSampler, Summary, TopAtom,
};

/// At most this many full checkpoint clouds (K × D each) are written per sampler; the
/// projections and metrics cover every checkpoint.
pub const FULL_CHECKPOINTS: usize = 8;

/// What a run tells the person watching it; the CLI turns it into a progress bar or JSON.
pub trait Observer {
    /// A stage began (loading data, measuring atoms, running a sampler…).
    fn stage(&mut self, _message: &str) {}
    /// A sampler made progress.
    fn progress(&mut self, _sampler: &str, _progress: Progress) {}
    /// Something the user must hear about (a solve that did not converge, …); also written
    /// to summary.json.
    fn warning(&mut self, _message: &str) {}
}

/// An observer that ignores everything (tests, library use).
pub struct Silent;
impl Observer for Silent {}

/// The measurement problem before any sampler runs.
pub struct Setup {
    pub atoms: Dataset,
    pub truth: Vec<f32>,
    pub truth_label: Option<u32>,
    /// Where the truth came from, for the summary (`held-out image 3 of …` or a path).
    pub truth_source: String,
    pub operator: Box<dyn Operator>,
    pub y: Vec<f32>,
    /// b_i = log p(y | a_i) for every atom, float64.
    pub log_likelihoods: Vec<f64>,
}

/// Loads the data, picks the truth, builds the operator and draws y = A(x) + σ ε.
pub fn setup(cfg: &RunConfig, base_dir: &Path, observer: &mut dyn Observer) -> Result<Setup> {
    setup_cached(cfg, base_dir, observer, None)
}

/// [`setup`], taking the loaded data set and the measured atoms from `cache` when it holds
/// them (and storing them there when not). The results are bit for bit those of [`setup`].
pub fn setup_cached(
    cfg: &RunConfig,
    base_dir: &Path,
    observer: &mut dyn Observer,
    cache: Option<&AtomCache>,
) -> Result<Setup> {
    observer.stage("loading data");
    let load = || crate::data::spec::load(&cfg.data, base_dir);
    let (dataset, data_key) = match cache {
        None => (load()?, String::new()),
        Some(c) => {
            let key = cache_keys::dataset(&cfg.data, base_dir);
            let (ds, how) = c.dataset(&key, load)?;
            report_lookup(observer, c, "dataset", &key, &how);
            (ds, key)
        }
    };
    let shape = dataset.shape;
    let (atoms, truth, truth_label, truth_source) = if let Some(file) = &cfg.truth.file {
        let path = if file.is_absolute() {
            file.clone()
        } else {
            base_dir.join(file)
        };
        let truth = crate::data::image_file::load(&path, shape)?;
        (dataset, truth, None, path.display().to_string())
    } else if cfg.truth.in_atoms {
        let i = cfg.truth.index;
        if i >= dataset.len() {
            return Err(Error::config(
                "truth.index",
                format!("is {i} but the data set has {} images", dataset.len()),
            ));
        }
        let label = dataset.labels.as_ref().map(|l| l[i]);
        let truth = dataset.image(i).to_vec();
        (
            dataset,
            truth,
            label,
            format!("atom {i} (kept among the atoms)"),
        )
    } else {
        if cfg.truth.held_out >= dataset.len() {
            return Err(Error::config(
                "truth.held_out",
                format!(
                    "holds out {} of only {} images; hold out fewer",
                    cfg.truth.held_out,
                    dataset.len()
                ),
            ));
        }
        let (train, held) = crate::data::split::hold_out(&dataset, cfg.truth.held_out, cfg.seed)?;
        let i = cfg.truth.index;
        let label = held.labels.as_ref().map(|l| l[i]);
        (
            train,
            held.image(i).to_vec(),
            label,
            format!("held-out image {i} of {}", held.len()),
        )
    };
    if atoms.is_empty() {
        return Err(Error::config("data", "the atom set is empty"));
    }
    let operator = operators::parse(&cfg.measurement.operator, shape, base_dir)
        .map_err(|e| rename_key(e, "measurement.operator"))?;
    // ΠGDM/TMPD with a nonlinear operator: refuse before measuring atoms or building engines.
    let options = cfg.sampler_options();
    for name in &cfg.sampling.samplers {
        samplers::by_name_with(name, &options)?.check_operator(operator.as_ref())?;
    }
    let m = operator.output_len();
    let mut y = vec![0.0f32; m];
    operator.forward(&truth, &mut y);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(cfg.seed ^ 0x6d65_6173_7572_6521);
    for yi in y.iter_mut() {
        let e: f64 = rng.sample(rand_distr::StandardNormal);
        *yi = (*yi as f64 + cfg.measurement.sigma * e) as f32;
    }
    observer.stage(&format!("measuring {} atoms", atoms.len()));
    let measure = || Ok(operators::measure_atoms(operator.as_ref(), &atoms.images));
    let measured = match cache {
        None => measure()?,
        Some(c) => {
            let key = cache_keys::measured(&data_key, cfg, base_dir);
            let (measured, how) = c.matrix("measured", &key, atoms.len(), m, measure)?;
            report_lookup(observer, c, "measured", &key, &how);
            measured
        }
    };
    let log_likelihoods = operators::log_likelihoods(&measured, &y, cfg.measurement.sigma)?;
    Ok(Setup {
        atoms,
        truth,
        truth_label,
        truth_source,
        operator,
        y,
        log_likelihoods,
    })
}

fn report_lookup(
    observer: &mut dyn Observer,
    cache: &AtomCache,
    kind: &str,
    key: &str,
    how: &Lookup,
) {
    match how {
        Lookup::Hit => observer.stage(&format!("{kind} atoms from the cache")),
        Lookup::Miss => {}
        Lookup::Rebuilt(why) => observer.warning(&format!(
            "cache entry {} was not used ({why}); rebuilt it",
            cache.entry_path(kind, key).display()
        )),
    }
}

fn rename_key(e: Error, key: &str) -> Error {
    match e {
        Error::Config { key: k, problem } if k == "operator" => Error::config(key, problem),
        other => other,
    }
}

/// Runs `cfg` and writes the output folder `out` (staged, renamed into place when complete).
/// `backend` overrides the config's backend when given.
pub fn run(
    cfg: &RunConfig,
    base_dir: &Path,
    out: &Path,
    backend: Option<&str>,
    observer: &mut dyn Observer,
) -> Result<(PathBuf, Summary)> {
    run_planned(cfg, base_dir, out, backend, observer, false)
}

/// `fslens compare`: runs every sampler that applies to the config's operator (all of
/// [`samplers::NAMES`]; pigdm and tmpd only for a linear operator), whatever
/// `sampling.samplers` says, on the same y and seed, into one output folder. Skipped samplers
/// are reported to `observer` as warnings and listed in summary.json and report.html.
pub fn compare(
    cfg: &RunConfig,
    base_dir: &Path,
    out: &Path,
    backend: Option<&str>,
    observer: &mut dyn Observer,
) -> Result<(PathBuf, Summary)> {
    run_planned(cfg, base_dir, out, backend, observer, true)
}

fn run_planned(
    cfg: &RunConfig,
    base_dir: &Path,
    out: &Path,
    backend: Option<&str>,
    observer: &mut dyn Observer,
    every_sampler: bool,
) -> Result<(PathBuf, Summary)> {
    let mut cfg = cfg.clone();
    if let Some(b) = backend {
        cfg.backend = b.to_string();
    }
    if every_sampler {
        // Which samplers apply depends on the operator, known after setup.
        cfg.sampling.samplers = vec!["exact".into()];
    }
    cfg.validate()?;
    let staging = OutputDir::create(out)?;
    let summary = run_in_planned(
        &cfg,
        base_dir,
        staging.path(),
        observer,
        None,
        every_sampler,
    )?;
    let path = staging.finish()?;
    Ok((path, summary))
}

/// Runs a validated `cfg` and writes its outputs into the existing folder `dir` (the caller
/// stages it: [`run`] and the sweep runner rename it into place when this returns Ok), with
/// the atoms and measured atoms from `cache` when given ([`setup_cached`]).
pub fn run_in(
    cfg: &RunConfig,
    base_dir: &Path,
    dir: &Path,
    observer: &mut dyn Observer,
    cache: Option<&AtomCache>,
) -> Result<Summary> {
    run_in_planned(cfg, base_dir, dir, observer, cache, false)
}

/// [`run_in`]; with `every_sampler`, the samplers are every one that applies to the operator
/// ([`compare`]).
fn run_in_planned(
    cfg: &RunConfig,
    base_dir: &Path,
    dir: &Path,
    observer: &mut dyn Observer,
    cache: Option<&AtomCache>,
    every_sampler: bool,
) -> Result<Summary> {
    let started = Instant::now();
    let mut cfg = cfg.clone();
    let setup = setup_cached(&cfg, base_dir, observer, cache)?;
    let mut skipped = Vec::new();
    if every_sampler {
        let options = cfg.sampler_options();
        cfg.sampling.samplers.clear();
        for &name in samplers::NAMES {
            match samplers::by_name_with(name, &options)?.check_operator(setup.operator.as_ref()) {
                Ok(()) => cfg.sampling.samplers.push(name.to_string()),
                Err(e) => {
                    // The config key the error names is moot here: compare chose the sampler.
                    let reason = match e {
                        Error::Config { problem, .. } => problem,
                        other => other.to_string(),
                    };
                    observer.warning(&format!("compare: skipping {name}: {reason}"));
                    skipped.push(SkippedSampler {
                        name: name.to_string(),
                        reason,
                    });
                }
            }
        }
    }
    let cfg = &cfg;
    let shape = setup.atoms.shape;
    let d = shape.dim();
    observer.stage("building the engine");
    let mut engine = crate::engine::create_with_storage(&cfg.backend, &setup.atoms, &cfg.storage)?;
    let posterior = engine.add_bias(&setup.log_likelihoods)?;
    let engine: &dyn Backend = engine.as_ref();
    let problem = Problem {
        backend: engine,
        atoms: &setup.atoms.images,
        dim: d,
        log_likelihoods: &setup.log_likelihoods,
        posterior,
        operator: setup.operator.as_ref(),
        y: &setup.y,
        sigma: cfg.measurement.sigma,
        schedule: cfg.schedule(),
    };
    let settings = cfg.sampler_settings();
    let omega = problem.posterior_weights();
    let exact_classes = class_weights_exact(&setup.atoms, &omega);
    let final_level = settings.final_level(&problem.schedule);
    let walked = settings.integrator.steps(settings.steps);

    let dir = dir.to_path_buf();
    let posterior_view = ExactPosterior::new(
        &setup.atoms,
        &omega,
        setup.operator.as_ref(),
        &setup.y,
        cfg.measurement.sigma,
        &setup.truth,
        problem.schedule,
        cfg.diagnostics_options(),
    );
    let direction = Direction::new(
        &posterior_view,
        DirectionSpec::parse(&cfg.diagnostics.direction)?,
    )?;
    let u32s: Vec<f32> = direction.u.iter().map(|&v| v as f32).collect();
    write_npy_f32(&dir.join("projection_direction.npy"), &[d], &u32s)?;
    let mut projections: Vec<(String, ProjectionSeries)> = Vec::new();
    let mut samplers_out = Vec::new();
    let mut metrics_out = std::collections::BTreeMap::new();
    let options = cfg.sampler_options();
    // The exact sampler runs first (it is cheap) so that every sampler's checkpoints are
    // compared with exact particles at the same times; its analyses are kept for its own
    // metrics, so each cloud costs one engine pass.
    let mut references = References::default();
    let mut exact_done: Option<(crate::samplers::Run, f64, Vec<Analysis>)> = None;
    if cfg.sampling.samplers.iter().any(|n| n == "exact") {
        observer.stage("sampler exact");
        let t0 = Instant::now();
        let run =
            samplers::by_name_with("exact", &options)?
                .sample(&problem, &settings, &mut |p| observer.progress("exact", p))?;
        let wall = t0.elapsed().as_secs_f64();
        let mut analyses = Vec::new();
        for (t, cloud) in clouds(&run, final_level.t) {
            let analysis = posterior_view.analyse(engine, cloud, problem.schedule.noise(t))?;
            references
                .by_time
                .push(posterior_view.reference_from(t, &analysis, true));
            analyses.push(analysis);
        }
        exact_done = Some((run, wall, analyses));
    }
    for name in &cfg.sampling.samplers {
        let (run, wall, cached) = match (name.as_str(), exact_done.take()) {
            ("exact", Some(done)) => (done.0, done.1, Some(done.2)),
            (_, kept) => {
                exact_done = kept;
                let sampler = samplers::by_name_with(name, &options)?;
                observer.stage(&format!("sampler {name}"));
                let t0 = Instant::now();
                let run =
                    sampler.sample(&problem, &settings, &mut |p| observer.progress(name, p))?;
                (run, t0.elapsed().as_secs_f64(), None)
            }
        };
        for w in &run.warnings {
            observer.warning(w);
        }
        // One pass per cloud (checkpoints, then t_min): Tweedie means and nearest atoms.
        observer.stage(&format!("metrics of {name}"));
        let mut records = Vec::new();
        let mut cached = cached.map(|c| c.into_iter());
        let mut last = None;
        let recorded = clouds(&run, final_level.t);
        let projection = ProjectionSeries {
            times: recorded.iter().map(|&(t, _)| t).collect(),
            values: recorded
                .iter()
                .map(|&(_, cloud)| direction.project(cloud))
                .collect(),
        };
        for (t, cloud) in recorded {
            let analysis = match cached.as_mut().and_then(|c| c.next()) {
                Some(a) => a,
                None => posterior_view.analyse(engine, cloud, problem.schedule.noise(t))?,
            };
            let reference =
                references.at(&posterior_view, engine, t, settings.particles.max(1000))?;
            records.push(posterior_view.score(t, cloud, &analysis, reference));
            last = Some(analysis);
        }
        let final_metrics = records.pop().expect("clouds always end with t_min");
        let pass = last.expect("clouds always end with t_min");
        let nearest: Vec<usize> = pass.nearest.iter().map(|n| n.index).collect();
        let classes = class_weights_of_samples(&setup.atoms, &nearest);
        let tv = match (&exact_classes, &classes) {
            (Some(e), Some(c)) => Some(total_variation(e, c)),
            _ => None,
        };
        let k = settings.particles;
        write_npy_f32(
            &dir.join(format!("samples_{name}.npy")),
            &[k, d],
            &run.samples,
        )?;
        write_npy_f32(
            &dir.join(format!("denoised_{name}.npy")),
            &[k, d],
            &pass.denoised,
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
        let flat: Vec<f32> = projection.values.iter().flatten().copied().collect();
        write_npy_f32(
            &dir.join(format!("projections_{name}.npy")),
            &[projection.times.len(), k],
            &flat,
        )?;
        let shown = k.min(64);
        save_grid(
            &dir.join(format!("grid_{name}.png")),
            &run.samples[..shown * d],
            shape,
            8,
            default_scale(shape),
        )?;
        samplers_out.push(SamplerSummary {
            name: name.clone(),
            wall_seconds: wall,
            particles: k,
            steps: if name == "exact" { 0 } else { walked },
            seconds_per_step: if name == "exact" {
                None
            } else {
                Some(wall / walked as f64)
            },
            integrator: (name != "exact").then_some(settings.integrator),
            final_time: final_level.t,
            final_noise_variance: final_level.noise.v,
            passes_per_step: run.passes_per_step,
            full_checkpoint_times: full.iter().map(|&i| checkpoint_times[i]).collect(),
            checkpoint_times,
            projection_times: projection.times.clone(),
            class_weights: classes.map(|c| named_weights(&setup.atoms, &c)),
            class_tv_to_exact: tv,
            diagnostics: run.diagnostics.iter().cloned().collect(),
            warnings: run.warnings.clone(),
            metrics: final_metrics.clone(),
            checkpoints: records.clone(),
        });
        projections.push((name.clone(), projection));
        metrics_out.insert(
            name.clone(),
            SamplerMetrics {
                metrics: final_metrics,
                checkpoints: records,
            },
        );
    }

    observer.stage("writing the report");
    let top = write_problem_images(&dir, &setup, &omega)?;

    let modes_summary = modes_summary(&posterior_view);
    write_metrics(&dir, &posterior_view, modes_summary.clone(), metrics_out)?;
    let summary = Summary {
        fslens_version: env!("CARGO_PKG_VERSION").to_string(),
        backend: engine.describe(),
        dataset: DatasetSummary::of(&setup.atoms),
        measurement: measurement_summary(&setup, cfg.measurement.sigma),
        exact_effective_atoms: 1.0 / omega.iter().map(|w| w * w).sum::<f64>(),
        exact_top_atoms: top_atom_summary(&setup.atoms, &top),
        exact_class_weights: exact_classes.map(|c| named_weights(&setup.atoms, &c)),
        modes: modes_summary.clone(),
        samplers: samplers_out,
        projection_direction: direction.label.clone(),
        skipped_samplers: skipped,
        total_seconds: started.elapsed().as_secs_f64(),
        external: None,
    };
    let config_toml = cfg.to_toml();
    std::fs::write(dir.join("config.toml"), &config_toml)
        .map_err(|e| Error::io(dir.join("config.toml"), e))?;
    // The heatmap's reference: the exact sampler's own clouds, or fresh exact draws at the
    // first sampler's times when the run has no exact sampler.
    let exact_projection = match projections.iter().find(|(n, _)| n == "exact") {
        Some((_, p)) => Some(("exact".to_string(), p.clone())),
        None => projections.first().map(|(_, p)| {
            let k = settings.particles;
            let values = p
                .times
                .iter()
                .map(|&t| {
                    let noise = problem.schedule.noise(t);
                    let seed = cfg.seed ^ t.to_bits() ^ 0x0068_6561_746d_6170;
                    direction.project(&posterior_view.draw(noise, k, seed))
                })
                .collect();
            (
                "exact (drawn)".to_string(),
                ProjectionSeries {
                    times: p.times.clone(),
                    values,
                },
            )
        }),
    };
    let report = page::run_page(
        &summary,
        &config_toml,
        &projections,
        exact_projection.as_ref().map(|(n, p)| (n.as_str(), p)),
        &dir,
        if every_sampler {
            "fslens compare"
        } else {
            "fslens run"
        },
        true,
    )?;
    write_report_and_summary(&dir, &report, &summary)?;
    Ok(summary)
}

/// Writes report.html and summary.json, the last files of a finished output folder.
fn write_report_and_summary(
    dir: &Path,
    report: &crate::report::html::ReportPage,
    summary: &Summary,
) -> Result<()> {
    crate::arrays::write_atomic(
        &dir.join("report.html"),
        crate::report::html::render(report).as_bytes(),
    )?;
    crate::arrays::write_atomic(
        &dir.join("summary.json"),
        serde_json::to_string_pretty(summary)
            .expect("summary serialises")
            .as_bytes(),
    )
}

/// Writes truth.png, measurement.png (where the operator has a view of y) and
/// exact_top_atoms.png into `dir`; returns the ten heaviest atoms (index, ω_i).
fn write_problem_images(dir: &Path, setup: &Setup, omega: &[f64]) -> Result<Vec<(usize, f64)>> {
    let shape = setup.atoms.shape;
    let scale = default_scale(shape);
    save_grid(&dir.join("truth.png"), &setup.truth, shape, 1, scale)?;
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

/// The modes the metrics use and their exact mass, for summary.json and metrics.json.
fn modes_summary(posterior: &ExactPosterior) -> ModesSummary {
    ModesSummary {
        source: posterior.modes.source,
        names: posterior.modes.names.clone(),
        exact_weights: posterior.exact_mode_weights.clone(),
        hallucination_threshold: posterior.options.hallucination_threshold,
    }
}

/// Writes metrics.json into `dir`: the modes, how SSIM and off-support are measured, and every
/// sampler's records.
fn write_metrics(
    dir: &Path,
    posterior: &ExactPosterior,
    modes: ModesSummary,
    samplers: std::collections::BTreeMap<String, SamplerMetrics>,
) -> Result<()> {
    let metrics_file = MetricsFile {
        modes,
        ssim: format!(
            "mean SSIM, {w}x{w} uniform window, sample covariances, K1 = 0.01, K2 = 0.03, \
             data range 2 (pixels in [-1, 1]), per channel",
            w = ssim_window(posterior.shape)
        ),
        off_support_quantile: OFF_SUPPORT_QUANTILE,
        off_support_rule: OFF_SUPPORT_RULE.to_string(),
        atom_scale: posterior.atom_scale,
        off_support_margin: OFF_SUPPORT_MARGIN,
        samplers,
    };
    crate::arrays::write_atomic(
        &dir.join("metrics.json"),
        serde_json::to_string_pretty(&metrics_file)
            .expect("metrics serialise")
            .as_bytes(),
    )
}

/// The measurement part of summary.json.
fn measurement_summary(setup: &Setup, sigma: f64) -> MeasurementSummary {
    MeasurementSummary {
        operator: setup.operator.spec(),
        linear: setup.operator.is_linear(),
        m: setup.y.len(),
        sigma,
        truth: setup.truth_source.clone(),
        truth_label: setup.truth_label.map(|l| label_name(&setup.atoms, l)),
    }
}

/// The heaviest exact atoms (index, ω_i) with their labels.
fn top_atom_summary(atoms: &Dataset, top: &[(usize, f64)]) -> Vec<TopAtom> {
    top.iter()
        .map(|&(i, w)| TopAtom {
            index: i,
            weight: w,
            label: atoms.labels.as_ref().map(|l| label_name(atoms, l[i])),
        })
        .collect()
}

/// A run's clouds in time order: its checkpoint snapshots, then the final samples at `t_end`
/// (t_min, or for a discrete integrator the continuous time of its last level).
fn clouds(run: &crate::samplers::Run, t_end: f64) -> Vec<(f64, &[f32])> {
    run.snapshots
        .iter()
        .map(|snap| (snap.t, snap.particles.as_slice()))
        .chain(std::iter::once((t_end, run.samples.as_slice())))
        .collect()
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

/// The exact posterior's references by time: from the exact run where it recorded that time,
/// else drawn on first use.
#[derive(Default)]
struct References {
    by_time: Vec<ReferenceAt>,
}

impl References {
    fn at(
        &mut self,
        posterior: &ExactPosterior,
        backend: &dyn Backend,
        t: f64,
        count: usize,
    ) -> Result<&ReferenceAt> {
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
                    .push(posterior.reference_drawn(backend, t, count)?);
                self.by_time.len() - 1
            }
        };
        Ok(&self.by_time[i])
    }
}

fn label_name(ds: &Dataset, label: u32) -> String {
    match &ds.class_names {
        Some(names) if (label as usize) < names.len() => names[label as usize].clone(),
        _ => label.to_string(),
    }
}

fn class_count(ds: &Dataset) -> Option<usize> {
    let labels = ds.labels.as_ref()?;
    let max = labels.iter().copied().max()? as usize + 1;
    Some(ds.class_names.as_ref().map_or(max, |n| n.len().max(max)))
}

/// Exact class weights: Σ_{i in class c} ω_i.
pub fn class_weights_exact(ds: &Dataset, omega: &[f64]) -> Option<Vec<f64>> {
    let labels = ds.labels.as_ref()?;
    let mut w = vec![0.0; class_count(ds)?];
    for (&l, &o) in labels.iter().zip(omega) {
        w[l as usize] += o;
    }
    Some(w)
}

/// Class frequencies of samples assigned to their nearest atoms.
pub fn class_weights_of_samples(ds: &Dataset, nearest: &[usize]) -> Option<Vec<f64>> {
    let labels = ds.labels.as_ref()?;
    let mut w = vec![0.0; class_count(ds)?];
    for &i in nearest {
        w[labels[i] as usize] += 1.0 / nearest.len() as f64;
    }
    Some(w)
}

/// ½ Σ |p − q|.
pub fn total_variation(p: &[f64], q: &[f64]) -> f64 {
    0.5 * p.iter().zip(q).map(|(a, b)| (a - b).abs()).sum::<f64>()
}

fn named_weights(ds: &Dataset, w: &[f64]) -> Vec<ClassWeight> {
    w.iter()
        .enumerate()
        .map(|(c, &weight)| ClassWeight {
            class: label_name(ds, c as u32),
            weight,
        })
        .collect()
}

/// The `k` heaviest atoms of ω, heaviest first.
pub fn top_atoms(omega: &[f64], k: usize) -> Vec<(usize, f64)> {
    let mut idx: Vec<usize> = (0..omega.len()).collect();
    idx.sort_by(|&a, &b| omega[b].total_cmp(&omega[a]));
    idx.into_iter().take(k).map(|i| (i, omega[i])).collect()
}

/// Image shape used by `fslens score` for flat (N, D) atoms: `--shape` when given, a square
/// when D is a perfect square, else 1 × D.
pub fn flat_shape(d: usize, given: Option<ImageShape>) -> ImageShape {
    if let Some(s) = given {
        return s;
    }
    let r = (d as f64).sqrt().round() as usize;
    if r * r == d {
        ImageShape::new(r, r, 1)
    } else {
        ImageShape::new(1, d, 1)
    }
}

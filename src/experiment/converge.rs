//! `fslens converge`: the finite-sample posterior against the analytic posterior as the
//! number of atoms N grows (design §11), and the approximate samplers beside it.
//!
//! An analytic prior (`data.kind` gaussian, gmm or discrete) gives both sides: its exact
//! posterior in closed form ([`crate::analytic`]) and, for each N of `converge.sizes`, an
//! empirical prior of N draws (nested: the first N of one seeded stream). At each time of
//! `converge.times` the finite-sample posterior's errors are closed forms over the atoms; its
//! sliced Wasserstein distance uses `draws` exact draws. The samplers of `converge.samplers`
//! run on the N = `sampler_atoms` empirical prior with `draws` particles, so that a sampler's
//! error and the finite-N error at the same N sit side by side. Nothing here writes files but
//! [`write`].

use std::path::{Path, PathBuf};
use std::time::Instant;

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use super::Observer;
use crate::analytic::Mixture;
use crate::config::{ConvergeConfig, Sigma};
use crate::data::Dataset;
use crate::data::analytic::draw_atoms;
use crate::diagnostics::convergence::{
    Errors, Reference, diffuse_moments, log_log_slope, sliced_wasserstein, weighted_atom_moments,
};
use crate::diffusion::integrate::Level;
use crate::engine::logsumexp::softmax;
use crate::operators::{Operator, atom_log_likelihoods};
use crate::output::{Destination, OutputDir, write_atomic};
use crate::plan::RunPlan;
use crate::report::plots::Series;
use crate::samplers::exact::Exact;
use crate::samplers::{Problem, SamplerKind};
use crate::{Error, Result};

/// Errors at or below this are float64 rounding (a posterior on one component has weight TV
/// ~1e-16 at every N), not a rate: the slopes leave them out.
const SLOPE_FLOOR: f64 = 1e-12;

/// Everything `fslens converge` measured (summary.json).
#[derive(Clone, Debug, Serialize)]
pub struct ConvergeSummary {
    pub prior: String,
    pub dim: usize,
    pub components: usize,
    pub operator: String,
    pub sigma: f64,
    /// The times measured (the requested ones snapped to the sampling grid).
    pub times: Vec<f64>,
    /// Per N: the finite-sample posterior's errors at each time.
    pub finite: Vec<SizeRecord>,
    /// Per time: the fitted log–log slopes of each error against N.
    pub slopes: Vec<Slopes>,
    /// SW₂ between two independent sets of `draws` analytic draws per time: the Monte Carlo
    /// floor under which no SW₂ in this run can fall.
    pub sliced_wasserstein_floor: Vec<f64>,
    /// The exact cloud and each sampler at N = `sampler_atoms`.
    pub samplers: Vec<SamplerRecord>,
    pub draws: usize,
    pub slices: usize,
    pub wall_seconds: f64,
}

#[derive(Clone, Debug, Serialize)]
pub struct SizeRecord {
    pub atoms: usize,
    /// 1/Σω²: how many atoms carry the finite-sample posterior.
    pub effective_atoms: f64,
    pub errors: Vec<Errors>,
}

#[derive(Clone, Debug, Serialize)]
pub struct Slopes {
    pub t: f64,
    pub mean_error: Option<f64>,
    pub cov_error: Option<f64>,
    pub weight_tv: Option<f64>,
    pub sliced_wasserstein: Option<f64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SamplerRecord {
    pub sampler: String,
    pub atoms: usize,
    pub errors: Vec<Errors>,
    pub wall_seconds: f64,
}

/// The problem every N shares: prior, operator as a matrix, y, the analytic posterior.
struct Analytic {
    prior: Mixture,
    posterior: Mixture,
    y: Vec<f32>,
    /// Analytic draws per level (the SW₂ reference) and the references' moments.
    references: Vec<(Reference, Vec<f64>)>,
}

/// Checks the `[converge]` table and the data kind, naming the keys.
fn check(plan: &RunPlan, cfg: &ConvergeConfig) -> Result<()> {
    if plan.config.data.kind.analytic().is_none() {
        return Err(Error::config(
            "data.kind",
            format!(
                "is \"{}\", but converge needs an analytic prior: \"gaussian\", \"gmm\" or \"discrete\"",
                plan.config.data.kind.name()
            ),
        ));
    }
    if cfg.sizes.is_empty() || cfg.sizes.contains(&0) {
        return Err(Error::config(
            "converge.sizes",
            "give atom counts ≥ 1, e.g. [100, 1000, 10000]",
        ));
    }
    if cfg.times.is_empty() {
        return Err(Error::config(
            "converge.times",
            "give at least one time in (0, 1]",
        ));
    }
    for &t in &cfg.times {
        crate::diffusion::check_time("converge.times", t)?;
    }
    if cfg.draws < 2 {
        return Err(Error::config("converge.draws", "must be at least 2"));
    }
    if cfg.slices == 0 {
        return Err(Error::config("converge.slices", "must be at least 1"));
    }
    if !cfg.samplers.is_empty() && !cfg.sizes.contains(&cfg.sampler_atoms) {
        return Err(Error::config(
            "converge.sampler_atoms",
            format!(
                "{} is not one of converge.sizes {:?}; pick one of them",
                cfg.sampler_atoms, cfg.sizes
            ),
        ));
    }
    Ok(())
}

/// A linear operator as its m × D matrix, column j = A e_j.
fn dense_matrix(op: &dyn Operator) -> DMatrix<f64> {
    let (d, m) = (op.input_shape().dim(), op.output_len());
    let mut a = DMatrix::zeros(m, d);
    let mut e = vec![0.0f32; d];
    let mut col = vec![0.0f32; m];
    for j in 0..d {
        e[j] = 1.0;
        op.forward(&e, &mut col);
        e[j] = 0.0;
        for (i, &v) in col.iter().enumerate() {
            a[(i, j)] = f64::from(v);
        }
    }
    a
}

fn gaussian(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// Runs the measurement of the module notes.
pub fn converge(plan: &RunPlan, observer: &mut dyn Observer) -> Result<ConvergeSummary> {
    let started = Instant::now();
    let cfg = plan.config.converge.clone().unwrap_or_default();
    check(plan, &cfg)?;
    let data = &plan.config.data;
    let family = data.kind.analytic().expect("checked");
    let prior_cfg = data.prior.clone().unwrap_or_default();
    let data_seed = data.seed.unwrap_or(0);
    let prior = prior_cfg.mixture(family, data_seed)?;
    let shape = prior_cfg.shape(prior.dim)?;
    let spec = &plan.config.measurement.operator;
    let op = crate::operators::parse_for(spec, shape, &plan.base_dir, "measurement.operator")?;
    if !op.is_linear() {
        return Err(Error::config(
            "measurement.operator",
            format!("`{spec}` is nonlinear; the analytic posterior needs a linear operator"),
        ));
    }
    let sigma = scalar_sigma(plan)?;
    let mut settings = plan.settings.clone();
    settings.checkpoints = cfg.times.clone();
    settings.particles = cfg.draws;
    let (levels, _) = settings.recorded_levels(&plan.schedule);
    observer.stage("analytic posterior");
    let analytic = analytic_side(
        &prior,
        op.as_ref(),
        sigma,
        plan.config.seed,
        &levels,
        cfg.draws,
    )?;
    let floor = sw_floor(
        &analytic.posterior,
        &levels,
        &analytic.references,
        &cfg,
        plan.config.seed,
    )?;
    let n_max = *cfg.sizes.iter().max().expect("checked");
    observer.stage(&format!("drawing {n_max} atoms"));
    let atoms = draw_atoms(&prior, family, n_max, data_seed, shape)?;
    let b = atom_log_likelihoods(op.as_ref(), &atoms.images, &analytic.y, sigma)?;
    let mut finite = Vec::new();
    for &n in &cfg.sizes {
        observer.stage(&format!("finite-sample posterior, N = {n}"));
        finite.push(finite_errors(
            &atoms,
            n,
            &b,
            &levels,
            &analytic,
            &cfg,
            plan.config.seed,
        )?);
    }
    let slopes = levels
        .iter()
        .enumerate()
        .map(|(j, l)| {
            let fit = |f: &dyn Fn(&Errors) -> Option<f64>| {
                let pts: Vec<(f64, f64)> = finite
                    .iter()
                    .filter_map(|r| f(&r.errors[j]).map(|e| (r.atoms as f64, e)))
                    .filter(|&(_, e)| e > SLOPE_FLOOR)
                    .collect();
                log_log_slope(&pts)
            };
            Slopes {
                t: l.t,
                mean_error: fit(&|e| Some(e.mean_error)),
                cov_error: fit(&|e| Some(e.cov_error)),
                weight_tv: fit(&|e| Some(e.weight_tv)),
                sliced_wasserstein: fit(&|e| e.sliced_wasserstein),
            }
        })
        .collect();
    let samplers = if cfg.samplers.is_empty() {
        Vec::new()
    } else {
        let prefix: Vec<usize> = (0..cfg.sampler_atoms).collect();
        let ds = atoms.select(&prefix);
        let run = SamplerRun {
            plan,
            settings: &settings,
            levels: &levels,
            analytic: &analytic,
            cfg: &cfg,
        };
        run.all(&ds, &b[..cfg.sampler_atoms], op.as_ref(), observer)?
    };
    Ok(ConvergeSummary {
        prior: format!("{} ({})", family.name(), atoms.source),
        dim: prior.dim,
        components: prior.components.len(),
        operator: op.spec(),
        sigma,
        times: levels.iter().map(|l| l.t).collect(),
        finite,
        slopes,
        sliced_wasserstein_floor: floor,
        samplers,
        draws: cfg.draws,
        slices: cfg.slices,
        wall_seconds: started.elapsed().as_secs_f64(),
    })
}

/// The truth (a prior draw, stream 2 of the run's seed), y = A x + σ n (float32, as the
/// samplers see it), the analytic posterior, and per level its reference and analytic draws.
fn analytic_side(
    prior: &Mixture,
    op: &dyn Operator,
    sigma: f64,
    seed: u64,
    levels: &[Level],
    draws: usize,
) -> Result<Analytic> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(2);
    let (truth, _) = prior.sampler().draw(1, &mut rng);
    let truth32: Vec<f32> = truth.iter().map(|&v| v as f32).collect();
    let mut y = vec![0.0f32; op.output_len()];
    op.forward(&truth32, &mut y);
    for v in &mut y {
        *v = (f64::from(*v) + sigma * gaussian(&mut rng)) as f32;
    }
    let a = dense_matrix(op);
    let y64 = DVector::from_iterator(y.len(), y.iter().map(|&v| f64::from(v)));
    let posterior = prior.condition(&a, &y64, sigma)?.posterior;
    let mut references = Vec::with_capacity(levels.len());
    for l in levels {
        let at = posterior.diffuse(l.noise);
        let (z, _) = at.sampler().draw(draws, &mut rng);
        references.push((Reference::new(&at)?, z));
    }
    Ok(Analytic {
        prior: prior.clone(),
        posterior,
        y,
        references,
    })
}

/// SW₂ between the references' analytic draws and a second independent set per level.
fn sw_floor(
    posterior: &Mixture,
    levels: &[Level],
    refs: &[(Reference, Vec<f64>)],
    cfg: &ConvergeConfig,
    seed: u64,
) -> Result<Vec<f64>> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(3);
    Ok(levels
        .iter()
        .zip(refs)
        .map(|(l, (_, z))| {
            let (z2, _) = posterior
                .diffuse(l.noise)
                .sampler()
                .draw(cfg.draws, &mut rng);
            sliced_wasserstein(&z2, z, posterior.dim, cfg.slices, seed)
        })
        .collect())
}

/// The finite-sample posterior of the first `n` atoms at every level: closed-form moment
/// errors and SW₂ of `draws` exact draws.
fn finite_errors(
    atoms: &Dataset,
    n: usize,
    b: &[f64],
    levels: &[Level],
    analytic: &Analytic,
    cfg: &ConvergeConfig,
    seed: u64,
) -> Result<SizeRecord> {
    let d = atoms.dim();
    let omega = softmax(&b[..n]);
    let labels = atoms.labels.as_ref().expect("analytic atoms are labelled");
    let k = analytic.prior.components.len();
    let (mean0, cov0, comp) =
        weighted_atom_moments(&atoms.images[..n * d], d, &omega, &labels[..n], k);
    let mut rng = ChaCha8Rng::seed_from_u64(seed ^ n as u64);
    rng.set_stream(4);
    let picks = Exact::draw_atoms(&omega, cfg.draws, &mut rng);
    let mut errors = Vec::with_capacity(levels.len());
    for (l, (reference, z)) in levels.iter().zip(&analytic.references) {
        let (mean, cov) = diffuse_moments(&mean0, &cov0, l.noise);
        let mut e = reference.errors(&mean, &cov, &comp);
        let sd = l.noise.v.sqrt();
        let mut cloud = Vec::with_capacity(cfg.draws * d);
        for &i in &picks {
            for &a in atoms.image(i) {
                cloud.push(l.noise.s * f64::from(a) + sd * gaussian(&mut rng));
            }
        }
        e.sliced_wasserstein = Some(sliced_wasserstein(&cloud, z, d, cfg.slices, seed));
        errors.push(e);
    }
    let ess = 1.0 / omega.iter().map(|w| w * w).sum::<f64>();
    Ok(SizeRecord {
        atoms: n,
        effective_atoms: ess,
        errors,
    })
}

/// The samplers beside: one engine over the first `sampler_atoms` atoms.
struct SamplerRun<'a> {
    plan: &'a RunPlan,
    settings: &'a crate::samplers::Settings,
    levels: &'a [Level],
    analytic: &'a Analytic,
    cfg: &'a ConvergeConfig,
}

impl SamplerRun<'_> {
    fn all(
        &self,
        atoms: &Dataset,
        b: &[f64],
        op: &dyn Operator,
        observer: &mut dyn Observer,
    ) -> Result<Vec<SamplerRecord>> {
        observer.stage("building the engine");
        let mut engine = crate::engine::create(
            self.plan.engine.backend,
            self.plan.engine.storage,
            self.plan.engine.devices,
            atoms,
        )?;
        let posterior = engine.add_bias(b)?;
        let problem = Problem {
            backend: engine.as_ref(),
            atoms: &atoms.images,
            dim: atoms.dim(),
            log_likelihoods: b,
            posterior,
            operator: op,
            y: &self.analytic.y,
            sigma: scalar_sigma(self.plan)?,
            schedule: self.plan.schedule,
        };
        let mut kinds = vec![SamplerKind::Exact];
        kinds.extend(
            self.cfg
                .samplers
                .iter()
                .filter(|k| **k != SamplerKind::Exact),
        );
        let mut out = Vec::new();
        for kind in kinds {
            let sampler = kind.build(&self.plan.options);
            sampler.check_operator(op).map_err(|e| match e {
                Error::Config { problem, .. } => Error::config("converge.samplers", problem),
                other => other,
            })?;
            let name = sampler.name();
            observer.stage(&format!("{name} on N = {}", atoms.len()));
            let started = Instant::now();
            let run =
                sampler.sample(&problem, self.settings, &mut |p| observer.progress(name, p))?;
            for w in &run.warnings {
                observer.warning(w);
            }
            let errors = self.cloud_errors(&run.snapshots, atoms.dim())?;
            out.push(SamplerRecord {
                sampler: name.to_string(),
                atoms: atoms.len(),
                errors,
                wall_seconds: started.elapsed().as_secs_f64(),
            });
        }
        Ok(out)
    }

    /// Each level's cloud (the snapshot at that level's time) against the reference.
    fn cloud_errors(
        &self,
        snapshots: &[crate::diffusion::integrate::Snapshot],
        d: usize,
    ) -> Result<Vec<Errors>> {
        self.levels
            .iter()
            .zip(&self.analytic.references)
            .map(|(l, (reference, z))| {
                let snap = snapshots
                    .iter()
                    .find(|s| (s.t - l.t).abs() <= 1e-12 * l.t.max(1.0))
                    .ok_or_else(|| Error::input(format!("no cloud was recorded at t = {}", l.t)))?;
                let cloud: Vec<f64> = snap.particles.iter().map(|&v| f64::from(v)).collect();
                Ok(reference.cloud_errors(&cloud, d, z, self.cfg.slices, self.plan.config.seed))
            })
            .collect()
    }
}

/// Writes summary.json and report.html into a staged folder at `out` and puts it in place.
pub fn write(summary: &ConvergeSummary, plan: &RunPlan, out: &Destination) -> Result<PathBuf> {
    let staging = OutputDir::create(&out.clone().inputs(plan.input_files()))?;
    write_into(summary, staging.path())?;
    staging.finish()
}

fn write_into(summary: &ConvergeSummary, dir: &Path) -> Result<()> {
    let json = serde_json::to_string_pretty(summary).map_err(|e| Error::input(e.to_string()))?;
    write_atomic(&dir.join("summary.json"), json.as_bytes())?;
    write_atomic(&dir.join("report.html"), report_page(summary)?.as_bytes())
}

type Metric = (&'static str, &'static str, fn(&Errors) -> Option<f64>);

/// The four metrics: name, axis label, accessor.
const METRICS: [Metric; 4] = [
    ("mean error ‖μ − μ*‖/√tr Σ*", "mean error", |e| {
        Some(e.mean_error)
    }),
    (
        "covariance error ‖Σ − Σ*‖_F/‖Σ*‖_F",
        "cov error",
        |e| Some(e.cov_error),
    ),
    ("component-weight TV", "TV", |e| Some(e.weight_tv)),
    ("sliced Wasserstein-2 to analytic draws", "SW2", |e| {
        e.sliced_wasserstein
    }),
];

fn report_page(s: &ConvergeSummary) -> Result<String> {
    use crate::report::convergence::error_vs_atoms_plot;
    use crate::report::html::{STYLE, document, escape, strip_xml_declaration};
    let mut body = format!(
        "<h1>Convergence in N</h1>\n<p class=\"subtitle\">{} in D = {}, K = {}; operator {}, σ = {}; {} draws, {} slices; {:.1} s</p>\n",
        escape(&s.prior),
        s.dim,
        s.components,
        escape(&s.operator),
        s.sigma,
        s.draws,
        s.slices,
        s.wall_seconds
    );
    body.push_str(&table_html(s));
    for (title, label, get) in METRICS {
        let finite: Vec<Series> = s
            .times
            .iter()
            .enumerate()
            .map(|(j, t)| Series {
                name: format!("t = {t:.3}"),
                points: s
                    .finite
                    .iter()
                    .filter_map(|r| get(&r.errors[j]).map(|e| (r.atoms as f64, e)))
                    .collect(),
            })
            .collect();
        let samplers: Vec<Series> = s
            .samplers
            .iter()
            .map(|r| Series {
                name: format!("{} (all t)", r.sampler),
                points: r
                    .errors
                    .iter()
                    .filter_map(|e| get(e).map(|v| (r.atoms as f64, v)))
                    .collect(),
            })
            .collect();
        let svg = error_vs_atoms_plot(title, label, &finite, &samplers)?;
        body.push_str(&format!(
            "<figure>{}</figure>\n",
            strip_xml_declaration(&svg)
        ));
    }
    Ok(document("fslens converge", STYLE, &body))
}

fn table_html(s: &ConvergeSummary) -> String {
    let mut h = String::from(
        "<table>\n<tr><th>t</th><th>slope mean</th><th>slope cov</th><th>slope TV</th><th>slope SW2</th><th>SW2 floor</th></tr>\n",
    );
    let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
    for (sl, floor) in s.slopes.iter().zip(&s.sliced_wasserstein_floor) {
        h.push_str(&format!(
            "<tr><td>{:.3}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{floor:.3}</td></tr>\n",
            sl.t,
            f(sl.mean_error),
            f(sl.cov_error),
            f(sl.weight_tv),
            f(sl.sliced_wasserstein)
        ));
    }
    h.push_str("</table>\n");
    h
}

/// The results table for stdout: per time, the finite-sample errors at each N, the slopes, and
/// each sampler's errors at its N.
pub fn table(s: &ConvergeSummary) -> String {
    let mut out = String::new();
    for (j, t) in s.times.iter().enumerate() {
        out.push_str(&format!(
            "t = {t:.4}\n  {:<14} {:>10} {:>10} {:>10} {:>10}\n",
            "", "mean", "cov", "TV", "SW2"
        ));
        let row = |name: &str, e: &Errors| {
            format!(
                "  {name:<14} {:>10.3e} {:>10.3e} {:>10.3e} {:>10}\n",
                e.mean_error,
                e.cov_error,
                e.weight_tv,
                e.sliced_wasserstein
                    .map_or("–".into(), |v| format!("{v:.3e}"))
            )
        };
        for r in &s.finite {
            out.push_str(&row(&format!("N = {}", r.atoms), &r.errors[j]));
        }
        let sl = &s.slopes[j];
        let f = |v: Option<f64>| v.map_or("–".to_string(), |v| format!("{v:.2}"));
        out.push_str(&format!(
            "  {:<14} {:>10} {:>10} {:>10} {:>10}\n",
            "slope",
            f(sl.mean_error),
            f(sl.cov_error),
            f(sl.weight_tv),
            f(sl.sliced_wasserstein)
        ));
        for r in &s.samplers {
            out.push_str(&row(&format!("{} @{}", r.sampler, r.atoms), &r.errors[j]));
        }
        out.push_str(&format!(
            "  SW2 floor (analytic vs analytic draws): {:.3e}\n",
            s.sliced_wasserstein_floor[j]
        ));
    }
    out
}

/// The one σ of the measurement: the closed-form posterior here is for the noise σ² I.
fn scalar_sigma(plan: &RunPlan) -> Result<f64> {
    match plan.sigma() {
        Sigma::Scalar(s) => Ok(*s),
        Sigma::File(path) => Err(Error::config(
            "measurement.sigma",
            format!(
                "fslens converge takes one σ for every measurement (its analytic posterior is \
                 for the noise σ² I), but {} gives one per entry; set measurement.sigma to a \
                 number",
                path.display()
            ),
        )),
    }
}

//! The lens as a library object: an empirical prior held resident in an engine, its
//! posteriors, and the per-row-time bookkeeping — what the Python package (`python/`) calls
//! for every method; its pyo3 layer only converts arrays and errors.
//!
//! Everything is the library's: the engine passes (`engine::Backend`), the Tweedie score
//! (`samplers::score`), the approximate likelihood scores (`samplers::likelihood`), the
//! log-likelihoods (`operators`), the schedule (`diffusion::Schedule`) and the exact draws
//! (`samplers::exact`). Design §2–§4.

use std::cell::RefCell;
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock, RwLock};

use crate::choices::Choice;
use crate::data::{Dataset, ImageShape};
use crate::diagnostics::{self, CheckpointMetrics, ExactPosterior, Measured, Modes};
use crate::diffusion::discrete::{DiscreteSchedule, LEVELS};
use crate::diffusion::{Schedule, check_time};
use crate::engine::logsumexp::softmax;
use crate::engine::{Backend, BiasId, Noise, WeightSet};
use crate::experiment::score::{Method, Scored};
use crate::operators::{self, DenseMatrix, Operator};
use crate::plan::{EngineChoice, Overrides, RunPlan};
use crate::samplers::likelihood::{Context, Likelihood, check_operator, posterior_score};
use crate::samplers::score::score_from_means;
use crate::samplers::{SamplerKind, SamplerOptions, exact::Exact};
use crate::{Error, Result};

/// The empirical prior: the atoms and an engine over them, built once. Every call reuses
/// the resident atoms; no call copies them.
pub struct Lens {
    /// The engine; a write lock only to register or remove a bias (a posterior made or
    /// dropped).
    backend: RwLock<Box<dyn Backend>>,
    /// The atoms (images N × D in [-1, 1]), for the exact draws and the measurements of a new
    /// posterior: on the CPU the very store the engine computes on (shared, not copied: one
    /// host copy of the atom set); the GPU engine keeps its own encoding on the device.
    images: Arc<Vec<f32>>,
    shape: ImageShape,
    /// The class of every atom and the class names, when the data set has them: the modes
    /// of the metrics (else k-means clusters).
    labels: Option<Vec<u32>>,
    class_names: Option<Vec<String>>,
    description: String,
    pub schedule: Schedule,
    /// Relative paths in operator specs start here (the config's folder, else ".").
    pub base_dir: PathBuf,
    /// The metrics' knobs (the config's `[diagnostics]`, else the defaults).
    pub diagnostics: diagnostics::Options,
    /// ρ of the off-support rule, computed on the first metrics call.
    atom_scale: OnceLock<f64>,
}

/// What a config adds to its prior: the truth, the measurement and its log-likelihoods.
pub struct ConfigMeasurement {
    /// None when the config gives y as data (`measurement.y`).
    pub truth: Option<Vec<f32>>,
    pub truth_label: Option<u32>,
    pub truth_source: String,
    pub operator: Arc<dyn Operator>,
    pub y: Vec<f32>,
    pub sigma: f64,
    pub log_likelihoods: Vec<f64>,
}

/// How a posterior's operator is given.
pub enum OperatorArg {
    /// An operator spec of the configs (`downsample:4`, `box:x=…`, `matrix:M.npy`, …).
    Spec(String),
    /// A dense (m, D) matrix, row-major.
    Matrix { rows: usize, values: Vec<f32> },
    /// An operator already built (the config's).
    Built(Arc<dyn Operator>),
}

/// A posterior of the prior: a bias vector b_i = log p(y | a_i) registered with the engine,
/// and, when the measurement is known, the operator, y and σ the approximate methods need.
pub struct Posterior {
    pub lens: Arc<Lens>,
    bias: BiasId,
    pub log_likelihoods: Vec<f64>,
    /// ω = softmax(b), float64.
    pub weights: Vec<f64>,
    pub measurement: Option<(Arc<dyn Operator>, Vec<f32>, f64)>,
    /// The modes and constants the metrics compare against, built on the first metrics call.
    exact: OnceLock<ExactConstants>,
}

/// What [`Posterior::metrics`] needs of the exact posterior besides a cloud: built once per
/// posterior (k-means modes and ρ cost far more than one metrics call).
struct ExactConstants {
    modes: Modes,
    exact_mode_weights: Vec<f64>,
    atom_spread: f64,
}

/// A pass over rows that share one noise: the arrays restricted to those rows → B × D.
type RowsPass<'a> = dyn Fn(&[&[f32]], Noise) -> Result<Vec<f32>> + 'a;

/// Where a per-row pass is evaluated: one value for every row, or one per row.
#[derive(Clone, Copy, Debug)]
pub enum At<'a> {
    /// Times t ∈ (0, 1] of the lens's VP schedule.
    Times(&'a [f64]),
    /// Levels k ∈ 0..T−1 of the discrete DDPM schedule of the DPS code
    /// ([`crate::diffusion::discrete`]), at the level's own noise s = √ᾱ_k, v = 1 − ᾱ_k
    /// (not through a time of the VP schedule: the top levels have ᾱ_k below ᾱ(1)).
    Levels(&'a [usize]),
}

impl At<'_> {
    fn len(&self) -> usize {
        match self {
            At::Times(t) => t.len(),
            At::Levels(k) => k.len(),
        }
    }

    fn name(&self) -> &'static str {
        match self {
            At::Times(_) => "t",
            At::Levels(_) => "level",
        }
    }

    /// The noise (s, v) of each value, each checked.
    fn noises(&self, schedule: &Schedule) -> Result<Vec<Noise>> {
        match self {
            At::Times(t) => t
                .iter()
                .map(|&ti| {
                    check_time("t", ti)?;
                    Ok(schedule.noise(ti))
                })
                .collect(),
            At::Levels(k) => {
                let sched = DiscreteSchedule::new(LEVELS);
                k.iter()
                    .map(|&ki| {
                        check_level("level", ki)?;
                        Ok(sched.noise(ki))
                    })
                    .collect()
            }
        }
    }
}

/// Checks that k is a level of the discrete schedule, 0..T−1, naming `key`.
pub fn check_level(key: &str, k: usize) -> Result<()> {
    if k < LEVELS {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!(
                "must be a level of the DDPM schedule, an integer in 0..={}, got {k}",
                LEVELS - 1
            ),
        ))
    }
}

fn input(msg: impl Into<String>) -> Error {
    Error::input(msg)
}

/// Checks that `values` are finite, naming the argument and the first bad entry.
pub fn check_finite(name: &str, values: &[f32], cols: usize) -> Result<()> {
    if let Some(k) = values.iter().position(|v| !v.is_finite()) {
        let at = match k.checked_div(cols) {
            Some(row) => format!("[{row}, {}]", k % cols),
            None => format!("[{k}]"),
        };
        return Err(input(format!(
            "{name}{at} is {} (every value must be finite); replace NaN/inf before the call",
            values[k]
        )));
    }
    Ok(())
}

impl Lens {
    /// The prior over `images` (N × D row-major, values in [-1, 1] by convention), with the
    /// engine `engine`. `shape` is the image shape operators see (default: square when D is
    /// a perfect square, else 1 × D); `labels` (one class per atom) make the metrics' modes
    /// (else k-means clusters).
    pub fn new(
        images: Vec<f32>,
        dim: usize,
        shape: Option<ImageShape>,
        labels: Option<Vec<u32>>,
        engine: EngineChoice,
        schedule: Schedule,
        base_dir: PathBuf,
    ) -> Result<Self> {
        if dim == 0 || images.is_empty() || !images.len().is_multiple_of(dim) {
            return Err(input(format!(
                "atoms must be a non-empty (N, D) array; got {} values in rows of {dim}",
                images.len()
            )));
        }
        check_finite("atoms", &images, dim)?;
        let shape = crate::experiment::flat_shape(dim, shape);
        if shape.dim() != dim {
            return Err(Error::config(
                "shape",
                format!(
                    "{shape} has {} values but the atoms have D = {dim}; pass shape=(H, W, C) with H·W·C = {dim}",
                    shape.dim()
                ),
            ));
        }
        let n = images.len() / dim;
        if let Some(l) = &labels
            && l.len() != n
        {
            return Err(Error::config(
                "labels",
                format!(
                    "has {} values but there are N = {n} atoms; pass shape ({n},)",
                    l.len()
                ),
            ));
        }
        let eight_bit = crate::data::all_eight_bit(&images);
        let atoms = Dataset {
            source: "python".to_string(),
            shape,
            images,
            labels,
            class_names: None,
            eight_bit,
        };
        Self::from_dataset(atoms, engine, schedule, base_dir)
    }

    /// The prior over a data set already loaded (its images become the lens's atom store).
    pub fn from_dataset(
        atoms: Dataset,
        engine: EngineChoice,
        schedule: Schedule,
        base_dir: PathBuf,
    ) -> Result<Self> {
        let Dataset {
            images,
            shape,
            labels,
            class_names,
            eight_bit,
            ..
        } = atoms;
        let images = Arc::new(images);
        let backend = crate::engine::create_shared(
            engine.backend,
            engine.storage,
            engine.devices,
            eight_bit,
            &images,
            shape.dim(),
        )?;
        Ok(Lens {
            description: backend.describe(),
            backend: RwLock::new(backend),
            images,
            shape,
            labels,
            class_names,
            schedule,
            base_dir,
            diagnostics: diagnostics::Options::default(),
            atom_scale: OnceLock::new(),
        })
    }

    /// The atoms of a run config (hold-out applied), its schedule and engine (the `backend`
    /// and `storage` overrides replace the config's), and its measurement.
    pub fn from_config(path: &Path, overrides: Overrides) -> Result<(Self, ConfigMeasurement)> {
        let plan = RunPlan::load(path, overrides)?;
        let setup = crate::experiment::setup::setup(&plan, &mut crate::experiment::Silent, None)?;
        let mut lens = Self::from_dataset(
            setup.atoms,
            plan.engine,
            plan.schedule,
            plan.base_dir.clone(),
        )?;
        lens.diagnostics = plan.diagnostics;
        let measurement = ConfigMeasurement {
            truth: setup.truth,
            truth_label: setup.truth_label,
            truth_source: setup.truth_source,
            operator: Arc::from(setup.operator),
            y: setup.y,
            sigma: setup.sigma,
            log_likelihoods: setup.log_likelihoods,
        };
        Ok((lens, measurement))
    }

    pub fn describe(&self) -> &str {
        &self.description
    }
    pub fn atoms(&self) -> usize {
        self.images.len() / self.dim()
    }
    pub fn dim(&self) -> usize {
        self.shape.dim()
    }
    pub fn shape(&self) -> ImageShape {
        self.shape
    }
    pub fn images(&self) -> &[f32] {
        &self.images
    }
    /// Biases the engine holds (one per live posterior).
    pub fn live_biases(&self) -> usize {
        self.engine().live_biases()
    }
    /// The class of every atom, when the data set has labels.
    pub fn labels(&self) -> Option<&[u32]> {
        self.labels.as_deref()
    }

    /// (s, v) at time t ∈ (0, 1], the error naming `t`.
    pub fn noise(&self, t: f64) -> Result<Noise> {
        check_time("t", t)?;
        Ok(self.schedule.noise(t))
    }

    fn engine(&self) -> std::sync::RwLockReadGuard<'_, Box<dyn Backend>> {
        // A poisoned lock means a panic inside a pass; the engine itself is still usable.
        self.backend.read().unwrap_or_else(|e| e.into_inner())
    }

    /// Checks x (B × D values) and returns B.
    fn rows(&self, name: &str, x: &[f32]) -> Result<usize> {
        let d = self.dim();
        if !x.len().is_multiple_of(d) {
            return Err(input(format!(
                "{name} has {} values, not a whole number of rows of D = {d}; pass shape (B, {d})",
                x.len()
            )));
        }
        check_finite(name, x, d)?;
        Ok(x.len() / d)
    }

    /// Runs `f` once per distinct noise of `at` (one value for every row, or one per row) on
    /// the rows with that noise, and puts the rows back in order. `arrays` are B × D each
    /// (x first); `f` gets them restricted to the rows of one noise and that noise.
    fn per_row(&self, arrays: &[(&str, &[f32])], at: At<'_>, f: &RowsPass<'_>) -> Result<Vec<f32>> {
        let d = self.dim();
        let b = self.rows(arrays[0].0, arrays[0].1)?;
        for (name, a) in &arrays[1..] {
            let rows = self.rows(name, a)?;
            if rows != b {
                return Err(input(format!(
                    "{name} has {rows} rows but {} has {b}; they must have the same shape (B, {d})",
                    arrays[0].0
                )));
            }
        }
        if at.len() != 1 && at.len() != b {
            let what = match at {
                At::Times(_) => "one time (a float)",
                At::Levels(_) => "one level (an int)",
            };
            return Err(input(format!(
                "{} has {} values but {} has {b} rows; pass {what} or one per row, shape ({b},)",
                at.name(),
                at.len(),
                arrays[0].0
            )));
        }
        let noises = at.noises(&self.schedule)?;
        if b == 0 {
            return Ok(Vec::new());
        }
        let all: Vec<&[f32]> = arrays.iter().map(|(_, a)| *a).collect();
        if noises.iter().all(|n| *n == noises[0]) {
            return f(&all, noises[0]);
        }
        // Rows grouped by their noise (exact equality), in first-appearance order.
        let mut groups: Vec<(Noise, Vec<usize>)> = Vec::new();
        for (row, &n) in noises.iter().enumerate() {
            match groups.iter_mut().find(|(ng, _)| *ng == n) {
                Some((_, rows)) => rows.push(row),
                None => groups.push((n, vec![row])),
            }
        }
        let mut out = vec![0.0f32; b * d];
        for (noise, rows) in groups {
            let gathered: Vec<Vec<f32>> = all
                .iter()
                .map(|a| {
                    rows.iter()
                        .flat_map(|&r| a[r * d..(r + 1) * d].iter().copied())
                        .collect()
                })
                .collect();
            let views: Vec<&[f32]> = gathered.iter().map(Vec::as_slice).collect();
            let part = f(&views, noise)?;
            for (k, &r) in rows.iter().enumerate() {
                out[r * d..(r + 1) * d].copy_from_slice(&part[k * d..(k + 1) * d]);
            }
        }
        Ok(out)
    }

    /// Weighted means of x under `set` at one noise: one engine pass.
    fn means(&self, x: &[f32], noise: Noise, set: WeightSet) -> Result<Vec<f32>> {
        let mut pass = self.engine().weighted_means(x, noise, &[set])?;
        Ok(std::mem::take(&mut pass.sets[0].means))
    }

    /// m(x_t) = Σ_i w_i a_i under `set` (the prior's Tweedie mean, or a posterior's).
    pub fn denoise_with(&self, x: &[f32], t: &[f64], set: WeightSet) -> Result<Vec<f32>> {
        self.denoise_at(x, At::Times(t), set)
    }

    /// [`Lens::denoise_with`] at times or at levels of the discrete schedule.
    pub fn denoise_at(&self, x: &[f32], at: At<'_>, set: WeightSet) -> Result<Vec<f32>> {
        self.per_row(&[("x", x)], at, &|a, noise| self.means(a[0], noise, set))
    }

    /// (s m − x)/v under `set`, combined in float64.
    pub fn score_with(&self, x: &[f32], t: &[f64], set: WeightSet) -> Result<Vec<f32>> {
        self.score_at(x, At::Times(t), set)
    }

    /// [`Lens::score_with`] at times or at levels of the discrete schedule.
    pub fn score_at(&self, x: &[f32], at: At<'_>, set: WeightSet) -> Result<Vec<f32>> {
        self.per_row(&[("x", x)], at, &|a, noise| {
            let m = self.means(a[0], noise, set)?;
            Ok(score_from_means(a[0], &m, noise))
        })
    }

    /// (x − s m)/√v under `set` (the noise prediction), combined in float64.
    pub fn eps_with(&self, x: &[f32], t: &[f64], set: WeightSet) -> Result<Vec<f32>> {
        self.eps_at(x, At::Times(t), set)
    }

    /// [`Lens::eps_with`] at times or at levels of the discrete schedule.
    pub fn eps_at(&self, x: &[f32], at: At<'_>, set: WeightSet) -> Result<Vec<f32>> {
        self.per_row(&[("x", x)], at, &|a, noise| {
            let m = self.means(a[0], noise, set)?;
            let sd = noise.v.sqrt();
            Ok(a[0]
                .iter()
                .zip(&m)
                .map(|(&xi, &mi)| ((f64::from(xi) - noise.s * f64::from(mi)) / sd) as f32)
                .collect())
        })
    }

    /// C g = Σ_i w_i (a_i − m)⟨a_i − m, g⟩ per row under the prior weights: two engine
    /// passes (the means, then the covariance product). The denoiser's Jacobian–vector
    /// product is (s/v) C g (C is symmetric, so it is also the vector–Jacobian product).
    pub fn cov_apply(&self, x: &[f32], t: &[f64], g: &[f32]) -> Result<Vec<f32>> {
        self.per_row(&[("x", x), ("g", g)], At::Times(t), &|a, noise| {
            let m = self.means(a[0], noise, WeightSet::Prior)?;
            self.engine()
                .covariance_products(a[0], noise, WeightSet::Prior, &m, a[1])
        })
    }

    /// The denoiser's vector–Jacobian product (s/v) C g per row: the means pass and the
    /// covariance pass, or the covariance pass alone when `means` (m(x) of the same rows at
    /// the same times, from [`Lens::denoise_with`] under the prior) is given: what a torch
    /// backward after its forward needs.
    pub fn denoiser_vjp(
        &self,
        x: &[f32],
        t: &[f64],
        g: &[f32],
        means: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        self.denoiser_vjp_at(x, At::Times(t), g, means)
    }

    /// [`Lens::denoiser_vjp`] at times or at levels of the discrete schedule.
    pub fn denoiser_vjp_at(
        &self,
        x: &[f32],
        at: At<'_>,
        g: &[f32],
        means: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        self.denoiser_vjp_with(x, at, g, means, WeightSet::Prior)
    }

    /// The vector–Jacobian product of the denoiser m(x_t) = Σ_i w_i a_i under `set`, whose
    /// weights are w_i ∝ exp(β_i − ‖x − s a_i‖²/(2v)) (β = 0 for the prior, b for a
    /// posterior): ∂w_i/∂x = (s/v) w_i (a_i − m), so gᵀ ∂m/∂x = (s/v) Σ_i w_i (a_i − m)⟨a_i − m,
    /// g⟩ = (s/v) C g, C the covariance of the atoms under the same weights (symmetric: also
    /// the Jacobian–vector product). `means`: m of the same rows and noises under `set`.
    pub fn denoiser_vjp_with(
        &self,
        x: &[f32],
        at: At<'_>,
        g: &[f32],
        means: Option<&[f32]>,
        set: WeightSet,
    ) -> Result<Vec<f32>> {
        let vjp = |a: &[&[f32]], noise: Noise, m: &[f32]| -> Result<Vec<f32>> {
            let c = self
                .engine()
                .covariance_products(a[0], noise, set, m, a[1])?;
            let k = noise.s / noise.v;
            Ok(c.iter().map(|&ci| (k * f64::from(ci)) as f32).collect())
        };
        match means {
            None => self.per_row(&[("x", x), ("g", g)], at, &|a, noise| {
                let m = self.means(a[0], noise, set)?;
                vjp(a, noise, &m)
            }),
            Some(means) => {
                self.per_row(&[("x", x), ("g", g), ("means", means)], at, &|a, noise| {
                    vjp(a, noise, a[2])
                })
            }
        }
    }

    /// Builds the operator for images of this prior.
    pub fn operator(&self, arg: OperatorArg) -> Result<Arc<dyn Operator>> {
        match arg {
            OperatorArg::Built(op) => {
                if op.input_shape().dim() != self.dim() {
                    return Err(input(format!(
                        "operator {} acts on images of {} values but the atoms have D = {}",
                        op.spec(),
                        op.input_shape().dim(),
                        self.dim()
                    )));
                }
                Ok(op)
            }
            OperatorArg::Spec(spec) => Ok(Arc::from(operators::parse_for(
                &spec,
                self.shape(),
                &self.base_dir,
                "operator",
            )?)),
            OperatorArg::Matrix { rows, values } => {
                let d = self.dim();
                if rows == 0 || values.len() != rows * d {
                    return Err(input(format!(
                        "operator matrix has {} values; it must have shape (m, {d}) with m ≥ 1 (D = {d}, the atoms' dimension)",
                        values.len()
                    )));
                }
                check_finite("operator", &values, d)?;
                Ok(Arc::new(DenseMatrix::new(
                    self.shape(),
                    rows,
                    values,
                    format!("matrix:<{rows}x{d} array>"),
                )?))
            }
        }
    }
}

impl Posterior {
    /// The posterior of measurement y = A(x) + N(0, σ² I): b_i = −‖y − A(a_i)‖²/(2σ²) in
    /// float64 from the measured atoms (computed once, here).
    pub fn new(lens: Arc<Lens>, y: Vec<f32>, operator: OperatorArg, sigma: f64) -> Result<Self> {
        crate::operators::check_sigma(sigma, "sigma")?;
        let op = lens.operator(operator)?;
        let m = op.output_len();
        if y.len() != m {
            return Err(Error::config(
                "y",
                format!(
                    "has {} values but operator {} measures m = {m}; pass y of shape ({m},)",
                    y.len(),
                    op.spec()
                ),
            ));
        }
        check_finite("y", &y, 0)?;
        let b = operators::atom_log_likelihoods(op.as_ref(), lens.images(), &y, sigma)?;
        Self::with_bias(lens, b, Some((op, y, sigma)))
    }

    /// The posterior of y = A(x) + N(0, diag(σ_j²)) with m per-entry σ_j, by the whitening
    /// of a run's setup (design §2): b_i = −Σ_j (y_j − A(a_i)_j)²/(2σ_j²) in float64, the σ = 1
    /// posterior of y_j/σ_j under A(x)_j/σ_j (its operator, y and σ = 1 are what it keeps).
    pub fn with_entry_sigma(
        lens: Arc<Lens>,
        y: Vec<f32>,
        operator: OperatorArg,
        sigma: Vec<f64>,
    ) -> Result<Self> {
        let op = lens.operator(operator)?;
        let m = op.output_len();
        if sigma.len() != m {
            return Err(Error::config(
                "sigma",
                format!(
                    "has {} values but operator {} measures m = {m}; pass one σ_j per entry of \
                     y, shape ({m},), or one number",
                    sigma.len(),
                    op.spec()
                ),
            ));
        }
        for (j, &s) in sigma.iter().enumerate() {
            operators::check_sigma(s, "sigma").map_err(|e| match e {
                Error::Config { problem, .. } => {
                    Error::config("sigma", format!("entry {j}: {problem}"))
                }
                other => other,
            })?;
        }
        let whitened: Arc<dyn Operator> = Arc::new(operators::Whitened::new(op, sigma.clone())?);
        let mut y = y;
        operators::whiten_rows(&mut y, &sigma);
        Self::new(lens, y, OperatorArg::Built(whitened), 1.0)
    }

    /// The posterior whose log-likelihoods b_i = log p(y | a_i) are given (N values).
    pub fn from_log_likelihood(lens: Arc<Lens>, b: Vec<f64>) -> Result<Self> {
        let n = lens.atoms();
        if b.len() != n {
            return Err(Error::config(
                "log_likelihood",
                format!(
                    "has {} values but there are N = {n} atoms; pass shape ({n},)",
                    b.len()
                ),
            ));
        }
        if let Some(i) = b.iter().position(|v| !v.is_finite()) {
            return Err(Error::config(
                "log_likelihood",
                format!(
                    "value {i} is {} (every value must be finite; drop atoms the measurement rules out)",
                    b[i]
                ),
            ));
        }
        Self::with_bias(lens, b, None)
    }

    /// The posterior of a measurement whose log-likelihoods are already computed (a config's,
    /// from its setup: the same numbers [`Posterior::new`] would compute).
    pub fn from_parts(
        lens: Arc<Lens>,
        b: Vec<f64>,
        operator: Arc<dyn Operator>,
        y: Vec<f32>,
        sigma: f64,
    ) -> Result<Self> {
        Self::with_bias(lens, b, Some((operator, y, sigma)))
    }

    fn with_bias(
        lens: Arc<Lens>,
        b: Vec<f64>,
        measurement: Option<(Arc<dyn Operator>, Vec<f32>, f64)>,
    ) -> Result<Self> {
        let bias = lens
            .backend
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .add_bias(&b)?;
        Ok(Posterior {
            weights: softmax(&b),
            lens,
            bias,
            log_likelihoods: b,
            measurement,
            exact: OnceLock::new(),
        })
    }

    /// 1/Σ ω_i².
    pub fn effective_atoms(&self) -> f64 {
        1.0 / self.weights.iter().map(|w| w * w).sum::<f64>()
    }

    /// The posterior Tweedie mean m̃(x_t) = Σ_i w̃_i a_i.
    pub fn denoise(&self, x: &[f32], t: &[f64]) -> Result<Vec<f32>> {
        self.denoise_at(x, At::Times(t))
    }

    /// [`Posterior::denoise`] at times or at levels of the discrete schedule.
    pub fn denoise_at(&self, x: &[f32], at: At<'_>) -> Result<Vec<f32>> {
        self.lens.denoise_at(x, at, WeightSet::Biased(self.bias))
    }

    /// The posterior denoiser's vector–Jacobian product gᵀ ∂m̃/∂x = (s/v) C̃ g per row, C̃ the
    /// covariance of the atoms under the posterior weights w̃_i ∝ ω_i N(x; s a_i, v I)
    /// ([`Lens::denoiser_vjp_with`]); with `means` (m̃ of the same rows, from
    /// [`Posterior::denoise_at`]) one engine pass, else two.
    pub fn denoiser_vjp_at(
        &self,
        x: &[f32],
        at: At<'_>,
        g: &[f32],
        means: Option<&[f32]>,
    ) -> Result<Vec<f32>> {
        self.lens
            .denoiser_vjp_with(x, at, g, means, WeightSet::Biased(self.bias))
    }

    /// The score of `method` (`fsr`: the exact posterior score; `prior`; or an approximate
    /// sampler's, prior score + its likelihood score, design §4), exactly as `fslens score`
    /// computes it, with the warnings of its solves (pigdm/tmpd conjugate gradients that hit
    /// their iteration cap) for the caller to show.
    pub fn score(
        &self,
        x: &[f32],
        t: &[f64],
        method: &str,
        options: &SamplerOptions,
    ) -> Result<Scored> {
        self.score_at(x, At::Times(t), method, options)
    }

    /// [`Posterior::score`] at times or at levels of the discrete schedule.
    pub fn score_at(
        &self,
        x: &[f32],
        at: At<'_>,
        method: &str,
        options: &SamplerOptions,
    ) -> Result<Scored> {
        let method = Method::parse_for(method, "method")?;
        options.validate(&|k| k.to_string())?;
        let kind = match method {
            Method::Prior => return Ok(self.lens.score_at(x, at, WeightSet::Prior)?.into()),
            Method::Posterior(SamplerKind::Fsr) => {
                return Ok(self
                    .lens
                    .score_at(x, at, WeightSet::Biased(self.bias))?
                    .into());
            }
            Method::Posterior(kind) => kind,
        };
        let Some((op, y, sigma)) = &self.measurement else {
            return Err(Error::config(
                "method",
                format!(
                    "{} needs the operator, y and σ, but this posterior was made from log-likelihoods; make it with prior.posterior(y, operator=..., sigma=...)",
                    kind.name()
                ),
            ));
        };
        // A likelihood of `kind`, or the error that it has none.
        let likelihood = || -> Result<Box<dyn Likelihood>> {
            kind.likelihood(options).ok_or_else(|| {
                Error::config("method", format!("{} has no likelihood score", kind.name()))
            })
        };
        check_operator(likelihood()?.as_ref(), op.as_ref()).map_err(|e| match e {
            Error::Config { problem, .. } => Error::config("method", problem),
            other => other,
        })?;
        let lens = &self.lens;
        let warnings = RefCell::new(Vec::new());
        let values = lens.per_row(&[("x", x)], at, &|a, noise| {
            let engine = lens.engine();
            let ctx = Context {
                backend: engine.as_ref(),
                operator: op.as_ref(),
                y,
                sigma: *sigma,
            };
            // A fresh likelihood per time (no warm start carried over), as in `fslens score`.
            let mut fresh = likelihood()?;
            let s = posterior_score(fresh.as_mut(), &ctx, a[0], noise)?;
            warnings.borrow_mut().extend(fresh.solve_warning());
            Ok(s)
        })?;
        Ok(Scored {
            values,
            warnings: warnings.into_inner(),
        })
    }

    /// k exact draws of p(x_t | y) = Σ_i ω_i N(s a_i, v I): i ~ Cat(ω), x = s a_i + √v ε
    /// (t = 0 draws atoms). ChaCha8 from `seed`.
    pub fn sample(&self, t: f64, k: usize, seed: u64) -> Result<Vec<f32>> {
        let noise = if t == 0.0 {
            Noise { s: 1.0, v: 0.0 }
        } else {
            self.lens
                .noise(t)
                .map_err(|_| Error::config("t", format!("time must lie in [0, 1], got {t}")))?
        };
        use rand::{Rng, SeedableRng};
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let picks = Exact::draw_atoms(&self.weights, k, &mut rng);
        let d = self.lens.dim();
        let sd = noise.v.sqrt();
        let images = self.lens.images();
        let mut out = Vec::with_capacity(k * d);
        for i in picks {
            out.extend(images[i * d..(i + 1) * d].iter().map(|&a| {
                let e: f64 = rng.sample(rand_distr::StandardNormal);
                (noise.s * f64::from(a) + sd * e) as f32
            }));
        }
        Ok(out)
    }

    /// The id of this posterior's bias in the lens's engine (valid while the posterior lives).
    pub fn bias_id(&self) -> BiasId {
        self.bias
    }

    /// E‖x_t − E x_t‖² = s² Σ_i ω_i ‖a_i − ā‖² + D v (design §3).
    pub fn exact_spread(&self, t: f64) -> Result<f64> {
        let noise = if t == 0.0 {
            Noise { s: 1.0, v: 0.0 }
        } else {
            self.lens.noise(t)?
        };
        let d = self.lens.dim();
        let images = self.lens.images();
        let mut mean = vec![0.0f64; d];
        for (w, a) in self.weights.iter().zip(images.chunks(d)) {
            for (m, &ai) in mean.iter_mut().zip(a) {
                *m += w * f64::from(ai);
            }
        }
        let var: f64 = self
            .weights
            .iter()
            .zip(images.chunks(d))
            .map(|(w, a)| {
                w * a
                    .iter()
                    .zip(&mean)
                    .map(|(&ai, m)| (f64::from(ai) - m).powi(2))
                    .sum::<f64>()
            })
            .sum();
        Ok(noise.s * noise.s * var + d as f64 * noise.v)
    }
}

/// At least this many exact draws make the exact cloud of a metrics call (as `fslens
/// diagnose`).
pub const METRICS_EXACT_DRAWS: usize = 2000;

impl Posterior {
    /// The metrics of `cloud` (K × D) at time t ∈ [0, 1], exactly as a run records them at a
    /// checkpoint (a metrics.json record, design §6): mode weights and TV, hallucination and
    /// off-support rates, spread ratio tr Cov / (s² Σ_i ω_i ‖a_i − ā‖² + D v), data fits,
    /// and PSNR/SSIM of the Tweedie means against `truth` (NaN without one). The exact cloud
    /// at t is max(K, [`METRICS_EXACT_DRAWS`]) fresh draws; t = 0 scores clean samples as
    /// `fslens diagnose` does ([`ExactPosterior::score_cloud`]).
    pub fn metrics(
        &self,
        cloud: &[f32],
        t: f64,
        truth: Option<&[f32]>,
    ) -> Result<CheckpointMetrics> {
        let lens = &self.lens;
        let k = lens.rows("cloud", cloud)?;
        if k == 0 {
            return Err(input(
                "cloud has no rows; pass at least one particle, shape (K, D)",
            ));
        }
        if !(0.0..=1.0).contains(&t) {
            return Err(Error::config(
                "t",
                format!("time must lie in [0, 1], got {t}"),
            ));
        }
        if let Some(truth) = truth {
            if truth.len() != lens.dim() {
                return Err(input(format!(
                    "truth has {} values but D = {}; pass shape ({},)",
                    truth.len(),
                    lens.dim(),
                    lens.dim()
                )));
            }
            check_finite("truth", truth, 0)?;
        }
        let view = self.exact_view(truth);
        view.score_cloud(lens.engine().as_ref(), t, cloud, k.max(METRICS_EXACT_DRAWS))
    }

    /// The modes of the metrics: names and exact masses Σ_{i ∈ mode} ω_i.
    pub fn modes(&self) -> (Vec<String>, Vec<f64>) {
        let c = self.constants();
        (c.modes.names.clone(), c.exact_mode_weights.clone())
    }

    fn constants(&self) -> &ExactConstants {
        self.exact.get_or_init(|| {
            let lens = &self.lens;
            let options = lens.diagnostics;
            let (images, dim) = (lens.images(), lens.dim());
            let modes = lens
                .labels()
                .and_then(|l| Modes::from_classes(l, lens.class_names.as_deref()))
                .unwrap_or_else(|| {
                    Modes::from_clusters(images, dim, &self.weights, options.clusters, options.seed)
                });
            ExactConstants {
                exact_mode_weights: modes.exact_weights(&self.weights),
                atom_spread: diagnostics::atom_spread(images, dim, &self.weights),
                modes,
            }
        })
    }

    /// The exact posterior as the metrics see it, from the cached constants.
    fn exact_view<'a>(&'a self, truth: Option<&'a [f32]>) -> ExactPosterior<'a> {
        let lens = &self.lens;
        let c = self.constants();
        let atom_scale = *lens.atom_scale.get_or_init(|| {
            diagnostics::atom_scale(lens.images(), lens.dim(), lens.diagnostics.seed)
        });
        ExactPosterior {
            atoms: lens.images(),
            shape: lens.shape(),
            omega: &self.weights,
            modes: c.modes.clone(),
            exact_mode_weights: c.exact_mode_weights.clone(),
            atom_spread: c.atom_spread,
            atom_scale,
            measurement: self.measurement.as_ref().map(|(op, y, sigma)| Measured {
                operator: op.as_ref(),
                y,
                sigma: *sigma,
            }),
            truth,
            schedule: lens.schedule,
            options: lens.diagnostics,
        }
    }
}

impl Drop for Posterior {
    /// Removes the bias from the engine: a loop making posteriors holds N values per live
    /// posterior, not per posterior ever made. The id is never issued again, so nothing can
    /// address the freed slot.
    fn drop(&mut self) {
        // Removal fails only for an id that is not live, and each posterior owns its id.
        let _ = self
            .lens
            .backend
            .write()
            .unwrap_or_else(|e| e.into_inner())
            .remove_bias(self.bias);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lens() -> Arc<Lens> {
        let d = 4;
        let images: Vec<f32> = (0..6 * d)
            .map(|k| ((k * 7 % 11) as f32) / 11.0 - 0.5)
            .collect();
        Arc::new(
            Lens::new(
                images,
                d,
                None,
                None,
                EngineChoice {
                    backend: crate::engine::BackendKind::Cpu,
                    ..Default::default()
                },
                Schedule::default(),
                PathBuf::from("."),
            )
            .unwrap(),
        )
    }

    #[test]
    fn per_row_times_match_one_time_calls() {
        let lens = lens();
        let x: Vec<f32> = (0..3 * 4).map(|k| (k as f32 * 0.37).sin()).collect();
        let t = [0.3, 0.7, 0.3];
        let all = lens.score_with(&x, &t, WeightSet::Prior).unwrap();
        for (r, &ti) in t.iter().enumerate() {
            let one = lens
                .score_with(&x[r * 4..(r + 1) * 4], &[ti], WeightSet::Prior)
                .unwrap();
            assert_eq!(&all[r * 4..(r + 1) * 4], one.as_slice());
        }
    }

    #[test]
    fn levels_use_the_discrete_noise_and_group_like_times() {
        let lens = lens();
        let x: Vec<f32> = (0..3 * 4).map(|k| (k as f32 * 0.37).sin()).collect();
        let levels = [999usize, 10, 999];
        let all = lens
            .eps_at(&x, At::Levels(&levels), WeightSet::Prior)
            .unwrap();
        let sched = DiscreteSchedule::new(LEVELS);
        for (r, &k) in levels.iter().enumerate() {
            let row = &x[r * 4..(r + 1) * 4];
            let one = lens
                .eps_at(row, At::Levels(&[k]), WeightSet::Prior)
                .unwrap();
            assert_eq!(&all[r * 4..(r + 1) * 4], one.as_slice());
            // ε = (x − s m)/√v with the level's own (s, v).
            let n = sched.noise(k);
            let m = lens.means(row, n, WeightSet::Prior).unwrap();
            for j in 0..4 {
                let want = (f64::from(row[j]) - n.s * f64::from(m[j])) / n.v.sqrt();
                assert!((f64::from(one[j]) - want).abs() <= 1e-5 * want.abs().max(1.0));
            }
        }
        let e = lens
            .eps_at(&x[..4], At::Levels(&[1000]), WeightSet::Prior)
            .unwrap_err();
        assert!(e.to_string().starts_with("level: must be a level"), "{e}");
        let e = lens
            .eps_at(&x, At::Levels(&[1, 2]), WeightSet::Prior)
            .unwrap_err();
        assert!(e.to_string().starts_with("level has 2 values"), "{e}");
    }

    #[test]
    fn metrics_equal_a_fresh_exact_posterior_and_are_cached() {
        let lens = lens();
        let b: Vec<f64> = (0..6).map(|i| -0.3 * i as f64).collect();
        let post = Posterior::from_log_likelihood(lens.clone(), b).unwrap();
        let cloud = post.sample(0.4, 30, 2).unwrap();
        let atoms = Dataset {
            source: "test".into(),
            shape: lens.shape(),
            images: lens.images().to_vec(),
            labels: None,
            class_names: None,
            eight_bit: false,
        };
        for t in [0.0, 0.4] {
            let got = post.metrics(&cloud, t, None).unwrap();
            let again = post.metrics(&cloud, t, None).unwrap();
            let fresh = ExactPosterior::new(
                &atoms,
                &post.weights,
                None,
                None,
                lens.schedule,
                lens.diagnostics,
            )
            .score_cloud(lens.engine().as_ref(), t, &cloud, METRICS_EXACT_DRAWS)
            .unwrap();
            let json = |m: &CheckpointMetrics| serde_json::to_string(m).unwrap();
            assert_eq!(json(&got), json(&fresh));
            assert_eq!(json(&got), json(&again));
            assert!(got.psnr_denoised.mean.is_nan() && got.data_fit_scaled.mean.is_nan());
        }
        let e = post.metrics(&cloud[..5], 0.4, None).unwrap_err();
        assert!(e.to_string().starts_with("cloud has 5 values"), "{e}");
        let e = post.metrics(&cloud, 1.5, None).unwrap_err();
        assert!(e.to_string().starts_with("t: "), "{e}");
    }

    #[test]
    fn a_dropped_posterior_leaves_the_engine() {
        let lens = lens();
        let x: Vec<f32> = (0..2 * 4).map(|k| (k as f32 * 0.61).cos()).collect();
        let b = |k: usize| (0..6).map(|i| -(((i * k) % 5) as f64)).collect::<Vec<_>>();
        let keep = Posterior::from_log_likelihood(lens.clone(), b(1)).unwrap();
        let before = keep.denoise(&x, &[0.4]).unwrap();
        for k in 2..30 {
            let p = Posterior::from_log_likelihood(lens.clone(), b(k)).unwrap();
            p.denoise(&x, &[0.4]).unwrap();
            assert_eq!(lens.live_biases(), 2);
        }
        assert_eq!(lens.live_biases(), 1);
        assert_eq!(keep.denoise(&x, &[0.4]).unwrap(), before);
        let id = keep.bias_id();
        drop(keep);
        assert_eq!(lens.live_biases(), 0);
        let e = lens
            .denoise_with(&x, &[0.4], WeightSet::Biased(id))
            .unwrap_err();
        assert!(e.to_string().contains("removed"), "{e}");
    }

    #[test]
    fn unconverged_solves_come_back_as_warnings() {
        let lens = lens();
        // A dense 3 × 4 operator: A Aᵀ is not c·I, so pigdm solves by conjugate gradients.
        let a: Vec<f32> = (0..12).map(|k| ((k * 5 % 7) as f32) / 7.0 - 0.4).collect();
        let y = vec![0.1, -0.2, 0.3];
        let op = OperatorArg::Matrix { rows: 3, values: a };
        let p = Posterior::new(lens.clone(), y, op, 0.05).unwrap();
        let x: Vec<f32> = (0..2 * 4).map(|k| (k as f32 * 0.37).sin()).collect();
        let capped = SamplerOptions {
            cg: crate::samplers::solve::CgOptions {
                tolerance: 1e-12,
                max_iterations: 1,
            },
            ..SamplerOptions::default()
        };
        let s = p.score(&x, &[0.5, 0.7], "pigdm", &capped).unwrap();
        assert_eq!(s.values.len(), x.len());
        // One fresh likelihood per time, each with its warning.
        assert_eq!(s.warnings.len(), 2, "{:?}", s.warnings);
        assert!(s.warnings[0].starts_with("pigdm: "), "{:?}", s.warnings);
        let s = p
            .score(&x, &[0.5, 0.7], "pigdm", &SamplerOptions::default())
            .unwrap();
        assert!(s.warnings.is_empty(), "{:?}", s.warnings);
        assert!(
            p.score(&x, &[0.5], "fsr", &capped)
                .unwrap()
                .warnings
                .is_empty()
        );
    }

    #[test]
    fn bad_inputs_are_errors_naming_the_argument() {
        let lens = lens();
        let e = lens
            .score_with(&[0.0; 5], &[0.5], WeightSet::Prior)
            .unwrap_err();
        assert!(e.to_string().starts_with("x has 5 values"), "{e}");
        let e = lens
            .score_with(&[0.0; 4], &[0.0], WeightSet::Prior)
            .unwrap_err();
        assert!(e.to_string().starts_with("t: "), "{e}");
        let e = lens
            .score_with(&[f32::NAN, 0.0, 0.0, 0.0], &[0.5], WeightSet::Prior)
            .unwrap_err();
        assert!(e.to_string().starts_with("x[0, 0] is NaN"), "{e}");
        let e = Posterior::new(
            lens.clone(),
            vec![0.0; 3],
            OperatorArg::Spec("identity".into()),
            0.1,
        )
        .err()
        .unwrap();
        assert!(e.to_string().starts_with("y: has 3 values"), "{e}");
        let p = Posterior::from_log_likelihood(lens.clone(), vec![0.0; 6]).unwrap();
        let e = p
            .score(&[0.0; 4], &[0.5], "tmpd", &SamplerOptions::default())
            .unwrap_err();
        assert!(e.to_string().starts_with("method: tmpd needs"), "{e}");
        assert!((p.effective_atoms() - 6.0).abs() < 1e-12);
    }
}

//! `fslens._fslens`: the pyo3 layer of the Python package. It converts numpy arrays and
//! errors and releases the GIL around engine passes; the logic is the library's
//! (`fslens::lens`). The pure-Python package `fslens` (python/fslens/) checks dtypes and
//! shapes and wraps these classes.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use numpy::ndarray::Array2;
use numpy::{
    IntoPyArray, PyArray1, PyArray2, PyReadonlyArray1, PyReadonlyArray2, PyUntypedArrayMethods,
};
use pyo3::exceptions::{PyTypeError, PyValueError};
use pyo3::prelude::*;

use fslens::choices::Choice;
use fslens::data::ImageShape;
use fslens::diffusion::Schedule;
use fslens::engine::{BackendKind, StorageChoice, WeightSet};
use fslens::plan::{EngineChoice, Overrides};
use fslens::samplers::SamplerOptions;
use fslens::samplers::solve::CgOptions;

use fslens::diffusion::discrete::{DiscreteSchedule, LEVELS};
use fslens::lens::{At, ConfigMeasurement, Lens, OperatorArg, check_level};

/// fslens::Error → ValueError with its message (which names the argument and the fix).
fn err(e: fslens::Error) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn slice<'a, T: numpy::Element, D: numpy::ndarray::Dimension>(
    a: &'a numpy::PyReadonlyArray<'_, T, D>,
    name: &str,
) -> PyResult<&'a [T]> {
    a.as_slice().map_err(|_| {
        PyValueError::new_err(format!(
            "{name} must be a C-contiguous array; pass numpy.ascontiguousarray({name})"
        ))
    })
}

/// The values of a (B, D) array whose rows must have the prior's D values.
fn rows_in<'a>(a: &'a PyReadonlyArray2<'_, f32>, name: &str, d: usize) -> PyResult<&'a [f32]> {
    let shape = a.shape();
    if shape[1] != d {
        return Err(PyValueError::new_err(format!(
            "{name} has shape ({}, {}) but the atoms have D = {d}; pass shape (B, {d})",
            shape[0], shape[1]
        )));
    }
    slice(a, name)
}

fn rows_out<'py>(
    py: Python<'py>,
    values: Vec<f32>,
    d: usize,
) -> PyResult<Bound<'py, PyArray2<f32>>> {
    let b = values.len().checked_div(d).unwrap_or(0);
    Array2::from_shape_vec((b, d), values)
        .map(|a| a.into_pyarray(py))
        .map_err(|e| PyValueError::new_err(format!("internal shape error: {e}")))
}

fn schedule(beta_min: f64, beta_max: f64) -> PyResult<Schedule> {
    Schedule::new(beta_min, beta_max, ["beta_min", "beta_max"]).map_err(err)
}

/// The `backend`/`storage` arguments that replace a config's.
fn overrides(backend: Option<&str>, storage: Option<&str>) -> PyResult<Overrides> {
    Ok(Overrides {
        backend: backend
            .map(|b| BackendKind::parse_for(b, "backend"))
            .transpose()
            .map_err(err)?,
        storage: storage
            .map(|s| StorageChoice::parse_for(s, "storage"))
            .transpose()
            .map_err(err)?,
        // Several GPUs (`devices`) and certified pruning (`prune`) are not exposed to
        // Python: the config's, else one device and no pruning.
        devices: None,
        prune: None,
    })
}

fn engine_choice(backend: &str, storage: &str) -> PyResult<EngineChoice> {
    Ok(EngineChoice {
        backend: BackendKind::parse_for(backend, "backend").map_err(err)?,
        storage: StorageChoice::parse_for(storage, "storage").map_err(err)?,
        devices: Default::default(),
    })
}

/// The empirical prior over N atoms, resident in an engine (CPU or GPU).
#[pyclass(module = "fslens._fslens", frozen)]
struct Prior {
    lens: Arc<Lens>,
    config: Option<ConfigMeasurement>,
}

/// Levels of the discrete schedule (uint64 from the Python side) as usize.
fn levels(level: &PyReadonlyArray1<'_, u64>) -> PyResult<Vec<usize>> {
    Ok(slice(level, "level")?
        .iter()
        .map(|&k| usize::try_from(k).unwrap_or(usize::MAX))
        .collect())
}

/// When a pass is evaluated, as the Python side passes it: float64 times of the VP schedule,
/// or uint64 levels of the discrete DDPM schedule (the dtype tells which).
#[derive(FromPyObject)]
enum When<'py> {
    Times(PyReadonlyArray1<'py, f64>),
    Levels(PyReadonlyArray1<'py, u64>),
}

impl<'py> When<'py> {
    fn resolve(self) -> PyResult<Where<'py>> {
        Ok(match self {
            When::Times(t) => Where::Times(t),
            When::Levels(k) => Where::Levels(levels(&k)?),
        })
    }
}

/// [`When`] with the levels converted, ready to lend an [`At`].
enum Where<'py> {
    Times(PyReadonlyArray1<'py, f64>),
    Levels(Vec<usize>),
}

impl Where<'_> {
    fn at(&self) -> PyResult<At<'_>> {
        Ok(match self {
            Where::Times(t) => At::Times(slice(t, "t")?),
            Where::Levels(k) => At::Levels(k),
        })
    }
}

/// One of the lens's per-row passes (`Lens::denoise_at`, …).
type Pass = fn(&Lens, &[f32], At<'_>, WeightSet) -> fslens::Result<Vec<f32>>;

impl Prior {
    /// One of the lens's per-row passes under the prior weights, on the rows of x at times
    /// or levels, with the GIL released: a (B, D) float32 array.
    fn prior_pass<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        when: When<'py>,
        pass: Pass,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let at = when.resolve()?;
        let (xs, at) = (rows_in(&x, "x", self.dim())?, at.at()?);
        let lens: &Lens = &self.lens;
        let out = py
            .detach(|| pass(lens, xs, at, WeightSet::Prior))
            .map_err(err)?;
        rows_out(py, out, self.lens.dim())
    }
}

#[pymethods]
impl Prior {
    /// atoms: (N, D) float32 C-contiguous, values in [-1, 1] by convention.
    #[new]
    #[pyo3(signature = (atoms, backend="auto", storage="auto", shape=None, beta_min=0.01, beta_max=20.0, labels=None))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        py: Python<'_>,
        atoms: PyReadonlyArray2<'_, f32>,
        backend: &str,
        storage: &str,
        shape: Option<(usize, usize, usize)>,
        beta_min: f64,
        beta_max: f64,
        labels: Option<PyReadonlyArray1<'_, u32>>,
    ) -> PyResult<Self> {
        let d = atoms.shape()[1];
        let images = slice(&atoms, "atoms")?.to_vec();
        let labels = labels
            .map(|l| slice(&l, "labels").map(<[u32]>::to_vec))
            .transpose()?;
        Self::build(
            py,
            images,
            d,
            labels,
            backend,
            storage,
            shape,
            (beta_min, beta_max),
        )
    }

    /// atoms: (N, D) uint8, mapped to 2k/255 − 1 (exact; the GPU then stores them as u8).
    #[staticmethod]
    #[pyo3(signature = (atoms, backend="auto", storage="auto", shape=None, beta_min=0.01, beta_max=20.0, labels=None))]
    #[allow(clippy::too_many_arguments)]
    fn from_u8(
        py: Python<'_>,
        atoms: PyReadonlyArray2<'_, u8>,
        backend: &str,
        storage: &str,
        shape: Option<(usize, usize, usize)>,
        beta_min: f64,
        beta_max: f64,
        labels: Option<PyReadonlyArray1<'_, u32>>,
    ) -> PyResult<Self> {
        let labels = labels
            .map(|l| slice(&l, "labels").map(<[u32]>::to_vec))
            .transpose()?;
        let d = atoms.shape()[1];
        let table = fslens::data::u8_pixel_table();
        let images = slice(&atoms, "atoms")?
            .iter()
            .map(|&k| table[k as usize])
            .collect();
        Self::build(
            py,
            images,
            d,
            labels,
            backend,
            storage,
            shape,
            (beta_min, beta_max),
        )
    }

    /// The atoms (hold-out applied), schedule, engine and measurement of a run config.
    #[staticmethod]
    #[pyo3(signature = (path, backend=None, storage=None))]
    fn from_config(
        py: Python<'_>,
        path: PathBuf,
        backend: Option<&str>,
        storage: Option<&str>,
    ) -> PyResult<Self> {
        let overrides = overrides(backend, storage)?;
        let (lens, config) = py
            .detach(|| Lens::from_config(Path::new(&path), overrides))
            .map_err(err)?;
        Ok(Prior {
            lens: Arc::new(lens),
            config: Some(config),
        })
    }

    #[getter]
    fn n_atoms(&self) -> usize {
        self.lens.atoms()
    }
    #[getter]
    fn dim(&self) -> usize {
        self.lens.dim()
    }
    #[getter]
    fn shape(&self) -> (usize, usize, usize) {
        let s = self.lens.shape();
        (s.height, s.width, s.channels)
    }
    #[getter]
    fn backend(&self) -> String {
        self.lens.describe().to_string()
    }
    /// Biases the engine holds: one per posterior of this prior still alive.
    #[getter]
    fn live_biases(&self) -> usize {
        self.lens.live_biases()
    }
    #[getter]
    fn beta_min(&self) -> f64 {
        self.lens.schedule.beta_min
    }
    #[getter]
    fn beta_max(&self) -> f64 {
        self.lens.schedule.beta_max
    }
    /// A copy of the atoms, (N, D) float32.
    #[getter]
    fn atoms<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyArray2<f32>>> {
        rows_out(py, self.lens.images().to_vec(), self.lens.dim())
    }

    // The config's measurement (None for a prior made from an array).
    #[getter]
    fn truth<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f32>>> {
        self.config
            .as_ref()
            .and_then(|c| c.truth.as_deref())
            .map(|t| PyArray1::from_slice(py, t))
    }
    /// The class of every atom, when known (from the config's data set, or given).
    #[getter]
    fn labels<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<u32>>> {
        self.lens.labels().map(|l| PyArray1::from_slice(py, l))
    }
    #[getter]
    fn truth_label(&self) -> Option<u32> {
        self.config.as_ref().and_then(|c| c.truth_label)
    }
    #[getter]
    fn truth_source(&self) -> Option<String> {
        self.config.as_ref().map(|c| c.truth_source.clone())
    }
    #[getter]
    fn y<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f32>>> {
        self.config.as_ref().map(|c| PyArray1::from_slice(py, &c.y))
    }
    #[getter]
    fn operator(&self) -> Option<String> {
        self.config.as_ref().map(|c| c.operator.spec())
    }
    #[getter]
    fn sigma(&self) -> Option<f64> {
        self.config.as_ref().map(|c| c.sigma)
    }

    fn denoise<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        when: When<'py>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        self.prior_pass(py, x, when, Lens::denoise_at)
    }

    fn score<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        when: When<'py>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        self.prior_pass(py, x, when, Lens::score_at)
    }

    fn eps<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        when: When<'py>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        self.prior_pass(py, x, when, Lens::eps_at)
    }

    fn cov_apply<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        t: PyReadonlyArray1<'py, f64>,
        g: PyReadonlyArray2<'py, f32>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let (xs, ts, gs) = (
            rows_in(&x, "x", self.dim())?,
            slice(&t, "t")?,
            rows_in(&g, "g", self.dim())?,
        );
        let out = py.detach(|| self.lens.cov_apply(xs, ts, gs)).map_err(err)?;
        rows_out(py, out, self.lens.dim())
    }

    /// (s/v) C g: the vector–Jacobian product of the denoiser m(x_t); with `means` (the
    /// prior's m(x) of the same rows and times, from `denoise`) one engine pass instead of two.
    #[pyo3(signature = (x, when, g, means=None))]
    fn denoiser_vjp<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        when: When<'py>,
        g: PyReadonlyArray2<'py, f32>,
        means: Option<PyReadonlyArray2<'py, f32>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let at = when.resolve()?;
        let (xs, at, gs) = (
            rows_in(&x, "x", self.dim())?,
            at.at()?,
            rows_in(&g, "g", self.dim())?,
        );
        let ms = match &means {
            Some(m) => Some(rows_in(m, "means", self.dim())?),
            None => None,
        };
        let out = py
            .detach(|| self.lens.denoiser_vjp_at(xs, at, gs, ms))
            .map_err(err)?;
        rows_out(py, out, self.lens.dim())
    }

    /// The posterior of y under an operator spec string.
    fn posterior_spec(
        &self,
        py: Python<'_>,
        y: PyReadonlyArray1<'_, f32>,
        operator: String,
        sigma: &Bound<'_, PyAny>,
    ) -> PyResult<Posterior> {
        let ys = slice(&y, "y")?.to_vec();
        self.posterior(py, ys, OperatorArg::Spec(operator), noise(sigma)?)
    }

    /// The posterior of y under a dense (m, D) matrix.
    fn posterior_matrix(
        &self,
        py: Python<'_>,
        y: PyReadonlyArray1<'_, f32>,
        matrix: PyReadonlyArray2<'_, f32>,
        sigma: &Bound<'_, PyAny>,
    ) -> PyResult<Posterior> {
        let ys = slice(&y, "y")?.to_vec();
        let rows = matrix.shape()[0];
        if matrix.shape()[1] != self.lens.dim() {
            return Err(PyValueError::new_err(format!(
                "operator matrix has shape ({rows}, {}); it must be (m, {d}) (D = {d}, the atoms' dimension)",
                matrix.shape()[1],
                d = self.lens.dim()
            )));
        }
        let values = slice(&matrix, "operator")?.to_vec();
        self.posterior(py, ys, OperatorArg::Matrix { rows, values }, noise(sigma)?)
    }

    /// The posterior of the config's measurement (its operator, y and σ); with `y` and/or
    /// `sigma`, those replace the config's.
    #[pyo3(signature = (y=None, sigma=None))]
    fn posterior_config(
        &self,
        py: Python<'_>,
        y: Option<PyReadonlyArray1<'_, f32>>,
        sigma: Option<f64>,
    ) -> PyResult<Posterior> {
        let Some(c) = &self.config else {
            return Err(PyValueError::new_err(
                "operator: this prior was not made from a config; pass operator= (an (m, D) array or an operator spec string) and sigma=",
            ));
        };
        if y.is_none() && sigma.is_none() {
            // The config's own measurement: its log-likelihoods are computed already.
            let lens = self.lens.clone();
            let inner = py
                .detach(|| {
                    fslens::lens::Posterior::from_parts(
                        lens,
                        c.log_likelihoods.clone(),
                        c.operator.clone(),
                        c.y.clone(),
                        c.sigma,
                    )
                })
                .map_err(err)?;
            return Ok(Posterior { inner });
        }
        let ys = match &y {
            Some(y) => slice(y, "y")?.to_vec(),
            None => c.y.clone(),
        };
        self.posterior(
            py,
            ys,
            OperatorArg::Built(c.operator.clone()),
            Noise::Scalar(sigma.unwrap_or(c.sigma)),
        )
    }

    /// The posterior with log-likelihoods b_i = log p(y | a_i) given (N values).
    fn posterior_from_log_likelihood(
        &self,
        py: Python<'_>,
        log_likelihood: PyReadonlyArray1<'_, f64>,
    ) -> PyResult<Posterior> {
        let b = slice(&log_likelihood, "log_likelihood")?.to_vec();
        let lens = self.lens.clone();
        let inner = py
            .detach(|| fslens::lens::Posterior::from_log_likelihood(lens, b))
            .map_err(err)?;
        Ok(Posterior { inner })
    }

    fn __repr__(&self) -> String {
        format!(
            "Prior(N={}, D={}, shape={}, backend={:?})",
            self.lens.atoms(),
            self.lens.dim(),
            self.lens.shape(),
            self.lens.describe()
        )
    }
}

impl Prior {
    #[allow(clippy::too_many_arguments)]
    fn build(
        py: Python<'_>,
        images: Vec<f32>,
        d: usize,
        labels: Option<Vec<u32>>,
        backend: &str,
        storage: &str,
        shape: Option<(usize, usize, usize)>,
        (beta_min, beta_max): (f64, f64),
    ) -> PyResult<Self> {
        let engine = engine_choice(backend, storage)?;
        let schedule = schedule(beta_min, beta_max)?;
        let shape = shape.map(|(h, w, c)| ImageShape::new(h, w, c));
        let lens = py
            .detach(|| {
                Lens::new(
                    images,
                    d,
                    shape,
                    labels,
                    engine,
                    schedule,
                    PathBuf::from("."),
                )
            })
            .map_err(err)?;
        Ok(Prior {
            lens: Arc::new(lens),
            config: None,
        })
    }

    fn posterior(
        &self,
        py: Python<'_>,
        y: Vec<f32>,
        operator: OperatorArg,
        sigma: Noise,
    ) -> PyResult<Posterior> {
        let lens = self.lens.clone();
        let inner = py
            .detach(|| match sigma {
                Noise::Scalar(s) => fslens::lens::Posterior::new(lens, y, operator, s),
                Noise::PerEntry(v) => {
                    fslens::lens::Posterior::with_entry_sigma(lens, y, operator, v)
                }
            })
            .map_err(err)?;
        Ok(Posterior { inner })
    }
}

/// The measurement noise as Python passes it: one σ, or m per-entry σ_j (a float64 array;
/// the library checks and whitens them).
enum Noise {
    Scalar(f64),
    PerEntry(Vec<f64>),
}

fn noise(sigma: &Bound<'_, PyAny>) -> PyResult<Noise> {
    if let Ok(s) = sigma.extract::<f64>() {
        return Ok(Noise::Scalar(s));
    }
    let a: PyReadonlyArray1<'_, f64> = sigma.extract().map_err(|_| {
        PyTypeError::new_err("sigma must be a positive float or a float64 array of m values")
    })?;
    Ok(Noise::PerEntry(a.as_array().iter().copied().collect()))
}

/// A posterior of a prior: the atoms re-weighted by b_i = log p(y | a_i).
#[pyclass(module = "fslens._fslens", frozen)]
struct Posterior {
    inner: fslens::lens::Posterior,
}

#[pymethods]
impl Posterior {
    /// ω = softmax(b), float64 (N,).
    #[getter]
    fn weights<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, &self.inner.weights)
    }
    #[getter]
    fn log_likelihood<'py>(&self, py: Python<'py>) -> Bound<'py, PyArray1<f64>> {
        PyArray1::from_slice(py, &self.inner.log_likelihoods)
    }
    #[getter]
    fn dim(&self) -> usize {
        self.inner.lens.dim()
    }
    #[getter]
    fn effective_atoms(&self) -> f64 {
        self.inner.effective_atoms()
    }
    #[getter]
    fn operator(&self) -> Option<String> {
        self.inner.measurement.as_ref().map(|(op, _, _)| op.spec())
    }
    #[getter]
    fn y<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyArray1<f32>>> {
        self.inner
            .measurement
            .as_ref()
            .map(|(_, y, _)| PyArray1::from_slice(py, y))
    }
    #[getter]
    fn sigma(&self) -> Option<f64> {
        self.inner.measurement.as_ref().map(|(_, _, s)| *s)
    }

    fn denoise<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        when: When<'py>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let at = when.resolve()?;
        let (xs, at) = (rows_in(&x, "x", self.dim())?, at.at()?);
        let out = py.detach(|| self.inner.denoise_at(xs, at)).map_err(err)?;
        rows_out(py, out, self.inner.lens.dim())
    }

    /// The posterior denoiser's vector–Jacobian product (s/v) C̃ g, C̃ the covariance under the
    /// posterior weights; with `means` (this posterior's m̃ of the same rows, from `denoise`)
    /// one engine pass instead of two.
    #[pyo3(signature = (x, when, g, means=None))]
    fn denoiser_vjp<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        when: When<'py>,
        g: PyReadonlyArray2<'py, f32>,
        means: Option<PyReadonlyArray2<'py, f32>>,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let at = when.resolve()?;
        let (xs, at, gs) = (
            rows_in(&x, "x", self.dim())?,
            at.at()?,
            rows_in(&g, "g", self.dim())?,
        );
        let ms = match &means {
            Some(m) => Some(rows_in(m, "means", self.dim())?),
            None => None,
        };
        let out = py
            .detach(|| self.inner.denoiser_vjp_at(xs, at, gs, ms))
            .map_err(err)?;
        rows_out(py, out, self.inner.lens.dim())
    }

    /// The score and the warnings of its solves (strings; the Python side warns with them).
    #[pyo3(signature = (x, when, method="fsr", zeta=1.0, cg_tolerance=1e-6, cg_max_iterations=100))]
    #[allow(clippy::too_many_arguments, clippy::type_complexity)]
    fn score<'py>(
        &self,
        py: Python<'py>,
        x: PyReadonlyArray2<'py, f32>,
        when: When<'py>,
        method: &str,
        zeta: f64,
        cg_tolerance: f64,
        cg_max_iterations: usize,
    ) -> PyResult<(Bound<'py, PyArray2<f32>>, Vec<String>)> {
        let at = when.resolve()?;
        let (xs, at) = (rows_in(&x, "x", self.dim())?, at.at()?);
        let options = SamplerOptions {
            zeta,
            cg: CgOptions {
                tolerance: cg_tolerance,
                max_iterations: cg_max_iterations,
            },
            ..Default::default()
        };
        let scored = py
            .detach(|| self.inner.score_at(xs, at, method, &options))
            .map_err(err)?;
        Ok((
            rows_out(py, scored.values, self.inner.lens.dim())?,
            scored.warnings,
        ))
    }

    #[pyo3(signature = (t, k, seed=0))]
    fn sample<'py>(
        &self,
        py: Python<'py>,
        t: f64,
        k: usize,
        seed: u64,
    ) -> PyResult<Bound<'py, PyArray2<f32>>> {
        let out = py.detach(|| self.inner.sample(t, k, seed)).map_err(err)?;
        rows_out(py, out, self.inner.lens.dim())
    }

    /// E‖x_t − E x_t‖² of the exact posterior at t (design §3).
    fn exact_spread(&self, t: f64) -> PyResult<f64> {
        self.inner.exact_spread(t).map_err(err)
    }

    /// The metrics record of `cloud` at t (the JSON of a metrics.json record; the Python
    /// layer parses it), with PSNR/SSIM against `truth` when given.
    #[pyo3(signature = (cloud, t, truth=None))]
    fn metrics(
        &self,
        py: Python<'_>,
        cloud: PyReadonlyArray2<'_, f32>,
        t: f64,
        truth: Option<PyReadonlyArray1<'_, f32>>,
    ) -> PyResult<String> {
        let xs = rows_in(&cloud, "cloud", self.dim())?;
        let truth = truth.as_ref().map(|a| slice(a, "truth")).transpose()?;
        let record = py
            .detach(|| self.inner.metrics(xs, t, truth))
            .map_err(err)?;
        serde_json::to_string(&record).map_err(|e| PyValueError::new_err(e.to_string()))
    }

    /// The modes of the metrics: (names, exact masses Σ_{i ∈ mode} ω_i).
    fn modes(&self, py: Python<'_>) -> (Vec<String>, Vec<f64>) {
        py.detach(|| self.inner.modes())
    }

    fn __repr__(&self) -> String {
        format!(
            "Posterior(N={}, effective_atoms={:.3}, operator={})",
            self.inner.weights.len(),
            self.inner.effective_atoms(),
            self.operator()
                .map(|o| format!("{o:?}"))
                .unwrap_or_else(|| "None (from log-likelihoods)".to_string())
        )
    }
}

/// Two float64 arrays.
type Pair<'py> = (Bound<'py, PyArray1<f64>>, Bound<'py, PyArray1<f64>>);

/// (s, v) of the VP schedule at each t (t ∈ [0, 1] is not checked: a schedule is defined
/// everywhere), as float64 arrays.
#[pyfunction]
fn vp_noise<'py>(
    py: Python<'py>,
    beta_min: f64,
    beta_max: f64,
    t: PyReadonlyArray1<'py, f64>,
) -> PyResult<Pair<'py>> {
    let sched = schedule(beta_min, beta_max)?;
    let ts = slice(&t, "t")?;
    let (s, v): (Vec<f64>, Vec<f64>) = ts
        .iter()
        .map(|&ti| {
            let n = sched.noise(ti);
            (n.s, n.v)
        })
        .unzip();
    Ok((PyArray1::from_vec(py, s), PyArray1::from_vec(py, v)))
}

/// log ᾱ(t) of the VP schedule at each t.
#[pyfunction]
fn vp_log_alpha_bar<'py>(
    py: Python<'py>,
    beta_min: f64,
    beta_max: f64,
    t: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let sched = schedule(beta_min, beta_max)?;
    let ts = slice(&t, "t")?;
    Ok(PyArray1::from_vec(
        py,
        ts.iter().map(|&ti| sched.log_alpha_bar(ti)).collect(),
    ))
}

/// log ᾱ(t) ↦ t: the time of the VP schedule with that noise (the library's
/// `Schedule::time_of_log_alpha_bar`; it exceeds 1 where ᾱ is below ᾱ(1)).
#[pyfunction]
fn vp_time_of_log_alpha_bar<'py>(
    py: Python<'py>,
    beta_min: f64,
    beta_max: f64,
    log_alpha_bar: PyReadonlyArray1<'py, f64>,
) -> PyResult<Bound<'py, PyArray1<f64>>> {
    let sched = schedule(beta_min, beta_max)?;
    let la = slice(&log_alpha_bar, "log_alpha_bar")?;
    Ok(PyArray1::from_vec(
        py,
        la.iter().map(|&l| sched.time_of_log_alpha_bar(l)).collect(),
    ))
}

/// The discrete DDPM schedule of the DPS code (`fslens::diffusion::discrete`) at each level:
/// (β_k, log ᾱ_k, s, v), float64 arrays.
#[pyfunction]
#[allow(clippy::type_complexity)]
fn ddpm_levels<'py>(
    py: Python<'py>,
    level: PyReadonlyArray1<'py, u64>,
) -> PyResult<(
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
    Bound<'py, PyArray1<f64>>,
)> {
    let ks = levels(&level)?;
    for &k in &ks {
        check_level("level", k).map_err(err)?;
    }
    let sched = DiscreteSchedule::new(LEVELS);
    let beta = ks.iter().map(|&k| DiscreteSchedule::beta(k)).collect();
    let la = ks.iter().map(|&k| sched.log_alpha_bar(k)).collect();
    let (s, v): (Vec<f64>, Vec<f64>) = ks
        .iter()
        .map(|&k| {
            let n = sched.noise(k);
            (n.s, n.v)
        })
        .unzip();
    Ok((
        PyArray1::from_vec(py, beta),
        PyArray1::from_vec(py, la),
        PyArray1::from_vec(py, s),
        PyArray1::from_vec(py, v),
    ))
}

/// `fslens diagnose --trajectory`: the clouds in `clouds` (.npy, (T, K, D) or (T, K, H, W, C))
/// at the times in `times` (.npy) scored against the exact posterior of `config`'s
/// measurement into the folder `out` (report.html, metrics.json, …); returns its path.
#[pyfunction]
#[pyo3(signature = (config, clouds, times, out, label, backend=None, storage=None, force=false))]
#[allow(clippy::too_many_arguments)]
fn diagnose_trajectory(
    py: Python<'_>,
    config: PathBuf,
    clouds: PathBuf,
    times: PathBuf,
    out: PathBuf,
    label: String,
    backend: Option<&str>,
    storage: Option<&str>,
    force: bool,
) -> PyResult<String> {
    let overrides = overrides(backend, storage)?;
    let (path, _) = py
        .detach(|| {
            let plan = fslens::plan::RunPlan::load(&config, overrides)?;
            let req = fslens::experiment::diagnose_trajectory::TrajectoryRequest {
                clouds,
                times,
                pixels: None,
                label,
                out: fslens::output::Destination::new(out, "diagnose").force(force),
            };
            fslens::experiment::diagnose_trajectory::diagnose_trajectory(
                &plan,
                &req,
                &mut fslens::experiment::Silent,
            )
        })
        .map_err(err)?;
    Ok(path.display().to_string())
}

#[pymodule]
fn _fslens(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Prior>()?;
    m.add_class::<Posterior>()?;
    m.add_function(wrap_pyfunction!(vp_noise, m)?)?;
    m.add_function(wrap_pyfunction!(vp_log_alpha_bar, m)?)?;
    m.add_function(wrap_pyfunction!(vp_time_of_log_alpha_bar, m)?)?;
    m.add_function(wrap_pyfunction!(ddpm_levels, m)?)?;
    m.add_function(wrap_pyfunction!(diagnose_trajectory, m)?)?;
    m.add("DDPM_LEVELS", LEVELS)?;
    m.add("__version__", env!("CARGO_PKG_VERSION"))?;
    Ok(())
}

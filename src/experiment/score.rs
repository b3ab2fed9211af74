//! `fslens score`: the posterior (or prior) score of given particles, from .npy files.
//!
//!   prior: (s m(x) − x)/v,   fsr: (s m̃(x) − x)/v   (design §3)
//!   sigma-dps, zeta-dps, pigdm, tmpd: (s m(x) − x)/v + their likelihood score (design §4)
//!
//! This is the interface other tools check fslens through; keep it stable.

use std::path::{Path, PathBuf};

use crate::arrays::read_npy;
use crate::choices::Choice;
use crate::data::{Dataset, ImageShape};
use crate::diffusion::{Schedule, check_time};
use crate::engine::WeightSet;
use crate::operators::Operator;
use crate::plan::EngineChoice;
use crate::samplers::likelihood::{Context, check_operator, posterior_score};
use crate::samplers::score::tweedie_score;
use crate::samplers::{SamplerKind, SamplerOptions};
use crate::{Error, Result};

/// Which score to compute: the empirical prior's, or the posterior score of a sampler —
/// `fsr` (exact: (s m̃(x) − x)/v) or an approximate one (prior score + its likelihood score).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    Prior,
    Posterior(SamplerKind),
}

impl Choice for Method {
    const KEY: &'static str = "--method";
    const WHAT: &'static str = "method";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("fsr", Method::Posterior(SamplerKind::Fsr)),
        ("prior", Method::Prior),
        ("sigma-dps", Method::Posterior(SamplerKind::SigmaDps)),
        ("zeta-dps", Method::Posterior(SamplerKind::ZetaDps)),
        ("pigdm", Method::Posterior(SamplerKind::Pigdm)),
        ("tmpd", Method::Posterior(SamplerKind::Tmpd)),
    ];
}
crate::choice_by_name!(Method);

/// A score (B × D values) and the warnings of its computation — conjugate-gradient solves
/// of pigdm/tmpd that stopped at their iteration cap — which the caller shows (the command
/// on stderr, Python as `RuntimeWarning`s): the library prints nothing.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Scored {
    pub values: Vec<f32>,
    pub warnings: Vec<String>,
}

impl From<Vec<f32>> for Scored {
    /// A score whose computation has nothing to warn about.
    fn from(values: Vec<f32>) -> Self {
        Scored {
            values,
            warnings: Vec::new(),
        }
    }
}

/// The inputs of `fslens score`.
#[derive(Clone, Debug)]
pub struct ScoreRequest {
    pub atoms: PathBuf,
    pub x: PathBuf,
    pub t: f64,
    pub method: Method,
    pub y: Option<PathBuf>,
    pub operator: Option<String>,
    pub sigma: Option<f64>,
    pub shape: Option<ImageShape>,
    pub engine: EngineChoice,
    pub schedule: Schedule,
    /// ζ of zeta-dps and the CG settings of pigdm/tmpd, checked by [`score`].
    pub options: SamplerOptions,
}

/// Reads a 2-D (rows, D) array (a 1-D array is one row) named by the flag `what`
/// (`--atoms`, `--x`). Floats are taken as they are (pixels in [-1, 1]); uint8 values are
/// 8-bit pixels k, mapped to 2k/255 − 1 as the data loaders and `fslens diagnose` map them.
/// Returns (rows, D, values, whether they were 8-bit).
fn read_rows(path: &Path, what: &str) -> Result<(usize, usize, Vec<f32>, bool)> {
    read_rows_of(path, what).map_err(|e| e.for_file_key(what))
}

fn read_rows_of(path: &Path, what: &str) -> Result<(usize, usize, Vec<f32>, bool)> {
    let a = read_npy(path)?;
    let (rows, cols) = match a.shape.as_slice() {
        [d] => (1, *d),
        [r, d] => (*r, *d),
        s => {
            return Err(Error::data(
                path,
                format!("{what} must be an array of shape (rows, D); got {s:?}"),
            ));
        }
    };
    if rows == 0 || cols == 0 {
        return Err(Error::data(
            path,
            format!("{what} is empty (shape {:?})", a.shape),
        ));
    }
    let eight_bit = a.dtype == "u8";
    let values = if eight_bit {
        a.data
            .iter()
            .map(|&k| crate::data::pixel_from_u8(k as u8))
            .collect()
    } else {
        a.data.iter().map(|&v| v as f32).collect()
    };
    Ok((rows, cols, values, eight_bit))
}

/// Refuses inputs this machine cannot hold, from their headers alone: the atoms and the
/// particles are each read as float64 and kept as float32, the atoms copied once more by the
/// engine and the particles' score written as float32 (16 bytes a value either way).
fn check_memory(req: &ScoreRequest) -> Result<()> {
    let mut needs = Vec::new();
    for (key, path, what) in [
        ("--atoms", &req.atoms, "the atoms"),
        ("--x", &req.x, "the particles"),
    ] {
        // An unreadable header is reported when the file is read.
        let Ok(shape) = crate::arrays::npy_shape(path) else {
            return Ok(());
        };
        let values: f64 = shape.iter().map(|&s| s as f64).product();
        needs.push(crate::resources::Need {
            key: key.into(),
            value: format!("{} (shape {shape:?})", path.display()),
            what: what.into(),
            formula: format!(
                "{values:.0} values × 16 bytes: float64 as read, float32, and {}",
                if key == "--atoms" {
                    "the engine's copy"
                } else {
                    "the score"
                }
            ),
            bytes: values * 16.0,
            fix: format!("pass fewer rows in {key}"),
        });
    }
    crate::resources::check(&needs)
}

/// Computes the requested score; returns (B, D, the B × D values with any warnings).
pub fn score(req: &ScoreRequest) -> Result<(usize, usize, Scored)> {
    check_time("--t", req.t)?;
    check_memory(req)?;
    let (n, d, atoms, eight_bit) = read_rows(&req.atoms, "--atoms")?;
    let (b, dx, x, _) = read_rows(&req.x, "--x")?;
    if dx != d {
        return Err(Error::data(
            &req.x,
            format!(
                "x has rows of {dx} values but the atoms have D = {d}; both must be (rows, {d})"
            ),
        )
        .for_file_key("--x"));
    }
    let shape = crate::experiment::flat_shape(d, req.shape);
    if shape.dim() != d {
        return Err(Error::config(
            "--shape",
            format!(
                "{shape} has {} values but the atoms have D = {d}",
                shape.dim()
            ),
        ));
    }
    let dataset = Dataset {
        source: req.atoms.display().to_string(),
        shape,
        images: atoms,
        labels: None,
        class_names: None,
        eight_bit,
    };
    debug_assert_eq!(dataset.len(), n);
    req.options
        .validate(&|k| format!("--{}", k.replace('_', "-")))?;
    let noise = req.schedule.noise(req.t);
    let method = req.method.name();
    let create = || {
        crate::engine::create(
            req.engine.backend,
            req.engine.storage,
            req.engine.devices,
            &dataset,
        )
    };
    let kind = match req.method {
        Method::Prior => {
            let engine = create()?;
            let s = tweedie_score(engine.as_ref(), &x, noise, WeightSet::Prior)?;
            return Ok((b, d, s.into()));
        }
        Method::Posterior(kind) => kind,
    };
    let (op, y, sigma) = measurement(req, shape, method)?;
    if kind == SamplerKind::Fsr {
        let mut engine = create()?;
        let bias = crate::operators::atom_log_likelihoods(op.as_ref(), &dataset.images, &y, sigma)?;
        let set = WeightSet::Biased(engine.add_bias(&bias)?);
        let s = tweedie_score(engine.as_ref(), &x, noise, set)?;
        return Ok((b, d, s.into()));
    }
    let mut likelihood = kind
        .likelihood(&req.options)
        .ok_or_else(|| Error::config("--method", format!("{method} has no likelihood score")))?;
    check_operator(likelihood.as_ref(), op.as_ref()).map_err(|e| match e {
        Error::Config { problem, .. } => Error::config("--method", problem),
        other => other,
    })?;
    let engine = create()?;
    let ctx = Context {
        backend: engine.as_ref(),
        operator: op.as_ref(),
        y: &y,
        sigma,
    };
    let values = posterior_score(likelihood.as_mut(), &ctx, &x, noise)?;
    Ok((
        b,
        d,
        Scored {
            values,
            warnings: likelihood.solve_warning().into_iter().collect(),
        },
    ))
}

/// The operator, y and σ that the posterior methods need, with errors naming the flag.
fn measurement(
    req: &ScoreRequest,
    shape: ImageShape,
    method: &str,
) -> Result<(Box<dyn Operator>, Vec<f32>, f64)> {
    let y_path = req.y.as_ref().ok_or_else(|| {
        Error::config(
            "--y",
            format!("--method {method} needs the measurement --y Y.npy"),
        )
    })?;
    let spec = req.operator.as_ref().ok_or_else(|| {
        Error::config(
            "--operator",
            format!("--method {method} needs --operator (e.g. matrix:M.npy)"),
        )
    })?;
    let sigma = req.sigma.ok_or_else(|| {
        Error::config(
            "--sigma",
            format!("--method {method} needs --sigma S (S > 0)"),
        )
    })?;
    crate::operators::check_sigma(sigma, "--sigma")?;
    let base = Path::new(".");
    let op = crate::operators::parse_for(spec, shape, base, "--operator")?;
    let ya = read_npy(y_path).map_err(|e| e.for_file_key("--y"))?;
    let m = op.output_len();
    if ya.data.len() != m || ya.shape.len() != 1 {
        return Err(Error::data(
            y_path,
            format!(
                "y has shape {:?} but operator {} measures m = {m} values; y must have shape ({m},)",
                ya.shape,
                op.spec()
            ),
        )
        .for_file_key("--y"));
    }
    let y: Vec<f32> = ya.data.iter().map(|&v| v as f32).collect();
    Ok((op, y, sigma))
}

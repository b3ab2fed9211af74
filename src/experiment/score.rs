//! `fslens score`: the posterior (or prior) score of given particles, from .npy files.
//!
//!   prior: (s m(x) − x)/v,   fsr: (s m̃(x) − x)/v   (design §3)
//!
//! This is the interface other tools check fslens through; keep it stable.

use std::path::{Path, PathBuf};

use crate::arrays::read_npy;
use crate::data::{Dataset, ImageShape};
use crate::diffusion::{Schedule, check_time};
use crate::engine::Weights;
use crate::samplers::score::tweedie_score;
use crate::{Error, Result};

/// Which score to compute.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Method {
    /// The empirical prior score.
    Prior,
    /// The exact finite-sample posterior score.
    Fsr,
}

impl std::str::FromStr for Method {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self> {
        match s {
            "prior" => Ok(Method::Prior),
            "fsr" => Ok(Method::Fsr),
            _ => Err(Error::config(
                "--method",
                format!("unknown method {s:?}; expected fsr or prior"),
            )),
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
    pub backend: String,
    pub schedule: Schedule,
}

/// Reads a 2-D (rows, D) float array (a 1-D array is one row).
fn read_rows(path: &Path, what: &str) -> Result<(usize, usize, Vec<f32>)> {
    let a = read_npy(path)?;
    let (rows, cols) = match a.shape.as_slice() {
        [d] => (1, *d),
        [r, d] => (*r, *d),
        s => {
            return Err(Error::data(
                path,
                format!("{what} must have shape (rows, D); got {s:?}"),
            ));
        }
    };
    if rows == 0 || cols == 0 {
        return Err(Error::data(
            path,
            format!("{what} is empty (shape {:?})", a.shape),
        ));
    }
    Ok((rows, cols, a.data.iter().map(|&v| v as f32).collect()))
}

/// Computes the requested score; returns (B, D, B × D values).
pub fn score(req: &ScoreRequest) -> Result<(usize, usize, Vec<f32>)> {
    check_time("--t", req.t)?;
    let (n, d, atoms) = read_rows(&req.atoms, "atoms")?;
    let (b, dx, x) = read_rows(&req.x, "x")?;
    if dx != d {
        return Err(Error::data(
            &req.x,
            format!(
                "x has rows of {dx} values but the atoms have D = {d}; both must be (rows, {d})"
            ),
        ));
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
        eight_bit: false,
    };
    debug_assert_eq!(dataset.len(), n);
    let mut engine = crate::engine::create(&req.backend, &dataset)?;
    let set = match req.method {
        Method::Prior => Weights::Prior,
        Method::Fsr => {
            let y_path = req.y.as_ref().ok_or_else(|| {
                Error::config("--y", "--method fsr needs the measurement --y Y.npy")
            })?;
            let spec = req.operator.as_ref().ok_or_else(|| {
                Error::config(
                    "--operator",
                    "--method fsr needs --operator (e.g. matrix:M.npy)",
                )
            })?;
            let sigma = req
                .sigma
                .ok_or_else(|| Error::config("--sigma", "--method fsr needs --sigma S (S > 0)"))?;
            if !(sigma.is_finite() && sigma > 0.0) {
                return Err(Error::config(
                    "--sigma",
                    format!("must be a positive number, got {sigma}"),
                ));
            }
            let base = Path::new(".");
            let op = crate::operators::parse(spec, shape, base).map_err(|e| match e {
                Error::Config { problem, .. } => Error::config("--operator", problem),
                other => other,
            })?;
            let ya = read_npy(y_path)?;
            let m = op.output_len();
            if ya.data.len() != m || ya.shape.len() != 1 {
                return Err(Error::data(
                    y_path,
                    format!(
                        "y has shape {:?} but operator {} measures m = {m} values; y must have shape ({m},)",
                        ya.shape,
                        op.spec()
                    ),
                ));
            }
            let y: Vec<f32> = ya.data.iter().map(|&v| v as f32).collect();
            let measured = crate::operators::measure_atoms(op.as_ref(), &dataset.images);
            let b = crate::operators::log_likelihoods(&measured, &y, sigma)?;
            Weights::Biased(engine.add_bias(&b)?)
        }
    };
    let noise = req.schedule.noise(req.t);
    let s = tweedie_score(engine.as_ref(), &x, noise, set)?;
    Ok((b, d, s))
}

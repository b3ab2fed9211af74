//! Forward models y = A(x) + noise on flat images of a known shape (HWC order).
//!
//! Each operator gives the forward map A, the adjoint Aᵀ (for a nonlinear A, the transposed
//! Jacobian J_A(x)ᵀ at a point x), whether it is linear, and the structure of A Aᵀ when it is
//! known (c·I), which lets ΠGDM skip a linear solve. Operators are plain maths: no backend.

mod blur;
mod box_inpaint;
mod dense;
mod downsample;
mod identity;
mod mask_png;
mod params;
mod phase_retrieval;
mod projection;
mod random_pixels;
mod saturation;
mod selection;
#[cfg(test)]
mod tests;
mod whitened;

pub use blur::GaussianBlur;
pub use box_inpaint::box_inpainting;
pub use dense::DenseMatrix;
pub use downsample::Downsample;
pub use identity::Identity;
pub use mask_png::mask_from_png;
pub use phase_retrieval::PhaseRetrieval;
pub use projection::gaussian_projection;
pub use random_pixels::random_pixels;
pub use saturation::Saturation;
pub use selection::PixelSelection;
pub use whitened::{Whitened, read_sigma, whiten_rows};

use crate::data::ImageShape;
use crate::{Error, Result};
use params::{Params, spec_error};

/// What is known about A Aᵀ (m × m).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Gram {
    /// A Aᵀ = c·I (inpainting masks: c = 1; block-average downsampling by k: c = 1/k²).
    ScaledIdentity(f64),
    /// No structure known: solve with conjugate gradients or a dense factorisation.
    General,
}

/// A measurement that can be shown as an image (for measurement.png).
#[derive(Clone, Debug)]
pub struct MeasurementView {
    pub shape: ImageShape,
    /// shape.dim() values, nominally in [-1, 1] (rendering clamps).
    pub pixels: Vec<f32>,
}

pub trait Operator: Send + Sync {
    /// The canonical text spec, e.g. `box:x=8,y=8,w=12,h=12` (round-trips through [`parse`]).
    fn spec(&self) -> String;
    /// Shape of the images it acts on.
    fn input_shape(&self) -> ImageShape;
    /// m, the length of a measurement.
    fn output_len(&self) -> usize;
    fn is_linear(&self) -> bool;
    fn gram(&self) -> Gram;
    /// out = A(x); x has input_shape().dim() values, out has output_len().
    fn forward(&self, x: &[f32], out: &mut [f32]);
    /// out = J_A(x)ᵀ r (= Aᵀ r for a linear A, which ignores x).
    fn adjoint(&self, x: &[f32], r: &[f32], out: &mut [f32]);
    /// A viewable rendering of a measurement y (or None when y is not image-like).
    fn view(&self, y: &[f32]) -> Option<MeasurementView>;

    /// A(x_k) for n images stored one after another; the default runs [`Operator::forward`]
    /// on rayon threads. Dense operators override it with a GEMM.
    fn forward_batch(&self, xs: &[f32], out: &mut [f32]) {
        use rayon::prelude::*;
        let d = self.input_shape().dim();
        let m = self.output_len();
        out.par_chunks_mut(m)
            .zip(xs.par_chunks(d))
            .for_each(|(o, x)| self.forward(x, o));
    }
}

/// The operator names [`parse`] knows, in the order `--help` lists them.
pub const KNOWN_OPERATORS: [&str; 10] = [
    "identity",
    "box",
    "random-pixels",
    "mask",
    "downsample",
    "blur",
    "matrix",
    "projection",
    "phase-retrieval",
    "saturation",
];

/// Every operator spec, one per line, for the command line's `--help`.
pub const SPEC_HELP: &str = "\
identity                       denoising: y = x
box:x=8,y=8,w=12,h=12          inpainting: the w×h box at column x, row y is missing
random-pixels:keep=0.3,seed=0  inpainting: a seeded random fraction of pixel locations is kept
mask:PATH.png                  inpainting: white pixels observed, black missing (an H×W PNG)
downsample:4                   k×k block average (H and W divisible by k)
blur:sigma=1.5,size=9          Gaussian blur, odd kernel size, zero padding outside the image
matrix:M.npy                   dense (m, D) matrix from a float32/float64 .npy
projection:m=64,seed=0         Gaussian random projection, entries N(0, 1/m)
phase-retrieval:oversample=2   |unitary 2-D DFT| of each channel zero-padded to 2H×2W (nonlinear)
saturation:gain=2              y = tanh(gain·x) per pixel (nonlinear)
Relative paths are resolved against the config file's folder (the working folder for flags).";

/// Builds an operator from its text spec `name` or `name:parameters` for images of `shape`.
/// Relative file names in the spec (`matrix:M.npy`, `mask:M.png`) are resolved against
/// `base_dir`. Parameters are `key=value` pairs separated by commas, except the single value
/// of `downsample:k` and the path of `matrix:` and `mask:`. Unknown names, unknown, missing
/// or malformed parameters are [`Error::Config`] errors under the key `operator` that quote
/// the spec and the expected form.
pub fn parse(
    spec: &str,
    shape: ImageShape,
    base_dir: &std::path::Path,
) -> Result<Box<dyn Operator>> {
    let spec = spec.trim();
    if shape.dim() == 0 {
        return Err(Error::input(format!(
            "operator `{spec}`: image shape {shape} is empty"
        )));
    }
    let (name, rest) = match spec.split_once(':') {
        Some((n, r)) => (n.trim(), Some(r.trim())),
        None => (spec, None),
    };
    let op: Box<dyn Operator> = match name {
        "identity" => {
            Params::new(spec, rest.filter(|r| !r.is_empty()), "identity")?.finish()?;
            Box::new(Identity::new(shape))
        }
        "box" => {
            let form = "box:x=8,y=8,w=12,h=12";
            let mut p = Params::new(spec, rest, form)?;
            let what = "a non-negative integer";
            let x = p.require("x", what)?;
            let y = p.require("y", what)?;
            let w = p.require("w", what)?;
            let h = p.require("h", what)?;
            p.finish()?;
            Box::new(box_inpainting(shape, x, y, w, h)?)
        }
        "random-pixels" => {
            let form = "random-pixels:keep=0.3,seed=0";
            let mut p = Params::new(spec, rest, form)?;
            let keep = p.require("keep", "a number in (0, 1]")?;
            let seed = p.get("seed", "a non-negative integer")?.unwrap_or(0);
            p.finish()?;
            Box::new(random_pixels(shape, keep, seed)?)
        }
        "mask" => {
            let path = path_value(spec, rest, "mask:PATH.png")?;
            Box::new(mask_from_png(shape, path, base_dir)?)
        }
        "downsample" => {
            let form = "downsample:4";
            let text = rest.filter(|r| !r.is_empty()).ok_or_else(|| {
                spec_error(
                    spec,
                    format!("missing the factor k; expected form `{form}`"),
                )
            })?;
            let k: usize = text.parse().map_err(|_| {
                spec_error(
                    spec,
                    format!("factor `{text}` is not a positive integer; expected form `{form}`"),
                )
            })?;
            Box::new(Downsample::new(shape, k)?)
        }
        "blur" => {
            let form = "blur:sigma=1.5,size=9";
            let mut p = Params::new(spec, rest, form)?;
            let sigma: f64 = p.require("sigma", "a positive number")?;
            let size = p.get("size", "an odd positive integer")?;
            p.finish()?;
            let size = match size {
                Some(s) => s,
                None => GaussianBlur::default_size(sigma),
            };
            Box::new(GaussianBlur::new(shape, sigma, size)?)
        }
        "matrix" => {
            let path = path_value(spec, rest, "matrix:M.npy")?;
            Box::new(DenseMatrix::from_npy(shape, path, base_dir)?)
        }
        "projection" => {
            let form = "projection:m=64,seed=0";
            let mut p = Params::new(spec, rest, form)?;
            let m = p.require("m", "a positive integer")?;
            let seed = p.get("seed", "a non-negative integer")?.unwrap_or(0);
            p.finish()?;
            Box::new(gaussian_projection(shape, m, seed)?)
        }
        "phase-retrieval" => {
            let form = "phase-retrieval:oversample=2";
            let mut p = Params::new(spec, rest.filter(|r| !r.is_empty()), form)?;
            let o = p.get("oversample", "a positive integer")?.unwrap_or(2);
            p.finish()?;
            Box::new(PhaseRetrieval::new(shape, o)?)
        }
        "saturation" => {
            let form = "saturation:gain=2";
            let mut p = Params::new(spec, rest, form)?;
            let gain = p.require("gain", "a positive number")?;
            p.finish()?;
            Box::new(Saturation::new(shape, gain)?)
        }
        _ => {
            return Err(spec_error(
                spec,
                format!(
                    "unknown operator `{name}`; known operators: {}",
                    KNOWN_OPERATORS.join(", ")
                ),
            ));
        }
    };
    Ok(op)
}

/// [`parse`], with `key` (`measurement.operator`, `--operator`) as the key its errors name.
pub fn parse_for(
    spec: &str,
    shape: ImageShape,
    base_dir: &std::path::Path,
    key: &str,
) -> Result<Box<dyn Operator>> {
    parse(spec, shape, base_dir).map_err(|e| match e {
        Error::Config { key: k, problem } if k == "operator" => Error::config(key, problem),
        other => other.for_file_key(key),
    })
}

/// The existing files an operator spec names (`matrix:M.npy`, `mask:M.png`): every word of
/// the spec that is the path of a file, relative paths taken from `base_dir`.
pub fn files_named(spec: &str, base_dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    spec.split([':', ',', '=', ';'])
        .map(str::trim)
        .filter(|w| !w.is_empty())
        .map(|w| base_dir.join(w))
        .filter(|p| p.is_file())
        .collect()
}

/// The path after `mask:` / `matrix:`, which must not be empty.
fn path_value<'a>(spec: &str, rest: Option<&'a str>, form: &str) -> Result<&'a str> {
    match rest {
        Some(r) if !r.is_empty() => Ok(r),
        _ => Err(spec_error(
            spec,
            format!("missing the file path; expected form `{form}`"),
        )),
    }
}

/// The measured atoms A(a_i) for n atoms stored one after another (n × D in, n × m out,
/// row-major), through [`Operator::forward_batch`]. Computed once per (data set, operator).
///
/// Panics if `atoms.len()` is not a multiple of D (a caller bug, not an input error).
pub fn measure_atoms(op: &dyn Operator, atoms: &[f32]) -> Vec<f32> {
    let d = op.input_shape().dim();
    assert!(
        d > 0 && atoms.len().is_multiple_of(d),
        "measure_atoms: {} values are not a whole number of images of dimension {d}",
        atoms.len()
    );
    let n = atoms.len() / d;
    let mut out = vec![0.0f32; n * op.output_len()];
    op.forward_batch(atoms, &mut out);
    out
}

/// Checks the measurement noise σ, naming `key` (`measurement.sigma`, `--sigma`): a finite
/// number > 0 that float32 carries, i.e. σ and σ² both normal float32 numbers
/// (σ² ≥ f32::MIN_POSITIVE ≈ 1.2e-38, so σ ≳ 1.1e-19; σ² ≤ f32::MAX, so σ ≲ 1.8e19). The
/// engines and the approximate samplers work with σ² (ΠGDM's σ² + (v/ᾱ)c, TMPD's
/// σ² I + A C Aᵀ) and y = A(x) + σε in float32: a σ² that underflows to zero or a subnormal
/// there makes those solves singular rather than exact.
pub fn check_sigma(sigma: f64, key: &str) -> Result<()> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::config(
            key,
            format!("must be a positive number, got {sigma}"),
        ));
    }
    let (s32, s2) = (sigma as f32, (sigma * sigma) as f32);
    if s32 < f32::MIN_POSITIVE || s2 < f32::MIN_POSITIVE {
        return Err(Error::config(
            key,
            format!(
                "σ = {sigma:e} is too small for float32: σ² = {:e} is below the smallest normal \
                 float32 ({:e}); use σ ≥ 1.1e-19 (a measurement that precise puts the whole \
                 exact posterior on the nearest atom anyway)",
                sigma * sigma,
                f32::MIN_POSITIVE
            ),
        ));
    }
    if !s2.is_finite() {
        return Err(Error::config(
            key,
            format!(
                "σ = {sigma:e} is too large for float32: σ² = {:e} exceeds the largest float32; \
                 use σ ≤ 1.8e19",
                sigma * sigma
            ),
        ));
    }
    Ok(())
}

/// [`log_likelihoods`] of the atoms (N × D) measured by `op`, a block of atoms at a time:
/// the same values, without the N × m array of measured atoms (141 MB for the Fashion-MNIST
/// training set under a 14 × 14 box) that [`measure_atoms`] of the whole set holds.
pub fn atom_log_likelihoods(
    op: &dyn Operator,
    atoms: &[f32],
    y: &[f32],
    sigma: f64,
) -> Result<Vec<f64>> {
    /// Atoms per block: enough for the operators' batch parallelism, a few MB measured.
    const BLOCK: usize = 2048;
    let d = op.input_shape().dim();
    if d == 0 || !atoms.len().is_multiple_of(d) {
        return Err(Error::input(format!(
            "{} atom values are not a whole number of images of dimension {d} (operator {})",
            atoms.len(),
            op.spec()
        )));
    }
    let mut out = Vec::with_capacity(atoms.len() / d);
    for block in atoms.chunks(BLOCK * d) {
        out.extend(log_likelihoods(&measure_atoms(op, block), y, sigma)?);
    }
    Ok(out)
}

/// The log-likelihood biases b_i = −‖y − A(a_i)‖² / (2σ²) for every measured atom (design
/// §3; constants cancel in the softmax), accumulated in float64 from float64 differences.
/// `measured` is n × m (from [`measure_atoms`]), `y` has m values.
pub fn log_likelihoods(measured: &[f32], y: &[f32], sigma: f64) -> Result<Vec<f64>> {
    if !(sigma.is_finite() && sigma > 0.0) {
        return Err(Error::config(
            "sigma",
            format!("measurement noise σ = {sigma} must be a finite number > 0"),
        ));
    }
    let m = y.len();
    if m == 0 || !measured.len().is_multiple_of(m) {
        return Err(Error::input(format!(
            "measurement y has {m} values but the measured atoms hold {} values, not a whole number of measurements of that length; y must have the operator's output length",
            measured.len()
        )));
    }
    if let Some(j) = y.iter().position(|v| !v.is_finite()) {
        return Err(Error::input(format!(
            "measurement y[{j}] = {} is not finite",
            y[j]
        )));
    }
    use rayon::prelude::*;
    let scale = -1.0 / (2.0 * sigma * sigma);
    Ok(measured
        .par_chunks(m)
        .map(|row| {
            let ss: f64 = row
                .iter()
                .zip(y)
                .map(|(&a, &b)| {
                    let d = f64::from(b) - f64::from(a);
                    d * d
                })
                .sum();
            scale * ss
        })
        .collect())
}

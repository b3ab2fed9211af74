//! `fslens score`: the posterior (or prior) score of given particles, from .npy files.
//!
//!   prior: (s m(x) − x)/v,   fsr: (s m̃(x) − x)/v   (design §3)
//!   sigma-dps, zeta-dps, pigdm, tmpd: (s m(x) − x)/v + their likelihood score (design §4)
//!
//! This is the interface other tools check fslens through; keep it stable.

use std::path::{Path, PathBuf};

use crate::arrays::read_npy;
use crate::choices::Choice;
use crate::data::ImageShape;
use crate::data::mapped::MappedAtoms;
use crate::diffusion::{Schedule, check_time};
use crate::engine::{Backend, WeightSet};
use crate::operators::Operator;
use crate::plan::EngineChoice;
use crate::resources::AtomPlacement;
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
/// engine and the particles' score written as float32 (16 bytes a value either way). Mapped
/// atoms (`mapped`) hold only their per-atom arrays in memory (norms, the bias in float64
/// and the engine's float32/float64 copy: 24 bytes an atom); the entry is disk and page cache.
fn check_memory(req: &ScoreRequest, mapped: bool) -> Result<()> {
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
        if mapped && key == "--atoms" {
            let n = shape.first().copied().unwrap_or(1) as f64;
            needs.push(crate::resources::Need {
                key: key.into(),
                value: format!("{} (shape {shape:?})", path.display()),
                what: "the per-atom arrays of a mapped store".into(),
                formula: format!("N × 24 bytes, N = {n:.0}"),
                bytes: n * 24.0,
                fix: "pass fewer rows in --atoms".into(),
            });
            continue;
        }
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
            fix: if key == "--atoms" {
                "pass fewer rows in --atoms, or use --atom-store mapped (the atoms stay on disk)"
                    .into()
            } else {
                format!("pass fewer rows in {key}")
            },
        });
    }
    crate::resources::check(&needs)
}

/// Computes the requested score; returns (B, D, the B × D values with any warnings).
pub fn score(req: &ScoreRequest) -> Result<(usize, usize, Scored)> {
    score_with(req, AtomPlacement::Memory, None)
}

/// [`score`] with the atoms held as `placement` says (`--atom-store`): `mapped` streams the
/// .npy once into a data-cache entry under `cache_dir` (default
/// [`crate::data::mapped::default_cache_dir`]), maps it and runs the CPU backend over the map,
/// so the float32 atoms are never in memory; `auto` maps when they would take more than
/// [`crate::resources::AUTO_MAP_FRACTION`] of the memory.
pub fn score_with(
    req: &ScoreRequest,
    placement: AtomPlacement,
    cache_dir: Option<&Path>,
) -> Result<(usize, usize, Scored)> {
    check_time("--t", req.t)?;
    let mapped = {
        let values = crate::arrays::npy_shape(&req.atoms)
            .map_or(0.0, |s| s.iter().map(|&v| v as f64).product::<f64>());
        placement.maps(4.0 * values, crate::resources::memory().as_ref())
    };
    check_memory(req, mapped)?;
    let atoms = ScoreAtoms::read(req, mapped, cache_dir)?;
    let (n, d) = (atoms.rows(), atoms.dim());
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
    debug_assert!(n > 0);
    req.options
        .validate(&|k| format!("--{}", k.replace('_', "-")))?;
    let noise = req.schedule.noise(req.t);
    let method = req.method.name();
    let create = || atoms.engine(req.engine);
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
        let bias = atoms.log_likelihoods(op.as_ref(), &y, sigma)?;
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

/// The atoms of `fslens score`: read into memory, or a mapped data-cache entry.
enum ScoreAtoms {
    /// (rows, D, values, 8-bit) as [`read_rows`] returns them (the values shared with an
    /// f32 CPU engine, not copied).
    Memory(usize, usize, std::sync::Arc<Vec<f32>>, bool),
    Mapped(std::sync::Arc<MappedAtoms>),
}

impl ScoreAtoms {
    fn read(req: &ScoreRequest, mapped: bool, cache_dir: Option<&Path>) -> Result<ScoreAtoms> {
        if !mapped {
            let (n, d, values, eight_bit) = read_rows(&req.atoms, "--atoms")?;
            return Ok(ScoreAtoms::Memory(
                n,
                d,
                std::sync::Arc::new(values),
                eight_bit,
            ));
        }
        let key = crate::data::mapped::file_key(&req.atoms, "fslens score --atoms")
            .map_err(|e| e.for_file_key("--atoms"))?;
        let dir = cache_dir.map_or_else(crate::data::mapped::default_cache_dir, Path::to_path_buf);
        let m = crate::data::mapped::open_or_write(&dir, &key, |entry| {
            let bytes = crate::arrays::npy_shape(&req.atoms)
                .map_or(0.0, |s| s.iter().map(|&v| v as f64).product::<f64>() * 4.0);
            crate::resources::check_disk(
                "--cache-dir",
                &dir,
                bytes,
                "free space there or choose another --cache-dir",
            )?;
            crate::data::mapped::write_npy_entry(&req.atoms, entry, &key, "--atoms")
        })?;
        Ok(ScoreAtoms::Mapped(std::sync::Arc::new(m)))
    }

    fn rows(&self) -> usize {
        match self {
            ScoreAtoms::Memory(n, ..) => *n,
            ScoreAtoms::Mapped(m) => m.rows(),
        }
    }

    fn dim(&self) -> usize {
        match self {
            ScoreAtoms::Memory(_, d, ..) => *d,
            ScoreAtoms::Mapped(m) => m.dim(),
        }
    }

    /// The engine over the atoms: any backend in memory; the CPU backend over a map (the
    /// entry's own encoding: `--storage` may only repeat it).
    fn engine(&self, choice: EngineChoice) -> Result<Box<dyn Backend>> {
        let m = match self {
            ScoreAtoms::Memory(_, d, values, eight_bit) => {
                return crate::engine::create_shared(
                    choice.backend,
                    choice.storage,
                    choice.devices,
                    *eight_bit,
                    values,
                    *d,
                );
            }
            ScoreAtoms::Mapped(m) => m,
        };
        if choice.backend == crate::engine::BackendKind::Gpu {
            return Err(Error::config(
                "--backend",
                "a mapped atom store runs on the CPU backend only; use --backend cpu, or \
                 --atom-store memory",
            ));
        }
        let cpu = crate::engine::cpu::CpuBackend::from_mapped(m.clone())?;
        if let crate::engine::StorageChoice::Fixed(s) = choice.storage
            && s != cpu.storage()
        {
            return Err(Error::config(
                "--storage",
                format!(
                    "a mapped atom store keeps its entry's encoding ({}), not {}; drop \
                     --storage or use --atom-store memory",
                    cpu.storage().name(),
                    s.name()
                ),
            ));
        }
        Ok(Box::new(cpu))
    }

    /// The log-likelihood bias of every atom; a mapped store is decoded a block of rows at a
    /// time (whole blocks of [`crate::operators::atom_log_likelihoods`], so the values are
    /// those of the in-memory call).
    fn log_likelihoods(&self, op: &dyn Operator, y: &[f32], sigma: f64) -> Result<Vec<f64>> {
        match self {
            ScoreAtoms::Memory(_, _, values, _) => {
                crate::operators::atom_log_likelihoods(op, values, y, sigma)
            }
            ScoreAtoms::Mapped(m) => {
                const ROWS: usize = 2048 * 8;
                let mut out = Vec::with_capacity(m.rows());
                for r0 in (0..m.rows()).step_by(ROWS) {
                    let block = m.rows_f32(r0, m.rows().min(r0 + ROWS));
                    out.extend(crate::operators::atom_log_likelihoods(
                        op, &block, y, sigma,
                    )?);
                }
                Ok(out)
            }
        }
    }
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

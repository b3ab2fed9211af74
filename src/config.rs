//! Run configurations (TOML), parsed strictly: an unknown key is an error that names it.
//!
//! ```toml
//! seed = 0                 # one seed for the held-out split, the noise of y and every sampler
//! backend = "auto"         # auto | cpu | gpu
//! # devices = "0,1"        # GPU only: "best" (default, one device), "all", or adapter indices
//!
//! [data]                   # see data::spec::DataConfig
//! kind = "synthetic"
//!
//! [truth]
//! held_out = 1             # images removed from the atoms; the truth is one of them
//! index = 0                # which held-out image is the truth
//! # file = "x.png"         # or a ground-truth image (PNG/JPEG, or .npy with D values)
//! # in_atoms = false       # true keeps the truth among the atoms
//!
//! [measurement]
//! operator = "box:x=4,y=4,w=8,h=8"
//! sigma = 0.1              # or "sigma.npy": m per-entry σ_j (diagonal noise covariance)
//! # y = "y.npy"            # a measured y (m values): no truth, nothing held out, no [truth]
//! # offset = 0.0           # or "b.npy": y = A(x) + b + noise (the likelihood sees y − b)
//!
//! [sampling]
//! samplers = ["exact", "fsr"]
//! particles = 512
//! steps = 1000
//! t_min = 1e-3
//! beta_min = 0.01
//! beta_max = 20.0
//! # checkpoints = [0.5, 0.2, 0.1]  # default: 50 grid times log-spaced from 1 to t_min
//! zeta = 1.0               # ζ of zeta-dps
//! cg_tolerance = 1e-6      # relative residual of pigdm/tmpd conjugate gradients
//! cg_max_iterations = 100
//! integrator = "euler-maruyama"   # | heun-ode | ddpm | ddim (see diffusion::integrate)
//! eta = 0.0                # η of ddim (0 deterministic, 1 = ddpm)
//! dps_update = false       # zeta-dps on ddpm/ddim: the DPS paper's post-step update
//! diffpir_lambda = 1.0      # λ of diffpir: data step ρ = λσ²/σ̄², σ̄² = (1 − ᾱ)/ᾱ
//! diffpir_zeta = 0.3        # ζ of diffpir: share of fresh noise when re-noising, [0, 1]
//! daps_langevin_steps = 20  # Langevin steps per level of daps
//! daps_step = 0.2           # daps step as a fraction of 1/(1/r² + L/σ²), (0, 1]
//!
//! [diagnostics]            # optional
//! hallucination_threshold = 1e-3   # exact mode mass below which a mode is ruled out
//! clusters = 8             # k-means modes when the data set has no labels
//! direction = "modes"      # heatmap direction u: "modes" (two heaviest exact modes) or "atoms:i,j"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::spec::DataConfig;
use crate::diagnostics::projection::DirectionSpec;
use crate::diffusion::integrate::IntegratorKind;
use crate::engine::{BackendKind, Devices, PruneChoice, StorageChoice};
use crate::samplers::SamplerKind;
use crate::{Error, Result};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub seed: u64,
    #[serde(default)]
    pub backend: BackendKind,
    /// GPU atom storage: auto (u8 for 8-bit data, else f32), f32, u8 or f16.
    #[serde(default)]
    pub storage: StorageChoice,
    /// GPU devices: "best" (one device on the best adapter), "all" (every hardware adapter)
    /// or adapter indices "0,1" as `fslens info` lists them; the atoms are split across them.
    #[serde(default, skip_serializing_if = "Devices::is_best")]
    pub devices: Devices,
    /// Certified pruning of the CPU backend: "off" (default) or "on" (design §8).
    #[serde(default, skip_serializing_if = "is_off")]
    pub prune: PruneChoice,
    /// ε of certified pruning: the largest mass the skipped atoms may carry relative to the
    /// visited ones, per row (default 1e-7; (0, 0.01]).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_epsilon: Option<f64>,
    /// k of the pruning's k-means partition (default ⌈√N⌉).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prune_clusters: Option<usize>,
    pub data: DataConfig,
    #[serde(default)]
    pub truth: TruthConfig,
    pub measurement: MeasurementConfig,
    #[serde(default)]
    pub sampling: SamplingConfig,
    #[serde(default)]
    pub diagnostics: DiagnosticsConfig,
    /// `[converge]`: `fslens converge` only (analytic priors); ignored by other commands.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub converge: Option<ConvergeConfig>,
}

fn is_off(p: &PruneChoice) -> bool {
    *p == PruneChoice::Off
}

/// The `[converge]` table of `fslens converge` (design §11): atom counts, times, draws.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ConvergeConfig {
    /// `sizes`: the atom counts N (default 10², 10³, …, 10⁶); nested draws from one stream.
    #[serde(default = "default_sizes")]
    pub sizes: Vec<usize>,
    /// `times`: diffusion times in (0, 1] (snapped to the sampling grid), default
    /// [0.01, 0.1, 0.3, 0.6].
    #[serde(default = "default_converge_times")]
    pub times: Vec<f64>,
    /// `draws`: exact and analytic draws per (N, t) for the sliced Wasserstein distance, and
    /// the particles of each sampler (default 1000).
    #[serde(default = "default_draws")]
    pub draws: usize,
    /// `slices`: random directions of the sliced Wasserstein distance (default 64).
    #[serde(default = "default_slices")]
    pub slices: usize,
    /// `samplers`: approximate samplers run beside (default fsr, sigma-dps, pigdm; [] for none).
    #[serde(default = "default_converge_samplers")]
    pub samplers: Vec<SamplerKind>,
    /// `sampler_atoms`: the N the samplers run on (default 10⁴; must be one of `sizes`).
    #[serde(default = "default_sampler_atoms")]
    pub sampler_atoms: usize,
}

fn default_sizes() -> Vec<usize> {
    vec![100, 1_000, 10_000, 100_000, 1_000_000]
}
fn default_converge_times() -> Vec<f64> {
    vec![0.01, 0.1, 0.3, 0.6]
}
fn default_draws() -> usize {
    1000
}
fn default_slices() -> usize {
    64
}
fn default_converge_samplers() -> Vec<SamplerKind> {
    vec![SamplerKind::Fsr, SamplerKind::SigmaDps, SamplerKind::Pigdm]
}
fn default_sampler_atoms() -> usize {
    10_000
}

impl Default for ConvergeConfig {
    fn default() -> Self {
        toml::from_str("").expect("every [converge] key has a default")
    }
}

/// How the run's samplers are compared with the exact posterior (`[diagnostics]`).
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct DiagnosticsConfig {
    /// Modes whose exact posterior mass is below this count as ruled out; particles there are
    /// prior-mode hallucinations. In (0, 1); default 1e-3.
    #[serde(default = "default_hallucination_threshold")]
    pub hallucination_threshold: f64,
    /// k of the k-means modes used when the data set has no class labels; default 8.
    #[serde(default = "default_clusters")]
    pub clusters: usize,
    /// The direction u of the (t, ⟨x_t, u⟩) heatmap: `"modes"` (default; from the mean image
    /// of the second heaviest exact mode to that of the heaviest) or `"atoms:i,j"` (from atom j
    /// to atom i, 0-based indices into the atoms after the hold-out).
    #[serde(default = "default_direction")]
    pub direction: DirectionSpec,
}

fn default_direction() -> DirectionSpec {
    DirectionSpec::Modes
}

fn default_hallucination_threshold() -> f64 {
    1e-3
}
fn default_clusters() -> usize {
    8
}

impl Default for DiagnosticsConfig {
    fn default() -> Self {
        DiagnosticsConfig {
            hallucination_threshold: default_hallucination_threshold(),
            clusters: default_clusters(),
            direction: default_direction(),
        }
    }
}

/// Where the ground-truth image comes from.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct TruthConfig {
    /// Number of images held out of the atom set (seeded random choice); default 1.
    #[serde(default = "one")]
    pub held_out: usize,
    /// Which held-out image is the truth (0-based); default 0.
    #[serde(default)]
    pub index: usize,
    /// A ground-truth image file instead (PNG/JPEG of the data set's size, or .npy of D values
    /// in [-1, 1]); then no image is held out.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file: Option<PathBuf>,
    /// Keep the truth among the atoms (the posterior then has an atom exactly at the truth).
    #[serde(default)]
    pub in_atoms: bool,
}

fn one() -> usize {
    1
}

impl Default for TruthConfig {
    fn default() -> Self {
        TruthConfig {
            held_out: 1,
            index: 0,
            file: None,
            in_atoms: false,
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MeasurementConfig {
    /// Operator spec, e.g. `box:x=8,y=8,w=12,h=12` (`fslens run --help` lists them).
    pub operator: String,
    /// Measurement noise standard deviation: one σ > 0 for every entry of y, or a `.npy` of
    /// m per-entry σ_j (a diagonal covariance, relative to the config's folder).
    pub sigma: Sigma,
    /// A measured y (`.npy` of m float32/float64 values, relative to the config's folder):
    /// real data with no ground truth; then nothing is held out and `[truth]` is refused.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub y: Option<PathBuf>,
    /// An additive offset b of y = A(x) + b + noise: one number for every entry, or a `.npy`
    /// of m values. The likelihood sees y − b.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offset: Option<Offset>,
}

/// `measurement.offset`: a number, or the path of a `.npy` of m per-entry values.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Offset {
    Scalar(f64),
    File(PathBuf),
}

impl std::fmt::Display for Offset {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Offset::Scalar(b) => write!(f, "b = {b} on every entry"),
            Offset::File(p) => write!(f, "b from {}", p.display()),
        }
    }
}

/// `measurement.sigma`: a number, or the path of a `.npy` of m per-entry values.
#[derive(Clone, Debug, Deserialize, Serialize, PartialEq)]
#[serde(untagged)]
pub enum Sigma {
    Scalar(f64),
    File(PathBuf),
}

impl PartialEq<f64> for Sigma {
    fn eq(&self, other: &f64) -> bool {
        matches!(self, Sigma::Scalar(s) if s == other)
    }
}

impl std::fmt::Display for Sigma {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Sigma::Scalar(s) => write!(f, "{s}"),
            Sigma::File(p) => write!(f, "per-entry σ_j from {}", p.display()),
        }
    }
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    #[serde(default = "default_samplers")]
    pub samplers: Vec<SamplerKind>,
    #[serde(default = "default_particles")]
    pub particles: usize,
    #[serde(default = "default_steps")]
    pub steps: usize,
    #[serde(default = "default_t_min")]
    pub t_min: f64,
    #[serde(default = "default_beta_min")]
    pub beta_min: f64,
    #[serde(default = "default_beta_max")]
    pub beta_max: f64,
    /// Times at which every sampler's cloud is recorded and scored (snapped to the step grid).
    /// Absent: [`DEFAULT_CHECKPOINTS`] grid times log-spaced between 1 and t_min.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoints: Option<Vec<f64>>,
    /// ζ of `zeta-dps` (the published DPS step size written as a score), > 0.
    #[serde(default = "default_zeta")]
    pub zeta: f64,
    /// Relative residual at which `pigdm`/`tmpd` conjugate gradients stop, in (0, 1).
    #[serde(default = "default_cg_tolerance")]
    pub cg_tolerance: f64,
    /// Iteration cap of those solves (a solve that hits it is reported as a warning).
    #[serde(default = "default_cg_max_iterations")]
    pub cg_max_iterations: usize,
    /// How every score-based sampler integrates: `euler-maruyama` (default), `heun-ode`
    /// (probability-flow ODE), `ddpm`, `ddim` (the discrete DPS schedule; they ignore t_min,
    /// beta_min, beta_max).
    #[serde(default)]
    pub integrator: IntegratorKind,
    /// η of `ddim`, in [0, 1].
    #[serde(default)]
    pub eta: f64,
    /// `zeta-dps` with ddpm/ddim: the DPS paper's post-step update x ← x′ − ζ∇‖y − A(m(x))‖
    /// instead of the score form.
    #[serde(default)]
    pub dps_update: bool,
    /// λ of `diffpir`: the data step's ρ = λσ²/σ̄², > 0.
    #[serde(default = "default_diffpir_lambda")]
    pub diffpir_lambda: f64,
    /// ζ of `diffpir`: the share of fresh noise when re-noising, in [0, 1].
    #[serde(default = "default_diffpir_zeta")]
    pub diffpir_zeta: f64,
    /// Langevin steps per level of `daps`, ≥ 1.
    #[serde(default = "default_daps_langevin_steps")]
    pub daps_langevin_steps: usize,
    /// `daps`'s Langevin step as a fraction of the stable step 1/(1/r² + L/σ²), in (0, 1].
    #[serde(default = "default_daps_step")]
    pub daps_step: f64,
}

fn default_diffpir_lambda() -> f64 {
    1.0
}
fn default_diffpir_zeta() -> f64 {
    0.3
}
fn default_daps_langevin_steps() -> usize {
    20
}
fn default_daps_step() -> f64 {
    0.2
}

fn default_samplers() -> Vec<SamplerKind> {
    vec![SamplerKind::Exact, SamplerKind::Fsr]
}
fn default_particles() -> usize {
    512
}
fn default_steps() -> usize {
    1000
}
fn default_t_min() -> f64 {
    1e-3
}
fn default_beta_min() -> f64 {
    0.01
}
fn default_beta_max() -> f64 {
    20.0
}
fn default_zeta() -> f64 {
    1.0
}
fn default_cg_tolerance() -> f64 {
    1e-6
}
fn default_cg_max_iterations() -> usize {
    100
}
/// How many checkpoints a run records when `sampling.checkpoints` is absent.
pub const DEFAULT_CHECKPOINTS: usize = 50;

impl Default for SamplingConfig {
    fn default() -> Self {
        SamplingConfig {
            samplers: default_samplers(),
            particles: default_particles(),
            steps: default_steps(),
            t_min: default_t_min(),
            beta_min: default_beta_min(),
            beta_max: default_beta_max(),
            checkpoints: None,
            zeta: default_zeta(),
            cg_tolerance: default_cg_tolerance(),
            cg_max_iterations: default_cg_max_iterations(),
            integrator: IntegratorKind::default(),
            eta: 0.0,
            dps_update: false,
            diffpir_lambda: default_diffpir_lambda(),
            diffpir_zeta: default_diffpir_zeta(),
            daps_langevin_steps: default_daps_langevin_steps(),
            daps_step: default_daps_step(),
        }
    }
}

/// The embedded default run of `fslens demo`: a built-in synthetic set, no files needed.
pub const DEMO_TOML: &str = include_str!("../assets/configs/demo.toml");
/// How errors name the embedded demo config.
pub const DEMO_ORIGIN: &str = "<embedded demo.toml>";

impl RunConfig {
    /// Parses TOML text; `origin` names the file in errors. Names are checked here (typed
    /// fields), ranges by [`crate::plan::RunPlan::new`].
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: Self = Self::parse_toml(text, origin)?;
        if cfg.measurement.y.is_some()
            && toml::from_str::<toml::Table>(text).is_ok_and(|t| t.contains_key("truth"))
        {
            return Err(Error::config(
                "truth",
                "a [truth] table was given with measurement.y: a measured y has no ground \
                 truth and holds no image out; drop [truth] (or drop measurement.y to simulate \
                 y from a truth)",
            ));
        }
        Ok(cfg)
    }

    /// How many images the run holds out of the atoms: none with a truth file, a truth kept
    /// among the atoms, or a measured y; else `truth.held_out`.
    pub fn held_out(&self) -> usize {
        if self.truth.file.is_some() || self.truth.in_atoms || self.measurement.y.is_some() {
            0
        } else {
            self.truth.held_out
        }
    }

    fn parse_toml(text: &str, origin: &Path) -> Result<Self> {
        toml::from_str(text).map_err(|e| {
            // A sweep file (base + axes) given where a run config belongs.
            let sweep = toml::from_str::<toml::Table>(text)
                .is_ok_and(|t| t.contains_key("axes") && t.contains_key("base"));
            let hint = if sweep {
                "; this is a sweep file (base + [axes]): run it with `fslens sweep`, or give its \
                 base run config here"
            } else {
                ""
            };
            Error::data(
                origin,
                format!("invalid run config: {}{hint}", e.to_string().trim_end()),
            )
        })
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// The embedded demo configuration.
    pub fn demo() -> Self {
        Self::from_toml(DEMO_TOML, Path::new(DEMO_ORIGIN))
            .expect("the embedded demo config is valid")
    }

    /// The resolved configuration as TOML (written as config.toml in every output folder).
    pub fn to_toml(&self) -> String {
        let mut resolved = self.clone();
        resolved.data = self.data.resolved();
        if self.measurement.y.is_none() {
            return toml::to_string_pretty(&resolved).expect("a run config always serialises");
        }
        // With a measured y the [truth] table is refused on reading: leave its defaults out.
        let mut table = toml::Table::try_from(&resolved).expect("a run config always serialises");
        table.remove("truth");
        toml::to_string_pretty(&table).expect("a run config always serialises")
    }
}

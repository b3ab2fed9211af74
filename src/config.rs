//! Run configurations (TOML), parsed strictly: an unknown key is an error that names it.
//!
//! ```toml
//! seed = 0                 # one seed for the held-out split, the noise of y and every sampler
//! backend = "auto"         # auto | cpu | gpu
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
//! sigma = 0.1
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
//!
//! [diagnostics]            # optional
//! hallucination_threshold = 1e-3   # exact mode mass below which a mode is ruled out
//! clusters = 8             # k-means modes when the data set has no labels
//! direction = "modes"      # heatmap direction u: "modes" (two heaviest exact modes) or "atoms:i,j"
//! ```

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::data::spec::DataConfig;
use crate::{Error, Result};

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct RunConfig {
    #[serde(default)]
    pub seed: u64,
    #[serde(default = "default_backend")]
    pub backend: String,
    /// GPU atom storage: auto (u8 for 8-bit data, else f32), f32, u8 or f16.
    #[serde(default = "default_storage")]
    pub storage: String,
    pub data: DataConfig,
    #[serde(default)]
    pub truth: TruthConfig,
    pub measurement: MeasurementConfig,
    #[serde(default)]
    pub sampling: SamplingConfig,
    #[serde(default)]
    pub diagnostics: DiagnosticsConfig,
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
    pub direction: String,
}

fn default_direction() -> String {
    "modes".into()
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

fn default_backend() -> String {
    "auto".into()
}
fn default_storage() -> String {
    "auto".into()
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
    /// Measurement noise standard deviation σ > 0.
    pub sigma: f64,
}

#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct SamplingConfig {
    #[serde(default = "default_samplers")]
    pub samplers: Vec<String>,
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
    #[serde(default = "default_integrator")]
    pub integrator: String,
    /// η of `ddim`, in [0, 1].
    #[serde(default)]
    pub eta: f64,
    /// `zeta-dps` with ddpm/ddim: the DPS paper's post-step update x ← x′ − ζ∇‖y − A(m(x))‖
    /// instead of the score form.
    #[serde(default)]
    pub dps_update: bool,
}

fn default_integrator() -> String {
    "euler-maruyama".into()
}

fn default_samplers() -> Vec<String> {
    vec!["exact".into(), "fsr".into()]
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
            integrator: default_integrator(),
            eta: 0.0,
            dps_update: false,
        }
    }
}

/// The embedded default run of `fslens demo`: a built-in synthetic set, no files needed.
pub const DEMO_TOML: &str = include_str!("../assets/configs/demo.toml");

impl RunConfig {
    /// Parses TOML text; `origin` names the file in errors.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Self> {
        let cfg: RunConfig = toml::from_str(text).map_err(|e| {
            Error::data(
                origin,
                format!("invalid run config: {}", e.to_string().trim_end()),
            )
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Reads and parses a config file.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// The embedded demo configuration.
    pub fn demo() -> Self {
        Self::from_toml(DEMO_TOML, Path::new("<embedded demo.toml>"))
            .expect("the embedded demo config is valid")
    }

    /// The resolved configuration as TOML (written as config.toml in every output folder).
    pub fn to_toml(&self) -> String {
        let mut resolved = self.clone();
        resolved.data = self.data.resolved();
        toml::to_string_pretty(&resolved).expect("a run config always serialises")
    }

    /// Checks the values serde cannot: ranges and names.
    pub fn validate(&self) -> Result<()> {
        if !matches!(self.backend.as_str(), "auto" | "cpu" | "gpu") {
            return Err(Error::config(
                "backend",
                format!("expected auto, cpu or gpu, got {:?}", self.backend),
            ));
        }
        if !crate::engine::STORAGES.contains(&self.storage.as_str()) {
            return Err(Error::config(
                "storage",
                format!(
                    "expected one of {}, got {:?}",
                    crate::engine::STORAGES.join(", "),
                    self.storage
                ),
            ));
        }
        let m = &self.measurement;
        if !(m.sigma.is_finite() && m.sigma > 0.0) {
            return Err(Error::config(
                "measurement.sigma",
                format!("must be a positive number, got {}", m.sigma),
            ));
        }
        let s = &self.sampling;
        if s.samplers.is_empty() {
            return Err(Error::config(
                "sampling.samplers",
                "list at least one sampler, e.g. [\"exact\", \"fsr\"]",
            ));
        }
        let options = self.sampler_options();
        for name in &s.samplers {
            crate::samplers::by_name_with(name, &options)?;
        }
        crate::diffusion::Schedule::new(s.beta_min, s.beta_max).map_err(|e| match e {
            Error::Config { key, problem } => Error::config(format!("sampling.{key}"), problem),
            other => other,
        })?;
        self.integrator()?;
        self.sampler_settings().validate()?;
        let g = &self.diagnostics;
        if !(g.hallucination_threshold > 0.0 && g.hallucination_threshold < 1.0) {
            return Err(Error::config(
                "diagnostics.hallucination_threshold",
                format!("must lie in (0, 1), got {}", g.hallucination_threshold),
            ));
        }
        crate::diagnostics::projection::DirectionSpec::parse(&g.direction)?;
        if g.clusters == 0 {
            return Err(Error::config(
                "diagnostics.clusters",
                "must be at least 1 (default 8)",
            ));
        }
        let t = &self.truth;
        if t.file.is_none() && !t.in_atoms && t.index >= t.held_out {
            return Err(Error::config(
                "truth.index",
                format!(
                    "is {} but only {} image(s) are held out; raise truth.held_out",
                    t.index, t.held_out
                ),
            ));
        }
        Ok(())
    }

    /// The integrator named by `sampling.integrator` and `sampling.eta`.
    pub fn integrator(&self) -> Result<crate::diffusion::integrate::Integrator> {
        crate::diffusion::integrate::Integrator::from_config(
            &self.sampling.integrator,
            self.sampling.eta,
        )
    }

    /// The sampler settings (call [`RunConfig::validate`] first: a bad integrator name falls
    /// back to Euler–Maruyama here).
    pub fn sampler_settings(&self) -> crate::samplers::Settings {
        let s = &self.sampling;
        let checkpoints = s.checkpoints.clone().unwrap_or_else(|| {
            crate::diffusion::integrate::TimeGrid {
                t_max: 1.0,
                t_min: s.t_min,
                steps: s.steps.max(1),
            }
            .log_spaced_checkpoints(DEFAULT_CHECKPOINTS)
        });
        crate::samplers::Settings {
            particles: s.particles,
            steps: s.steps,
            t_min: s.t_min,
            seed: self.seed,
            checkpoints,
            integrator: self.integrator().unwrap_or_default(),
            dps_update: s.dps_update,
        }
    }

    pub fn sampler_options(&self) -> crate::samplers::SamplerOptions {
        let s = &self.sampling;
        crate::samplers::SamplerOptions {
            zeta: s.zeta,
            cg: crate::samplers::solve::CgOptions {
                tolerance: s.cg_tolerance,
                max_iterations: s.cg_max_iterations,
            },
        }
    }

    pub fn diagnostics_options(&self) -> crate::diagnostics::Options {
        crate::diagnostics::Options {
            hallucination_threshold: self.diagnostics.hallucination_threshold,
            clusters: self.diagnostics.clusters,
            seed: self.seed,
        }
    }

    pub fn schedule(&self) -> crate::diffusion::Schedule {
        crate::diffusion::Schedule {
            beta_min: self.sampling.beta_min,
            beta_max: self.sampling.beta_max,
        }
    }
}

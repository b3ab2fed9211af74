//! summary.json: what a run found, in numbers.

use serde::Serialize;

use crate::data::Dataset;
use crate::diagnostics::{CheckpointMetrics, ModeSource};

#[derive(Clone, Debug, Serialize)]
pub struct Summary {
    pub fslens_version: String,
    pub backend: String,
    pub dataset: DatasetSummary,
    pub measurement: MeasurementSummary,
    /// 1/Σ ω_i²: how many atoms the exact posterior effectively spreads over.
    pub exact_effective_atoms: f64,
    /// The ten heaviest atoms of the exact posterior ω = softmax(b).
    pub exact_top_atoms: Vec<TopAtom>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub exact_class_weights: Option<Vec<ClassWeight>>,
    /// The modes the metrics group atoms into, with their exact posterior mass.
    pub modes: ModesSummary,
    pub samplers: Vec<SamplerSummary>,
    /// The unit direction u of projections_<sampler>.npy and the report's heatmap (its D
    /// values are in projection_direction.npy): `"Shirt − Coat"` (mode means) or
    /// `"atom i − atom j"`.
    pub projection_direction: String,
    /// Samplers `fslens compare` left out, with the reason (e.g. pigdm on a nonlinear operator).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub skipped_samplers: Vec<SkippedSampler>,
    pub total_seconds: f64,
    /// Set by `fslens diagnose`: where the scored samples came from.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub external: Option<ExternalSource>,
    /// Warnings about the problem or the input, also printed on stderr before the work
    /// (e.g. a posterior on one effective atom; samples that look like [0, 1] data).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Under MPI (several ranks): how many, and which atoms each held (README "Several
    /// machines (MPI)").
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ranks: Option<crate::engine::ranks::RankLayout>,
}

/// The samples or trajectory `fslens diagnose` scored (produced by another program).
#[derive(Clone, Debug, Serialize)]
pub struct ExternalSource {
    /// The .npy file or PNG folder (`--samples`), or the clouds' .npy (`--trajectory`).
    pub path: String,
    /// e.g. `npy f32 (1024, 16, 16, 1)`, `png folder (1024 files)` or, for a trajectory,
    /// `npy f32 (5, 512, 256)`.
    pub format: String,
    /// The pixel convention: minus-one-to-one, zero-to-one or 0-255 (a trajectory is always
    /// minus-one-to-one: the sampler's own state x_t).
    pub pixels: String,
    /// The sampler name the samples are listed under.
    pub label: String,
    /// How the numbers read: the times they are scored at and what "denoised" means there.
    pub note: String,
    /// A trajectory's times file (`--times`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times_path: Option<String>,
    /// A trajectory's times, decreasing (the order of `checkpoint_times` then the final time),
    /// whatever their order in the file.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub times: Option<Vec<f64>>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SkippedSampler {
    pub name: String,
    pub reason: String,
}

#[derive(Clone, Debug, Serialize)]
pub struct DatasetSummary {
    pub source: String,
    pub atoms: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
    pub eight_bit: bool,
    pub classes: Option<Vec<String>>,
    pub pixel_mean: f64,
    pub pixel_std: f64,
}

impl DatasetSummary {
    pub fn of(ds: &Dataset) -> Self {
        let n = ds.images.len().max(1) as f64;
        let mean = ds.images.iter().map(|&p| p as f64).sum::<f64>() / n;
        let var = ds
            .images
            .iter()
            .map(|&p| (p as f64 - mean).powi(2))
            .sum::<f64>()
            / n;
        DatasetSummary {
            source: ds.source.clone(),
            atoms: ds.len(),
            height: ds.shape.height,
            width: ds.shape.width,
            channels: ds.shape.channels,
            eight_bit: ds.eight_bit,
            classes: ds.class_names.clone(),
            pixel_mean: mean,
            pixel_std: var.sqrt(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct MeasurementSummary {
    pub operator: String,
    pub linear: bool,
    pub m: usize,
    /// σ of the problem the samplers see (1 when per-entry σ_j were whitened away).
    pub sigma: f64,
    /// How the measurement noise was used (scalar σ, or per-entry σ_j by whitening).
    pub noise: String,
    pub truth: String,
    pub truth_label: Option<String>,
    /// Where y came from: simulated from the truth, or `measured: <the y file>`.
    pub y: String,
    /// The offset b removed from y (the likelihood sees y − b); absent without one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub offset: Option<String>,
}

impl MeasurementSummary {
    /// The measurement of `setup` and its noise.
    pub fn of(setup: &super::setup::Setup) -> Self {
        MeasurementSummary {
            operator: setup.operator.spec(),
            linear: setup.operator.is_linear(),
            m: setup.y.len(),
            sigma: setup.sigma,
            noise: setup.noise.clone(),
            truth: setup.truth_source.clone(),
            truth_label: setup
                .truth_label
                .map(|l| super::classes::label_name(&setup.atoms, l)),
            y: setup.y_source.clone(),
            offset: setup.offset.clone(),
        }
    }
}

#[derive(Clone, Debug, Serialize)]
pub struct TopAtom {
    pub index: usize,
    pub weight: f64,
    pub label: Option<String>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ClassWeight {
    pub class: String,
    pub weight: f64,
}

/// What certified pruning did in each step of a sampler (summary.json `pruning`; only when
/// `prune = "on"`).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct PruningSteps {
    /// N, the atoms one unpruned pass visits.
    pub atoms: usize,
    /// The time at the start of each step (null for the discrete integrators).
    pub t: Vec<Option<f64>>,
    /// Passes over the atoms (row blocks) in each step.
    pub passes: Vec<u64>,
    /// Atoms visited in each step, summed over its passes (an unpruned step visits
    /// passes × N).
    pub atoms_visited: Vec<u64>,
    /// The realised certified bound δ of each step: the max over its passes of
    /// max_b Σ_skipped (mass bound)/Z_b,kept (≤ ε; design §8).
    pub bound: Vec<f64>,
    /// Atoms of skipped clusters scanned to keep the nearest atom exact, per step.
    pub nearest_checked: Vec<u64>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SamplerSummary {
    pub name: String,
    pub wall_seconds: f64,
    pub particles: usize,
    pub steps: usize,
    pub seconds_per_step: Option<f64>,
    pub passes_per_step: f64,
    /// How the reverse process was integrated (absent for `exact`): `"euler-maruyama"`,
    /// `"heun-ode"`, `"ddpm"` or `{"ddim": {"eta": η}}`. The discrete ones (ddpm, ddim) ignore
    /// t_min and the β range: their last step returns x̂_0, at t = 0, v = 0.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub integrator: Option<crate::diffusion::integrate::Integrator>,
    /// The continuous time whose noise the final samples carry (t_min for the continuous
    /// integrators; for ddpm/ddim 0, the clean x̂_0 of the last step), and that noise variance v.
    pub final_time: f64,
    pub final_noise_variance: f64,
    /// The recorded checkpoint times (decreasing), one `checkpoints` metrics record each.
    pub checkpoint_times: Vec<f64>,
    /// The times of the full clouds in checkpoints_<name>.npy (F × K × D): at most 8 of the
    /// checkpoint times, evenly spread in log t.
    pub full_checkpoint_times: Vec<f64>,
    /// The rows of projections_<name>.npy ((T + 1) × K, ⟨x_t, u⟩): the checkpoint times, then
    /// the final time.
    pub projection_times: Vec<f64>,
    pub class_weights: Option<Vec<ClassWeight>>,
    /// Total variation between this sampler's class weights and the exact ones.
    pub class_tv_to_exact: Option<f64>,
    /// Named numbers about the run: `engine_passes_per_step`, and for pigdm/tmpd
    /// `cg_solves`, `cg_iterations_mean`, `cg_iterations_max`, `cg_residual_max`,
    /// `cg_not_converged`.
    #[serde(skip_serializing_if = "std::collections::BTreeMap::is_empty")]
    pub diagnostics: std::collections::BTreeMap<String, f64>,
    /// Certified pruning per step (absent when pruning is off).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub pruning: Option<PruningSteps>,
    /// Warnings raised during the run (e.g. conjugate gradients that hit the iteration cap).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub warnings: Vec<String>,
    /// Where the numbers say the sampler failed (spread ratio outside the band at any
    /// checkpoint, hallucination or off-support above 5 % at the end; see
    /// [`super::flags`]); empty when none did, and always for `exact` (its draws are exact;
    /// where they leave the band the report notes the Monte Carlo noise). The report shows
    /// them as notes.
    pub flags: Vec<super::flags::Flag>,
    /// The metrics against the exact posterior at t_min.
    pub metrics: CheckpointMetrics,
    /// The same at every checkpoint time (decreasing t): the early-stopping curves.
    pub checkpoints: Vec<CheckpointMetrics>,
}

#[derive(Clone, Debug, Serialize)]
pub struct ModesSummary {
    /// `classes` (the data set's labels) or `clusters` (k-means, see diagnostics::modes).
    pub source: ModeSource,
    pub names: Vec<String>,
    /// Σ_{i ∈ mode} ω_i.
    pub exact_weights: Vec<f64>,
    /// Modes below this exact mass count as ruled out (prior-mode hallucination).
    pub hallucination_threshold: f64,
}

/// metrics.json: every sampler's metrics records in one object.
#[derive(Clone, Debug, Serialize)]
pub struct MetricsFile {
    pub modes: ModesSummary,
    /// How SSIM and off-support are computed, for readers of the numbers.
    pub ssim: String,
    pub off_support_quantile: f64,
    /// [`crate::diagnostics::OFF_SUPPORT_RULE`].
    pub off_support_rule: String,
    /// ρ: median distance from an atom to its nearest other atom (pixels in [-1, 1]).
    pub atom_scale: f64,
    /// The threshold's margin over q99(t), in units of ρ.
    pub off_support_margin: f64,
    /// [`crate::diagnostics::LIKELIHOOD_HALLUCINATION_RULE`].
    pub likelihood_hallucination_rule: String,
    /// Sampler name → its final metrics and checkpoint records.
    pub samplers: std::collections::BTreeMap<String, SamplerMetrics>,
}

#[derive(Clone, Debug, Serialize)]
pub struct SamplerMetrics {
    pub metrics: CheckpointMetrics,
    pub checkpoints: Vec<CheckpointMetrics>,
}

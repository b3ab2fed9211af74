//! What a run or a diagnosis produced, before anything is written: the outcomes that
//! [`super::execute`] and [`super::diagnose`] return and [`super::outputs`] writes.

use std::time::Instant;

use super::classes::class_weights_exact;
use super::setup::Setup;
use super::summary::{ExternalSource, ModesSummary, SkippedSampler};
use crate::data::ImageShape;
use crate::diagnostics::projection::Direction;
use crate::diagnostics::{CheckpointMetrics, ExactPosterior};
use crate::diffusion::integrate::Level;
use crate::report::plots::ProjectionSeries;
use crate::samplers::{Run, SamplerKind};

/// The problem and its exact posterior, as every output folder describes them.
pub struct ProblemOutcome {
    /// When the run started (the summary's total includes writing the folder).
    pub started: Instant,
    pub setup: Setup,
    /// The engine, in words (`cpu (2 threads)`, `gpu: …`).
    pub backend: String,
    /// ω_i = softmax_i(b_i), the exact posterior at t = 0.
    pub omega: Vec<f64>,
    /// Σ_{i ∈ c} ω_i per class, where the data set has labels.
    pub exact_classes: Option<Vec<f64>>,
    pub modes: ModesSummary,
    /// ρ of the off-support rule (median nearest-other-atom distance).
    pub atom_scale: f64,
}

impl ProblemOutcome {
    /// Collects what `exact` knows about the problem (after its last use as a borrow).
    pub fn new(
        started: Instant,
        setup: Setup,
        backend: String,
        omega: Vec<f64>,
        modes: ModesSummary,
        atom_scale: f64,
    ) -> Self {
        ProblemOutcome {
            started,
            exact_classes: class_weights_exact(&setup.atoms, &omega),
            setup,
            backend,
            omega,
            modes,
            atom_scale,
        }
    }

    /// The image shape of the atoms.
    pub fn shape(&self) -> ImageShape {
        self.setup.atoms.shape
    }
}

/// The modes the metrics use and their exact mass, for summary.json and metrics.json.
pub fn modes_summary(exact: &ExactPosterior) -> ModesSummary {
    ModesSummary {
        source: exact.modes.source,
        names: exact.modes.names.clone(),
        exact_weights: exact.exact_mode_weights.clone(),
        hallucination_threshold: exact.options.hallucination_threshold,
    }
}

/// What a run produced, before anything is written.
pub struct Outcome {
    pub problem: ProblemOutcome,
    /// The heatmap direction u.
    pub direction: Direction,
    /// The time and noise of the final samples.
    pub final_level: Level,
    /// Steps the integrator walked.
    pub walked: usize,
    /// One entry per sampler run, in run order.
    pub samplers: Vec<SamplerOutcome>,
    /// Samplers `compare` left out, with the reason.
    pub skipped: Vec<SkippedSampler>,
    /// The heatmap's exact panel: the exact sampler's projections, or fresh exact draws at the
    /// first sampler's times when the run has no exact sampler (name, series).
    pub exact_projection: Option<(String, ProjectionSeries)>,
    /// Warnings about the problem, raised before sampling.
    pub warnings: Vec<String>,
}

/// One sampler's run and its scores.
pub struct SamplerOutcome {
    pub kind: SamplerKind,
    pub run: Run,
    pub wall_seconds: f64,
    /// Tweedie means of the final samples under the prior, K × D.
    pub denoised: Vec<f32>,
    /// ⟨x_t, u⟩ of every particle at the checkpoints and the final time.
    pub projection: ProjectionSeries,
    /// Metrics at every checkpoint (decreasing t).
    pub checkpoints: Vec<CheckpointMetrics>,
    /// Metrics of the final samples.
    pub metrics: CheckpointMetrics,
    /// Class frequencies of the final samples' nearest atoms.
    pub classes: Option<Vec<f64>>,
}

/// A clean cloud scored at t = 0.
pub struct ScoredCloud {
    /// `exact` or the samples' label.
    pub name: String,
    /// K × D pixels in [-1, 1].
    pub pixels: Vec<f32>,
    /// Class frequencies of the particles' nearest atoms.
    pub classes: Option<Vec<f64>>,
    pub metrics: CheckpointMetrics,
}

/// What `fslens diagnose` found, before anything is written.
pub struct Diagnosis {
    pub problem: ProblemOutcome,
    /// Fresh exact draws, then the external samples.
    pub clouds: Vec<ScoredCloud>,
    pub source: ExternalSource,
    /// Warnings about the problem and the samples, raised before scoring.
    pub warnings: Vec<String>,
}

//! What a run or a diagnosis produced, before anything is written: the outcomes that
//! [`super::execute`], [`super::diagnose`] and [`super::diagnose_trajectory`] return and
//! [`super::outputs`] writes.

use std::time::Instant;

use super::classes::class_weights_exact;
use super::setup::Setup;
use super::summary::{ExternalSource, ModesSummary, SkippedSampler};
use crate::choices::Choice;
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

/// What a run produced, before anything is written (also a diagnosed trajectory, whose
/// clouds at its times stand in for a run's checkpoints).
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
    /// Set when the clouds of an external sampler were read from files (`fslens diagnose
    /// --trajectory`): where they came from, for summary.json and the report.
    pub external: Option<ExternalSource>,
}

/// Who made a cloud series: a sampler fslens ran, or another program whose clouds were read
/// from a file (`fslens diagnose --trajectory`) and are listed under the user's label. The
/// name keys the output files (`samples_<name>.npy`, …), the metrics and the plot colours.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum SamplerId {
    BuiltIn(SamplerKind),
    /// A label that is no built-in sampler's name (checked where it is read), so that its
    /// files and colour never clash with a built-in sampler's.
    External(String),
}

impl SamplerId {
    /// The name in file names, metrics.json, summary.json and the report.
    pub fn name(&self) -> &str {
        match self {
            SamplerId::BuiltIn(kind) => kind.name(),
            SamplerId::External(label) => label,
        }
    }

    /// The built-in sampler, if fslens ran it.
    pub fn kind(&self) -> Option<SamplerKind> {
        match self {
            SamplerId::BuiltIn(kind) => Some(*kind),
            SamplerId::External(_) => None,
        }
    }

    /// Whether this is the exact sampler (the reference every other cloud is drawn beside).
    pub fn is_exact(&self) -> bool {
        self.kind() == Some(SamplerKind::Exact)
    }

    /// Whether fslens integrated a reverse process for it (every built-in sampler but
    /// `exact`): only those have steps, an integrator and a time per step.
    pub fn integrated(&self) -> bool {
        self.kind().is_some_and(|k| k != SamplerKind::Exact)
    }
}

/// One sampler's run and its scores.
pub struct SamplerOutcome {
    pub sampler: SamplerId,
    /// The clouds: `samples` at the final time and `snapshots` at the checkpoints (for an
    /// external sampler, the trajectory's clouds at its times).
    pub run: Run,
    /// Unknown (NaN, null in JSON) for an external sampler.
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
    /// Certified pruning per step, when the engine prunes.
    pub pruning: Option<super::summary::PruningSteps>,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sampler_ids_name_built_in_samplers_and_labels() {
        let exact = SamplerId::BuiltIn(SamplerKind::Exact);
        let fsr = SamplerId::BuiltIn(SamplerKind::Fsr);
        let mine = SamplerId::External("my-dps".into());
        assert_eq!(
            [exact.name(), fsr.name(), mine.name()],
            ["exact", "fsr", "my-dps"]
        );
        assert_eq!(
            [exact.kind(), fsr.kind(), mine.kind()],
            [Some(SamplerKind::Exact), Some(SamplerKind::Fsr), None]
        );
        // Only samplers fslens integrated have steps; exact draws and external clouds do not.
        assert_eq!(
            [exact.integrated(), fsr.integrated(), mine.integrated()],
            [false, true, false]
        );
        assert!(exact.is_exact() && !fsr.is_exact() && !mine.is_exact());
    }
}

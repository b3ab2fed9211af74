//! One run of the finite-sample lens, from a plan to a finished output folder, in three
//! steps: [`setup`] loads the atoms, holds out the truth and measures it; [`execute`] builds
//! the engine, runs every sampler on the same y and seed and scores its clouds (no file I/O);
//! [`outputs`] writes the folder (README: "Output folder"). `diagnose` scores samples made
//! elsewhere through the same setup and outputs, and `diagnose_trajectory` their clouds over
//! time (read by `trajectory`) as a run's outcome; `score` answers one score call.

mod cache_keys;
pub mod classes;
pub mod converge;
pub mod diagnose;
pub mod diagnose_trajectory;
pub mod execute;
pub mod flags;
pub mod measured_y;
pub mod outcome;
pub mod outputs;
pub mod page;
pub mod plan_report;
pub mod score;
pub mod setup;
pub mod summary;
pub mod trajectory;

use std::path::{Path, PathBuf};

use crate::Result;
use crate::data::ImageShape;
use crate::data::cache::AtomCache;
use crate::output::{Destination, OutputDir};
use crate::plan::RunPlan;
use crate::samplers::Progress;
pub use execute::{Outcome, execute};
use summary::Summary;

/// What a run tells the person watching it; the CLI turns it into a progress bar or JSON.
pub trait Observer {
    /// A stage began (loading data, measuring atoms, running a sampler…).
    fn stage(&mut self, _message: &str) {}
    /// A sampler made progress.
    fn progress(&mut self, _sampler: &str, _progress: Progress) {}
    /// Loading the data set made progress: `done` of `total` image files decoded (a folder
    /// of images; other kinds report nothing).
    fn loading(&mut self, _done: usize, _total: usize) {}
    /// Something the user must hear about (a solve that did not converge, …); also written
    /// to summary.json.
    fn warning(&mut self, _message: &str) {}
}

/// An observer that ignores everything (tests, library use).
pub struct Silent;
impl Observer for Silent {}

/// Runs `plan` and writes its output folder at `out` (staged, put in place when complete; a
/// folder there is replaced only as [`crate::output`] allows, and one holding an input of the
/// plan only with `out.force`).
pub fn run(
    plan: &RunPlan,
    out: &Destination,
    observer: &mut dyn Observer,
) -> Result<(PathBuf, Summary)> {
    let staging = OutputDir::create(&out.clone().inputs(plan.input_files()))?;
    let summary = run_into(plan, staging.path(), observer, None)?;
    let path = staging.finish()?;
    Ok((path, summary))
}

/// Runs `plan` and writes its outputs into the existing folder `dir` (the caller stages it:
/// [`run`] and the sweep runner rename it into place when this returns Ok), with the atoms and
/// measured atoms from `cache` when given.
pub fn run_into(
    plan: &RunPlan,
    dir: &Path,
    observer: &mut dyn Observer,
    cache: Option<&AtomCache>,
) -> Result<Summary> {
    let outcome = execute(plan, observer, cache)?;
    observer.stage("writing the report");
    outputs::write_run(dir, plan, &outcome)
}

/// Image shape used by `fslens score` for flat (N, D) atoms: `--shape` when given, a square
/// when D is a perfect square, else 1 × D.
pub fn flat_shape(d: usize, given: Option<ImageShape>) -> ImageShape {
    if let Some(s) = given {
        return s;
    }
    let r = (d as f64).sqrt().round() as usize;
    if r * r == d {
        ImageShape::new(r, r, 1)
    } else {
        ImageShape::new(1, d, 1)
    }
}

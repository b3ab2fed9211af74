//! What a run will hold in memory, from its plan alone: checked against the machine
//! ([`crate::resources`]) when the plan is made, so that a run that cannot fit is refused
//! within a second instead of aborting after minutes of work.
//!
//! Three moments, each checked on its own (what one holds is mostly freed before the next):
//! - reading the data set: N_read × D_read × 4 bytes (float32 pixels; key `data.count` for the
//!   built-in sets, else `data.path`);
//! - resizing it (`data.resize`): N × (D_before + D_after) × 4, the input and the output;
//! - running: the atoms, N × D × 4 twice on the CPU backend (the data set and the engine's
//!   copy; once counted for a GPU run), and the particle clouds the run keeps for its metrics
//!   and report: for each of S samplers its T recorded checkpoint clouds, its final samples and
//!   their Tweedie means, S × (T + 2) × K × D × 4 (key `sampling.particles`).
//!
//! Smaller buffers — scores, engine scratch, the CPU weight cache and the GPU's kept distances
//! (each capped at 256 MiB) — are left out, as are data sets whose size only their files tell
//! (a folder of images): the needs are lower bounds, so what is refused could never run.
//! GPU memory is checked by the engine when it uploads the atoms (an atom set larger than the
//! adapter's memory is refused there, naming the sizes); particles go to the GPU in row blocks
//! sized by the adapter's limits, so `sampling.particles` adds no GPU memory beyond them.

use super::{RunPlan, SamplerSelection};
use crate::Result;
use crate::data::expected::ExpectedSize;
use crate::engine::BackendKind;
use crate::resources::{Need, check};

/// Bytes of one stored value (float32).
const VALUE: f64 = 4.0;

/// Refuses `plan` when one of its moments needs more memory than this machine has.
pub(super) fn check_memory(plan: &RunPlan) -> Result<()> {
    for moment in moments(plan) {
        check(&moment)?;
    }
    Ok(())
}

/// The needs of each moment of a run (see the module notes).
pub fn moments(plan: &RunPlan) -> Vec<Vec<Need>> {
    let data = &plan.config.data;
    let size = data.expected_size(&plan.base_dir);
    let mut moments = Vec::new();
    if let Some(e) = &size {
        moments.push(vec![reading(plan, e)]);
        if let Some([h, w]) = data.resize {
            let (before, after) = (e.before_resize.dim() as f64, e.shape.dim() as f64);
            moments.push(vec![Need {
                key: "data.resize".into(),
                value: format!("[{h}, {w}]"),
                what: "resizing the data set".into(),
                formula: format!(
                    "N × (D before + D after) × 4 bytes, N = {}, D = {before:.0} → {after:.0}",
                    e.images
                ),
                bytes: e.images as f64 * (before + after) * VALUE,
                fix: "choose a smaller data.resize".into(),
            }]);
        }
    }
    let mut running = Vec::new();
    let d = size.map(|e| e.shape.dim());
    if let (Some(e), Some(d)) = (&size, d) {
        running.push(atoms(plan, e, d));
    }
    // Without a known D, one value per pixel of the smallest image fslens takes still counts.
    running.push(clouds(plan, d.unwrap_or(1)));
    moments.push(running);
    moments
}

/// Reading the data set as float32.
fn reading(plan: &RunPlan, e: &ExpectedSize) -> Need {
    let data = &plan.config.data;
    let (key, value, fix) = match data.kind {
        kind if kind.uses_count() => (
            "data.count".to_string(),
            e.read.to_string(),
            "lower data.count".to_string(),
        ),
        _ => (
            "data.path".to_string(),
            data.path
                .as_ref()
                .map_or_else(|| data.kind.name().to_string(), |p| p.display().to_string()),
            "use a smaller data set".to_string(),
        ),
    };
    Need {
        key,
        value,
        what: "reading the data set".into(),
        formula: format!(
            "N × D × 4 bytes, N = {}, D = {} ({})",
            e.read,
            e.read_shape.dim(),
            e.read_shape
        ),
        bytes: e.read as f64 * e.read_shape.dim() as f64 * VALUE,
        fix,
    }
}

/// The atoms during the run: the data set and, on the CPU, the engine's copy.
fn atoms(plan: &RunPlan, e: &ExpectedSize, d: usize) -> Need {
    let config = &plan.config;
    let held_out = config.held_out();
    let n = e.images.saturating_sub(held_out).max(1);
    let copies = if plan.engine.backend == BackendKind::Cpu {
        2
    } else {
        1
    };
    let (key, value, fix) = if let Some([h, w]) = config.data.resize {
        (
            "data.resize",
            format!("[{h}, {w}]"),
            "choose a smaller data.resize",
        )
    } else if config.data.kind.uses_count() {
        ("data.count", e.read.to_string(), "lower data.count")
    } else {
        (
            "data.subset",
            config.data.subset.map_or_else(
                || format!("(unset: all {} images)", e.read),
                |s| s.to_string(),
            ),
            "keep fewer images with data.subset",
        )
    };
    Need {
        key: key.into(),
        value,
        what: "the atoms".into(),
        formula: format!(
            "{copies} cop{} × N × D × 4 bytes, N = {n}, D = {d}",
            if copies == 1 { "y" } else { "ies" }
        ),
        bytes: copies as f64 * n as f64 * d as f64 * VALUE,
        fix: fix.into(),
    }
}

/// The particle clouds every sampler keeps: its checkpoints, final samples and their means.
fn clouds(plan: &RunPlan, d: usize) -> Need {
    let samplers = match &plan.samplers {
        SamplerSelection::Listed(kinds) | SamplerSelection::Chosen { kinds, .. } => kinds.len(),
        // compare runs at least the samplers the config lists, and they apply (else the
        // config would be refused by `run`).
        SamplerSelection::EveryApplicable => plan.config.sampling.samplers.len(),
    };
    let recorded = plan.settings.recorded_levels(&plan.schedule).0.len();
    let k = plan.settings.particles;
    let clouds = recorded + 2;
    Need {
        key: "sampling.particles".into(),
        value: k.to_string(),
        what: "the particle clouds the run keeps".into(),
        formula: format!(
            "{samplers} sampler{} × {clouds} clouds ({recorded} checkpoint{}, the samples and \
             their means) × K × D × 4 bytes, D = {d}",
            if samplers == 1 { "" } else { "s" },
            if recorded == 1 { "" } else { "s" }
        ),
        bytes: samplers as f64 * clouds as f64 * k as f64 * d as f64 * VALUE,
        fix: "lower sampling.particles (or list fewer sampling.checkpoints)".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::RunConfig;
    use crate::plan::Overrides;
    use std::path::Path;

    #[test]
    fn the_demo_needs_what_its_arrays_hold() {
        let plan = RunPlan::demo(Overrides {
            backend: Some(BackendKind::Cpu),
            ..Default::default()
        })
        .unwrap();
        let m = moments(&plan);
        assert_eq!(m.len(), 2, "reading and running (no resize)");
        // 3000 shapes of 16×16 read; 2999 atoms twice; S samplers × (T + 2) clouds of K × 256.
        assert_eq!(m[0][0].bytes, 3000.0 * 256.0 * 4.0);
        assert_eq!(m[1][0].bytes, 2.0 * 2999.0 * 256.0 * 4.0);
        let t = plan.settings.recorded_levels(&plan.schedule).0.len();
        assert!(t >= 40, "{t} checkpoints");
        let (samplers, k) = (plan.config.sampling.samplers.len(), plan.settings.particles);
        assert_eq!((samplers, k), (3, 256), "the demo's samplers and particles");
        assert_eq!(m[1][1].bytes, (samplers * (t + 2) * k * 256 * 4) as f64);
    }

    #[test]
    fn sizes_beyond_any_machine_are_refused_naming_the_key() {
        if crate::resources::memory().is_none() {
            return;
        }
        let refused = |edit: &dyn Fn(&mut RunConfig), key: &str, needle: &str| {
            let mut cfg = RunConfig::demo();
            edit(&mut cfg);
            let t0 = std::time::Instant::now();
            let e = RunPlan::new(cfg, Path::new("."), Overrides::default())
                .unwrap_err()
                .to_string();
            assert!(t0.elapsed().as_secs_f64() < 1.0);
            assert!(
                e.starts_with(&format!("{key}: ")) && e.contains(needle) && e.contains("memory"),
                "{key}: {e}"
            );
        };
        refused(
            &|c| c.sampling.particles = 1_000_000_000,
            "sampling.particles",
            "for the particle clouds the run keeps",
        );
        refused(
            &|c| c.data.count = Some(10_000_000_000),
            "data.count",
            "for reading the data set",
        );
        refused(
            &|c| c.data.resize = Some([100_000, 100_000]),
            "data.resize",
            "for resizing the data set",
        );
    }
}

//! A run's report.html content, from what summary.json holds, the projections and the PNGs in
//! the output folder (see [`crate::report::html`]).

use std::path::Path;

use super::summary::{ExternalSource, Summary};
use crate::report::html::{
    Figure, FigureContent, ModeTable, ReportPage, SPREAD_BAND, SamplerCurves, SamplerRow,
    standard_figures,
};
use crate::report::plots::ProjectionSeries;
use crate::{Error, Result};

/// The page of a run folder `dir` (whose PNGs it embeds): the facts and table from `summary`,
/// the standard plots from its metric records and `projections` (sampler name → series),
/// the exact heatmap panel from `exact_projection`, the config text, and notes for skipped
/// samplers and flagged failures. `command` names what made the folder. Without
/// `plots_over_t` (scored clean samples: one record at t = 0) the plots against t are left out.
pub fn run_page(
    summary: &Summary,
    config_toml: &str,
    projections: &[(String, ProjectionSeries)],
    exact_projection: Option<(&str, &ProjectionSeries)>,
    dir: &Path,
    command: &str,
    plots_over_t: bool,
) -> Result<ReportPage> {
    let mut notes: Vec<String> = summary
        .skipped_samplers
        .iter()
        .map(|s| format!("{} was skipped: {}", s.name, s.reason))
        .collect();
    let mut rows = Vec::new();
    let mut curves = Vec::new();
    for s in &summary.samplers {
        let (row, sampler_curves) = sampler_row(s, projections, &mut notes);
        rows.push(row);
        curves.push(sampler_curves);
    }
    let mut figures = if plots_over_t {
        standard_figures(
            &curves,
            exact_projection,
            &summary.projection_direction,
            &summary.modes.names,
            &summary.modes.exact_weights,
        )?
    } else {
        Vec::new()
    };
    embed_pngs(dir, summary, &mut figures)?;
    let ds = &summary.dataset;
    Ok(ReportPage {
        title: format!("{command}: {}", ds.source),
        subtitle: format!(
            "fslens {} · {} samplers · {:.1} s",
            summary.fslens_version,
            summary.samplers.len(),
            summary.total_seconds
        ),
        facts: facts(summary, plots_over_t),
        notes,
        modes: Some(ModeTable {
            names: summary.modes.names.clone(),
            exact_weights: summary.modes.exact_weights.clone(),
            hallucination_threshold: summary.modes.hallucination_threshold,
        }),
        samplers: rows,
        figures,
        config_toml: Some(config_toml.to_string()),
    })
}

/// The facts table: data set, measurement, truth, exact posterior, modes, backend, times.
fn facts(summary: &Summary, plots_over_t: bool) -> Vec<(String, String)> {
    let m = &summary.measurement;
    let ds = &summary.dataset;
    let mut facts = vec![
        (
            "data set".to_string(),
            format!(
                "{} ({} atoms of {}×{}×{})",
                ds.source, ds.atoms, ds.height, ds.width, ds.channels
            ),
        ),
        (
            "measurement".to_string(),
            format!(
                "{} ({}, m = {}), σ = {}",
                m.operator,
                if m.linear { "linear" } else { "nonlinear" },
                m.m,
                m.sigma
            ),
        ),
        (
            "truth".to_string(),
            match &m.truth_label {
                Some(l) => format!("{} (label {l})", m.truth),
                None => m.truth.clone(),
            },
        ),
        (
            "exact posterior".to_string(),
            format!(
                "{:.1} effective atoms; heaviest: {}",
                summary.exact_effective_atoms,
                summary
                    .exact_top_atoms
                    .iter()
                    .take(5)
                    .map(|a| match &a.label {
                        Some(l) => format!("atom {} ({l}) {:.3}", a.index, a.weight),
                        None => format!("atom {} {:.3}", a.index, a.weight),
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            ),
        ),
        (
            "modes".to_string(),
            format!(
                "{} ({})",
                summary.modes.names.len(),
                match summary.modes.source {
                    crate::diagnostics::ModeSource::Classes => "the data set's classes",
                    crate::diagnostics::ModeSource::Clusters => "k-means clusters",
                }
            ),
        ),
        ("backend".to_string(), summary.backend.clone()),
    ];
    if plots_over_t {
        facts.insert(
            facts.len() - 1,
            (
                "heatmap direction u".to_string(),
                summary.projection_direction.clone(),
            ),
        );
    } else {
        facts.push((
            "scored at".to_string(),
            "t = 0: clean samples, nearest atoms and metrics without noise (s = 1, v = 0)"
                .to_string(),
        ));
    }
    if let Some(first) = summary.samplers.first().filter(|_| plots_over_t) {
        facts.push((
            "final time".to_string(),
            format!(
                "t = {:.4e} (noise variance {:.3e}), {} checkpoints",
                first.final_time,
                first.final_noise_variance,
                first.checkpoint_times.len()
            ),
        ));
    }
    if let Some(fact) = summary.external.as_ref().and_then(trajectory_fact) {
        facts.push(fact);
    }
    facts
}

/// Where a diagnosed trajectory came from and the times it was scored at (none for
/// `--samples`, whose facts say t = 0).
fn trajectory_fact(source: &ExternalSource) -> Option<(String, String)> {
    let times = source.times.as_ref()?;
    // Five significant digits, without the float noise of grid times (0.20079999999999998).
    let short = |t: &f64| {
        format!("{:.4e}", t)
            .parse::<f64>()
            .unwrap_or(*t)
            .to_string()
    };
    let listed: Vec<String> = times.iter().map(short).collect();
    let mut text = format!(
        "{} scored from {} ({}) at the {} times given in {}: t = {}. Each cloud is the \
         sampler's x_t on the [-1, 1] scale, scored as a run scores a checkpoint; the exact row \
         is fresh exact draws at the same times.",
        source.label,
        source.path,
        source.format,
        times.len(),
        source.times_path.as_deref().unwrap_or("the times file"),
        listed.join(", ")
    );
    if times.contains(&0.0) {
        text.push_str(
            " t = 0 (clean samples) has no place on the plots' log-t axes: the table holds \
             its metrics.",
        );
    }
    Some(("trajectory".to_string(), text))
}

/// A sampler's table row and curves; its failure flags (spread outside the band, hallucinated
/// or off-support particles; [`super::flags`]) go to `notes`.
fn sampler_row(
    s: &crate::experiment::summary::SamplerSummary,
    projections: &[(String, ProjectionSeries)],
    notes: &mut Vec<String>,
) -> (SamplerRow, SamplerCurves) {
    let mut records = s.checkpoints.clone();
    records.push(s.metrics.clone());
    let range = records
        .iter()
        .map(|r| r.spread_ratio)
        .filter(|r| r.is_finite())
        .fold(None, |acc: Option<(f64, f64)>, r| {
            Some(acc.map_or((r, r), |(lo, hi)| (lo.min(r), hi.max(r))))
        });
    for flag in &s.flags {
        notes.push(format!("{}: {}", s.name, flag.message));
    }
    if s.name == "exact" {
        notes.extend(super::flags::exact_noise_note(&records));
    }
    if s.name == "fsr" && s.flags.iter().any(|f| f.metric == "spread_ratio") {
        // fsr integrates the exact score: leaving the band is the integrator's doing.
        let outside = |r: &&crate::diagnostics::CheckpointMetrics| {
            r.spread_ratio.is_finite() && !(SPREAD_BAND.0..=SPREAD_BAND.1).contains(&r.spread_ratio)
        };
        if let Some(first) = records.iter().find(outside).map(|r| r.t) {
            notes.push(format!(
                "fsr integrates the exact score, so its spread ratio leaving the band (from \
                 t = {first:.3e} on) is discretisation error, not a likelihood \
                 approximation: below that t compare the other samplers with fsr rather \
                 than with the band, or raise sampling.steps"
            ));
        }
    }
    let row = SamplerRow {
        name: s.name.clone(),
        particles: s.particles,
        steps: s.steps,
        wall_seconds: s.wall_seconds,
        seconds_per_step: s.seconds_per_step,
        passes_per_step: s.passes_per_step,
        metrics: s.metrics.clone(),
        spread_ratio_range: range,
        warnings: s.warnings.clone(),
    };
    let curves = SamplerCurves {
        name: s.name.clone(),
        records,
        projection: projections
            .iter()
            .find(|(n, _)| n == &s.name)
            .map(|(_, p)| p.clone()),
    };
    (row, curves)
}

/// The PNGs of the folder that exist (truth, measurement, heaviest atoms, sample grids), as
/// figures.
fn embed_pngs(dir: &Path, summary: &Summary, figures: &mut Vec<Figure>) -> Result<()> {
    // Where truth.png would be: a measured y has no truth.
    if summary.measurement.truth == super::setup::NO_TRUTH {
        figures.push(Figure {
            title: "Ground truth".into(),
            caption: "y was read from measurement.y: truth-based metrics (PSNR, SSIM, distance to \
                      the truth) are null."
                .into(),
            content: FigureContent::Svg(format!(
                "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"360\" height=\"40\">\
                 <text x=\"8\" y=\"25\" font-size=\"14\">{}</text></svg>",
                super::setup::NO_TRUTH
            )),
        });
    }
    let mut png = |file: String, title: String, caption: String| -> Result<()> {
        let path = dir.join(&file);
        if path.is_file() {
            let bytes = std::fs::read(&path).map_err(|e| Error::io(&path, e))?;
            figures.push(Figure {
                title,
                caption,
                content: FigureContent::Png(bytes),
            });
        }
        Ok(())
    };
    png(
        "truth.png".into(),
        "Ground truth".into(),
        "The image the measurement was taken of.".into(),
    )?;
    png(
        "measurement.png".into(),
        "Measurement y".into(),
        "A viewable rendering of y.".into(),
    )?;
    png(
        "exact_top_atoms.png".into(),
        "Heaviest atoms of the exact posterior".into(),
        "The ten atoms with the largest ω_i, heaviest first.".into(),
    )?;
    for s in &summary.samplers {
        png(
            format!("grid_{}.png", s.name),
            format!("Samples of {}", s.name),
            format!(
                "The first {} of {}'s {} samples at the final time.",
                s.particles.min(64),
                s.name,
                s.particles
            ),
        )?;
    }
    Ok(())
}

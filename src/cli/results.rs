//! What a command prints as its result, and how errors read.
//!
//! Results go to stdout, everything else (stages, progress, warnings, errors) to stderr, so
//! `fslens run C.toml > table.txt` keeps the table alone. With `--json` the result is ONE JSON
//! document on stdout (a run's is its summary.json object plus `out`), the stages and
//! warnings are JSON lines on stderr, and an error is the record
//! `{"error": {"key": …, "path": …, "message": …}}` on stderr (key and path null when the
//! error names none); the exit status is the same as without `--json`.

use std::path::Path;

use serde::Serialize;

use fslens::experiment::flags::short_name;
use fslens::experiment::plan_report::PlanReport;
use fslens::experiment::summary::Summary;

/// The result of `run`, `compare`, `demo` and `diagnose`: the JSON document, or the table of
/// final metrics (with where the folder went on stderr). Nothing but the JSON with `quiet`
/// off; nothing at all with it on.
pub fn print_summary(json: bool, quiet: bool, path: &Path, summary: &Summary, when: &str) {
    if json {
        #[derive(Serialize)]
        struct Done<'a> {
            out: &'a Path,
            #[serde(flatten)]
            summary: &'a Summary,
        }
        print_json(&Done { out: path, summary });
        return;
    }
    if quiet {
        return;
    }
    eprintln!("wrote {}  (backend: {})", path.display(), summary.backend);
    println!(
        "{:<10} {:>9} {:>8} {:>8} {:>8} {:>11} {:>8}  flags   ({when})",
        "sampler", "seconds", "mode TV", "halluc.", "off-sup.", "halluc.-lik", "spread"
    );
    for s in &summary.samplers {
        let m = &s.metrics;
        let flags: Vec<&str> = s.flags.iter().map(|f| short_name(f.metric)).collect();
        println!(
            "{:<10} {:>9.2} {:>8.3} {:>8.3} {:>8.3} {:>11.3} {:>8.3}  {}",
            s.name,
            s.wall_seconds,
            m.mode_tv,
            m.hallucination_rate,
            m.off_support_rate,
            m.likelihood_hallucination_rate,
            m.spread_ratio,
            if flags.is_empty() {
                "-".to_string()
            } else {
                format!("FAILS: {}", flags.join(", "))
            }
        );
    }
    for s in &summary.skipped_samplers {
        println!("{:<10} skipped: {}", s.name, s.reason);
    }
    eprintln!("report: {}", path.join("report.html").display());
}

/// The result of `fslens plan`: the JSON document or a few lines per part.
pub fn print_plan(json: bool, config: &str, r: &PlanReport) {
    if json {
        print_json(r);
        return;
    }
    let ds = &r.dataset;
    let m = &r.measurement;
    println!("plan of {config} on {}", r.backend);
    println!(
        "  data             {}: N = {} atoms, D = {} ({}x{}x{})",
        ds.source, ds.atoms, r.dim, ds.height, ds.width, ds.channels
    );
    println!(
        "  measurement      {} ({}, m = {}), σ = {}; truth: {}{}",
        m.operator,
        if m.linear { "linear" } else { "nonlinear" },
        m.m,
        m.sigma,
        m.truth,
        m.truth_label
            .as_ref()
            .map(|l| format!(" ({l})"))
            .unwrap_or_default()
    );
    let top: Vec<String> = r
        .exact_top_atoms
        .iter()
        .map(|a| format!("{} {:.3}", a.index, a.weight))
        .collect();
    println!(
        "  exact posterior  {:.2} effective atoms (1/Σω²); heaviest atoms: {}",
        r.exact_effective_atoms,
        top.join(", ")
    );
    let mut modes: Vec<(&String, f64)> = r
        .modes
        .names
        .iter()
        .zip(r.modes.exact_weights.iter().copied())
        .collect();
    modes.sort_by(|a, b| b.1.total_cmp(&a.1));
    let listed: Vec<String> = modes.iter().map(|(n, w)| format!("{n} {w:.3}")).collect();
    println!(
        "  modes            {} {}, entropy {:.3} nats (exp H = {:.2}): {}",
        modes.len(),
        match r.modes.source {
            fslens::diagnostics::ModeSource::Classes => "classes",
            fslens::diagnostics::ModeSource::Clusters => "k-means clusters",
        },
        r.mode_entropy,
        r.mode_entropy.exp(),
        listed.join(", ")
    );
    println!(
        "  sampling         {} particles, {} steps, {} scored clouds per sampler",
        r.particles, r.steps, r.scored_clouds
    );
    println!(
        "  {:<10} {:>11} {:>10} {:>11} {:>10} {:>10}",
        "sampler", "evaluations", "s/eval", "passes/eval", "scoring s", "estimate s"
    );
    for s in &r.samplers {
        println!(
            "  {:<10} {:>11} {:>10.4} {:>11.1} {:>10.2} {:>10.1}",
            s.name,
            s.score_evaluations,
            s.seconds_per_evaluation,
            s.passes_per_evaluation,
            s.scoring_seconds,
            s.estimated_seconds
        );
    }
    for s in r.samplers.iter().filter(|s| s.note.is_some()) {
        println!("  {:<10} {}", s.name, s.note.as_deref().unwrap_or_default());
    }
    for s in &r.skipped_samplers {
        println!("  {:<10} skipped: {}", s.name, s.reason);
    }
    println!(
        "  total            about {:.0} s (setup {:.2} s and engine {:.2} s measured)",
        r.estimated_seconds, r.setup_seconds, r.engine_seconds
    );
    println!("  estimated from   {}", r.estimate_method);
    for w in &r.warnings {
        println!("warning: {w}");
    }
}

/// One JSON document on stdout.
pub fn print_json<T: Serialize + ?Sized>(value: &T) {
    println!(
        "{}",
        serde_json::to_string(value).expect("results serialise")
    );
}

/// An error as the user reads it: the message with each cause once, or with `json` the
/// record `{"error": {"key", "path", "message"}}`; on stderr either way.
pub fn print_error(json: bool, e: &fslens::Error) {
    if json {
        print_error_record(
            e.key(),
            e.path().map(|p| p.display().to_string()),
            &e.full_message(),
        );
    } else {
        eprintln!("fslens: error: {}", e.full_message());
    }
}

/// The JSON error record on stderr.
pub fn print_error_record(key: Option<&str>, path: Option<String>, message: &str) {
    eprintln!(
        "{}",
        serde_json::json!({"error": {"key": key, "path": path, "message": message}})
    );
}

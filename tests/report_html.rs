//! `fslens compare` writes a self-contained report.html beside metrics.json: every applicable
//! sampler, the default 50 checkpoints with their projections, at most 8 full clouds, the four
//! SVG plots and the embedded PNGs, no external URL; pigdm/tmpd skipped with a reason for a
//! nonlinear operator. When Debian's chromium is on PATH the page is
//! screenshotted headless and the PNG must show pictures (not a blank page); without it the
//! test says why and returns, unless FSLENS_REQUIRE_BROWSER=1.

mod common;

use std::path::Path;
use std::process::Command;

use common::{read_json, s, scratch_dir};

fn config(operator: &str) -> String {
    format!(
        r#"
seed = 5
backend = "cpu"
[data]
kind = "synthetic"
synthetic = "shapes"
count = 300
size = 16
[measurement]
operator = "{operator}"
sigma = 0.1
[sampling]
samplers = ["exact"]
particles = 64
steps = 60
[diagnostics]
clusters = 4
"#
    )
}

fn compare(dir: &Path, name: &str, operator: &str) -> (std::path::PathBuf, String) {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config(operator)).unwrap();
    let out = dir.join(name);
    let res = common::fslens(&["compare", s(&cfg), "--out", s(&out)]);
    (out, String::from_utf8_lossy(&res.stderr).into_owned())
}

/// The `name` of every object of a JSON array.
fn names_in(list: &serde_json::Value) -> Vec<&str> {
    let items = list.as_array().unwrap();
    items.iter().map(|s| s["name"].as_str().unwrap()).collect()
}

/// Every `http` in the page must be the SVG namespace: nothing is fetched from outside.
fn assert_self_contained(html: &str) {
    for (i, _) in html.match_indices("http") {
        assert!(
            html[i..].starts_with("http://www.w3.org/2000/svg"),
            "external reference: {}",
            &html[i..(i + 60).min(html.len())]
        );
    }
    assert!(!html.contains("<script"), "no script needed");
    assert!(!html.contains("src=\"file:") && !html.contains("href=\"file:"));
}

#[test]
fn compare_writes_a_self_contained_report() {
    let dir = scratch_dir("report");

    // A linear operator: all eight samplers run.
    let (out, stderr) = compare(&dir, "linear", "downsample:4");
    assert!(stderr.contains("report.html"), "{stderr}");
    let summary = read_json(&out.join("summary.json"));
    let names = names_in(&summary["samplers"]);
    assert_eq!(
        names,
        [
            "exact",
            "fsr",
            "sigma-dps",
            "zeta-dps",
            "pigdm",
            "tmpd",
            "daps",
            "diffpir"
        ]
    );
    assert!(summary.get("skipped_samplers").is_none());
    let metrics = read_json(&out.join("metrics.json"));
    let u = fslens::arrays::read_npy(&out.join("projection_direction.npy")).unwrap();
    assert_eq!(u.shape, vec![256]);
    let norm: f64 = u.data.iter().map(|&v| v * v).sum();
    assert!((norm - 1.0).abs() < 1e-5, "‖u‖² = {norm}");
    for s in summary["samplers"].as_array().unwrap() {
        let name = s["name"].as_str().unwrap();
        let times = common::floats(&s["checkpoint_times"]);
        // Default checkpoints: 50 distinct grid times of the 60-step grid, decreasing.
        assert_eq!(times.len(), 50, "{name}");
        assert!(times.windows(2).all(|w| w[0] > w[1]), "{name}: {times:?}");
        assert_eq!(
            metrics["samplers"][name]["checkpoints"]
                .as_array()
                .unwrap()
                .len(),
            50
        );
        // At most 8 full clouds, at checkpoint times spanning the range.
        let full = common::floats(&s["full_checkpoint_times"]);
        assert_eq!(full.len(), 8, "{name}");
        assert!(full.iter().all(|t| times.contains(t)));
        assert_eq!((full[0], full[7]), (times[0], times[49]));
        let clouds =
            fslens::arrays::read_npy(&out.join(format!("checkpoints_{name}.npy"))).unwrap();
        assert_eq!(clouds.shape, vec![8, 64, 256]);
        // Projections: one row per checkpoint and the final time; the last row is ⟨x, u⟩ of
        // the final samples, recomputed here in float64.
        let proj = fslens::arrays::read_npy(&out.join(format!("projections_{name}.npy"))).unwrap();
        assert_eq!(proj.shape, vec![51, 64]);
        assert_eq!(s["projection_times"].as_array().unwrap().len(), 51);
        let samples = fslens::arrays::read_npy(&out.join(format!("samples_{name}.npy"))).unwrap();
        for k in 0..64 {
            let dot: f64 = (0..256)
                .map(|q| samples.data[k * 256 + q] * u.data[q])
                .sum();
            let got = proj.data[50 * 64 + k];
            assert!(
                (got - dot).abs() < 1e-4 * (1.0 + dot.abs()),
                "{name} k={k}: {got} vs {dot}"
            );
        }
        // The first full cloud's projections match the projection row of its time.
        let row = times.iter().position(|&t| t == full[3]).unwrap();
        for k in 0..64 {
            let dot: f64 = (0..256)
                .map(|q| clouds.data[(3 * 64 + k) * 256 + q] * u.data[q])
                .sum();
            let got = proj.data[row * 64 + k];
            assert!((got - dot).abs() < 1e-4 * (1.0 + dot.abs()), "{name} k={k}");
        }
    }

    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_self_contained(&html);
    assert_eq!(
        html.matches("<svg").count(),
        4,
        "heatmap, spread, modes, early stopping"
    );
    for needle in [
        "Where the particles go",
        "Spread ratio vs t",
        "Mode weights vs t",
        "Early-stopping curves",
        "Resolved config",
        "t (log scale)",
        "tmpd",
        "pigdm",
        "zeta-dps",
        "daps",
        "diffpir",
    ] {
        assert!(html.contains(needle), "missing {needle:?}");
    }
    // truth, measurement, top atoms and eight sample grids, embedded.
    assert_eq!(html.matches("src=\"data:image/png;base64,").count(), 11);
    screenshot(&out.join("report.html"), &dir.join("report.png"));

    // A nonlinear operator: pigdm, tmpd, daps and diffpir are skipped, and the reason is said.
    let (out, stderr) = compare(&dir, "nonlinear", "saturation:gain=2");
    for name in ["pigdm", "tmpd", "daps", "diffpir"] {
        assert!(stderr.contains(&format!("skipping {name}")), "{stderr}");
    }
    let summary = read_json(&out.join("summary.json"));
    let skipped = names_in(&summary["skipped_samplers"]);
    assert_eq!(skipped, ["pigdm", "tmpd", "daps", "diffpir"]);
    assert_eq!(summary["samplers"].as_array().unwrap().len(), 4);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("pigdm was skipped"), "the report says why");
    assert_self_contained(&html);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `fslens run` without the exact sampler still writes report.html: the heatmap's reference
/// panel is drawn from the exact posterior at the sampler's times, along the configured
/// `atoms:i,j` direction; explicit checkpoints are kept as given.
#[test]
fn run_without_exact_reports_against_exact_draws() {
    let dir = scratch_dir("report-run");
    let cfg = dir.join("fsr.toml");
    let text = config("downsample:4")
        .replace(
            "samplers = [\"exact\"]",
            "samplers = [\"fsr\"]\ncheckpoints = [0.5, 0.1, 0.02]",
        )
        .replace("clusters = 4", "clusters = 4\ndirection = \"atoms:3,10\"");
    std::fs::write(&cfg, text).unwrap();
    let out = dir.join("out");
    common::fslens(&["run", s(&cfg), "--out", s(&out), "--quiet"]);
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["projection_direction"], "atom 3 − atom 10");
    let fsr = &summary["samplers"][0];
    assert_eq!(fsr["checkpoint_times"].as_array().unwrap().len(), 3);
    assert_eq!(fsr["full_checkpoint_times"], fsr["checkpoint_times"]);
    let proj = fslens::arrays::read_npy(&out.join("projections_fsr.npy")).unwrap();
    assert_eq!(proj.shape, vec![4, 64]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_self_contained(&html);
    assert!(html.contains("exact (drawn)"));
    assert!(html.contains("atom 3 − atom 10"));
    assert_eq!(html.matches("<svg").count(), 4);

    // A direction naming an atom that does not exist fails before anything is written.
    std::fs::write(
        &cfg,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("atoms:3,10", "atoms:3,100000"),
    )
    .unwrap();
    let bad = dir.join("bad");
    common::fslens_fails(
        &["run", s(&cfg), "--out", s(&bad), "--quiet"],
        &["diagnostics.direction"],
    );
    assert!(!bad.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Screenshots the page with chromium (when installed) and checks the PNG shows something:
/// at least 2 % non-white pixels and many distinct colours (the heatmaps' colour map).
fn screenshot(report: &Path, png: &Path) {
    let found = Command::new("chromium")
        .arg("--version")
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    if !found {
        let msg =
            "chromium is not on PATH (apt-get install chromium); the screenshot check is skipped";
        if std::env::var("FSLENS_REQUIRE_BROWSER").as_deref() == Ok("1") {
            panic!("{msg}, but FSLENS_REQUIRE_BROWSER=1");
        }
        eprintln!("{msg}");
        return;
    }
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/scripts/screenshot-report.sh");
    common::succeeds(Command::new("bash").args([script, s(report), s(png)]));
    if let Ok(keep) = std::env::var("FSLENS_KEEP_SCREENSHOT") {
        std::fs::copy(png, &keep).unwrap();
    }
    let img = image::open(png).unwrap().to_rgb8();
    assert_eq!((img.width(), img.height()), (1400, 3000));
    let total = (img.width() * img.height()) as f64;
    let non_white = img.pixels().filter(|p| p.0 != [255, 255, 255]).count() as f64;
    let mut colours: Vec<[u8; 3]> = img.pixels().map(|p| p.0).collect();
    colours.sort_unstable();
    colours.dedup();
    eprintln!(
        "screenshot: {:.1} % non-white pixels, {} distinct colours",
        100.0 * non_white / total,
        colours.len()
    );
    assert!(non_white / total >= 0.02, "the page looks blank");
    assert!(colours.len() >= 50, "only {} colours", colours.len());
}

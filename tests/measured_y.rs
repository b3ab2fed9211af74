//! y as data: `measurement.y` (a measured y, no truth) and `measurement.offset` (y = A x + b).

mod common;

use common::{read_json, s};

/// A run of 200 synthetic 16×16 images measured by 4× downsampling (m = 16), `measurement`
/// lines added to its [measurement] table.
fn config(measurement: &str) -> String {
    format!(
        r#"
seed = 5
backend = "cpu"
[data]
kind = "synthetic"
count = 200
size = 16
[measurement]
operator = "downsample:4"
sigma = 0.2
{measurement}
[sampling]
samplers = ["exact", "fsr"]
particles = 16
steps = 20
checkpoints = [0.5]
[diagnostics]
clusters = 3
"#
    )
}

fn run(dir: &std::path::Path, name: &str, measurement: &str) -> std::path::PathBuf {
    let cfg = dir.join(format!("{name}.toml"));
    std::fs::write(&cfg, config(measurement)).unwrap();
    let out = dir.join(name);
    common::fslens(&["run", s(&cfg), "--out", s(&out), "--json"]);
    out
}

#[test]
fn an_offset_run_equals_the_run_on_y_minus_b_and_a_measured_y_has_no_truth() {
    let dir = common::scratch_dir("measured-y");
    // y in float32 (as a camera would save it), b per entry in float64.
    let y: Vec<f32> = (0..16)
        .map(|j| 0.3 * ((j as f32) * 0.7).sin() - 0.2)
        .collect();
    let b: Vec<f64> = (0..16).map(|j| 0.05 * j as f64 - 0.4).collect();
    let y_minus_b: Vec<f64> = y.iter().zip(&b).map(|(&y, b)| y as f64 - b).collect();
    fslens::arrays::write_npy(&dir.join("y.npy"), &[16], &y).unwrap();
    fslens::arrays::write_npy(&dir.join("b.npy"), &[16], &b).unwrap();
    fslens::arrays::write_npy(&dir.join("ymb.npy"), &[16], &y_minus_b).unwrap();
    let with = run(&dir, "offset", "y = \"y.npy\"\noffset = \"b.npy\"");
    let without = run(&dir, "plain", "y = \"ymb.npy\"");
    for f in [
        "samples_exact.npy",
        "samples_fsr.npy",
        "checkpoints_fsr.npy",
    ] {
        let a = std::fs::read(with.join(f)).unwrap();
        assert!(a == std::fs::read(without.join(f)).unwrap(), "{f} differs");
    }
    let summary = read_json(&with.join("summary.json"));
    let m = &summary["measurement"];
    assert_eq!(m["truth"], "no ground truth: y was given as data");
    assert!(m["y"].as_str().unwrap().contains("y.npy"), "{m}");
    assert!(m["offset"].as_str().unwrap().contains("b.npy"), "{m}");
    // Nothing is held out: every image is an atom.
    assert_eq!(summary["dataset"]["atoms"], 200);
    assert!(!with.join("truth.png").exists());
    // Truth-based metrics are null, the others are numbers.
    let last = &read_json(&with.join("metrics.json"))["samplers"]["fsr"]["metrics"];
    assert!(last["hallucination_rate"].as_f64().is_some(), "{last}");
    let nulls = ["psnr", "ssim"]
        .iter()
        .flat_map(|k| {
            last.as_object()
                .unwrap()
                .iter()
                .filter(move |(name, _)| name.contains(k))
        })
        .collect::<Vec<_>>();
    assert!(!nulls.is_empty(), "{last}");
    for (name, v) in nulls {
        let mean = if v.is_object() { &v["mean"] } else { v };
        assert!(mean.is_null(), "{name} = {v}");
    }
    // The written config reads back (its [truth] defaults are left out).
    fslens::config::RunConfig::load(&with.join("config.toml")).unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_bad_measured_y_or_a_truth_table_beside_it_is_refused_by_key() {
    let dir = common::scratch_dir("measured-y-bad");
    fslens::arrays::write_npy(&dir.join("short.npy"), &[15], &[0.0f32; 15]).unwrap();
    let cfg = dir.join("short.toml");
    std::fs::write(&cfg, config("y = \"short.npy\"")).unwrap();
    common::fslens_fails(
        &["run", s(&cfg)],
        &["measurement.y", "m = 16", "downsample"],
    );
    let cfg = dir.join("truth.toml");
    std::fs::write(
        &cfg,
        config("y = \"short.npy\"")
            .replace("[measurement]", "[truth]\nheld_out = 2\n[measurement]"),
    )
    .unwrap();
    common::fslens_fails(&["run", s(&cfg)], &["truth", "measurement.y"]);
    let cfg = dir.join("offset.toml");
    fslens::arrays::write_npy(&dir.join("y.npy"), &[16], &[0.0f32; 16]).unwrap();
    std::fs::write(&cfg, config("y = \"y.npy\"\noffset = \"short.npy\"")).unwrap();
    common::fslens_fails(&["run", s(&cfg)], &["measurement.offset", "m = 16"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

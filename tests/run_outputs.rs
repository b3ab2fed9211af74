//! `fslens run` writes the whole output folder, and the resolved config.toml reads back as a run
//! config.

mod common;

use common::{read_json, s};

#[test]
fn run_writes_the_output_folder() {
    let dir = common::scratch_dir("run");
    let cfg = dir.join("small.toml");
    std::fs::write(
        &cfg,
        r#"
seed = 3
backend = "cpu"
[data]
kind = "synthetic"
count = 300
size = 16
[truth]
held_out = 2
index = 1
[measurement]
operator = "downsample:4"
sigma = 0.1
[sampling]
samplers = ["exact", "fsr"]
particles = 24
steps = 40
checkpoints = [0.5, 0.1]
[diagnostics]
hallucination_threshold = 1e-3
clusters = 4
"#,
    )
    .unwrap();
    let out = dir.join("out");
    let res = common::fslens(&["run", s(&cfg), "--out", s(&out), "--json"]);
    // --json: stdout is the summary as one JSON document; stderr one record per stage and
    // progress step.
    let done: serde_json::Value = serde_json::from_slice(&res.stdout).unwrap();
    assert_eq!(done["samplers"][1]["name"], "fsr");
    let records = common::json_lines(&res.stderr);
    assert!(
        records
            .iter()
            .any(|r| r["event"] == "progress" && r["sampler"] == "fsr")
    );

    for f in [
        "config.toml",
        "summary.json",
        "metrics.json",
        "samples_exact.npy",
        "samples_fsr.npy",
        "denoised_fsr.npy",
        "grid_exact.png",
        "grid_fsr.png",
        "truth.png",
        "measurement.png",
        "exact_top_atoms.png",
    ] {
        assert!(out.join(f).is_file(), "missing {f}");
    }
    for png in [
        "grid_fsr.png",
        "truth.png",
        "measurement.png",
        "exact_top_atoms.png",
    ] {
        let img = image::open(out.join(png)).unwrap().to_rgb8();
        let first = img.get_pixel(img.width() / 2, img.height() / 2);
        assert!(
            img.width() > 4 && img.pixels().any(|p| p != first),
            "{png} is blank"
        );
    }
    let samples = fslens::arrays::read_npy(&out.join("samples_fsr.npy")).unwrap();
    assert_eq!(samples.shape, vec![24, 256]);
    for name in ["exact", "fsr"] {
        let cloud = fslens::arrays::read_npy(&out.join(format!("checkpoints_{name}.npy"))).unwrap();
        assert_eq!(cloud.shape, vec![2, 24, 256], "{name}");
    }
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["dataset"]["atoms"], 298);
    assert_eq!(summary["exact_top_atoms"].as_array().unwrap().len(), 10);
    let w: f64 = summary["exact_class_weights"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["weight"].as_f64().unwrap())
        .sum();
    assert!((w - 1.0).abs() < 1e-9, "exact class weights sum to {w}");
    let samplers = summary["samplers"].as_array().unwrap();
    assert_eq!(samplers.len(), 2);
    for s in samplers {
        let tv = s["class_tv_to_exact"].as_f64().unwrap();
        assert!((0.0..=1.0).contains(&tv));
        assert_eq!(s["particles"], 24);
        let times = common::floats(&s["checkpoint_times"]);
        assert_eq!(times.len(), 2);
        assert!(
            (times[0] - 0.5).abs() < 0.02 && (times[1] - 0.1).abs() < 0.02,
            "{times:?}"
        );
    }
    // metrics.json: every sampler's final metrics and one record per checkpoint, the same
    // as summary.json's; the exact sampler's mode TV within its sampling noise.
    let metrics = read_json(&out.join("metrics.json"));
    assert_eq!(metrics["modes"]["source"], "classes");
    let exact_weights = common::floats(&metrics["modes"]["exact_weights"]);
    for (i, name) in ["exact", "fsr"].into_iter().enumerate() {
        let m = &metrics["samplers"][name];
        let last = &m["metrics"];
        let ratio = last["spread_ratio"].as_f64().unwrap();
        assert!(
            ratio.is_finite() && ratio > 0.0,
            "{name}: spread ratio {ratio}"
        );
        assert!((last["t"].as_f64().unwrap() - 1e-3).abs() < 1e-12);
        for key in ["hallucination_rate", "off_support_rate", "mode_tv"] {
            let v = last[key].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&v), "{name}: {key} = {v}");
        }
        assert!(last["ssim_denoised"]["mean"].as_f64().unwrap() <= 1.0);
        let checkpoints = m["checkpoints"].as_array().unwrap();
        assert_eq!(checkpoints.len(), 2, "{name}");
        assert_eq!(&samplers[i]["metrics"], last);
        assert_eq!(samplers[i]["checkpoints"].as_array().unwrap().len(), 2);
    }
    // Multinomial noise of 24 exact draws: E TV ≤ ½ Σ √(p(1 − p)/K); allow three times that.
    let bound: f64 = 0.5
        * exact_weights
            .iter()
            .map(|p| (p * (1.0 - p) / 24.0).sqrt())
            .sum::<f64>();
    let exact_tv = metrics["samplers"]["exact"]["metrics"]["mode_tv"]
        .as_f64()
        .unwrap();
    assert!(
        exact_tv <= 3.0 * bound,
        "exact mode TV {exact_tv} vs bound {bound}"
    );
    // The resolved config is a valid run config with the defaults filled in.
    let back = fslens::config::RunConfig::load(&out.join("config.toml")).unwrap();
    assert_eq!(back.sampling.particles, 24);
    assert_eq!(back.data.count, Some(300));
    // No staging folders are left beside the output.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert!(names.iter().all(|n| !n.contains("partial")), "{names:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn demo_config_is_valid_and_embedded() {
    let cfg = fslens::config::RunConfig::demo();
    use fslens::samplers::SamplerKind;
    assert_eq!(
        cfg.sampling.samplers,
        vec![SamplerKind::Exact, SamplerKind::Fsr, SamplerKind::Pigdm]
    );
    // The file in assets/ is the one compiled in.
    let on_disk = std::fs::read_to_string(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/configs/demo.toml"
    ))
    .unwrap();
    assert_eq!(on_disk, fslens::config::DEMO_TOML);
    // Every example config parses (sweep-*.toml as sweeps: every job a valid run config).
    for entry in std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs")).unwrap()
    {
        let p = entry.unwrap().path();
        if p.file_name()
            .unwrap()
            .to_string_lossy()
            .starts_with("sweep-")
        {
            let sweep =
                fslens::sweep::Sweep::load(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()));
            assert!(sweep.len() > 1, "{}", p.display());
            continue;
        }
        fslens::plan::RunPlan::load(&p, Default::default())
            .unwrap_or_else(|e| panic!("{}: {e}", p.display()));
    }
}

/// A run with a discrete integrator: every score-based sampler uses it, summary.json says so,
/// and the final samples are the last step's x̂_0 (t = 0, v = 0), t_min notwithstanding.
#[test]
fn run_with_ddim_reports_the_integrator() {
    let dir = common::scratch_dir("run-ddim");
    let cfg = dir.join("ddim.toml");
    std::fs::write(
        &cfg,
        r#"
seed = 3
backend = "cpu"
[data]
kind = "synthetic"
count = 200
size = 16
[measurement]
operator = "downsample:4"
sigma = 0.1
[sampling]
samplers = ["exact", "fsr", "sigma-dps"]
particles = 16
steps = 30
t_min = 0.01
checkpoints = [0.5, 0.1]
integrator = "ddim"
eta = 0.25
"#,
    )
    .unwrap();
    let out = dir.join("out");
    common::fslens(&["run", s(&cfg), "--out", s(&out)]);
    let summary = read_json(&out.join("summary.json"));
    let samplers = summary["samplers"].as_array().unwrap();
    assert_eq!(samplers.len(), 3);
    for s in samplers {
        let v = s["final_noise_variance"].as_f64().unwrap();
        assert_eq!(v, 0.0, "{s}");
        assert_eq!(s["final_time"].as_f64(), Some(0.0), "{s}");
        assert_eq!(s["checkpoint_times"].as_array().unwrap().len(), 2, "{s}");
        if s["name"] == "exact" {
            assert!(s.get("integrator").is_none());
        } else {
            assert_eq!(s["integrator"]["ddim"]["eta"], 0.25, "{s}");
            assert_eq!(s["steps"], 30);
        }
    }
    // The exact clouds are drawn at the integrator's levels: the same checkpoint times.
    assert_eq!(
        samplers[0]["checkpoint_times"],
        samplers[1]["checkpoint_times"]
    );
    let config = std::fs::read_to_string(out.join("config.toml")).unwrap();
    assert!(config.contains("integrator = \"ddim\""), "{config}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// The demo shows a failure on the first run: its samplers are exact, fsr and pigdm, and on
/// its problem (the embedded config with fewer particles and steps, so that the test stays
/// fast) the table and the report flag pigdm, and neither exact nor fsr.
#[test]
fn the_demo_flags_its_failing_sampler() {
    let dir = common::scratch_dir("demo-flags");
    let cfg = dir.join("demo-small.toml");
    let text = fslens::config::DEMO_TOML
        .replace("backend = \"auto\"", "backend = \"cpu\"")
        .replace("particles = 256", "particles = 64")
        .replace("steps = 500", "steps = 100\ncheckpoints = [0.5, 0.1, 0.02]");
    assert!(text.contains("particles = 64") && text.contains("steps = 100"));
    std::fs::write(&cfg, text).unwrap();
    let out = dir.join("out");
    let res = common::fslens(&["run", s(&cfg), "--out", s(&out)]);
    let summary = read_json(&out.join("summary.json"));
    let samplers = summary["samplers"].as_array().unwrap();
    assert!(samplers.len() >= 3);
    let flags = |name: &str| -> Vec<String> {
        let s = samplers.iter().find(|s| s["name"] == name).unwrap();
        s["flags"]
            .as_array()
            .unwrap()
            .iter()
            .map(|f| f["metric"].as_str().unwrap().to_string())
            .collect()
    };
    assert!(flags("exact").is_empty() && flags("fsr").is_empty());
    let pigdm = flags("pigdm");
    assert!(
        pigdm.contains(&"hallucination_rate".to_string())
            && pigdm.contains(&"spread_ratio".to_string()),
        "{pigdm:?}"
    );
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("pigdm: spread ratio outside"),
        "no note for pigdm"
    );
    assert!(!html.contains("exact: spread ratio") && !html.contains("fsr: spread ratio"));
    let table = String::from_utf8_lossy(&res.stdout);
    let row = |name: &str| {
        table
            .lines()
            .find(|l| l.starts_with(name))
            .unwrap()
            .to_string()
    };
    assert!(row("pigdm").contains("FAILS: spread, halluc."), "{table}");
    assert!(
        row("exact").ends_with(" -") && row("fsr").ends_with(" -"),
        "{table}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! `fslens diagnose`: the exact sampler's own samples, fed back from a `fslens run` output
//! folder, score as exact (mode TV ≤ 0.05, no hallucination, nothing off support), as .npy and
//! as a folder of PNGs; prior-only samples (uniform random atoms, no measurement) score a large
//! TV; bad inputs are errors that name the file, exit 1 and leave no output folder.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_no_staging, fslens, fslens_fails, read_json, s, scratch_dir};

use rand::{Rng, SeedableRng};

const CONFIG: &str = r#"
seed = 2
backend = "cpu"
[data]
kind = "synthetic"
synthetic = "shapes"
count = 1500
size = 16
[truth]
held_out = 1
index = 0
[measurement]
operator = "downsample:4"
sigma = 0.1
[sampling]
samplers = ["exact"]
particles = 1024
steps = 50
checkpoints = [0.1]
"#;

fn workdir(tag: &str) -> PathBuf {
    let dir = scratch_dir(&format!("diagnose-{tag}"));
    std::fs::write(dir.join("cfg.toml"), CONFIG).unwrap();
    dir
}

/// `fslens diagnose` of `samples` against the config in `dir`, into `dir/out`.
fn diagnose_args(dir: &Path, samples: &Path, out: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "diagnose",
        "--samples",
        s(samples),
        "--config",
        s(&dir.join("cfg.toml")),
        "--out",
        s(&dir.join(out)),
        "--quiet",
    ]
    .map(String::from)
    .to_vec();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

fn diagnose(dir: &Path, samples: &Path, out: &str, extra: &[&str]) {
    fslens(&diagnose_args(dir, samples, out, extra));
}

fn metrics(dir: &Path, out: &str, name: &str) -> serde_json::Value {
    let v = read_json(&dir.join(out).join("metrics.json"));
    assert!(v["atom_scale"].as_f64().unwrap() > 0.0);
    // The same page as a run's: the table row of the scored samples and the embedded grids.
    let html = std::fs::read_to_string(dir.join(out).join("report.html")).unwrap();
    assert!(
        html.contains(&format!(">{name}<")),
        "report.html has no row for {name}"
    );
    assert!(html.contains("data:image/png;base64,"));
    v["samplers"][name]["metrics"].clone()
}

#[test]
fn exact_samples_score_as_exact_and_prior_samples_do_not() {
    let dir = workdir("exact");
    let run = dir.join("run");
    fslens(&["run", s(&dir.join("cfg.toml")), "--out", s(&run), "--quiet"]);
    let samples = run.join("samples_exact.npy");
    diagnose(&dir, &samples, "d-exact", &["--label", "mine"]);
    let m = metrics(&dir, "d-exact", "mine");
    let tv = m["mode_tv"].as_f64().unwrap();
    assert!(tv <= 0.05, "mode TV of exact samples {tv}");
    assert!(m["hallucination_rate"].as_f64().unwrap() <= 0.005, "{m}");
    assert_eq!(m["off_support_rate"].as_f64().unwrap(), 0.0, "{m}");
    let spread = m["spread_ratio"].as_f64().unwrap();
    assert!((spread - 1.0).abs() < 0.15, "spread ratio {spread}");
    // The summary lists the exact draws beside the samples, and where these came from.
    let summary = read_json(&dir.join("d-exact/summary.json"));
    assert_eq!(summary["samplers"][0]["name"], "exact");
    assert_eq!(summary["samplers"][1]["name"], "mine");
    assert_eq!(summary["external"]["pixels"], "minus-one-to-one");
    assert!(
        summary["samplers"][0]["metrics"]["mode_tv"]
            .as_f64()
            .unwrap()
            <= 0.05
    );
    for f in [
        "grid_mine.png",
        "grid_exact.png",
        "truth.png",
        "samples_mine.npy",
    ] {
        assert!(dir.join("d-exact").join(f).is_file(), "{f}");
    }

    // The same samples as 8-bit PNGs in a folder.
    let a = fslens::arrays::read_npy(&samples).unwrap();
    let pngs = dir.join("pngs");
    std::fs::create_dir_all(&pngs).unwrap();
    for (k, img) in a.data.chunks(256).enumerate() {
        let bytes: Vec<u8> = img
            .iter()
            .map(|&x| ((x + 1.0) * 127.5).round().clamp(0.0, 255.0) as u8)
            .collect();
        image::GrayImage::from_raw(16, 16, bytes)
            .unwrap()
            .save(pngs.join(format!("{k:05}.png")))
            .unwrap();
    }
    diagnose(&dir, &pngs, "d-png", &[]);
    let m = metrics(&dir, "d-png", "external");
    assert!(m["mode_tv"].as_f64().unwrap() <= 0.05, "{m}");
    assert_eq!(m["off_support_rate"].as_f64().unwrap(), 0.0, "{m}");

    // Prior-only samples: uniformly random atoms, as uint8 (K, H, W, C).
    let plan = fslens::plan::RunPlan::load(&dir.join("cfg.toml"), Default::default()).unwrap();
    let setup =
        fslens::experiment::setup::setup(&plan, &mut fslens::experiment::Silent, None).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(8);
    let prior: Vec<u8> = (0..1024)
        .flat_map(|_| {
            let i = rng.random_range(0..setup.atoms.len());
            setup
                .atoms
                .image(i)
                .iter()
                .map(|&x| fslens::data::pixel_to_u8(x))
                .collect::<Vec<_>>()
        })
        .collect();
    let p = dir.join("prior.npy");
    fslens::arrays::write_npy(&p, &[1024, 16, 16, 1], &prior).unwrap();
    diagnose(&dir, &p, "d-prior", &[]);
    let m = metrics(&dir, "d-prior", "external");
    let tv = m["mode_tv"].as_f64().unwrap();
    assert!(tv > 0.3, "prior-only samples: mode TV {tv}");
    // Prior atoms are atoms: on support, whatever their mode.
    assert_eq!(m["off_support_rate"].as_f64().unwrap(), 0.0, "{m}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bad input: exit status 1, the file named, the fix hinted, no output folder.
fn rejected(dir: &Path, samples: &Path, extra: &[&str], hint: &str) {
    let name = samples.file_name().unwrap().to_str().unwrap();
    let res = fslens_fails(&diagnose_args(dir, samples, "never", extra), &[name, hint]);
    assert_eq!(res.status.code(), Some(1));
    assert!(!dir.join("never").exists());
    assert_no_staging(dir);
}

#[test]
fn bad_samples_are_errors_that_name_the_file() {
    let dir = workdir("bad");
    let w = |name: &str, shape: &[usize], data: &[f32]| {
        let p = dir.join(name);
        fslens::arrays::write_npy_f32(&p, shape, data).unwrap();
        p
    };
    let good: Vec<f32> = (0..4 * 256).map(|i| ((i % 7) as f32) / 7.0 - 0.5).collect();
    rejected(
        &dir,
        &w("wrong.npy", &[4, 16, 16, 3], &[0.0; 4 * 768]),
        &[],
        "(K, 256)",
    );
    rejected(&dir, &w("flat.npy", &[8, 128], &good), &[], "16x16x1");
    // The advice names the key that would make the config's images the samples' size.
    rejected(
        &dir,
        &w("rgb.npy", &[4, 16, 16, 3], &[0.0; 4 * 768]),
        &[],
        "data.channels = 3",
    );
    rejected(
        &dir,
        &w("small.npy", &[4, 8, 8, 1], &[0.0; 4 * 64]),
        &[],
        "data.resize = [8, 8] (for a synthetic set: data.size = 8)",
    );
    let mut nan = good.clone();
    nan[37] = f32::NAN;
    rejected(&dir, &w("nan.npy", &[4, 256], &nan), &[], "not finite");
    let bytes: Vec<f32> = good.iter().map(|v| ((v + 1.0) * 127.5).round()).collect();
    rejected(
        &dir,
        &w("bytes.npy", &[4, 256], &bytes),
        &["--pixels", "minus-one-to-one"],
        "--pixels 0-255",
    );
    rejected(
        &dir,
        &w("floats.npy", &[4, 256], &good),
        &["--pixels", "0-255"],
        "minus-one-to-one",
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// diagnose builds the engine the config asks for (backend and atom storage), and the
/// command line's `--storage` replaces the config's, as for `run`.
#[test]
fn diagnose_uses_the_configs_engine() {
    if !common::gpu::have_gpu("diagnose_uses_the_configs_engine") {
        return;
    }
    let dir = scratch_dir("diagnose-engine");
    let config = CONFIG
        .replace("backend = \"cpu\"", "backend = \"gpu\"\nstorage = \"f16\"")
        .replace("count = 1500", "count = 300");
    std::fs::write(dir.join("cfg.toml"), config).unwrap();
    let plan = fslens::plan::RunPlan::load(&dir.join("cfg.toml"), Default::default()).unwrap();
    let setup =
        fslens::experiment::setup::setup(&plan, &mut fslens::experiment::Silent, None).unwrap();
    let samples = dir.join("atoms.npy");
    fslens::arrays::write_npy_f32(&samples, &[16, 256], &setup.atoms.images[..16 * 256]).unwrap();
    for (out, extra, storage) in [
        ("from-config", &[][..], "f16"),
        ("from-flag", &["--storage", "u8"][..], "u8"),
    ] {
        diagnose(&dir, &samples, out, extra);
        let summary = read_json(&dir.join(out).join("summary.json"));
        let backend = summary["backend"].as_str().unwrap();
        assert!(
            backend.starts_with("gpu") && backend.contains(&format!("{storage} atom storage")),
            "{out}: {backend}"
        );
        let config = std::fs::read_to_string(dir.join(out).join("config.toml")).unwrap();
        assert!(
            config.contains(&format!("storage = \"{storage}\"")),
            "{out}: {config}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Float samples with no negative value, read as [-1, 1] by default, are most likely [0, 1]
/// images: a warning on stderr and in summary.json, which --pixels silences.
#[test]
fn samples_without_negative_values_are_warned_about() {
    let dir = workdir("zero-one");
    let plan = fslens::plan::RunPlan::load(&dir.join("cfg.toml"), Default::default()).unwrap();
    let setup =
        fslens::experiment::setup::setup(&plan, &mut fslens::experiment::Silent, None).unwrap();
    let zero_one: Vec<f32> = setup.atoms.images[..64 * 256]
        .iter()
        .map(|v| (v + 1.0) / 2.0)
        .collect();
    let p = dir.join("zero-one.npy");
    fslens::arrays::write_npy_f32(&p, &[64, 256], &zero_one).unwrap();
    let res = fslens(&diagnose_args(&dir, &p, "d-default", &[]));
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(
        err.contains("warning: ") && err.contains("--pixels zero-to-one"),
        "{err}"
    );
    let summary = read_json(&dir.join("d-default").join("summary.json"));
    let warnings = summary["warnings"].as_array().unwrap();
    assert!(
        warnings
            .iter()
            .any(|w| w.as_str().unwrap().contains("no negative value"))
    );
    // Declared: no warning, and the pixels are mapped back onto the atoms.
    let res = fslens(&diagnose_args(
        &dir,
        &p,
        "d-declared",
        &["--pixels", "zero-to-one"],
    ));
    assert!(!String::from_utf8_lossy(&res.stderr).contains("warning"));
    let summary = read_json(&dir.join("d-declared").join("summary.json"));
    assert!(summary.get("warnings").is_none());
    let m = metrics(&dir, "d-declared", "external");
    assert_eq!(m["off_support_rate"].as_f64().unwrap(), 0.0, "{m}");
    std::fs::remove_dir_all(&dir).unwrap();
}

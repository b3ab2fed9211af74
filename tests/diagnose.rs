//! `fslens diagnose`: the exact sampler's own samples, fed back from a `fslens run` output
//! folder, score as exact (mode TV ≤ 0.05, no hallucination, nothing off support), as .npy and
//! as a folder of PNGs; prior-only samples (uniform random atoms, no measurement) score a large
//! TV; bad inputs are errors that name the file, exit 1 and leave no output folder. A
//! trajectory of the exact sampler's clouds (`--trajectory`) scores as the run scored them.

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

// ---------------------------------------------------------------------------------------------
// Trajectories: clouds at several times (`--trajectory X.npy --times T.npy`).

/// The run behind the trajectory tests: the exact sampler only, with three checkpoints on the
/// 50-step grid (0.5005, 0.2008, 0.04096) before t_min = 1e-3, all written as full clouds.
fn trajectory_workdir(tag: &str) -> PathBuf {
    let dir = scratch_dir(&format!("diagnose-{tag}"));
    let config = CONFIG
        .replace("particles = 1024", "particles = 256")
        .replace("checkpoints = [0.1]", "checkpoints = [0.5, 0.2, 0.05]");
    std::fs::write(dir.join("cfg.toml"), config).unwrap();
    dir
}

/// `fslens diagnose --trajectory x --times t` against the config in `dir`, into `dir/out`.
fn trajectory_args(dir: &Path, x: &Path, t: &Path, out: &str, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = [
        "diagnose",
        "--trajectory",
        s(x),
        "--times",
        s(t),
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

/// The metric records of `name` in a metrics.json: checkpoints, then the final one.
fn records(metrics: &serde_json::Value, name: &str) -> Vec<serde_json::Value> {
    let m = &metrics["samplers"][name];
    let mut r = m["checkpoints"].as_array().unwrap().clone();
    r.push(m["metrics"].clone());
    r
}

fn num(v: &serde_json::Value, key: &str) -> f64 {
    v[key]
        .as_f64()
        .or_else(|| v[key]["mean"].as_f64())
        .unwrap_or_else(|| panic!("{key} is not a number in {v}"))
}

/// The fields of a record that depend only on the cloud and its analysis pass at t (not on
/// the exact reference cloud, which a run takes from its exact sampler and diagnose draws
/// afresh), and must agree between two scorings of the same cloud at the same t.
fn assert_same_analysis(a: &serde_json::Value, b: &serde_json::Value, what: &str) {
    assert_eq!(a["t"], b["t"], "{what}");
    // Identical float32 clouds through identical float64 code on the same engine: the numbers
    // are the same; 1e-12 only allows for a JSON round trip (serde_json's is exact).
    for key in [
        "spread",
        "exact_spread",
        "spread_ratio",
        "mode_tv",
        "hallucination_rate",
        "data_fit_denoised",
        "data_fit_scaled",
        "psnr_denoised",
        "ssim_denoised",
    ] {
        let (x, y) = (num(a, key), num(b, key));
        assert!(
            (x - y).abs() <= 1e-12 * x.abs().max(1.0),
            "{what}, t = {}: {key} {x} vs {y}",
            a["t"]
        );
    }
    // Counts of the same nearest atoms over the same particles.
    assert_eq!(
        a["mode_weights"], b["mode_weights"],
        "{what}, t = {}",
        a["t"]
    );
}

#[test]
fn trajectory_of_exact_draws_scores_like_the_runs_checkpoints() {
    let dir = trajectory_workdir("trajectory");
    let run = dir.join("run");
    fslens(&["run", s(&dir.join("cfg.toml")), "--out", s(&run), "--quiet"]);
    let row = &read_json(&run.join("summary.json"))["samplers"][0];
    assert_eq!(row["name"], "exact");
    let full = common::floats(&row["full_checkpoint_times"]);
    assert_eq!(full, common::floats(&row["checkpoint_times"]));
    assert_eq!(full.len(), 3);
    let t_min = row["final_time"].as_f64().unwrap();
    // The exact sampler's clouds: its checkpoints, its final samples at t_min, and the same
    // final samples once more as clean samples at t = 0.
    let checkpoints = fslens::arrays::read_npy(&run.join("checkpoints_exact.npy")).unwrap();
    let finals = fslens::arrays::read_npy(&run.join("samples_exact.npy")).unwrap();
    let (k, d) = (finals.shape[0], finals.shape[1]);
    let mut clouds: Vec<&[f64]> = checkpoints.data.chunks(k * d).collect();
    clouds.extend([&finals.data[..], &finals.data[..]]);
    let mut times = full.clone();
    times.extend([t_min, 0.0]);
    // Written out of order: the file's order must not matter.
    let order = [3usize, 0, 4, 2, 1];
    let x: Vec<f32> = order
        .iter()
        .flat_map(|&i| clouds[i].iter().map(|&v| v as f32))
        .collect();
    let t: Vec<f64> = order.iter().map(|&i| times[i]).collect();
    let (xp, tp) = (dir.join("X.npy"), dir.join("T.npy"));
    fslens::arrays::write_npy_f32(&xp, &[5, k, d], &x).unwrap();
    fslens::arrays::write_npy(&tp, &[5], &t).unwrap();
    fslens(&trajectory_args(
        &dir,
        &xp,
        &tp,
        "d-traj",
        &["--label", "mine"],
    ));
    let out = dir.join("d-traj");
    let got = read_json(&out.join("metrics.json"));
    let mine = records(&got, "mine");
    let decreasing: Vec<f64> = mine.iter().map(|r| r["t"].as_f64().unwrap()).collect();
    assert_eq!(decreasing, times, "records in decreasing t");

    // 1. At every time of the run, the same numbers as the run's own checkpoint records.
    let want = read_json(&run.join("metrics.json"));
    for (a, b) in records(&want, "exact").iter().zip(&mine) {
        assert_same_analysis(a, b, "run checkpoint vs trajectory");
    }
    // 2. At t = 0, the same numbers as `--samples` of the same cloud (there the exact cloud is
    //    atoms at distance 0 in both, so the off-support threshold ½ρ agrees too).
    fslens(&diagnose_args(
        &dir,
        &run.join("samples_exact.npy"),
        "d-samples",
        &[],
    ));
    let clean = read_json(&dir.join("d-samples/metrics.json"));
    let clean = &clean["samplers"]["external"]["metrics"];
    assert_same_analysis(clean, &mine[4], "--samples vs the trajectory's t = 0");
    for key in [
        "off_support_distance",
        "exact_distance_q99",
        "off_support_rate",
    ] {
        assert_eq!(clean[key], mine[4][key], "{key}");
    }
    // 3. Exact draws look exact, and so does the exact row beside them, at every time.
    for (name, r) in records(&got, "exact")
        .iter()
        .map(|r| ("exact", r))
        .chain(mine.iter().map(|r| ("mine", r)))
    {
        let ratio = num(r, "spread_ratio");
        assert!((ratio - 1.0).abs() < 0.15, "{name} t = {}: {ratio}", r["t"]);
        assert!(num(r, "off_support_rate") <= 0.01, "{name}: {r}");
    }

    // summary.json: the run's rows and times, and where the trajectory came from.
    let summary = read_json(&out.join("summary.json"));
    let rows = summary["samplers"].as_array().unwrap();
    assert_eq!(
        (rows[0]["name"].as_str(), rows[1]["name"].as_str()),
        (Some("exact"), Some("mine"))
    );
    for r in rows {
        assert_eq!(common::floats(&r["checkpoint_times"]), times[..4]);
        assert_eq!(common::floats(&r["projection_times"]), times);
        assert_eq!(r["final_time"].as_f64(), Some(0.0));
        assert_eq!(r["particles"].as_u64(), Some(k as u64));
    }
    assert!(rows[1]["wall_seconds"].is_null());
    let external = &summary["external"];
    assert_eq!(common::floats(&external["times"]), times);
    assert!(external["times_path"].as_str().unwrap().ends_with("T.npy"));
    assert_eq!(external["pixels"], "minus-one-to-one");
    assert!(external["format"].as_str().unwrap().contains("f32"));

    // The files of a run: final samples bit for bit, projections ⟨x_t, u⟩ on the run's u.
    let samples = fslens::arrays::read_npy(&out.join("samples_mine.npy")).unwrap();
    assert_eq!(samples.data, finals.data);
    let u = fslens::arrays::read_npy(&out.join("projection_direction.npy")).unwrap();
    let run_u = fslens::arrays::read_npy(&run.join("projection_direction.npy")).unwrap();
    for (a, b) in u.data.iter().zip(&run_u.data) {
        assert!((a - b).abs() < 1e-6, "direction {a} vs the run's {b}");
    }
    let proj = fslens::arrays::read_npy(&out.join("projections_mine.npy")).unwrap();
    assert_eq!(proj.shape, vec![5, k]);
    for (i, cloud) in clouds.iter().enumerate() {
        for (p, x) in proj.data[i * k..(i + 1) * k].iter().zip(cloud.chunks(d)) {
            let dot: f64 = x.iter().zip(&u.data).map(|(a, b)| a * b).sum();
            assert!((p - dot).abs() < 1e-4 * dot.abs().max(1.0), "{p} vs {dot}");
        }
    }
    let full_clouds = fslens::arrays::read_npy(&out.join("checkpoints_mine.npy")).unwrap();
    assert_eq!(full_clouds.shape, vec![4, k, d]);

    // The report: a run's plots over t, and the trajectory named with its times.
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for needle in [
        "fslens diagnose",
        "density of ⟨x_t, u⟩ over time",
        "Spread ratio vs t",
        "Mode weights vs t",
        "Early-stopping curves",
        ">mine<",
        "scored from",
        "T.npy",
        "0.5005",
    ] {
        assert!(html.contains(needle), "report.html lacks {needle:?}");
    }

    // The same clouds as (T, K, H, W, C): the same metrics, every field.
    fslens::arrays::write_npy_f32(&xp, &[5, k, 16, 16, 1], &x).unwrap();
    fslens(&trajectory_args(
        &dir,
        &xp,
        &tp,
        "d-hwc",
        &["--label", "mine"],
    ));
    let hwc = read_json(&dir.join("d-hwc/metrics.json"));
    assert_eq!(hwc["samplers"], got["samplers"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A bad trajectory: exit status 1, stderr naming each of `needles`, no output folder.
fn rejected_trajectory(dir: &Path, args: &[String], needles: &[&str]) {
    let res = fslens_fails(args, needles);
    assert_eq!(res.status.code(), Some(1), "{args:?}");
    assert!(!dir.join("never").exists());
    assert_no_staging(dir);
}

#[test]
fn bad_trajectories_are_errors_that_name_the_file_and_field() {
    let dir = trajectory_workdir("bad-trajectory");
    let (k, d) = (4, 256);
    let cloud = |v: f32| vec![v; k * d];
    let write_x = |name: &str, dims: &[usize], data: &[f32]| {
        let p = dir.join(name);
        fslens::arrays::write_npy_f32(&p, dims, data).unwrap();
        p
    };
    let write_t = |name: &str, times: &[f64]| {
        let p = dir.join(name);
        fslens::arrays::write_npy(&p, &[times.len()], times).unwrap();
        p
    };
    let good: Vec<f32> = [cloud(0.5), cloud(0.1)].concat();
    let x = write_x("X.npy", &[2, k, d], &good);
    let t = write_t("T.npy", &[0.5, 0.0]);
    let args = |x: &Path, t: &Path, extra: &[&str]| trajectory_args(&dir, x, t, "never", extra);

    let three = write_t("three.npy", &[0.5, 0.2, 0.0]);
    rejected_trajectory(
        &dir,
        &args(&x, &three, &[]),
        &["three.npy", "holds 3 times", "X.npy"],
    );
    let mut nan = good.clone();
    nan[k * d + 3] = f32::NAN;
    let xn = write_x("nan.npy", &[2, k, d], &nan);
    rejected_trajectory(
        &dir,
        &args(&xn, &t, &[]),
        &["nan.npy", "cloud 1 (t = 0", "not finite"],
    );
    let tn = write_t("tnan.npy", &[0.5, f64::NAN]);
    rejected_trajectory(&dir, &args(&x, &tn, &[]), &["tnan.npy", "times[1] = NaN"]);
    let big = write_t("big.npy", &[1.5, 0.0]);
    rejected_trajectory(
        &dir,
        &args(&x, &big, &[]),
        &["big.npy", "times[0] = 1.5", "[0, 1]"],
    );
    let neg = write_t("neg.npy", &[0.5, -0.01]);
    rejected_trajectory(&dir, &args(&x, &neg, &[]), &["neg.npy", "times[1] = -0.01"]);
    let dup = write_t("dup.npy", &[0.3, 0.3]);
    rejected_trajectory(
        &dir,
        &args(&x, &dup, &[]),
        &["dup.npy", "times[0] and times[1]"],
    );
    let wrong = write_x("wrong.npy", &[2, k, 255], &good[..2 * k * 255]);
    rejected_trajectory(&dir, &args(&wrong, &t, &[]), &["wrong.npy", "(T, K, 256)"]);
    let bytes: Vec<f32> = good.iter().map(|v| (v + 1.0) * 127.5).collect();
    let xb = write_x("bytes.npy", &[2, k, d], &bytes);
    rejected_trajectory(&dir, &args(&xb, &t, &[]), &["bytes.npy", "0-255"]);
    rejected_trajectory(
        &dir,
        &args(&x, &t, &["--pixels", "0-255"]),
        &["--pixels", "[-1, 1]"],
    );
    rejected_trajectory(
        &dir,
        &args(&x, &t, &["--label", "fsr"]),
        &["--label", "built-in"],
    );
    // The flags: --times goes with --trajectory only, and --samples excludes both.
    let mut no_times = args(&x, &t, &[]);
    no_times.drain(3..5);
    rejected_trajectory(&dir, &no_times, &["--times"]);
    let mut no_trajectory = args(&x, &t, &[]);
    no_trajectory.drain(1..3);
    rejected_trajectory(&dir, &no_trajectory, &["--trajectory"]);
    rejected_trajectory(
        &dir,
        &args(&x, &t, &["--samples", s(&x)]),
        &["--samples", "--trajectory"],
    );
    let samples_with_times = diagnose_args(&dir, &x, "never", &["--times", s(&t)]);
    rejected_trajectory(&dir, &samples_with_times, &["--samples", "--times"]);
    // The good files pass (the failures above are the files', not the setup's).
    fslens(&trajectory_args(&dir, &x, &t, "ok", &[]));
    assert!(dir.join("ok/report.html").is_file());
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

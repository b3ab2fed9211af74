//! `fslens plan`: its numbers against a float64 recomputation in this file, its time
//! estimates' arithmetic, and the warning for a problem on one effective atom (in `plan` and
//! before sampling in `run`).

mod common;

use common::{fslens, read_json, s, scratch_dir, small_run_config};
use fslens::plan::RunPlan;

const DEMO: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/assets/configs/demo.toml");

#[test]
fn plan_of_the_demo_matches_a_float64_recomputation() {
    let res = fslens(&["plan", DEMO, "--json", "--backend", "cpu"]);
    let r: serde_json::Value = serde_json::from_slice(&res.stdout).expect("one JSON document");

    // The inputs (atoms, truth, y) from the library's setup; everything after it here, in
    // float64: A = the 4×4 block average, b_i = −‖y − A a_i‖²/(2σ²), ω = softmax(b).
    let plan = RunPlan::load(std::path::Path::new(DEMO), Default::default()).unwrap();
    let setup =
        fslens::experiment::setup::setup(&plan, &mut fslens::experiment::Silent, None).unwrap();
    let (n, d) = (setup.atoms.len(), setup.atoms.dim());
    let side = setup.atoms.shape.width;
    let k = 4;
    let sigma = setup.sigma;
    let b: Vec<f64> = (0..n)
        .map(|i| {
            let a = setup.atoms.image(i);
            let mut ss = 0.0;
            for (j, &yj) in setup.y.iter().enumerate() {
                let (by, bx) = (j / (side / k), j % (side / k));
                let mut mean = 0.0;
                for dy in 0..k {
                    for dx in 0..k {
                        mean += f64::from(a[(by * k + dy) * side + bx * k + dx]);
                    }
                }
                mean /= (k * k) as f64;
                ss += (f64::from(yj) - mean).powi(2);
            }
            -ss / (2.0 * sigma * sigma)
        })
        .collect();
    let max = b.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = b.iter().map(|v| (v - max).exp()).collect();
    let z: f64 = e.iter().sum();
    let omega: Vec<f64> = e.iter().map(|v| v / z).collect();
    let n_eff = 1.0 / omega.iter().map(|w| w * w).sum::<f64>();
    // The demo's shapes are labelled: the modes are the classes.
    let labels = setup.atoms.labels.as_ref().unwrap();
    let classes = setup.atoms.class_names.as_ref().unwrap().len();
    let mut mass = vec![0.0; classes];
    for (&l, &w) in labels.iter().zip(&omega) {
        mass[l as usize] += w;
    }
    let entropy: f64 = -mass
        .iter()
        .filter(|&&p| p > 0.0)
        .map(|&p| p * p.ln())
        .sum::<f64>();

    assert_eq!(r["dataset"]["atoms"], n);
    assert_eq!(r["dim"], d);
    assert_eq!(d, 256);
    // The library measures the atoms A a_i in float32 (they are cached as such, design §3),
    // which moves b by float32 rounding: 1e-5 relative covers it, a wrong formula does not.
    let close = |got: &serde_json::Value, want: f64, what: &str| {
        let got = got.as_f64().unwrap_or_else(|| panic!("{what}: {got}"));
        assert!(
            (got - want).abs() <= 1e-5 * want.abs().max(1.0),
            "{what}: {got} vs {want}"
        );
    };
    close(&r["exact_effective_atoms"], n_eff, "effective atoms");
    close(&r["mode_entropy"], entropy, "mode entropy");
    assert_eq!(r["modes"]["source"], "classes");
    let weights = common::floats(&r["modes"]["exact_weights"]);
    assert_eq!(weights.len(), classes);
    for (c, (&got, &want)) in weights.iter().zip(&mass).enumerate() {
        assert!((got - want).abs() <= 1e-6, "class {c}: {got} vs {want}");
    }
    close(
        &r["exact_top_atoms"][0]["weight"],
        omega.iter().copied().fold(0.0, f64::max),
        "top atom",
    );
    // The demo's posterior is multimodal: no warning.
    assert!(n_eff > 3.0 && entropy > 0.5, "{n_eff} {entropy}");
    assert_eq!(r["warnings"].as_array().unwrap().len(), 0);

    // The estimates: one timed evaluation × the run's evaluations + the scoring passes.
    let samplers = r["samplers"].as_array().unwrap();
    let names: Vec<&str> = samplers
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exact", "fsr", "pigdm"]);
    let clouds = r["scored_clouds"].as_f64().unwrap();
    assert_eq!(clouds, 51.0, "50 default checkpoints and the final samples");
    let mut total = 0.0;
    for x in samplers {
        let evals = x["score_evaluations"].as_f64().unwrap();
        let per = x["seconds_per_evaluation"].as_f64().unwrap();
        let scoring = x["scoring_seconds"].as_f64().unwrap();
        let est = x["estimated_seconds"].as_f64().unwrap();
        assert!(
            (est - (per * evals + scoring)).abs() <= 1e-9 * est.max(1.0),
            "{x}"
        );
        assert!(scoring > 0.0, "{x}");
        let passes = x["passes_per_evaluation"].as_f64().unwrap();
        match x["name"].as_str().unwrap() {
            "exact" => assert_eq!((evals, per, passes), (0.0, 0.0, 0.0)),
            "fsr" => assert_eq!((evals, passes), (500.0, 1.0)),
            _ => assert_eq!((evals, passes), (500.0, 2.0), "pigdm: prior pass + C·g"),
        }
        total += est;
    }
    assert!(r["estimated_seconds"].as_f64().unwrap() >= total);
    assert!(r["estimate_method"].as_str().unwrap().contains("B = 256"));

    // The text form says the same on stdout.
    let text = fslens(&["plan", DEMO, "--backend", "cpu"]);
    let out = String::from_utf8_lossy(&text.stdout);
    assert!(out.contains("N = 2999 atoms, D = 256"), "{out}");
    assert!(
        out.contains(&format!("{n_eff:.2} effective atoms")),
        "{out}"
    );
    assert!(out.contains(&format!("entropy {entropy:.3} nats")), "{out}");
}

#[test]
fn a_one_atom_posterior_is_warned_about_in_plan_and_run() {
    let dir = scratch_dir("plan-degenerate");
    // σ = 1e-3 on a 4×4 block average: y pins the nearest atom, the posterior is one atom.
    let cfg = dir.join("tiny-sigma.toml");
    let text = small_run_config(
        0,
        "[sampling]\nparticles = 16\nsteps = 20\ncheckpoints = [0.5]\n",
    )
    .replace("sigma = 0.1", "sigma = 1e-3");
    std::fs::write(&cfg, text).unwrap();
    let advice = [
        "measurement.sigma",
        "data.count",
        "truth.index",
        "effective atom",
    ];

    let plan = fslens(&["plan", s(&cfg), "--json"]);
    let r: serde_json::Value = serde_json::from_slice(&plan.stdout).unwrap();
    assert!(r["exact_effective_atoms"].as_f64().unwrap() < 1.5);
    let warnings = r["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 1, "{r}");
    let w = warnings[0].as_str().unwrap();
    for needle in advice {
        assert!(w.contains(needle), "{needle}: {w}");
    }
    let plain = fslens(&["plan", s(&cfg)]);
    assert!(String::from_utf8_lossy(&plain.stdout).contains(&format!("warning: {w}")));

    // run: the same warning on stderr, before any sampler starts, and in summary.json.
    let out = dir.join("out");
    let run = fslens(&["run", s(&cfg), "--out", s(&out)]);
    let err = String::from_utf8_lossy(&run.stderr);
    let at = err
        .find(&format!("warning: {w}"))
        .unwrap_or_else(|| panic!("{err}"));
    let sampling = err.find("sampler exact").unwrap_or_else(|| panic!("{err}"));
    assert!(at < sampling, "the warning comes before sampling: {err}");
    let summary = read_json(&out.join("summary.json"));
    assert_eq!(summary["warnings"][0].as_str(), Some(w));
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A sweep file where a run config belongs says so and names the command that takes it.
#[test]
fn a_sweep_file_is_named_as_such() {
    let sweep = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/assets/configs/sweep-demo.toml"
    );
    common::fslens_fails(
        &["plan", sweep],
        &["sweep-demo.toml", "sweep file", "fslens sweep"],
    );
}

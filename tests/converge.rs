//! `fslens converge` end to end on small analytic problems (N ≤ 10⁴, D ≤ 8).

mod common;

use std::path::Path;

use fslens::config::RunConfig;
use fslens::experiment::Silent;
use fslens::experiment::converge::{converge, table, write};
use fslens::output::Destination;
use fslens::plan::RunPlan;

fn plan(text: &str) -> fslens::Result<RunPlan> {
    let cfg = RunConfig::from_toml(text, Path::new("test.toml"))?;
    RunPlan::new(cfg, Path::new("."), Default::default())
}

const GMM: &str = r#"
seed = 3
backend = "cpu"
[data]
kind = "gmm"
count = 500
[data.prior]
dim = 4
components = 2
mean_scale = 0.4
std = 0.3
[measurement]
operator = "projection:m=2,seed=1"
sigma = 0.5
[sampling]
steps = 60
[converge]
sizes = [100, 1000, 10000]
times = [0.05, 0.5]
draws = 400
slices = 16
samplers = ["fsr"]
sampler_atoms = 1000
"#;

#[test]
fn finite_sample_errors_fall_with_n_and_samplers_sit_beside() {
    let p = plan(GMM).unwrap();
    let s = converge(&p, &mut Silent).unwrap();
    assert_eq!(s.finite.len(), 3);
    assert_eq!(s.times.len(), 2);
    // Errors of a posterior carried by more atoms: every moment error falls from N = 10² to
    // 10⁴ (ESS grows about ∝ N), and the fitted slopes are clearly negative.
    for j in 0..2 {
        let (a, b) = (&s.finite[0].errors[j], &s.finite[2].errors[j]);
        assert!(
            b.mean_error < a.mean_error && b.cov_error < a.cov_error,
            "{a:?} {b:?}"
        );
        let sl = &s.slopes[j];
        assert!(
            sl.mean_error.unwrap() < -0.2 && sl.cov_error.unwrap() < -0.2,
            "{sl:?}"
        );
    }
    assert!(s.finite[2].effective_atoms > 10.0 * s.finite[0].effective_atoms);
    // The exact cloud and fsr on N = 1000: fsr integrates the exact score, so its errors stay
    // within a Monte Carlo band of the exact cloud's.
    let names: Vec<&str> = s.samplers.iter().map(|r| r.sampler.as_str()).collect();
    assert_eq!(names, ["exact", "fsr"]);
    for j in 0..2 {
        let (ex, fsr) = (&s.samplers[0].errors[j], &s.samplers[1].errors[j]);
        assert!(fsr.mean_error < ex.mean_error + 0.25, "{ex:?} {fsr:?}");
        let sw = fsr.sliced_wasserstein.unwrap();
        assert!(
            sw < 3.0 * ex.sliced_wasserstein.unwrap() + 0.05,
            "{ex:?} {fsr:?}"
        );
    }
    assert!(table(&s).contains("slope") && table(&s).contains("fsr @1000"));
    // The folder: summary.json with the slopes, report.html with the plots.
    let dir = common::scratch_dir("converge-out");
    let out = write(&s, &p, &Destination::new(dir.join("c"), "converge")).unwrap();
    let json: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("summary.json")).unwrap()).unwrap();
    assert!(json["slopes"][0]["mean_error"].as_f64().unwrap() < 0.0);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert_eq!(html.matches("<svg").count(), 4);
}

#[test]
fn bad_converge_configs_name_the_key() {
    let err = |text: &str| {
        let p = plan(text).unwrap();
        converge(&p, &mut Silent).unwrap_err().to_string()
    };
    let e = err(&GMM
        .replace("kind = \"gmm\"", "kind = \"synthetic\"")
        .replace(
            "[data.prior]\ndim = 4\ncomponents = 2\nmean_scale = 0.4\nstd = 0.3\n",
            "",
        ));
    assert!(e.contains("data.kind"), "{e}");
    assert!(
        err(&GMM.replace("sampler_atoms = 1000", "sampler_atoms = 50"))
            .contains("converge.sampler_atoms")
    );
    assert!(err(&GMM.replace("times = [0.05, 0.5]", "times = [0.0]")).contains("converge.times"));
    assert!(
        err(&GMM.replace(
            "operator = \"projection:m=2,seed=1\"",
            "operator = \"saturation:gain=2\""
        ))
        .contains("measurement.operator")
    );
    let e = plan(&GMM.replace("draws = 400", "drawz = 400"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("drawz"), "{e}");
}

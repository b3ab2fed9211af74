//! What the commands print and refuse: the result on stdout (the table, or with `--json` one
//! JSON document), progress and logs on stderr, errors as JSON records under `--json`, and
//! the refusals of what cannot run (a sampler twice, more DDPM steps than levels, a σ float32
//! cannot carry, a missing file) naming the key once with its cause.

mod common;

use common::{fslens, fslens_command, fslens_fails, read_json, s, scratch_dir, small_run_config};

const FAST: &str = "[sampling]\nparticles = 16\nsteps = 20\ncheckpoints = [0.5, 0.1]\n";

/// A small run config in `dir` with `tail` as its [sampling] table; returns its path.
fn config(dir: &std::path::Path, name: &str, tail: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, small_run_config(1, tail)).unwrap();
    p
}

#[test]
fn the_table_goes_to_stdout_and_progress_to_stderr() {
    let dir = scratch_dir("cli-table");
    let cfg = config(&dir, "small.toml", FAST);
    let out = dir.join("out");
    let res = fslens(&["run", s(&cfg), "--out", s(&out)]);
    let stdout = String::from_utf8_lossy(&res.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    // The header, then one row per sampler, and nothing else.
    assert_eq!(lines.len(), 3, "{stdout}");
    assert!(
        lines[0].starts_with("sampler") && lines[0].contains("mode TV"),
        "{stdout}"
    );
    assert!(lines[1].starts_with("exact "), "{stdout}");
    assert!(lines[2].starts_with("fsr "), "{stdout}");
    let summary = read_json(&out.join("summary.json"));
    let fsr_tv = summary["samplers"][1]["metrics"]["mode_tv"]
        .as_f64()
        .unwrap();
    assert!(lines[2].contains(&format!("{fsr_tv:.3}")), "{stdout}");
    let stderr = String::from_utf8_lossy(&res.stderr);
    for log in ["loading data", "sampler fsr", "wrote", "report.html"] {
        assert!(stderr.contains(log), "stderr lacks {log:?}: {stderr}");
        assert!(!stdout.contains(log), "stdout holds {log:?}: {stdout}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn json_prints_one_summary_document_and_json_errors() {
    let dir = scratch_dir("cli-json");
    let cfg = config(&dir, "small.toml", FAST);
    let out = dir.join("out");
    let res = fslens(&["run", s(&cfg), "--out", s(&out), "--json"]);
    let doc: serde_json::Value =
        serde_json::from_slice(&res.stdout).expect("stdout is one JSON document");
    let summary = read_json(&out.join("summary.json"));
    // The summary's fields, the same values as summary.json (timings aside), and `out`.
    for key in summary.as_object().unwrap().keys() {
        assert!(doc.get(key).is_some(), "missing {key}");
    }
    assert_eq!(
        doc["exact_effective_atoms"],
        summary["exact_effective_atoms"]
    );
    assert_eq!(doc["modes"], summary["modes"]);
    assert_eq!(
        doc["samplers"][1]["metrics"],
        summary["samplers"][1]["metrics"]
    );
    assert_eq!(doc["out"].as_str(), Some(s(&out)));
    // stderr: JSON lines (stages, progress).
    let events = common::json_lines(&res.stderr);
    assert!(
        events
            .iter()
            .any(|e| e["event"] == "progress" && e["sampler"] == "fsr")
    );

    // A bad config: exit status 1 as without --json, one error record naming the key.
    let bad = dir.join("bad.toml");
    std::fs::write(
        &bad,
        small_run_config(1, FAST).replace("sigma = 0.1", "sigma = 0"),
    )
    .unwrap();
    for json in [false, true] {
        let mut cmd = fslens_command(&["run", s(&bad), "--out", s(&dir.join("never"))]);
        if json {
            cmd.arg("--json");
        }
        let res = cmd.output().unwrap();
        assert_eq!(res.status.code(), Some(1));
        assert!(res.stdout.is_empty());
        let err = String::from_utf8_lossy(&res.stderr);
        if json {
            let record = common::json_lines(&res.stderr).pop().unwrap();
            assert_eq!(record["error"]["key"], "measurement.sigma", "{err}");
            assert!(
                record["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("positive")
            );
            assert!(record["error"]["path"].is_null());
        } else {
            assert!(err.contains("fslens: error: measurement.sigma: "), "{err}");
        }
    }
    // A missing data file: the key, the path, and the cause once.
    let missing = dir.join("missing.toml");
    std::fs::write(
        &missing,
        format!(
            "[data]\nkind = \"npy\"\npath = {:?}\n[measurement]\noperator = \"identity\"\nsigma = 0.1\n",
            dir.join("nowhere.npy")
        ),
    )
    .unwrap();
    let res = fslens_command(&["run", s(&missing), "--json", "--out", s(&dir.join("never"))])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    let record = common::json_lines(&res.stderr).pop().unwrap();
    assert_eq!(record["error"]["key"], "data.path");
    assert!(
        record["error"]["path"]
            .as_str()
            .unwrap()
            .ends_with("nowhere.npy")
    );
    let plain = fslens_fails(
        &["run", s(&missing), "--out", s(&dir.join("never"))],
        &["data.path: ", "nowhere.npy"],
    );
    let err = String::from_utf8_lossy(&plain.stderr);
    assert_eq!(err.matches("No such file").count(), 1, "{err}");
    // A bad flag value under --json is a record too.
    let res = fslens_command(&["run", s(&cfg), "--json", "--backend", "tpu"])
        .output()
        .unwrap();
    assert_eq!(res.status.code(), Some(1));
    let record = common::json_lines(&res.stderr).pop().unwrap();
    assert!(
        record["error"]["message"].as_str().unwrap().contains("tpu"),
        "{record}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn what_cannot_run_is_refused_naming_the_key() {
    let dir = scratch_dir("cli-refuse");
    let never = dir.join("never");
    let twice = config(
        &dir,
        "twice.toml",
        "[sampling]\nsamplers = [\"exact\", \"fsr\", \"exact\"]\n",
    );
    fslens_fails(
        &["run", s(&twice), "--out", s(&never)],
        &["sampling.samplers", "\"exact\" twice"],
    );
    let good = config(&dir, "good.toml", FAST);
    fslens_fails(
        &[
            "compare",
            s(&good),
            "--samplers",
            "exact,fsr,fsr",
            "--out",
            s(&never),
        ],
        &["--samplers", "\"fsr\" twice"],
    );
    fslens_fails(
        &[
            "compare",
            s(&good),
            "--samplers",
            "exact,sparkle",
            "--out",
            s(&never),
        ],
        &["--samplers", "sparkle", "pigdm"],
    );
    let ddpm = config(
        &dir,
        "ddpm.toml",
        "[sampling]\nintegrator = \"ddpm\"\nsteps = 1001\n",
    );
    fslens_fails(
        &["run", s(&ddpm), "--out", s(&never)],
        &["sampling.steps", "1000"],
    );
    let tiny = dir.join("tiny.toml");
    std::fs::write(
        &tiny,
        small_run_config(1, FAST).replace("sigma = 0.1", "sigma = 1e-20"),
    )
    .unwrap();
    fslens_fails(
        &["run", s(&tiny), "--out", s(&never)],
        &["measurement.sigma", "float32"],
    );
    fslens_fails(&["plan", s(&tiny)], &["measurement.sigma", "float32"]);
    assert!(!never.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn compare_runs_the_chosen_samplers_only() {
    let dir = scratch_dir("cli-compare-choice");
    let cfg = config(&dir, "small.toml", FAST);
    let out = dir.join("out");
    fslens(&[
        "compare",
        s(&cfg),
        "--samplers",
        "exact,pigdm",
        "--out",
        s(&out),
        "--quiet",
    ]);
    let summary = read_json(&out.join("summary.json"));
    let names: Vec<&str> = summary["samplers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|x| x["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["exact", "pigdm"]);
    assert!(summary.get("skipped_samplers").is_none());
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("fslens compare"));
    // A chosen sampler that cannot use the operator is refused, naming the flag.
    let nonlinear = dir.join("nonlinear.toml");
    std::fs::write(
        &nonlinear,
        small_run_config(1, FAST).replace("downsample:4", "saturation:gain=2"),
    )
    .unwrap();
    fslens_fails(
        &[
            "compare",
            s(&nonlinear),
            "--samplers",
            "exact,tmpd",
            "--out",
            s(&dir.join("never")),
        ],
        &["--samplers", "tmpd", "linear"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Several MPI ranks on this machine (`cargo test --features mpi --test mpi`): `mpirun -n 2
//! --oversubscribe fslens run|compare|score …` against the same command as one process — the
//! exact sampler's samples byte for byte, every other float within 1e-6 relative (the ranks'
//! merged sums are rounded in another order); a rank that runs another config is refused and
//! the job ends instead of hanging. Without `mpirun` on PATH the tests print a skip, or fail
//! when FSLENS_REQUIRE_MPI=1 (CI). Built without the feature, the binary refuses to run as one
//! of several ranks (the one test of this file that runs then).
#![cfg_attr(not(feature = "mpi"), allow(dead_code, unused_imports))]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{read_json, s, scratch_dir};

/// 1200 synthetic 16×16 atoms (1199 after the held-out truth: 600 and 599 a rank), 24
/// particles, four samplers (two with C·g passes); small enough for seconds, and a posterior
/// over several modes where every sampler stays stable (an unstable one, as σ-DPS at σ = 0.1
/// here, amplifies float32 rounding order to any size: README "Determinism").
const CONFIG: &str = r#"
seed = 5
[data]
kind = "synthetic"
count = 1200
size = 16
[measurement]
operator = "downsample:4"
sigma = 0.3
[sampling]
samplers = ["exact", "fsr", "sigma-dps", "pigdm"]
particles = 24
steps = 20
checkpoints = [0.5]
"#;

/// The tolerance of the brief, relative: for an array max |a − b| ≤ 1e-6 · max |a| (pixels
/// near 0 differ by float32 ulps of the values around them), for a metric |a − b| ≤ 1e-6 ·
/// max(|a|, |b|).
const REL: f64 = 1e-6;

/// `mpirun` on PATH, or None after printing a skip (a failure with FSLENS_REQUIRE_MPI=1).
fn mpirun(test: &str) -> Option<PathBuf> {
    let found = std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|p| p.join("mpirun"))
            .find(|p| p.is_file())
    });
    if found.is_none() {
        assert!(
            std::env::var("FSLENS_REQUIRE_MPI").as_deref() != Ok("1"),
            "{test}: FSLENS_REQUIRE_MPI=1 but there is no mpirun on PATH (install openmpi-bin)"
        );
        eprintln!("{test}: skipped, no mpirun on PATH (set FSLENS_REQUIRE_MPI=1 to fail)");
    }
    found
}

/// `mpirun -n 2` of the fslens binary; root is allowed (CI containers run as root).
fn under_mpi(mpirun: &Path, ranks: usize, args: &[&str]) -> Command {
    let mut cmd = Command::new(mpirun);
    cmd.args(["--allow-run-as-root", "--oversubscribe", "-n"])
        .arg(ranks.to_string())
        .arg(env!("CARGO_BIN_EXE_fslens"))
        .args(args)
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1")
        // Two ranks on two cores: one worker thread each keeps them from fighting.
        .env("RAYON_NUM_THREADS", "1");
    cmd
}

/// Runs `cmd` with a deadline (a hung collective fails the test instead of the CI job).
fn output_within(cmd: &mut Command, limit: Duration) -> Output {
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let id = child.id();
    let started = Instant::now();
    let waiter = std::thread::spawn(move || child.wait_with_output().unwrap());
    while !waiter.is_finished() {
        if started.elapsed() > limit {
            // The mpirun we started, by its id.
            let _ = Command::new("kill").arg(id.to_string()).status();
            panic!("{cmd:?} still ran after {limit:?} (hung ranks?)");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    waiter.join().unwrap()
}

fn ok(cmd: &mut Command) -> Output {
    let out = output_within(cmd, Duration::from_secs(240));
    assert!(
        out.status.success(),
        "{cmd:?} failed:\nstdout: {}\nstderr: {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// The float32 payload of a .npy file.
fn npy(path: &Path) -> Vec<f32> {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize + 10;
    bytes[header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// max |a − b| / max |a| over two equally long arrays.
fn max_rel(a: &[f64], b: &[f64]) -> f64 {
    assert_eq!(a.len(), b.len());
    let scale = a.iter().fold(0.0f64, |m, x| m.max(x.abs()));
    let diff = a
        .iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max);
    diff / scale.max(f64::MIN_POSITIVE)
}

fn npy_rel(a: &Path, b: &Path, file: &str) -> f64 {
    let wide =
        |p: &Path| -> Vec<f64> { npy(&p.join(file)).iter().map(|&v| f64::from(v)).collect() };
    max_rel(&wide(a), &wide(b))
}

/// Every number of a JSON value, in document order, with its path (keys holding times skipped:
/// wall-clock seconds differ between any two runs).
fn numbers(v: &serde_json::Value, path: String, out: &mut Vec<(String, f64)>) {
    match v {
        serde_json::Value::Number(n) => out.push((path, n.as_f64().unwrap())),
        serde_json::Value::Array(items) => {
            for (i, x) in items.iter().enumerate() {
                numbers(x, format!("{path}[{i}]"), out);
            }
        }
        serde_json::Value::Object(map) => {
            for (k, x) in map {
                if !k.contains("seconds") && !k.contains("time_") && k != "ranks" {
                    numbers(x, format!("{path}.{k}"), out);
                }
            }
        }
        _ => {}
    }
}

fn json_rel(a: &Path, b: &Path) -> (f64, String) {
    let (mut x, mut y) = (Vec::new(), Vec::new());
    numbers(&read_json(a), String::new(), &mut x);
    numbers(&read_json(b), String::new(), &mut y);
    assert_eq!(
        x.iter().map(|p| &p.0).collect::<Vec<_>>(),
        y.iter().map(|p| &p.0).collect::<Vec<_>>(),
        "{} and {} hold different keys",
        a.display(),
        b.display()
    );
    let mut worst = (0.0, String::new());
    for ((path, p), (_, q)) in x.iter().zip(&y) {
        let r = (p - q).abs() / p.abs().max(q.abs()).max(1e-12);
        if r > worst.0 {
            worst = (r, path.clone());
        }
    }
    worst
}

fn setup(tag: &str) -> PathBuf {
    let dir = scratch_dir(tag);
    std::fs::write(dir.join("small.toml"), CONFIG).unwrap();
    dir
}

/// `mpirun -n 2 fslens run` writes one folder (rank 0), with the split recorded, equal to the
/// one-process run: exact samples byte for byte, fsr and σ-DPS samples and every metric within
/// 1e-6 relative.
#[cfg(feature = "mpi")]
#[test]
fn two_ranks_run_equals_one_process() {
    let Some(mpirun) = mpirun("two_ranks_run_equals_one_process") else {
        return;
    };
    let dir = setup("mpi-run");
    let config = dir.join("small.toml");
    let (one, two) = (dir.join("one"), dir.join("two"));
    let args = |out: &Path| -> Vec<String> {
        [
            "run",
            s(&config),
            "--out",
            s(out),
            "--backend",
            "cpu",
            "--quiet",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    let a1 = args(&one);
    ok(common::fslens_command(&a1).env("RAYON_NUM_THREADS", "1"));
    let a2 = args(&two);
    let a2: Vec<&str> = a2.iter().map(|a| a.as_str()).collect();
    let out = ok(&mut under_mpi(&mpirun, 2, &a2));
    assert!(
        out.stdout.is_empty() && out.stderr.is_empty(),
        "--quiet under mpirun printed: {} {}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let summary = read_json(&two.join("summary.json"));
    assert_eq!(summary["ranks"]["ranks"], 2, "{}", summary["ranks"]);
    assert_eq!(
        summary["ranks"]["offsets"],
        serde_json::json!([0, 600, 1199])
    );
    assert!(read_json(&one.join("summary.json")).get("ranks").is_none());
    // Rank 1 wrote nothing: no staging or second folder beside the one result.
    let names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(names.len(), 3, "{names:?}"); // small.toml, one, two
    assert_eq!(
        std::fs::read(one.join("samples_exact.npy")).unwrap(),
        std::fs::read(two.join("samples_exact.npy")).unwrap(),
        "the exact sampler's samples differ"
    );
    for file in [
        "samples_fsr.npy",
        "samples_sigma-dps.npy",
        "denoised_fsr.npy",
    ] {
        let r = npy_rel(&one, &two, file);
        assert!(
            r <= REL,
            "{file}: {r:e} relative between 1 process and 2 ranks"
        );
    }
    let (r, at) = json_rel(&one.join("metrics.json"), &two.join("metrics.json"));
    assert!(r <= REL, "metrics.json{at}: {r:e} relative");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fslens compare` (every applicable sampler) under two ranks equals one process the same way.
#[cfg(feature = "mpi")]
#[test]
fn two_ranks_compare_equals_one_process() {
    let Some(mpirun) = mpirun("two_ranks_compare_equals_one_process") else {
        return;
    };
    let dir = setup("mpi-compare");
    let config = dir.join("small.toml");
    let (one, two) = (dir.join("one"), dir.join("two"));
    let samplers = "exact,fsr,pigdm";
    ok(common::fslens_command(&[
        "compare",
        s(&config),
        "--samplers",
        samplers,
        "--out",
        s(&one),
        "--backend",
        "cpu",
        "--quiet",
    ])
    .env("RAYON_NUM_THREADS", "1"));
    ok(&mut under_mpi(
        &mpirun,
        2,
        &[
            "compare",
            s(&config),
            "--samplers",
            samplers,
            "--out",
            s(&two),
            "--backend",
            "cpu",
            "--quiet",
        ],
    ));
    assert_eq!(
        std::fs::read(one.join("samples_exact.npy")).unwrap(),
        std::fs::read(two.join("samples_exact.npy")).unwrap()
    );
    for file in ["samples_fsr.npy", "samples_pigdm.npy"] {
        let r = npy_rel(&one, &two, file);
        assert!(r <= REL, "{file}: {r:e} relative");
    }
    let (r, at) = json_rel(&one.join("metrics.json"), &two.join("metrics.json"));
    assert!(r <= REL, "metrics.json{at}: {r:e} relative");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `fslens score` under two ranks (prior, fsr, σ-DPS): one file (rank 0's), equal to one
/// process's within 1e-6.
#[cfg(feature = "mpi")]
#[test]
fn two_ranks_score_equals_one_process() {
    let Some(mpirun) = mpirun("two_ranks_score_equals_one_process") else {
        return;
    };
    let dir = scratch_dir("mpi-score");
    let (n, d, b) = (501, 16, 7);
    let atoms: Vec<f32> = (0..n * d)
        .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
        .collect();
    let x: Vec<f32> = (0..b * d)
        .map(|i| ((i * 13 % 29) as f32 / 20.0) - 0.7)
        .collect();
    fslens::arrays::write_npy_f32(&dir.join("A.npy"), &[n, d], &atoms).unwrap();
    fslens::arrays::write_npy_f32(&dir.join("x.npy"), &[b, d], &x).unwrap();
    // 4×4 rows averaged to 2×2: y has 4 values.
    fslens::arrays::write_npy_f32(&dir.join("y.npy"), &[4], &[0.3, -0.2, 0.1, 0.5]).unwrap();
    // prior: one pass; fsr: a posterior pass; sigma-dps: a pass and C·g.
    for method in ["prior", "fsr", "sigma-dps"] {
        let (one, two) = (
            dir.join(format!("one-{method}.npy")),
            dir.join(format!("two-{method}.npy")),
        );
        let args = |out: &Path| -> Vec<String> {
            [
                "score",
                "--quiet",
                "--backend",
                "cpu",
                "--method",
                method,
                "--atoms",
                s(&dir.join("A.npy")),
                "--x",
                s(&dir.join("x.npy")),
                "--t",
                "0.2",
                "--y",
                s(&dir.join("y.npy")),
                "--operator",
                "downsample:2",
                "--sigma",
                "0.3",
                "--out",
                s(out),
            ]
            .iter()
            .map(|a| a.to_string())
            .collect()
        };
        ok(&mut common::fslens_command(&args(&one)));
        let a2 = args(&two);
        let a2: Vec<&str> = a2.iter().map(|a| a.as_str()).collect();
        ok(&mut under_mpi(&mpirun, 2, &a2));
        let wide = |p: &Path| -> Vec<f64> { npy(p).iter().map(|&v| f64::from(v)).collect() };
        let (u, v) = (wide(&one), wide(&two));
        let r = max_rel(&u, &v);
        assert!(r <= REL, "score --method {method}: {r:e} relative");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// A rank whose config file says otherwise (same command line, another working folder holding
/// another small.toml) is refused: every rank stops with status 1 (no hang), naming the
/// difference, and no folder is written.
#[cfg(feature = "mpi")]
#[test]
fn ranks_on_different_configs_are_refused() {
    let Some(mpirun) = mpirun("ranks_on_different_configs_are_refused") else {
        return;
    };
    let dir = setup("mpi-mismatch");
    let other = dir.join("other");
    std::fs::create_dir_all(&other).unwrap();
    std::fs::write(
        other.join("small.toml"),
        CONFIG.replace("seed = 5", "seed = 6"),
    )
    .unwrap();
    let out_dir = dir.join("out");
    let bin = env!("CARGO_BIN_EXE_fslens");
    // Open MPI's MPMD form: rank 0 runs in dir, rank 1 in dir/other; both `run small.toml`.
    let mut cmd = Command::new(&mpirun);
    cmd.args(["--allow-run-as-root", "--oversubscribe"])
        .args([
            "-wdir",
            s(&dir),
            "-n",
            "1",
            bin,
            "run",
            "small.toml",
            "--out",
            s(&out_dir),
        ])
        .args([
            ":",
            "-wdir",
            s(&other),
            "-n",
            "1",
            bin,
            "run",
            "small.toml",
            "--out",
            s(&out_dir),
        ])
        .env("OMPI_ALLOW_RUN_AS_ROOT", "1")
        .env("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1");
    let out = output_within(&mut cmd, Duration::from_secs(120));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "mismatched ranks ran: {err}");
    assert!(
        err.contains("rank(s) 1 of 2 differ from rank 0 in the command line or the files it names"),
        "{err}"
    );
    assert!(
        !out_dir.exists(),
        "a refused job wrote {}",
        out_dir.display()
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A command that does not run under ranks (plan) is refused with the reason, not run twice.
#[cfg(feature = "mpi")]
#[test]
fn commands_without_ranks_are_refused_under_mpirun() {
    let Some(mpirun) = mpirun("commands_without_ranks_are_refused_under_mpirun") else {
        return;
    };
    let dir = setup("mpi-plan");
    let out = output_within(
        &mut under_mpi(&mpirun, 2, &["plan", s(&dir.join("small.toml"))]),
        Duration::from_secs(120),
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "plan ran under 2 ranks: {err}");
    assert!(
        err.contains("fslens plan does not run as 2 MPI ranks"),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A default build started as one of several ranks (as mpirun's environment says) refuses,
/// naming the rebuild, instead of running the whole job once per rank into one folder.
#[cfg(not(feature = "mpi"))]
#[test]
fn a_build_without_mpi_refuses_to_run_as_ranks() {
    let dir = setup("mpi-refuse");
    let out_dir = dir.join("out");
    for var in ["OMPI_COMM_WORLD_SIZE", "SLURM_STEP_NUM_TASKS"] {
        common::fails(
            common::fslens_command(&["run", s(&dir.join("small.toml")), "--out", s(&out_dir)])
                .env(var, "2"),
            &[&format!("{var}=2"), "--features mpi"],
        );
        assert!(!out_dir.exists());
    }
    let _ = std::fs::remove_dir_all(&dir);
}

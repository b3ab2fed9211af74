//! Every bad input through the binary: a non-zero exit, an error that names the file or key, no
//! panic, and no output folder left behind.

mod common;

use std::path::{Path, PathBuf};

use common::{assert_no_staging, scratch_dir};

/// Runs fslens with `args`; asserts failure with exit status 1, without panic, and that stderr
/// mentions every string in `needles`.
fn fails(args: &[&str], needles: &[&str]) {
    let out = common::fslens_fails(args, needles);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

const GOOD_TAIL: &str = r#"
[measurement]
operator = "box:x=2,y=2,w=4,h=4"
sigma = 0.1

[sampling]
particles = 8
steps = 5
"#;

fn write_config(dir: &Path, name: &str, data: &str, tail: &str) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, format!("[data]\n{data}\n{tail}")).unwrap();
    p
}

/// Runs a config that must fail and checks that no output folder appeared.
fn run_fails(dir: &Path, config: &Path, needles: &[&str]) {
    let out = dir.join(format!(
        "out-{}",
        config.file_stem().unwrap().to_string_lossy()
    ));
    fails(
        &[
            "run",
            config.to_str().unwrap(),
            "--out",
            out.to_str().unwrap(),
            "--quiet",
        ],
        needles,
    );
    assert!(!out.exists(), "a failed run left {}", out.display());
    assert_no_staging(dir);
}

const SYNTH: &str = "kind = \"synthetic\"\ncount = 50\nsize = 16";

#[test]
fn config_errors_name_the_key() {
    let dir = scratch_dir("bad-config");
    fails(
        &["run", dir.join("missing.toml").to_str().unwrap()],
        &["missing.toml"],
    );
    // A top-level key: written by hand, above [data].
    let c = dir.join("storage.toml");
    std::fs::write(
        &c,
        format!("storage = \"f64\"\n[data]\n{SYNTH}\n{GOOD_TAIL}"),
    )
    .unwrap();
    run_fails(&dir, &c, &["storage", "f64", "f16"]);
    let sampling =
        |extra: &str| GOOD_TAIL.replace("particles = 8", &format!("particles = 8\n{extra}"));
    let diagnostics = |table: &str| format!("{GOOD_TAIL}\n[diagnostics]\n{table}\n");
    // (config file, its [data] table, the rest, what the error must name)
    let cases: [(&str, String, String, &[&str]); 12] = [
        (
            "unknown-key.toml",
            format!("{SYNTH}\ncolour = 3"),
            GOOD_TAIL.into(),
            &["unknown-key.toml", "colour"],
        ),
        (
            "sampler.toml",
            SYNTH.into(),
            sampling("samplers = [\"exact\", \"magic\"]"),
            &["magic", "sampling.samplers"],
        ),
        (
            "integrator.toml",
            SYNTH.into(),
            sampling("integrator = \"rk45\""),
            &["rk45", "sampling.integrator", "heun-ode"],
        ),
        (
            "eta.toml",
            SYNTH.into(),
            sampling("integrator = \"ddim\"\neta = 2.0"),
            &["sampling.eta", "[0, 1]"],
        ),
        (
            "eta-ddpm.toml",
            SYNTH.into(),
            sampling("integrator = \"ddpm\"\neta = 0.5"),
            &["sampling.eta", "ddim"],
        ),
        (
            "operator.toml",
            SYNTH.into(),
            GOOD_TAIL.replace("box:x=2,y=2,w=4,h=4", "wobble:3"),
            &["measurement.operator", "wobble"],
        ),
        (
            "sigma.toml",
            SYNTH.into(),
            GOOD_TAIL.replace("sigma = 0.1", "sigma = 0.0"),
            &["measurement.sigma"],
        ),
        (
            "sigma-neg.toml",
            SYNTH.into(),
            GOOD_TAIL.replace("sigma = 0.1", "sigma = -1.0"),
            &["measurement.sigma"],
        ),
        (
            "box.toml",
            SYNTH.into(),
            GOOD_TAIL.replace("w=4", "w=40"),
            &["measurement.operator"],
        ),
        (
            "diag-key.toml",
            SYNTH.into(),
            diagnostics("threshold = 0.1"),
            &["diag-key.toml", "threshold"],
        ),
        (
            "diag-threshold.toml",
            SYNTH.into(),
            diagnostics("hallucination_threshold = 1.5"),
            &["diagnostics.hallucination_threshold"],
        ),
        (
            "diag-clusters.toml",
            SYNTH.into(),
            diagnostics("clusters = 0"),
            &["diagnostics.clusters"],
        ),
    ];
    for (name, data, tail, needles) in &cases {
        let c = write_config(&dir, name, data, tail);
        run_fails(&dir, &c, needles);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn data_file_errors_name_the_file() {
    let dir = scratch_dir("bad-data");
    // Wrong magic in an IDX file.
    let bad = dir.join("bad-magic-idx3-ubyte");
    std::fs::write(
        &bad,
        [0u8, 0, 9, 9, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 0, 2, 1, 2, 3, 4],
    )
    .unwrap();
    let c = write_config(
        &dir,
        "magic.toml",
        &format!("kind = \"idx\"\npath = {:?}", bad),
        GOOD_TAIL,
    );
    run_fails(&dir, &c, &["bad-magic-idx3-ubyte"]);
    // Truncated payload: header says 10 images of 4×4, payload has 5 bytes.
    let trunc = dir.join("trunc-idx3-ubyte");
    let mut bytes = vec![0u8, 0, 8, 3, 0, 0, 0, 10, 0, 0, 0, 4, 0, 0, 0, 4];
    bytes.extend([7u8; 5]);
    std::fs::write(&trunc, bytes).unwrap();
    let c = write_config(
        &dir,
        "trunc.toml",
        &format!("kind = \"idx\"\npath = {:?}", trunc),
        GOOD_TAIL,
    );
    run_fails(&dir, &c, &["trunc-idx3-ubyte"]);
    // A folder whose images differ in size.
    let folder = dir.join("mixed");
    std::fs::create_dir_all(&folder).unwrap();
    image::GrayImage::new(8, 8)
        .save(folder.join("a.png"))
        .unwrap();
    image::GrayImage::new(9, 8)
        .save(folder.join("b.png"))
        .unwrap();
    let c = write_config(
        &dir,
        "mixed.toml",
        &format!("kind = \"folder\"\npath = {:?}", folder),
        GOOD_TAIL,
    );
    run_fails(&dir, &c, &["b.png"]);
    // An empty folder: an empty set.
    let empty = dir.join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let c = write_config(
        &dir,
        "empty.toml",
        &format!("kind = \"folder\"\npath = {:?}", empty),
        GOOD_TAIL,
    );
    run_fails(&dir, &c, &["empty"]);
    // Non-finite values in an .npy data set.
    let nan = dir.join("nan.npy");
    let mut v = vec![0.0f32; 3 * 16 * 16];
    v[5] = f32::NAN;
    fslens::arrays::write_npy_f32(&nan, &[3, 16, 16], &v).unwrap();
    let c = write_config(
        &dir,
        "nan.toml",
        &format!("kind = \"npy\"\npath = {:?}", nan),
        GOOD_TAIL,
    );
    run_fails(&dir, &c, &["nan.npy", "finite"]);
    // A missing data file.
    let c = write_config(
        &dir,
        "nofile.toml",
        &format!("kind = \"npy\"\npath = {:?}", dir.join("nowhere.npy")),
        GOOD_TAIL,
    );
    run_fails(&dir, &c, &["nowhere.npy"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn score_errors_name_the_argument() {
    let dir = scratch_dir("bad-score");
    let w = |name: &str, shape: &[usize], v: Vec<f32>| {
        let p = dir.join(name);
        fslens::arrays::write_npy_f32(&p, shape, &v).unwrap();
        p.to_str().unwrap().to_string()
    };
    let atoms = w(
        "A.npy",
        &[20, 4],
        (0..80).map(|i| (i as f32 * 0.37).sin()).collect(),
    );
    let x = w("x.npy", &[3, 4], vec![0.1; 12]);
    let y = w("y.npy", &[2], vec![0.0; 2]);
    let y_bad = w("y_bad.npy", &[3], vec![0.0; 3]);
    let m = w("M.npy", &[2, 4], vec![0.5; 8]);
    let m_bad = w("M_bad.npy", &[2, 5], vec![0.5; 10]);
    let x_bad = w("x_bad.npy", &[3, 5], vec![0.1; 15]);
    let mut x_nan_v = vec![0.1; 12];
    x_nan_v[7] = f32::INFINITY;
    let x_nan = w("x_nan.npy", &[3, 4], x_nan_v);
    let out = dir.join("s.npy");
    let out = out.to_str().unwrap();
    let op = format!("matrix:{m}");
    let op_bad = format!("matrix:{m_bad}");
    let base = |xp: &str, t: &str, yp: &str, opx: &str, sigma: &str| -> Vec<String> {
        [
            "score",
            "--atoms",
            &atoms,
            "--x",
            xp,
            "--t",
            t,
            "--method",
            "fsr",
            "--y",
            yp,
            "--operator",
            opx,
            "--out",
            out,
            "--backend",
            "cpu",
        ]
        .iter()
        .map(|s| s.to_string())
        .chain([format!("--sigma={sigma}")])
        .collect()
    };
    let run = |args: Vec<String>, needles: &[&str]| {
        let a: Vec<&str> = args.iter().map(|s| s.as_str()).collect();
        fails(&a, needles);
        assert!(!Path::new(out).exists(), "a failed score wrote its output");
    };
    run(base(&x, "0", &y, &op, "0.1"), &["--t"]);
    let mut bad_storage = base(&x, "0.5", &y, &op, "0.1");
    bad_storage.extend(["--storage".to_string(), "f64".to_string()]);
    run(bad_storage, &["storage", "f64", "u8"]);
    run(base(&x, "1.5", &y, &op, "0.1"), &["--t"]);
    run(base(&x, "0.5", &y_bad, &op, "0.1"), &["y_bad.npy"]);
    run(base(&x, "0.5", &y, &op_bad, "0.1"), &["M_bad.npy"]);
    run(base(&x, "0.5", &y, &op, "0"), &["--sigma"]);
    run(base(&x, "0.5", &y, &op, "-2"), &["--sigma"]);
    run(base(&x_bad, "0.5", &y, &op, "0.1"), &["x_bad.npy"]);
    run(
        base(&x_nan, "0.5", &y, &op, "0.1"),
        &["x_nan.npy", "finite"],
    );
    run(base(&x, "0.5", &y, "sparkle:2", "0.1"), &["sparkle"]);
    let mut m_args = base(&x, "0.5", &y, &op, "0.1");
    m_args[8] = "magic".into();
    run(m_args, &["--method", "magic"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

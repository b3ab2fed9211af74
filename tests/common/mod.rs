//! Shared fixtures of the integration tests: clustered atoms with labels and a posterior bias
//! on a CPU engine, enough to build a [`Problem`]; scratch folders; running the `fslens`
//! binary and checking that it succeeds or fails cleanly.
#![allow(dead_code)] // each test file uses its own subset

pub mod engine;
pub mod fashion;
pub mod gpu;

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use fslens::data::ImageShape;
use fslens::diffusion::Schedule;
use fslens::engine::{Backend, WeightSet, cpu::CpuBackend};
use fslens::samplers::{Problem, Run, Settings};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// Atoms in `classes` well-separated clusters in D dimensions, with labels.
pub fn clustered_atoms(n: usize, d: usize, classes: usize, seed: u64) -> (Vec<f32>, Vec<usize>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let centres: Vec<Vec<f32>> = (0..classes)
        .map(|_| (0..d).map(|_| rng.random_range(-0.8..0.8)).collect())
        .collect();
    let mut atoms = Vec::with_capacity(n * d);
    let mut labels = Vec::with_capacity(n);
    for i in 0..n {
        let c = i % classes;
        labels.push(c);
        atoms.extend(
            centres[c]
                .iter()
                .map(|&v| v + rng.random_range(-0.1..0.1f32)),
        );
    }
    (atoms, labels)
}

/// Clustered atoms with a posterior bias b registered on a CPU engine: enough to build a
/// [`Problem`] for the samplers (identity operator; y and σ unused by exact and fsr).
pub struct Fixture {
    pub atoms: Vec<f32>,
    pub labels: Vec<usize>,
    pub classes: usize,
    pub d: usize,
    pub b: Vec<f64>,
    pub engine: CpuBackend,
    pub posterior: fslens::engine::BiasId,
    pub op: Box<dyn fslens::operators::Operator>,
    pub y: Vec<f32>,
}

impl Fixture {
    pub fn new(atoms: Vec<f32>, labels: Vec<usize>, classes: usize, d: usize, b: Vec<f64>) -> Self {
        let mut engine = CpuBackend::new(&atoms, d).unwrap();
        let posterior = engine.add_bias(&b).unwrap();
        let op = fslens::operators::parse(
            "identity",
            ImageShape::new(1, d, 1),
            std::path::Path::new("."),
        )
        .unwrap();
        Fixture {
            atoms,
            labels,
            classes,
            d,
            b,
            engine,
            posterior,
            op,
            y: vec![0.0; d],
        }
    }

    pub fn problem(&self) -> Problem<'_> {
        Problem {
            backend: &self.engine,
            atoms: &self.atoms,
            dim: self.d,
            log_likelihoods: &self.b,
            posterior: self.posterior,
            operator: self.op.as_ref(),
            y: &self.y,
            sigma: 1.0,
            schedule: Schedule::default(),
        }
    }

    /// Exact class masses Σ_{i in c} ω_i.
    pub fn exact_classes(&self) -> Vec<f64> {
        let mut want = vec![0.0; self.classes];
        for (&c, &w) in self.labels.iter().zip(&self.problem().posterior_weights()) {
            want[c] += w;
        }
        want
    }

    /// Class frequencies of samples at t_min, each assigned to its nearest atom.
    pub fn sample_classes(&self, samples: &[f32]) -> Vec<f64> {
        let noise = Schedule::default().noise(1e-3);
        let pass = self
            .engine
            .weighted_means(samples, noise, &[WeightSet::Prior])
            .unwrap();
        let k = pass.nearest.len() as f64;
        let mut got = vec![0.0; self.classes];
        for nb in &pass.nearest {
            got[self.labels[nb.index]] += 1.0 / k;
        }
        got
    }
}

/// The float64 prior Tweedie mean m(x) = Σ_i w_i a_i, w = softmax(−‖x − s a_i‖²/(2v)), over
/// `atoms` (rows of `d` values); returns (m(x), w).
pub fn prior_mean_f64<T: Copy + Into<f64>>(
    atoms: &[T],
    d: usize,
    x: &[f64],
    s: f64,
    v: f64,
) -> (Vec<f64>, Vec<f64>) {
    let logits: Vec<f64> = atoms
        .chunks(d)
        .map(|a| {
            -a.iter()
                .zip(x)
                .map(|(&ai, xi)| (xi - s * ai.into()).powi(2))
                .sum::<f64>()
                / (2.0 * v)
        })
        .collect();
    let w = fslens::engine::logsumexp::softmax(&logits);
    let mut mean = vec![0.0; d];
    for (a, wi) in atoms.chunks(d).zip(&w) {
        for (mj, &aj) in mean.iter_mut().zip(a) {
            *mj += wi * aj.into();
        }
    }
    (mean, w)
}

/// Runs the sampler `name` on `problem` with `settings`, without a progress callback.
pub fn sample(name: &str, problem: &Problem, settings: &Settings) -> Run {
    use fslens::choices::Choice;
    fslens::samplers::SamplerKind::parse(name)
        .unwrap()
        .build(&fslens::samplers::SamplerOptions::default())
        .sample(problem, settings, &mut |_| {})
        .unwrap()
}

/// A fresh, empty folder `fslens-<tag>-<pid>` under the system's temporary folder (tags are
/// unique across the test files; the process id keeps concurrent test binaries apart).
pub fn scratch_dir(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fslens-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A path as the `&str` an argument list wants.
pub fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// A JSON file, parsed.
pub fn read_json(path: &Path) -> serde_json::Value {
    let text =
        std::fs::read_to_string(path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("parsing {}: {e}", path.display()))
}

/// A JSON array of numbers as floats.
pub fn floats(v: &serde_json::Value) -> Vec<f64> {
    let items = v.as_array().unwrap_or_else(|| panic!("not an array: {v}"));
    items.iter().map(|x| x.as_f64().unwrap()).collect()
}

/// Output of `--json`: one JSON record per line.
pub fn json_lines(stdout: &[u8]) -> Vec<serde_json::Value> {
    String::from_utf8_lossy(stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{e}: {l}")))
        .collect()
}

/// The `fslens` binary with `args`, for runs that need more than arguments (a working folder,
/// an environment, a child to kill).
pub fn fslens_command<S: AsRef<OsStr>>(args: &[S]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_fslens"));
    cmd.args(args);
    cmd
}

/// Runs `cmd` and returns its output, failing the test with its stderr when it does not
/// succeed.
pub fn succeeds(cmd: &mut Command) -> Output {
    let out = cmd.output().unwrap();
    assert!(
        out.status.success(),
        "{cmd:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

/// Runs `cmd` expecting it to fail: a non-zero exit, no panic, and stderr naming every string
/// of `needles`. Returns its output.
pub fn fails(cmd: &mut Command, needles: &[&str]) -> Output {
    let out = cmd.output().unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        !out.status.success(),
        "expected {cmd:?} to fail; stderr: {err}"
    );
    assert!(!err.contains("panicked"), "{cmd:?} panicked: {err}");
    for n in needles {
        assert!(
            err.contains(n),
            "{cmd:?}: stderr does not mention {n:?}: {err}"
        );
    }
    out
}

/// Runs the `fslens` binary with `args` and returns its output, failing the test with its
/// stderr when it does not succeed.
pub fn fslens<S: AsRef<OsStr>>(args: &[S]) -> Output {
    succeeds(&mut fslens_command(args))
}

/// Runs the `fslens` binary with `args` expecting it to fail ([`fails`]).
pub fn fslens_fails<S: AsRef<OsStr>>(args: &[S], needles: &[&str]) -> Output {
    fails(&mut fslens_command(args), needles)
}

/// Asserts that `dir` holds no staging folder (`…partial…`) of a run that failed.
pub fn assert_no_staging(dir: &Path) {
    let leftovers: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.contains("partial"))
        .collect();
    assert!(leftovers.is_empty(), "staging folders left: {leftovers:?}");
}

/// A small run config: `seed`, 300 synthetic 16×16 images, 4× downsampling at σ = 0.1, then
/// `tail` (the [sampling] and [diagnostics] tables).
pub fn small_run_config(seed: u64, tail: &str) -> String {
    format!(
        r#"
seed = {seed}
backend = "cpu"
[data]
kind = "synthetic"
count = 300
size = 16
[measurement]
operator = "downsample:4"
sigma = 0.1
{}"#,
        tail.trim_start()
    )
}

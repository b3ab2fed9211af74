//! Shared fixtures of the integration tests: clustered atoms with labels and a posterior bias
//! on a CPU engine, enough to build a [`Problem`]; running the `fslens` binary.
#![allow(dead_code)] // each test file uses its own subset

pub mod engine;
pub mod fashion;
pub mod gpu;

use fslens::data::ImageShape;
use fslens::diffusion::Schedule;
use fslens::engine::{Backend, Weights, cpu::CpuBackend};
use fslens::samplers::Problem;
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
            .weighted_means(samples, noise, &[Weights::Prior])
            .unwrap();
        let k = pass.nearest.len() as f64;
        let mut got = vec![0.0; self.classes];
        for nb in &pass.nearest {
            got[self.labels[nb.index]] += 1.0 / k;
        }
        got
    }
}

/// Runs the `fslens` binary with `args` and returns its output, failing the test with its
/// stderr when it does not succeed.
pub fn fslens(args: &[&str]) -> std::process::Output {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_fslens"))
        .args(args)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "fslens {args:?} failed:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

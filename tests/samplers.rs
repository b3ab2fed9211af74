//! The exact samplers against closed forms and float64 references.

use fslens::diffusion::Schedule;
use fslens::engine::{Backend, WeightSet, cpu::CpuBackend};
use fslens::samplers::Settings;
mod common;

use common::{Fixture, clustered_atoms};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// log p(x_t | y) = log Σ_i exp(b_i − ‖x − s a_i‖²/(2v)) + const, in float64.
fn log_posterior_marginal(atoms: &[f32], d: usize, b: &[f64], x: &[f64], s: f64, v: f64) -> f64 {
    let l: Vec<f64> = atoms
        .chunks(d)
        .zip(b)
        .map(|(a, bi)| {
            bi - a
                .iter()
                .zip(x)
                .map(|(&ai, xi)| (xi - s * ai as f64).powi(2))
                .sum::<f64>()
                / (2.0 * v)
        })
        .collect();
    let max = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    max + l.iter().map(|li| (li - max).exp()).sum::<f64>().ln()
}

#[test]
fn fsr_score_is_the_gradient_of_the_log_posterior_marginal() {
    let (n, d) = (300, 12);
    let (atoms, _) = clustered_atoms(n, d, 3, 1);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let b: Vec<f64> = (0..n).map(|_| rng.random_range(-20.0..0.0)).collect();
    let mut engine = CpuBackend::new(&atoms, d).unwrap();
    let bias = engine.add_bias(&b).unwrap();
    let schedule = Schedule::default();
    for &t in &[0.02, 0.2, 0.7] {
        let noise = schedule.noise(t);
        let (s, v) = (noise.s, noise.v);
        let j = rng.random_range(0..n);
        let x: Vec<f32> = atoms[j * d..(j + 1) * d]
            .iter()
            .map(|&a| (s * a as f64 + v.sqrt() * rng.random_range(-1.0..1.0)) as f32)
            .collect();
        let score =
            fslens::samplers::score::tweedie_score(&engine, &x, noise, WeightSet::Biased(bias))
                .unwrap();
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        // Central differences with a step scaled to the posterior's width √v.
        let h = 1e-4 * v.sqrt();
        for k in 0..d {
            let mut xp = x64.clone();
            let mut xm = x64.clone();
            xp[k] += h;
            xm[k] -= h;
            let fd = (log_posterior_marginal(&atoms, d, &b, &xp, s, v)
                - log_posterior_marginal(&atoms, d, &b, &xm, s, v))
                / (2.0 * h);
            let tol = 1e-4 * (fd.abs() + 1.0 / v.sqrt());
            assert!(
                (score[k] as f64 - fd).abs() <= tol,
                "t={t} k={k}: score {} vs finite difference {fd}",
                score[k]
            );
        }
    }
}

#[test]
fn exact_sampler_class_frequencies_match_omega() {
    let (n, d, classes) = (400, 8, 4);
    let (atoms, labels) = clustered_atoms(n, d, classes, 2);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    // Log-likelihoods that favour class 1, then 3, with a spread within each class.
    let b: Vec<f64> = labels
        .iter()
        .map(|&c| [-6.0, 0.0, -30.0, -1.0][c] + rng.random_range(-1.0..1.0))
        .collect();
    let fx = Fixture::new(atoms, labels, classes, d, b);
    let k = 20000;
    let settings = Settings {
        particles: k,
        steps: 10,
        t_min: 1e-3,
        seed: 11,
        checkpoints: vec![0.3],
        integrator: Default::default(),
        dps_update: false,
    };
    let run = common::sample("exact", &fx.problem(), &settings);
    assert_eq!(run.samples.len(), k * d);
    assert_eq!(run.snapshots.len(), 1);
    let (want, got) = (fx.exact_classes(), fx.sample_classes(&run.samples));
    for c in 0..classes {
        // 5 binomial standard deviations (plus a floor for classes with ~0 mass).
        let sd = (want[c] * (1.0 - want[c]) / k as f64).sqrt();
        assert!(
            (got[c] - want[c]).abs() <= 5.0 * sd + 1e-4,
            "class {c}: {} vs ω mass {}",
            got[c],
            want[c]
        );
    }
}

#[test]
fn fsr_sampler_reaches_the_exact_class_weights() {
    let (n, d, classes) = (240, 6, 3);
    let (atoms, labels) = clustered_atoms(n, d, classes, 3);
    let b: Vec<f64> = labels.iter().map(|&c| [-0.5, 0.0, -1.0][c]).collect();
    let fx = Fixture::new(atoms, labels, classes, d, b);
    let settings = Settings {
        particles: 2000,
        steps: 400,
        t_min: 1e-3,
        seed: 4,
        checkpoints: vec![],
        integrator: Default::default(),
        dps_update: false,
    };
    let run = common::sample("fsr", &fx.problem(), &settings);
    let (want, got) = (fx.exact_classes(), fx.sample_classes(&run.samples));
    let tv: f64 = 0.5
        * got
            .iter()
            .zip(&want)
            .map(|(g, w)| (g - w).abs())
            .sum::<f64>();
    // Sampling noise alone gives TV ≈ 0.02 at K = 2000; discretisation adds a little.
    assert!(
        tv < 0.05,
        "fsr class weights {got:?} vs exact {want:?}: TV {tv}"
    );
}

//! σ-DPS, ζ-DPS, ΠGDM and TMPD against an independent float64 implementation of design §4
//! (dense C from the weights, dense solves), finite differences, and each other; refusal of
//! nonlinear operators; small end-to-end runs.

mod common;

use std::path::{Path, PathBuf};

use common::gpu::have_gpu;
use fslens::choices::Choice;
use fslens::data::ImageShape;
use fslens::diffusion::Schedule;
use fslens::engine::BackendKind;
use fslens::engine::cpu::CpuBackend;
use fslens::engine::{Backend, Noise, WeightSet};
use fslens::experiment::score::{Method, ScoreRequest, score};
use fslens::operators::{self, Operator};
use fslens::plan::{EngineChoice, Overrides, RunPlan};
use fslens::samplers::likelihood::{Context, Likelihood, posterior_score, residuals};
use fslens::samplers::solve::CgOptions;
use fslens::samplers::{self, Problem, SamplerKind, SamplerOptions, Settings};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use common::{fslens_command, scratch_dir};

fn rel(a: &[f64], b: &[f64]) -> f64 {
    let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
    let n: f64 = b.iter().map(|y| y * y).sum();
    (d / n).sqrt()
}

fn norm(a: &[f64]) -> f64 {
    a.iter().map(|v| v * v).sum::<f64>().sqrt()
}

/// Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>, m: usize) -> Vec<f64> {
    for c in 0..m {
        let piv = (c..m)
            .max_by(|&i, &j| a[i * m + c].abs().total_cmp(&a[j * m + c].abs()))
            .unwrap();
        for k in 0..m {
            a.swap(c * m + k, piv * m + k);
        }
        b.swap(c, piv);
        for i in c + 1..m {
            let f = a[i * m + c] / a[c * m + c];
            for k in c..m {
                a[i * m + k] -= f * a[c * m + k];
            }
            b[i] -= f * b[c];
        }
    }
    let mut x = vec![0.0; m];
    for i in (0..m).rev() {
        let s: f64 = (i + 1..m).map(|k| a[i * m + k] * x[k]).sum();
        x[i] = (b[i] - s) / a[i * m + i];
    }
    x
}

/// A linear operator as a dense m × D float64 matrix: column k is A(e_k).
fn dense_of(op: &dyn Operator) -> Vec<f64> {
    let d = op.input_shape().dim();
    let m = op.output_len();
    let mut a = vec![0.0; m * d];
    let mut e = vec![0.0f32; d];
    let mut col = vec![0.0f32; m];
    for k in 0..d {
        e.fill(0.0);
        e[k] = 1.0;
        op.forward(&e, &mut col);
        for i in 0..m {
            a[i * d + k] = col[i] as f64;
        }
    }
    a
}

/// Everything the float64 reference needs.
struct Reference<'a> {
    atoms: &'a [f64],
    d: usize,
    a: &'a [f64],
    m: usize,
    y: &'a [f64],
    sigma: f64,
}

impl Reference<'_> {
    /// Prior weights, mean m and dense C = Σ w (a − m)(a − m)ᵀ at x.
    fn moments(&self, x: &[f64], s: f64, v: f64) -> (Vec<f64>, Vec<f64>) {
        let d = self.d;
        let (mean, w) = common::prior_mean_f64(self.atoms, d, x, s, v);
        let mut c = vec![0.0; d * d];
        for (a, wi) in self.atoms.chunks(d).zip(&w) {
            for j in 0..d {
                let dj = a[j] - mean[j];
                for k in 0..d {
                    c[j * d + k] += wi * dj * (a[k] - mean[k]);
                }
            }
        }
        (mean, c)
    }

    /// (prior score, likelihood score) of design §4 for `method`, float64.
    fn score(&self, method: &str, zeta: f64, x: &[f64], s: f64, v: f64) -> (Vec<f64>, Vec<f64>) {
        let (d, m) = (self.d, self.m);
        let (mean, c) = self.moments(x, s, v);
        let prior: Vec<f64> = (0..d).map(|j| (s * mean[j] - x[j]) / v).collect();
        let am: Vec<f64> = (0..m)
            .map(|i| (0..d).map(|j| self.a[i * d + j] * mean[j]).sum())
            .collect();
        let r: Vec<f64> = (0..m).map(|i| self.y[i] - am[i]).collect();
        let s2 = self.sigma * self.sigma;
        let at = |u: &[f64]| -> Vec<f64> {
            (0..d)
                .map(|j| (0..m).map(|i| self.a[i * d + j] * u[i]).sum())
                .collect()
        };
        let g: Vec<f64> = match method {
            "sigma-dps" => at(&r).iter().map(|v| v / s2).collect(),
            "zeta-dps" => {
                let k = 2.0 * zeta / norm(&r);
                at(&r).iter().map(|v| k * v / s2).collect()
            }
            "pigdm" | "tmpd" => {
                // Σ_y = σ²I + (v/ᾱ) A Aᵀ, or Σ_f = σ²I + A C Aᵀ.
                let mut sig = vec![0.0; m * m];
                for i in 0..m {
                    for k in 0..m {
                        let val: f64 = if method == "pigdm" {
                            v / (s * s)
                                * (0..d)
                                    .map(|j| self.a[i * d + j] * self.a[k * d + j])
                                    .sum::<f64>()
                        } else {
                            (0..d)
                                .map(|j| {
                                    self.a[i * d + j]
                                        * (0..d)
                                            .map(|l| c[j * d + l] * self.a[k * d + l])
                                            .sum::<f64>()
                                })
                                .sum()
                        };
                        sig[i * m + k] = val + if i == k { s2 } else { 0.0 };
                    }
                }
                at(&solve(sig, r.clone(), m))
            }
            _ => unreachable!(),
        };
        let lik: Vec<f64> = (0..d)
            .map(|j| s / v * (0..d).map(|k| c[j * d + k] * g[k]).sum::<f64>())
            .collect();
        (prior, lik)
    }
}

const METHODS: [&str; 4] = ["sigma-dps", "zeta-dps", "pigdm", "tmpd"];

/// Random atoms N × D in [-1, 1], a dense m × D matrix, particles near atoms and from N(0, I).
struct Case {
    n: usize,
    d: usize,
    atoms: Vec<f32>,
    matrix: Vec<f32>,
    m: usize,
}

impl Case {
    /// The case's matrix as an operator on images of `shape`, named `name`.
    fn operator(&self, shape: ImageShape, name: &str) -> operators::DenseMatrix {
        operators::DenseMatrix::new(shape, self.m, self.matrix.clone(), name.into()).unwrap()
    }
}

/// The prior's Tweedie means m(x) at `noise`: what every likelihood score is evaluated at.
fn prior_means(engine: &dyn Backend, x: &[f32], noise: Noise) -> Vec<f32> {
    let mut pass = engine
        .weighted_means(x, noise, &[WeightSet::Prior])
        .unwrap();
    pass.sets.swap_remove(0).means
}

fn random_case(n: usize, d: usize, m: usize, seed: u64) -> Case {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let atoms = (0..n * d).map(|_| rng.random_range(-1.0..1.0f32)).collect();
    let matrix = (0..m * d)
        .map(|_| rng.random_range(-1.0..1.0f32) / (d as f32).sqrt())
        .collect();
    Case {
        n,
        d,
        atoms,
        matrix,
        m,
    }
}

fn particles(case: &Case, b: usize, noise: Noise, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let d = case.d;
    (0..b)
        .flat_map(|k| {
            let j = if k % 2 == 0 {
                3
            } else {
                rng.random_range(0..case.n)
            };
            let a: Vec<f32> = case.atoms[j * d..(j + 1) * d].to_vec();
            let sd = noise.v.sqrt();
            // Even rows near atom 3 (the truth), odd rows anywhere (far from y's support).
            (0..d)
                .map(|i| {
                    let e: f64 = rng.sample(rand_distr::StandardNormal);
                    (noise.s * a[i] as f64 + sd * e) as f32
                })
                .collect::<Vec<_>>()
        })
        .collect()
}

fn measurement(case: &Case, op: &dyn Operator, sigma: f64, rng: &mut ChaCha8Rng) -> Vec<f32> {
    let d = case.d;
    let mut y = vec![0.0f32; op.output_len()];
    op.forward(&case.atoms[3 * d..4 * d], &mut y);
    for v in y.iter_mut() {
        *v += (sigma * rng.random_range(-1.0..1.0)) as f32;
    }
    y
}

/// (method, case, x, t, y, σ) → the score rows.
type ScoreFn<'a> = dyn FnMut(&str, &Case, &[f32], f64, &[f32], f64) -> Vec<f32> + 'a;

/// Checks every method's score from `compute(method, x, t, y, σ)` against the float64
/// reference on N = 300, D = 32, m = 8, B = 8, t ∈ {0.05, 0.3, 0.9}, σ ∈ {0.05, 0.5}.
fn check_against_reference(tag: &str, compute: &mut ScoreFn) {
    let case = random_case(300, 32, 8, 41);
    let (d, b) = (case.d, 8);
    let schedule = Schedule::default();
    let op = case.operator(ImageShape::new(1, d, 1), "matrix:test");
    let a = dense_of(&op);
    let atoms64: Vec<f64> = case.atoms.iter().map(|&v| v as f64).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let mut worst = [0.0f64; 4];
    let mut worst_lik = [0.0f64; 4];
    for &t in &[0.05, 0.3, 0.9] {
        for &sigma in &[0.05, 0.5] {
            let noise = schedule.noise(t);
            let y = measurement(&case, &op, sigma, &mut rng);
            let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
            let x = particles(&case, b, noise, &mut rng);
            let reference = Reference {
                atoms: &atoms64,
                d,
                a: &a,
                m: case.m,
                y: &y64,
                sigma,
            };
            for (k, method) in METHODS.iter().enumerate() {
                let got: Vec<f64> = compute(method, &case, &x, t, &y, sigma)
                    .iter()
                    .map(|&v| v as f64)
                    .collect();
                let mut want = Vec::new();
                let mut want_lik = Vec::new();
                let mut prior = Vec::new();
                for row in x.chunks(d) {
                    let x64: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                    let (p, l) = reference.score(method, 1.0, &x64, noise.s, noise.v);
                    want.extend(p.iter().zip(&l).map(|(a, b)| a + b));
                    want_lik.extend(l);
                    prior.extend(p);
                }
                let e = rel(&got, &want);
                assert!(
                    e <= 1e-4,
                    "{tag} {method} t={t} σ={sigma}: relative error {e:.2e} of the score"
                );
                // The likelihood part alone (score minus the reference prior score), which is
                // small beside the prior score when the weights sit on one atom: its error is
                // bounded relative to itself plus float32 rounding of the prior score.
                let got_lik: Vec<f64> = got.iter().zip(&prior).map(|(g, p)| g - p).collect();
                let diff: Vec<f64> = got_lik.iter().zip(&want_lik).map(|(a, b)| a - b).collect();
                let bound = 1e-3 * norm(&want_lik) + 1e-5 * norm(&want);
                assert!(
                    norm(&diff) <= bound,
                    "{tag} {method} t={t} σ={sigma}: likelihood-score error {:.2e} > {bound:.2e} (‖L‖ = {:.2e})",
                    norm(&diff),
                    norm(&want_lik)
                );
                worst[k] = worst[k].max(e);
                if norm(&want_lik) > 1e-3 * norm(&want) {
                    worst_lik[k] = worst_lik[k].max(norm(&diff) / norm(&want_lik));
                }
            }
        }
    }
    for (k, method) in METHODS.iter().enumerate() {
        eprintln!(
            "{tag} {method}: worst relative error of the score {:.2e}, of the likelihood score {:.2e} (where ‖L‖ > 1e-3 ‖score‖)",
            worst[k], worst_lik[k]
        );
    }
}

fn write_f32(path: &Path, shape: &[usize], data: &[f32]) {
    fslens::arrays::write_npy_f32(path, shape, data).unwrap();
}

/// `fslens score` (the library entry of the command) on the CPU backend.
#[test]
fn score_command_matches_float64_design_formulas_on_cpu() {
    let dir = scratch_dir("approx-score");
    let mut written = false;
    check_against_reference("cpu score", &mut |method, case, x, t, y, sigma| {
        let d = case.d;
        if !written {
            write_f32(&dir.join("A.npy"), &[case.n, d], &case.atoms);
            write_f32(&dir.join("M.npy"), &[case.m, d], &case.matrix);
            written = true;
        }
        write_f32(&dir.join("x.npy"), &[x.len() / d, d], x);
        write_f32(&dir.join("y.npy"), &[y.len()], y);
        let req = ScoreRequest {
            atoms: dir.join("A.npy"),
            x: dir.join("x.npy"),
            t,
            method: Method::parse(method).unwrap(),
            y: Some(dir.join("y.npy")),
            operator: Some(format!("matrix:{}", dir.join("M.npy").display())),
            sigma: Some(sigma),
            shape: None,
            engine: EngineChoice {
                backend: BackendKind::Cpu,
                ..Default::default()
            },
            schedule: Schedule::default(),
            options: SamplerOptions::default(),
        };
        let (_, _, scored) = score(&req).unwrap();
        assert!(
            scored.warnings.is_empty(),
            "{method}: {:?}",
            scored.warnings
        );
        scored.values
    });
}

#[test]
fn scores_match_float64_design_formulas_on_gpu() {
    if !have_gpu("scores_match_float64_design_formulas_on_gpu") {
        return;
    }
    let case = random_case(300, 32, 8, 41);
    let gpu =
        fslens::engine::gpu::GpuBackend::new(&case.atoms, case.d, Default::default()).unwrap();
    let op = case.operator(ImageShape::new(1, case.d, 1), "matrix:test");
    let schedule = Schedule::default();
    check_against_reference("gpu", &mut |method, _case, x, t, y, sigma| {
        let ctx = Context {
            backend: &gpu,
            operator: &op,
            y,
            sigma,
        };
        let mut lik = SamplerKind::parse(method)
            .unwrap()
            .likelihood(&SamplerOptions::default())
            .unwrap();
        posterior_score(lik.as_mut(), &ctx, x, schedule.noise(t)).unwrap()
    });
}

/// A measurement map in float64.
type Forward<'a> = &'a dyn Fn(&[f64]) -> Vec<f64>;

/// f(x) = −‖y − A(m(x))‖²/(2σ²) with m(x) the float64 Tweedie mean.
#[allow(clippy::too_many_arguments)]
fn log_likelihood_at_mean(
    atoms: &[f64],
    d: usize,
    x: &[f64],
    s: f64,
    v: f64,
    forward: &dyn Fn(&[f64]) -> Vec<f64>,
    y: &[f32],
    sigma: f64,
) -> f64 {
    let (mean, _) = common::prior_mean_f64(atoms, d, x, s, v);
    let am = forward(&mean);
    -am.iter()
        .zip(y)
        .map(|(a, &yi)| (yi as f64 - a).powi(2))
        .sum::<f64>()
        / (2.0 * sigma * sigma)
}

#[test]
fn sigma_dps_likelihood_is_the_gradient_of_the_gaussian_at_the_mean() {
    let case = random_case(200, 16, 6, 77);
    let d = case.d;
    let shape = ImageShape::new(4, 4, 1);
    let engine = CpuBackend::new(&case.atoms, d).unwrap();
    let atoms64: Vec<f64> = case.atoms.iter().map(|&v| v as f64).collect();
    let dense = case.operator(shape, "m");
    let a = dense_of(&dense);
    let saturation = operators::Saturation::new(shape, 2.0).unwrap();
    let linear = |x: &[f64]| -> Vec<f64> {
        (0..case.m)
            .map(|i| (0..d).map(|j| a[i * d + j] * x[j]).sum())
            .collect()
    };
    let tanh2 = |x: &[f64]| -> Vec<f64> { x.iter().map(|v| (2.0 * v).tanh()).collect() };
    let ops: [(&dyn Operator, Forward); 2] = [(&dense, &linear), (&saturation, &tanh2)];
    let schedule = Schedule::default();
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    for (op, forward) in ops {
        for &t in &[0.15, 0.4, 0.8] {
            let sigma = 0.3;
            let noise = schedule.noise(t);
            let y = measurement(&case, op, sigma, &mut rng);
            let x = particles(&case, 2, noise, &mut rng);
            let ctx = Context {
                backend: &engine,
                operator: op,
                y: &y,
                sigma,
            };
            let pass = engine
                .weighted_means(&x, noise, &[WeightSet::Prior])
                .unwrap();
            let mut lik = samplers::sigma_dps::SigmaDps::default();
            let got = lik
                .likelihood_score(&ctx, &x, &pass.sets[0].means, noise)
                .unwrap();
            for (row, g) in x.chunks(d).zip(got.chunks(d)) {
                let x64: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                let h = 1e-5 * noise.v.sqrt();
                let fd: Vec<f64> = (0..d)
                    .map(|k| {
                        let mut xp = x64.clone();
                        let mut xm = x64.clone();
                        xp[k] += h;
                        xm[k] -= h;
                        let f = |z: &[f64]| {
                            log_likelihood_at_mean(
                                &atoms64, d, z, noise.s, noise.v, forward, &y, sigma,
                            )
                        };
                        (f(&xp) - f(&xm)) / (2.0 * h)
                    })
                    .collect();
                let e = rel(g, &fd);
                assert!(
                    e < 1e-3,
                    "{} t={t}: σ-DPS likelihood score vs finite differences: relative error {e:.2e} (‖fd‖ = {:.2e})",
                    op.spec(),
                    norm(&fd)
                );
            }
        }
    }
}

#[test]
fn zeta_dps_is_sigma_dps_rescaled_by_two_zeta_over_the_residual() {
    let case = random_case(300, 32, 8, 3);
    let d = case.d;
    let engine = CpuBackend::new(&case.atoms, d).unwrap();
    let op = case.operator(ImageShape::new(1, d, 1), "m");
    let mut rng = ChaCha8Rng::seed_from_u64(4);
    let noise = Schedule::default().noise(0.4);
    let y = measurement(&case, &op, 0.1, &mut rng);
    let x = particles(&case, 6, noise, &mut rng);
    let ctx = Context {
        backend: &engine,
        operator: &op,
        y: &y,
        sigma: 0.1,
    };
    let means = prior_means(&engine, &x, noise);
    let sigma_dps = samplers::sigma_dps::SigmaDps::default()
        .likelihood_score(&ctx, &x, &means, noise)
        .unwrap();
    let zeta = 0.37;
    let zeta_dps = samplers::zeta_dps::ZetaDps::new(zeta)
        .likelihood_score(&ctx, &x, &means, noise)
        .unwrap();
    let r = residuals(&ctx, &means);
    for b in 0..6 {
        let rn = norm(&r[b * case.m..(b + 1) * case.m]);
        let want: Vec<f64> = sigma_dps[b * d..(b + 1) * d]
            .iter()
            .map(|v| 2.0 * zeta / rn * v)
            .collect();
        let e = rel(&zeta_dps[b * d..(b + 1) * d], &want);
        assert!(e < 1e-12, "row {b}: {e}");
    }
    // ζ is checked once, with the sampler options (the run plan and `score` call it).
    let options = |zeta| SamplerOptions {
        zeta,
        ..Default::default()
    };
    let key = |k: &str| format!("sampling.{k}");
    assert!(options(0.0).validate(&key).is_err());
    assert!(options(f64::NAN).validate(&key).is_err());
}

#[test]
fn tmpd_dense_and_cg_solves_agree() {
    let case = random_case(400, 64, 12, 11);
    let d = case.d;
    let engine = CpuBackend::new(&case.atoms, d).unwrap();
    let op = case.operator(ImageShape::new(8, 8, 1), "m");
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    for &t in &[0.1, 0.5, 0.95] {
        let noise = Schedule::default().noise(t);
        let y = measurement(&case, &op, 0.1, &mut rng);
        let x = particles(&case, 16, noise, &mut rng);
        let ctx = Context {
            backend: &engine,
            operator: &op,
            y: &y,
            sigma: 0.1,
        };
        let means = prior_means(&engine, &x, noise);
        let tight = CgOptions {
            tolerance: 1e-8,
            max_iterations: 200,
        };
        let mut dense = samplers::tmpd::Tmpd::new(tight);
        dense.solver = samplers::tmpd::TmpdSolver::Dense;
        let t0 = std::time::Instant::now();
        let a = dense.likelihood_score(&ctx, &x, &means, noise).unwrap();
        let dense_time = t0.elapsed();
        let mut cg = samplers::tmpd::Tmpd::new(tight);
        cg.solver = samplers::tmpd::TmpdSolver::Cg;
        let t0 = std::time::Instant::now();
        let b = cg.likelihood_score(&ctx, &x, &means, noise).unwrap();
        let cg_time = t0.elapsed();
        let mut auto = samplers::tmpd::Tmpd::new(tight);
        let c = auto.likelihood_score(&ctx, &x, &means, noise).unwrap();
        let diff: Vec<f64> = a.iter().zip(&c).map(|(p, q)| p - q).collect();
        assert!(
            norm(&diff) <= 1e-4 * norm(&a) + 1e-12,
            "t={t}: auto (capped CG + dense) vs dense: {:.2e}",
            norm(&diff) / norm(&a)
        );
        assert_eq!(auto.cg_stats().solves + auto.dense_solves(), 16);
        assert_eq!(auto.cg_stats().not_converged, 0);
        assert_eq!(dense.dense_solves(), 16);
        if t > 0.3 {
            // One CG iteration cannot solve these: most rows fall back to dense, and the
            // next calls go dense directly.
            let one = CgOptions {
                tolerance: 1e-12,
                max_iterations: 1,
            };
            let mut forced = samplers::tmpd::Tmpd::new(one);
            let f1 = forced.likelihood_score(&ctx, &x, &means, noise).unwrap();
            assert!(forced.dense_solves() > 8, "{}", forced.dense_solves());
            assert_eq!(forced.dense_streak(), samplers::tmpd::DENSE_STREAK);
            let f2 = forced.likelihood_score(&ctx, &x, &means, noise).unwrap();
            assert_eq!(forced.dense_streak(), samplers::tmpd::DENSE_STREAK - 1);
            assert!(forced.dense_solves() >= 24);
            for f in [f1, f2] {
                let diff: Vec<f64> = a.iter().zip(&f).map(|(p, q)| p - q).collect();
                assert!(
                    norm(&diff) <= 1e-4 * norm(&a),
                    "t={t}: forced fallback vs dense"
                );
            }
        }
        let stats = cg.cg_stats();
        assert_eq!(stats.solves, 16);
        assert_eq!(stats.not_converged, 0, "{stats:?}");
        // At small t the weights sit on one atom and C (so the score) can vanish entirely.
        let diff: Vec<f64> = a.iter().zip(&b).map(|(p, q)| p - q).collect();
        let e = norm(&diff) / norm(&a).max(1e-300);
        assert!(
            norm(&diff) <= 1e-4 * norm(&a) + 1e-12,
            "t={t}: CG vs dense TMPD likelihood: {e:.2e} (‖dense‖ = {:.2e})",
            norm(&a)
        );
        eprintln!(
            "t={t}: tmpd m={} dense {:?} ({} pass) vs CG {:?} ({} passes, mean {:.1} iterations, max {}), relative difference {e:.1e}, ‖L‖ = {:.2e}",
            case.m,
            dense_time,
            dense.passes(),
            cg_time,
            cg.passes(),
            stats.iterations as f64 / stats.solves as f64,
            stats.max_iterations,
            norm(&a)
        );
    }
}

#[test]
fn pigdm_diagonal_fast_path_matches_the_dense_formula() {
    // Block averaging by 2 on 8×8 images: A Aᵀ = I/4, so Σ_y is diagonal.
    let case = random_case(300, 64, 1, 21);
    let d = case.d;
    let shape = ImageShape::new(8, 8, 1);
    let op = operators::Downsample::new(shape, 2).unwrap();
    assert!(matches!(op.gram(), operators::Gram::ScaledIdentity(c) if (c - 0.25).abs() < 1e-12));
    let a = dense_of(&op);
    let m = op.output_len();
    let engine = CpuBackend::new(&case.atoms, d).unwrap();
    let atoms64: Vec<f64> = case.atoms.iter().map(|&v| v as f64).collect();
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    for &t in &[0.2, 0.6] {
        let noise = Schedule::default().noise(t);
        let y = measurement(&case, &op, 0.05, &mut rng);
        let y64: Vec<f64> = y.iter().map(|&v| v as f64).collect();
        let x = particles(&case, 4, noise, &mut rng);
        let ctx = Context {
            backend: &engine,
            operator: &op,
            y: &y,
            sigma: 0.05,
        };
        let reference = Reference {
            atoms: &atoms64,
            d,
            a: &a,
            m,
            y: &y64,
            sigma: 0.05,
        };
        for method in ["pigdm", "tmpd"] {
            let mut lik = SamplerKind::parse(method)
                .unwrap()
                .likelihood(&SamplerOptions::default())
                .unwrap();
            let got = posterior_score(lik.as_mut(), &ctx, &x, noise).unwrap();
            if method == "pigdm" {
                assert!(lik.solve_stats().is_none(), "the diagonal path needs no CG");
            }
            for (row, g) in x.chunks(d).zip(got.chunks(d)) {
                let x64: Vec<f64> = row.iter().map(|&v| v as f64).collect();
                let (p, l) = reference.score(method, 1.0, &x64, noise.s, noise.v);
                let want: Vec<f64> = p.iter().zip(&l).map(|(a, b)| a + b).collect();
                let g64: Vec<f64> = g.iter().map(|&v| v as f64).collect();
                let e = rel(&g64, &want);
                assert!(e < 1e-4, "{method} t={t}: {e:.2e}");
            }
        }
    }
}

/// A small synthetic problem: 200 atoms of 4×4 images in two clusters.
struct Small {
    atoms: Vec<f32>,
    d: usize,
}

fn small() -> Small {
    let d = 16;
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let centres: Vec<Vec<f32>> = (0..2)
        .map(|_| (0..d).map(|_| rng.random_range(-0.8..0.8)).collect())
        .collect();
    let atoms = (0..200)
        .flat_map(|i| {
            centres[i % 2]
                .iter()
                .map(|&c| c + rng.random_range(-0.15..0.15f32))
                .collect::<Vec<_>>()
        })
        .collect();
    Small { atoms, d }
}

fn run_sampler(name: &str, op: &dyn Operator, data: &Small) -> fslens::Result<samplers::Run> {
    let mut engine = CpuBackend::new(&data.atoms, data.d).unwrap();
    let d = data.d;
    let sigma = 0.1;
    let mut y = vec![0.0f32; op.output_len()];
    op.forward(&data.atoms[..d], &mut y);
    let measured = operators::measure_atoms(op, &data.atoms);
    let b = operators::log_likelihoods(&measured, &y, sigma).unwrap();
    let posterior = engine.add_bias(&b).unwrap();
    let problem = Problem {
        backend: &engine,
        atoms: &data.atoms,
        dim: d,
        log_likelihoods: &b,
        posterior,
        operator: op,
        y: &y,
        sigma,
        schedule: Schedule::default(),
    };
    let settings = Settings {
        particles: 12,
        steps: 40,
        t_min: 1e-3,
        seed: 5,
        checkpoints: vec![0.5, 0.1],
        integrator: Default::default(),
        dps_update: false,
    };
    let sampler = SamplerKind::parse(name)?.build(&SamplerOptions::default());
    assert_eq!(sampler.name(), name);
    sampler.sample(&problem, &settings, &mut |_| {})
}

#[test]
fn every_sampler_runs_end_to_end_with_finite_samples() {
    let data = small();
    let shape = ImageShape::new(4, 4, 1);
    let boxed = operators::box_inpainting(shape, 1, 1, 2, 2).unwrap();
    let projection = operators::gaussian_projection(shape, 6, 0).unwrap();
    for op in [&boxed as &dyn Operator, &projection] {
        for &(name, _) in SamplerKind::NAMES {
            let run = run_sampler(name, op, &data).unwrap();
            assert_eq!(run.samples.len(), 12 * data.d);
            assert!(
                run.samples.iter().all(|v| v.is_finite()),
                "{name} on {}: non-finite samples",
                op.spec()
            );
            assert_eq!(run.snapshots.len(), 2, "{name}");
            if matches!(name, "sigma-dps" | "zeta-dps" | "pigdm") {
                assert_eq!(run.passes_per_step, 2.0, "{name} on {}", op.spec());
            }
            if name == "tmpd" {
                // Prior pass, C·g pass, and at least one CG or dense pass.
                assert!(run.passes_per_step >= 3.0, "{name} on {}", op.spec());
                assert!(run.warnings.is_empty(), "{:?}", run.warnings);
            }
            if name == "pigdm" && op.spec().starts_with("projection") {
                let keys: Vec<&str> = run.diagnostics.iter().map(|(k, _)| k.as_str()).collect();
                assert!(keys.contains(&"cg_iterations_mean"), "{keys:?}");
                let nc = run
                    .diagnostics
                    .iter()
                    .find(|(k, _)| k == "cg_not_converged")
                    .unwrap()
                    .1;
                assert_eq!(nc, 0.0);
                assert!(run.warnings.is_empty());
            }
            eprintln!(
                "{name} on {}: passes/step {:.2}, diagnostics {:?}",
                op.spec(),
                run.passes_per_step,
                run.diagnostics
            );
        }
    }
}

#[test]
fn pigdm_and_tmpd_refuse_nonlinear_operators_before_any_work() {
    let data = small();
    let shape = ImageShape::new(4, 4, 1);
    let saturation = operators::Saturation::new(shape, 2.0).unwrap();
    for name in ["pigdm", "tmpd"] {
        let err = run_sampler(name, &saturation, &data).unwrap_err();
        let text = err.to_string();
        assert!(
            text.contains("sampling.samplers")
                && text.contains(name)
                && text.contains("saturation"),
            "{text}"
        );
        assert!(
            SamplerKind::parse(name)
                .unwrap()
                .check_operator(&saturation)
                .is_err()
        );
    }
    for name in ["sigma-dps", "zeta-dps"] {
        let run = run_sampler(name, &saturation, &data).unwrap();
        assert!(run.samples.iter().all(|v| v.is_finite()));
    }
    // The score command refuses too, naming the method.
    let dir = scratch_dir("approx-refuse");
    let d = data.d;
    write_f32(&dir.join("A.npy"), &[200, d], &data.atoms);
    write_f32(&dir.join("x.npy"), &[1, d], &data.atoms[..d]);
    write_f32(&dir.join("y.npy"), &[d], &data.atoms[..d]);
    let req = ScoreRequest {
        atoms: dir.join("A.npy"),
        x: dir.join("x.npy"),
        t: 0.5,
        method: Method::Posterior(SamplerKind::Tmpd),
        y: Some(dir.join("y.npy")),
        operator: Some("saturation:gain=2".into()),
        sigma: Some(0.1),
        shape: None,
        engine: EngineChoice {
            backend: BackendKind::Cpu,
            ..Default::default()
        },
        schedule: Schedule::default(),
        options: SamplerOptions::default(),
    };
    let text = score(&req).unwrap_err().to_string();
    assert!(
        text.contains("tmpd") && text.contains("nonlinear"),
        "{text}"
    );
}

#[test]
fn score_binary_takes_the_new_methods_and_zeta() {
    let case = random_case(50, 16, 4, 9);
    let dir = scratch_dir("approx-bin");
    let d = case.d;
    write_f32(&dir.join("A.npy"), &[case.n, d], &case.atoms);
    write_f32(&dir.join("M.npy"), &[case.m, d], &case.matrix);
    write_f32(&dir.join("x.npy"), &[2, d], &case.atoms[..2 * d]);
    let op = case.operator(ImageShape::new(4, 4, 1), "m");
    let mut y = vec![0.0f32; case.m];
    op.forward(&case.atoms[5 * d..6 * d], &mut y);
    write_f32(&dir.join("y.npy"), &[case.m], &y);
    // Relative paths: the binary runs in `dir`.
    let in_dir = |args: &[&str]| {
        let mut cmd = fslens_command(args);
        cmd.current_dir(&dir);
        cmd
    };
    let score = |method: &str, extra: &[&str], out: &str| {
        let mut args = vec![
            "score", "--atoms", "A.npy", "--x", "x.npy", "--t", "0.5", "--method", method,
        ];
        args.extend_from_slice(extra);
        args.extend_from_slice(&["--backend", "cpu", "--out", out, "--quiet"]);
        common::succeeds(&mut in_dir(&args));
        fslens::arrays::read_npy(&dir.join(out)).unwrap().data
    };
    let run = |method: &str, zeta: &str, out: &str| {
        let measured = [
            "--zeta",
            zeta,
            "--y",
            "y.npy",
            "--operator",
            "matrix:M.npy",
            "--sigma",
            "0.2",
        ];
        score(method, &measured, out)
    };
    let prior = score("prior", &[], "p.npy");
    let z1 = run("zeta-dps", "1", "z1.npy");
    let z2 = run("zeta-dps", "2.5", "z2.npy");
    // The likelihood part scales linearly in ζ.
    let l1: Vec<f64> = z1.iter().zip(&prior).map(|(a, b)| a - b).collect();
    let l2: Vec<f64> = z2.iter().zip(&prior).map(|(a, b)| (a - b) / 2.5).collect();
    assert!(norm(&l1) > 0.0);
    assert!(rel(&l2, &l1) < 1e-3, "{}", rel(&l2, &l1));
    for m in ["sigma-dps", "pigdm", "tmpd"] {
        assert!(run(m, "1", "o.npy").iter().all(|v| v.is_finite()));
    }
    common::fails(
        &mut in_dir(&[
            "score", "--atoms", "A.npy", "--x", "x.npy", "--t", "0.5", "--method", "dps", "--out",
            "o.npy",
        ]),
        &["--method", "tmpd"],
    );
}

#[test]
fn all_samplers_config_parses() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("assets/configs/fashion-mnist-all-samplers.toml");
    let cfg = fslens::config::RunConfig::load(&path).unwrap();
    assert_eq!(
        cfg.sampling.samplers,
        SamplerKind::all().collect::<Vec<_>>()
    );
    assert_eq!(cfg.sampling.zeta, 1.0);
    assert_eq!(cfg.sampling.steps, 500);
    let mut bad = cfg.clone();
    bad.sampling.zeta = -1.0;
    assert!(
        RunPlan::new(bad, Path::new("."), Overrides::default())
            .unwrap_err()
            .to_string()
            .contains("sampling.zeta")
    );
    let mut bad = cfg;
    bad.sampling.cg_max_iterations = 0;
    assert!(
        RunPlan::new(bad, Path::new("."), Overrides::default())
            .unwrap_err()
            .to_string()
            .contains("sampling.cg_max_iterations")
    );
}

/// Timing of one score evaluation per method on Fashion-MNIST (first 10000 training images,
/// B = 64, D = 784), and TMPD's dense vs CG solve at several m. Run by hand:
/// `cargo test --release --test approximate_samplers -- --ignored --nocapture step_timing`.
#[test]
#[ignore]
fn step_timing_on_fashion_mnist() {
    let dir = std::env::var_os("FSLENS_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(fslens::data::spec::default_fashion_mnist_dir);
    let Ok(mut data) = fslens::data::idx::fashion_mnist(&dir, false) else {
        eprintln!("Fashion-MNIST not found in {}: skipped", dir.display());
        return;
    };
    let n = 10000;
    let d = data.dim();
    data.images.truncate(n * d);
    let shape = data.shape;
    let engine = CpuBackend::new(&data.images, d).unwrap();
    let test = fslens::data::idx::fashion_mnist(&dir, true).unwrap();
    let truth = &test.images[..d];
    let b = 64;
    let schedule = Schedule::default();
    let boxed = operators::box_inpainting(shape, 7, 7, 14, 14).unwrap();
    let time = |f: &mut dyn FnMut()| {
        let t0 = std::time::Instant::now();
        f();
        t0.elapsed().as_secs_f64()
    };
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    for &t in &[0.8, 0.3, 0.05] {
        let noise = schedule.noise(t);
        let x: Vec<f32> = (0..b * d)
            .map(|i| {
                let e: f64 = rng.sample(rand_distr::StandardNormal);
                (noise.s * truth[i % d] as f64 + noise.v.sqrt() * e) as f32
            })
            .collect();
        let sigma = 0.05;
        let mut y = vec![0.0f32; boxed.output_len()];
        boxed.forward(truth, &mut y);
        let measured = operators::measure_atoms(&boxed, &data.images);
        let bias = operators::log_likelihoods(&measured, &y, sigma).unwrap();
        let mut eng2 = CpuBackend::new(&data.images, d).unwrap();
        let post = eng2.add_bias(&bias).unwrap();
        // Warm up the thread pool and caches.
        fslens::samplers::score::tweedie_score(&eng2, &x, noise, WeightSet::Biased(post)).unwrap();
        let fsr = time(&mut || {
            fslens::samplers::score::tweedie_score(&eng2, &x, noise, WeightSet::Biased(post))
                .unwrap();
        });
        eprintln!("t={t} B={b} N={n} D={d}: fsr {fsr:.4} s");
        let ctx = Context {
            backend: &engine,
            operator: &boxed,
            y: &y,
            sigma,
        };
        for method in METHODS {
            let mut lik = SamplerKind::parse(method)
                .unwrap()
                .likelihood(&SamplerOptions::default())
                .unwrap();
            let s = time(&mut || {
                posterior_score(lik.as_mut(), &ctx, &x, noise).unwrap();
            });
            let extra = lik
                .solve_stats()
                .map(|st| {
                    format!(
                        " (CG mean {:.1} iterations, max {}, not converged {})",
                        st.iterations as f64 / st.solves as f64,
                        st.max_iterations,
                        st.not_converged
                    )
                })
                .unwrap_or_default();
            eprintln!(
                "  {method:<9} box m=588: {s:.4} s = {:.2}× fsr, {} passes{extra}",
                s / fsr,
                lik.passes() + 1
            );
        }
        for m in [8, 16, 32, 64] {
            let op = operators::gaussian_projection(shape, m, 3).unwrap();
            let mut y = vec![0.0f32; m];
            op.forward(truth, &mut y);
            let ctx = Context {
                backend: &engine,
                operator: &op,
                y: &y,
                sigma,
            };
            let pass = engine
                .weighted_means(&x, noise, &[WeightSet::Prior])
                .unwrap();
            let means = &pass.sets[0].means;
            let mut dense = samplers::tmpd::Tmpd::new(CgOptions::default());
            dense.solver = samplers::tmpd::TmpdSolver::Dense;
            let td = time(&mut || {
                dense.likelihood_score(&ctx, &x, means, noise).unwrap();
            });
            let mut cg = samplers::tmpd::Tmpd::new(CgOptions::default());
            cg.solver = samplers::tmpd::TmpdSolver::Cg;
            let tc = time(&mut || {
                cg.likelihood_score(&ctx, &x, means, noise).unwrap();
            });
            let mut auto = samplers::tmpd::Tmpd::new(CgOptions::default());
            let ta = time(&mut || {
                auto.likelihood_score(&ctx, &x, means, noise).unwrap();
            });
            let st = cg.cg_stats();
            eprintln!(
                "  tmpd projection m={m}: dense {td:.4} s, CG {tc:.4} s (mean {:.1} iterations, max {}), auto {ta:.4} s ({} dense fallbacks)",
                st.iterations as f64 / st.solves as f64,
                st.max_iterations,
                auto.dense_solves()
            );
        }
    }
}

/// The cost of the passes a σ-DPS step is made of, beside an fsr step, on Fashion-MNIST
/// (10000 atoms, B = 64, CPU). Run by hand with `-- --ignored --nocapture pass_costs`.
#[test]
#[ignore]
fn pass_costs_on_fashion_mnist() {
    let dir = std::env::var_os("FSLENS_FASHION_MNIST")
        .map(PathBuf::from)
        .unwrap_or_else(fslens::data::spec::default_fashion_mnist_dir);
    let Ok(mut data) = fslens::data::idx::fashion_mnist(&dir, false) else {
        eprintln!("Fashion-MNIST not found in {}: skipped", dir.display());
        return;
    };
    let (n, b) = (10000, 64);
    let d = data.dim();
    data.images.truncate(n * d);
    let test = fslens::data::idx::fashion_mnist(&dir, true).unwrap();
    let truth = &test.images[..d];
    let boxed = operators::box_inpainting(data.shape, 7, 7, 14, 14).unwrap();
    let mut y = vec![0.0f32; boxed.output_len()];
    boxed.forward(truth, &mut y);
    let measured = operators::measure_atoms(&boxed, &data.images);
    let bias = operators::log_likelihoods(&measured, &y, 0.05).unwrap();
    let mut engine = CpuBackend::new(&data.images, d).unwrap();
    let post = engine.add_bias(&bias).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(1);
    let best = |f: &mut dyn FnMut()| {
        (0..3)
            .map(|_| {
                let t0 = std::time::Instant::now();
                f();
                t0.elapsed().as_secs_f64()
            })
            .fold(f64::INFINITY, f64::min)
    };
    for &t in &[0.8, 0.3, 0.05] {
        let noise = Schedule::default().noise(t);
        let x: Vec<f32> = (0..b * d)
            .map(|i| {
                let e: f64 = rng.sample(rand_distr::StandardNormal);
                (noise.s * truth[i % d] as f64 + noise.v.sqrt() * e) as f32
            })
            .collect();
        let fsr = best(&mut || {
            engine
                .weighted_means(&x, noise, &[WeightSet::Biased(post)])
                .unwrap();
        });
        let prior = best(&mut || {
            engine
                .weighted_means(&x, noise, &[WeightSet::Prior])
                .unwrap();
        });
        let means = prior_means(&engine, &x, noise);
        let g: Vec<f32> = (0..b * d).map(|i| ((i % 7) as f32 - 3.0) * 0.1).collect();
        let cov = best(&mut || {
            engine
                .covariance_products(&x, noise, WeightSet::Prior, &means, &g)
                .unwrap();
        });
        eprintln!(
            "t={t}: fsr pass {fsr:.4} s, prior pass {prior:.4} s, C·g pass {cov:.4} s; σ-DPS/fsr ≈ {:.2}",
            (prior + cov) / fsr
        );
    }
}

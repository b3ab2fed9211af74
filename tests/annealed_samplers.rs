//! DAPS and DiffPIR against float64 re-implementations written here (naive sums over the atoms,
//! dense A, the primal data-step solve by Gaussian elimination), on the CPU backend and on the
//! GPU backend; the same noise (initial N(0, I) from ChaCha8(seed), step noise from
//! ChaCha8(seed + 1) in row-major order); and a sanity check that on an easy problem their
//! final clouds land near the exact posterior.

mod common;

use common::gpu::have_gpu;
use common::{Fixture, prior_mean_f64};
use fslens::data::ImageShape;
use fslens::diffusion::Schedule;
use fslens::diffusion::integrate::Integrator;
use fslens::engine::Backend;
use fslens::engine::cpu::CpuBackend;
use fslens::operators::{self, Operator};
use fslens::samplers::{Problem, SamplerKind, SamplerOptions, Settings};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 20;
const D: usize = 4;
const B: usize = 6;
const SEED: u64 = 17;

/// (s, v) of each state j = 0..=K, computed here: the continuous grid t_k = 1 − k(1 − t_min)/K
/// with ᾱ(t) = exp(−β_min t − ½(β_max − β_min)t²), or the discrete chain's kept levels
/// round(i·999/(K − 1)) of ᾱ_k = Π(1 − β_j) and then the clean state (1, 0).
fn levels(discrete: bool, k: usize, t_min: f64) -> Vec<(f64, f64)> {
    if !discrete {
        return (0..=k)
            .map(|i| {
                let t = if i == k {
                    t_min
                } else {
                    1.0 - i as f64 * (1.0 - t_min) / k as f64
                };
                let ab = (-0.01 * t - 0.5 * 19.99 * t * t).exp();
                (ab.sqrt(), 1.0 - ab)
            })
            .collect();
    }
    let mut cum = Vec::new();
    let mut p = 1.0f64;
    for i in 0..1000 {
        p *= 1.0 - (1e-4 + (0.02 - 1e-4) * i as f64 / 999.0);
        cum.push(p);
    }
    // No ties at K = 5 (stride 249.75 gives 0, 250, 500 (499.5, even), 749, 999).
    let kept: Vec<usize> = (0..k)
        .map(|i| {
            let x = i as f64 * 999.0 / (k - 1) as f64;
            if x.fract() == 0.5 {
                (x.floor() as usize + 1) & !1
            } else {
                x.round() as usize
            }
        })
        .collect();
    let mut out: Vec<(f64, f64)> = kept
        .iter()
        .rev()
        .map(|&l| (cum[l].sqrt(), 1.0 - cum[l]))
        .collect();
    out.push((1.0, 0.0));
    out
}

/// A as a dense m × D float64 matrix (column k = A(e_k)).
fn dense(op: &dyn Operator) -> (Vec<f64>, usize) {
    let m = op.output_len();
    let mut a = vec![0.0; m * D];
    let mut e = vec![0.0f32; D];
    let mut col = vec![0.0f32; m];
    for k in 0..D {
        e.fill(0.0);
        e[k] = 1.0;
        op.forward(&e, &mut col);
        for i in 0..m {
            a[i * D + k] = f64::from(col[i]);
        }
    }
    (a, m)
}

/// Solves the D × D system M x = b by Gaussian elimination with partial pivoting.
fn solve(mut a: Vec<f64>, mut b: Vec<f64>) -> Vec<f64> {
    for c in 0..D {
        let piv = (c..D)
            .max_by(|&i, &j| a[i * D + c].abs().total_cmp(&a[j * D + c].abs()))
            .unwrap();
        for k in 0..D {
            a.swap(c * D + k, piv * D + k);
        }
        b.swap(c, piv);
        for i in c + 1..D {
            let f = a[i * D + c] / a[c * D + c];
            for k in c..D {
                a[i * D + k] -= f * a[c * D + k];
            }
            b[i] -= f * b[c];
        }
    }
    let mut x = vec![0.0; D];
    for i in (0..D).rev() {
        let s: f64 = (i + 1..D).map(|k| a[i * D + k] * x[k]).sum();
        x[i] = (b[i] - s) / a[i * D + i];
    }
    x
}

fn start() -> (Vec<f64>, ChaCha8Rng) {
    let mut rng0 = ChaCha8Rng::seed_from_u64(SEED);
    let x = (0..B * D)
        .map(|_| f64::from(rng0.sample::<f32, _>(rand_distr::StandardNormal)))
        .collect();
    (x, ChaCha8Rng::seed_from_u64(SEED + 1))
}

struct Case<'a> {
    atoms: &'a [f32],
    a: Vec<f64>,
    m: usize,
    y: &'a [f32],
    sigma: f64,
}

impl Case<'_> {
    /// Aᵀ u for u of length m.
    fn at(&self, u: &[f64]) -> Vec<f64> {
        (0..D)
            .map(|k| (0..self.m).map(|i| self.a[i * D + k] * u[i]).sum())
            .collect()
    }
    fn apply(&self, x: &[f64]) -> Vec<f64> {
        (0..self.m)
            .map(|i| (0..D).map(|k| self.a[i * D + k] * x[k]).sum())
            .collect()
    }
}

/// DiffPIR in float64: x̂_0′ = (AᵀA + ρI)⁻¹(Aᵀy + ρ m), ρ = λσ² s²/v, then re-noise.
fn diffpir_reference(c: &Case, lv: &[(f64, f64)], lambda: f64, zeta: f64) -> Vec<f64> {
    let (mut x, mut rng) = start();
    let y: Vec<f64> = c.y.iter().map(|&v| f64::from(v)).collect();
    let aty = c.at(&y);
    for j in 0..lv.len() - 1 {
        let ((s, v), (s2, v2)) = (lv[j], lv[j + 1]);
        let rho = lambda * c.sigma * c.sigma * s * s / v;
        let mut next = vec![0.0; x.len()];
        for (row, out) in x.chunks(D).zip(next.chunks_mut(D)) {
            let (m, _) = prior_mean_f64(c.atoms, D, row, s, v);
            let mut mat = vec![0.0; D * D];
            for p in 0..D {
                for q in 0..D {
                    mat[p * D + q] = (0..c.m).map(|i| c.a[i * D + p] * c.a[i * D + q]).sum();
                }
                mat[p * D + p] += rho;
            }
            let rhs: Vec<f64> = (0..D).map(|k| aty[k] + rho * m[k]).collect();
            let x0 = solve(mat, rhs);
            for k in 0..D {
                let eps = (row[k] - s * x0[k]) / v.sqrt();
                out[k] = s2 * x0[k] + v2.sqrt() * (1.0 - zeta).sqrt() * eps;
            }
        }
        if zeta > 0.0 && v2 > 0.0 {
            for o in next.iter_mut() {
                let z: f64 = rng.sample(rand_distr::StandardNormal);
                *o += (zeta * v2).sqrt() * z;
            }
        }
        x = next;
    }
    x
}

/// DAPS in float64 with the curvature bound `l` of AᵀA: N_L Langevin steps from m at each level.
fn daps_reference(c: &Case, lv: &[(f64, f64)], steps: usize, frac: f64, l: f64) -> Vec<f64> {
    let (mut x, mut rng) = start();
    let s2n = c.sigma * c.sigma;
    for j in 0..lv.len() - 1 {
        let ((s, v), (s2, v2)) = (lv[j], lv[j + 1]);
        let r2 = v / (s * s);
        let eta = frac / (1.0 / r2 + l / s2n);
        let means: Vec<Vec<f64>> = x
            .chunks(D)
            .map(|row| prior_mean_f64(c.atoms, D, row, s, v).0)
            .collect();
        let mut x0: Vec<f64> = means.concat();
        for _ in 0..steps {
            let z: Vec<f64> = (0..x0.len())
                .map(|_| rng.sample(rand_distr::StandardNormal))
                .collect();
            for (b, row) in x0.chunks_mut(D).enumerate() {
                let ax = c.apply(row);
                let r: Vec<f64> =
                    c.y.iter()
                        .zip(&ax)
                        .map(|(&yi, ai)| (f64::from(yi) - ai) / s2n)
                        .collect();
                let g = c.at(&r);
                for k in 0..D {
                    let prior = (row[k] - means[b][k]) / r2;
                    row[k] += eta * (g[k] - prior) + (2.0 * eta).sqrt() * z[b * D + k];
                }
            }
        }
        x = x0.iter().map(|&v0| s2 * v0).collect();
        if v2 > 0.0 {
            for o in x.iter_mut() {
                let z: f64 = rng.sample(rand_distr::StandardNormal);
                *o += v2.sqrt() * z;
            }
        }
    }
    x
}

fn max_err(got: &[f32], want: &[f64]) -> f64 {
    got.iter()
        .zip(want)
        .map(|(&g, &w)| (f64::from(g) - w).abs() / (1.0 + w.abs()))
        .fold(0.0, f64::max)
}

/// Both samplers on every operator kind (closed-form and CG data steps) and both level kinds
/// (continuous grid, discrete chain ending at x̂_0), against the float64 references.
fn check_backend(label: &str, make: &dyn Fn(&[f32]) -> Box<dyn Backend>) {
    let (atoms, _) = common::clustered_atoms(N, D, 3, 2);
    let shape = ImageShape::new(2, 2, 1);
    let here = std::path::Path::new(".");
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let truth: Vec<f32> = atoms[5 * D..6 * D].iter().map(|v| v + 0.05).collect();
    let options = SamplerOptions::default();
    for spec in ["random-pixels:keep=0.5,seed=1", "projection:m=3,seed=4"] {
        let op = operators::parse(spec, shape, here).unwrap();
        let mut y = vec![0.0f32; op.output_len()];
        op.forward(&truth, &mut y);
        y.iter_mut()
            .for_each(|v| *v += 0.1 * rng.sample::<f32, _>(rand_distr::StandardNormal));
        let sigma = 0.1;
        let b = operators::atom_log_likelihoods(op.as_ref(), &atoms, &y, sigma).unwrap();
        let mut engine = make(&atoms);
        let posterior = engine.add_bias(&b).unwrap();
        let problem = Problem {
            backend: engine.as_ref(),
            atoms: &atoms,
            dim: D,
            log_likelihoods: &b,
            posterior,
            operator: op.as_ref(),
            y: &y,
            sigma,
            schedule: Schedule::default(),
        };
        let (a, m) = dense(op.as_ref());
        let case = Case {
            atoms: &atoms,
            a,
            m,
            y: &y,
            sigma,
        };
        for integrator in [Integrator::EulerMaruyama, Integrator::Ddpm] {
            let settings = Settings {
                particles: B,
                steps: 5,
                t_min: 1e-3,
                seed: SEED,
                checkpoints: vec![0.5],
                integrator,
                dps_update: false,
            };
            let lv = levels(integrator.is_discrete(), 5, 1e-3);
            let run = SamplerKind::Diffpir
                .build(&options)
                .sample(&problem, &settings, &mut |_| {})
                .unwrap();
            let want = diffpir_reference(&case, &lv, options.diffpir_lambda, options.diffpir_zeta);
            let e = max_err(&run.samples, &want);
            eprintln!("{label} diffpir {spec} {integrator:?}: max rel error {e:.2e}");
            assert!(e < 1e-4, "{label} diffpir {spec} {integrator:?}: {e}");
            assert_eq!(run.snapshots.len(), 1);
            // DAPS: the mask's AᵀA has λ_max = 1 exactly; the projection's bound is the
            // library's power iteration (checked against the dense matrix below).
            let l = if spec.starts_with("random") {
                1.0
            } else {
                fslens::samplers::daps::curvature_bound(op.as_ref())
            };
            let run = SamplerKind::Daps
                .build(&options)
                .sample(&problem, &settings, &mut |_| {})
                .unwrap();
            let want = daps_reference(
                &case,
                &lv,
                options.daps_langevin_steps,
                options.daps_step,
                l,
            );
            let e = max_err(&run.samples, &want);
            eprintln!("{label} daps {spec} {integrator:?}: max rel error {e:.2e}");
            assert!(e < 1e-3, "{label} daps {spec} {integrator:?}: {e}");
        }
        // The power-iteration bound lies above λ_max(AᵀA) (the largest of A Aᵀ, m × m here,
        // by its own power iteration in float64) and within the 1.2 margin.
        let l = fslens::samplers::daps::curvature_bound(op.as_ref());
        let mut u = vec![1.0; m];
        let mut lam = 0.0;
        for _ in 0..2000 {
            let w: Vec<f64> = case.apply(&case.at(&u));
            let n = w.iter().map(|v| v * v).sum::<f64>().sqrt();
            lam = n / u.iter().map(|v| v * v).sum::<f64>().sqrt();
            u = w.iter().map(|v| v / n).collect();
        }
        assert!(
            l >= lam * (1.0 - 1e-6) && l <= 1.2 * lam * (1.0 + 1e-3),
            "{l} vs {lam}"
        );
    }
}

#[test]
fn daps_and_diffpir_equal_float64_references_on_cpu() {
    check_backend("cpu", &|atoms| Box::new(CpuBackend::new(atoms, D).unwrap()));
}

#[test]
fn daps_and_diffpir_equal_float64_references_on_gpu() {
    if !have_gpu("daps_and_diffpir_equal_float64_references_on_gpu") {
        return;
    }
    check_backend("gpu", &|atoms| {
        Box::new(fslens::engine::gpu::GpuBackend::new(atoms, D, Default::default()).unwrap())
    });
}

/// Nonlinear operators are refused before any work, naming the key.
#[test]
fn nonlinear_operators_are_refused() {
    let op = operators::parse(
        "phase-retrieval:oversample=2",
        ImageShape::new(2, 2, 1),
        std::path::Path::new("."),
    )
    .unwrap();
    for kind in [SamplerKind::Daps, SamplerKind::Diffpir] {
        let e = kind.check_operator(op.as_ref()).unwrap_err().to_string();
        assert!(
            e.contains("sampling.samplers") && e.contains("linear"),
            "{e}"
        );
    }
}

/// On an easy problem (three separated clusters, identity operator, σ = 0.3, y an atom) both
/// land near the exact posterior's class masses.
#[test]
fn daps_and_diffpir_land_near_the_exact_posterior() {
    let (atoms, labels) = common::clustered_atoms(240, 6, 3, 3);
    let d = 6;
    let mut fx = Fixture::new(atoms.clone(), labels, 3, d, vec![0.0; 240]);
    // y = an atom of class 1 (plus nothing): the exact posterior puts most mass on class 1.
    let y: Vec<f32> = atoms[d..2 * d].to_vec();
    let sigma = 0.3;
    let op = operators::parse(
        "identity",
        ImageShape::new(1, d, 1),
        std::path::Path::new("."),
    )
    .unwrap();
    fx.b = operators::atom_log_likelihoods(op.as_ref(), &atoms, &y, sigma).unwrap();
    let mut engine = CpuBackend::new(&atoms, d).unwrap();
    fx.posterior = engine.add_bias(&fx.b).unwrap();
    fx.engine = engine;
    fx.y = y;
    let mut problem = fx.problem();
    problem.sigma = sigma;
    let want = fx.exact_classes();
    for (kind, integrator) in [
        (SamplerKind::Diffpir, Integrator::Ddpm),
        (SamplerKind::Daps, Integrator::Ddpm),
        (SamplerKind::Diffpir, Integrator::EulerMaruyama),
    ] {
        let settings = Settings {
            particles: 1000,
            steps: 200,
            t_min: 1e-3,
            seed: 5,
            checkpoints: vec![],
            integrator,
            dps_update: false,
        };
        let run = SamplerKind::build(kind, &SamplerOptions::default())
            .sample(&problem, &settings, &mut |_| {})
            .unwrap();
        let got = fx.sample_classes(&run.samples);
        let tv = 0.5
            * got
                .iter()
                .zip(&want)
                .map(|(g, w)| (g - w).abs())
                .sum::<f64>();
        eprintln!("{kind:?} on {integrator:?}: classes {got:.3?} vs exact {want:.3?}, TV {tv:.3}");
        assert!(tv < 0.1, "{kind:?}: TV {tv}");
    }
}

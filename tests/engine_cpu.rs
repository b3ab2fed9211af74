//! The CPU backend against the float64 direct-difference reference: random data over a grid of
//! shapes, times and bias sets, and the t = 1e-3 precision cases of design §7 (Fashion-MNIST
//! and near-duplicate atoms).

mod common;

use common::engine::{CacheCase, check_bias_removal, check_pass_cache, random_case};
use common::fashion::first_train_images;
use fslens::diffusion::Schedule;
use fslens::engine::cpu::CpuBackend;
use fslens::engine::reference::ReferenceBackend;
use fslens::engine::{Backend, Noise, WeightSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

/// 8-bit-like atoms: k/127.5 − 1.
fn random_atoms(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f32> {
    (0..n * d)
        .map(|_| rng.random_range(0..256u32) as f32 / 127.5 - 1.0)
        .collect()
}

/// Rows x_b = s a_j + √v ε for random j (even rows) or pure noise-like points (odd rows).
fn particles(rng: &mut ChaCha8Rng, atoms: &[f32], d: usize, b: usize, noise: Noise) -> Vec<f32> {
    let n = atoms.len() / d;
    let mut x = Vec::with_capacity(b * d);
    for row in 0..b {
        let j = rng.random_range(0..n);
        for k in 0..d {
            let base = if row % 2 == 0 {
                noise.s * atoms[j * d + k] as f64
            } else {
                0.3 * normal(rng)
            };
            x.push((base + noise.v.sqrt() * normal(rng)) as f32);
        }
    }
    x
}

/// b_i = −‖M(y − a_i)‖²/(2σ²) for the mask M keeping coordinates with `keep(k)`, y = M a_j + σ η.
fn mask_bias(
    rng: &mut ChaCha8Rng,
    atoms: &[f32],
    d: usize,
    sigma: f64,
    keep: &dyn Fn(usize) -> bool,
) -> Vec<f64> {
    let n = atoms.len() / d;
    let j = rng.random_range(0..n);
    let y: Vec<f64> = (0..d)
        .map(|k| atoms[j * d + k] as f64 + sigma * normal(rng))
        .collect();
    (0..n)
        .map(|i| {
            let r2: f64 = (0..d)
                .filter(|&k| keep(k))
                .map(|k| (y[k] - atoms[i * d + k] as f64).powi(2))
                .sum();
            -r2 / (2.0 * sigma * sigma)
        })
        .collect()
}

fn max_abs_diff(a: &[f64], b: &[f64]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(x, y)| (x - y).abs())
        .fold(0.0, f64::max)
}

#[test]
fn matches_reference_on_random_data() {
    let schedule = Schedule::default();
    let mut rng = ChaCha8Rng::seed_from_u64(20261127);
    // (N, D, B, chunk, row block): B = 1, B not a multiple of any block, several row blocks;
    // chunk 0 = the backend's default blocking (512-atom chunks above 64 rows).
    let shapes = [
        (257, 16, 1, 64, 256),
        (600, 33, 7, 50, 4),
        (1000, 64, 19, 128, 8),
        // Image-sized rows, where the float32 expansion error is largest (design §7).
        (1200, 784, 5, 256, 256),
        (1100, 20, 70, 0, 0),
    ];
    for &(n, d, b, chunk, row_block) in &shapes {
        let atoms = random_atoms(&mut rng, n, d);
        let mut cpu = CpuBackend::new(&atoms, d).unwrap();
        if chunk > 0 {
            cpu = cpu.with_blocking(chunk, row_block).unwrap();
        }
        let mut reference = ReferenceBackend::new(&atoms, d).unwrap();
        let mut sets = vec![WeightSet::Prior];
        for sigma in [0.05, 0.5] {
            let bias = mask_bias(&mut rng, &atoms, d, sigma, &|k| k % 3 != 0);
            let id = cpu.add_bias(&bias).unwrap();
            assert_eq!(reference.add_bias(&bias).unwrap(), id);
            sets.push(WeightSet::Biased(id));
        }
        for &t in &[1e-3, 0.05, 0.3, 0.9, 1.0] {
            let noise = schedule.noise(t);
            let x = particles(&mut rng, &atoms, d, b, noise);
            let got = cpu.weighted_means(&x, noise, &sets).unwrap();
            let want = reference.weighted_means(&x, noise, &sets).unwrap();
            let ctx = format!("N={n} D={d} B={b} t={t}");
            for (k, (g, w)) in got.sets.iter().zip(&want.sets).enumerate() {
                for (j, (gm, wm)) in g.means.iter().zip(&w.means).enumerate() {
                    assert!(
                        (gm - wm).abs() <= 5e-6,
                        "{ctx} set {k} mean[{j}]: {gm} vs {wm}"
                    );
                }
                for (row, (gs, ws)) in g.stats.iter().zip(&w.stats).enumerate() {
                    // log Z with the bias as registered on both sides (no shift to undo).
                    let ln = gs.log_norm;
                    assert!(
                        (ln - ws.log_norm).abs() <= 1e-6 * ws.log_norm.abs().max(1.0) + 1e-4,
                        "{ctx} set {k} row {row} log_norm {ln} vs {}",
                        ws.log_norm
                    );
                    assert!(
                        (gs.ess / ws.ess - 1.0).abs() <= 1e-5,
                        "{ctx} set {k} row {row} ess {} vs {}",
                        gs.ess,
                        ws.ess
                    );
                    assert!(
                        (gs.max_weight - ws.max_weight).abs() <= 1e-5,
                        "{ctx} set {k} row {row} max weight {} vs {}",
                        gs.max_weight,
                        ws.max_weight
                    );
                    assert!(
                        (gs.entropy - ws.entropy).abs() <= 1e-4,
                        "{ctx} set {k} row {row} entropy {} vs {}",
                        gs.entropy,
                        ws.entropy
                    );
                }
            }
            for (row, (g, w)) in got.nearest.iter().zip(&want.nearest).enumerate() {
                assert_eq!(g.index, w.index, "{ctx} row {row} nearest");
                assert!(
                    (g.dist2 - w.dist2).abs() <= 1e-12 * w.dist2.max(1e-300) + 1e-15,
                    "{ctx} row {row} nearest dist2 {} vs {}",
                    g.dist2,
                    w.dist2
                );
            }
            // C·g with the backend's own means, for the prior and the σ = 0.05 posterior.
            let g: Vec<f32> = (0..b * d).map(|_| normal(&mut rng) as f32).collect();
            for (k, &set) in [sets[0], sets[1]].iter().enumerate() {
                let cg = cpu
                    .covariance_products(&x, noise, set, &got.sets[k].means, &g)
                    .unwrap();
                let want = reference
                    .covariance_products(&x, noise, set, &want.sets[k].means, &g)
                    .unwrap();
                for row in 0..b {
                    let r = row * d..(row + 1) * d;
                    let norm: f64 = want[r.clone()].iter().map(|&v| (v as f64).powi(2)).sum();
                    let diff: f64 = cg[r.clone()]
                        .iter()
                        .zip(&want[r.clone()])
                        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
                        .sum();
                    let gnorm: f64 = g[r].iter().map(|&v| (v as f64).powi(2)).sum();
                    // Relative 1e-4, plus an absolute floor for rows whose C is ~0 (one atom
                    // holds all the weight): float32 ⟨a,g⟩ is good to ~1e-6·‖a‖‖g‖.
                    assert!(
                        diff.sqrt() <= 1e-4 * norm.sqrt() + 1e-5 * gnorm.sqrt(),
                        "{ctx} set {k} row {row} C·g error {} vs norm {}",
                        diff.sqrt(),
                        norm.sqrt()
                    );
                }
            }
        }
    }
}

/// The seeded random cases of the GPU file on the CPU backend: the same body and the same
/// tolerance model (`common::engine`), against the float64 reference.
#[test]
fn random_cases_meet_the_shared_tolerance_model() {
    for (seed, n) in [(1, 150), (2, 150), (6, 9000)] {
        random_case(&format!("cpu random N={n}"), n, seed, &|atoms, d| {
            (Box::new(CpuBackend::new(atoms, d).unwrap()), atoms.to_vec())
        });
    }
}

/// Removing a bias (a dropped posterior) frees it, refuses its id from then on, and leaves
/// the other biases' results bit for bit as they were (body shared with the GPU backend).
#[test]
fn removed_biases_are_refused_and_the_others_unchanged() {
    check_bias_removal("cpu", &|atoms, d| {
        (Box::new(CpuBackend::new(atoms, d).unwrap()), atoms.to_vec())
    });
}

/// The pass-cache contract (module `cpu::weight_cache`: C·g right after a prior pass reuses
/// that pass's weights), by the body shared with the GPU backend: the same C·g as the float64
/// reference and the full recomputation, also for a gathered subset of the rows, and never
/// the kept weights at another noise level or on other particles.
#[test]
fn kept_prior_weights_give_the_same_covariance_products() {
    let schedule = Schedule::default();
    let mut rng = ChaCha8Rng::seed_from_u64(77);
    for &(n, d, b) in &[(900, 48, 12), (1500, 784, 70)] {
        let atoms = random_atoms(&mut rng, n, d);
        let mut kept = CpuBackend::new(&atoms, d).unwrap();
        let mut full = CpuBackend::new(&atoms, d).unwrap().with_weight_cache(0);
        let mut reference = ReferenceBackend::new(&atoms, d).unwrap();
        let bias = mask_bias(&mut rng, &atoms, d, 0.5, &|k| k % 3 != 0);
        let id = kept.add_bias(&bias).unwrap();
        assert_eq!(full.add_bias(&bias).unwrap(), id);
        assert_eq!(reference.add_bias(&bias).unwrap(), id);
        for &t in &[1e-3, 0.05, 0.3, 0.9] {
            let noise = schedule.noise(t);
            let x = particles(&mut rng, &atoms, d, b, noise);
            let other = particles(&mut rng, &atoms, d, b, noise);
            let g: Vec<f32> = (0..b * d).map(|_| normal(&mut rng) as f32).collect();
            let case = CacheCase {
                label: format!("cpu N={n} D={d} B={b} t={t}"),
                x: &x,
                other: &other,
                noise,
                other_noise: schedule.noise(t * 0.5 + 0.05),
                g: &g,
            };
            let sets = [WeightSet::Prior, WeightSet::Biased(id)];
            check_pass_cache(&kept, &full, &reference, &sets, &case, false);
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    assert!(CpuBackend::new(&[1.0, 2.0, 3.0], 2).is_err());
    assert!(CpuBackend::new(&[], 2).is_err());
    assert!(CpuBackend::new(&[1.0, f32::NAN], 2).is_err());
    let mut cpu = CpuBackend::new(&[0.0, 1.0, 1.0, 0.0], 2).unwrap();
    assert!(cpu.add_bias(&[0.0]).is_err());
    assert!(cpu.add_bias(&[0.0, f64::NEG_INFINITY]).is_err());
    let noise = Noise { s: 0.9, v: 0.1 };
    assert!(
        cpu.weights(&[0.0, 0.0, 1.0, 1.0], noise, WeightSet::Prior)
            .is_err()
    );
    assert!(
        cpu.weighted_means(&[0.0, 0.0, 1.0], noise, &[WeightSet::Prior])
            .is_err()
    );
    assert!(
        cpu.weighted_means(&[0.0, 0.0], Noise { s: 0.9, v: 0.0 }, &[WeightSet::Prior])
            .is_err()
    );
    assert!(
        cpu.weighted_means(
            &[0.0, 0.0],
            noise,
            &[WeightSet::Biased(fslens::engine::BiasId(3))]
        )
        .is_err()
    );
    assert!(
        cpu.covariance_products(&[0.0, 0.0], noise, WeightSet::Prior, &[0.0], &[0.0, 0.0])
            .is_err()
    );
}

// ---- design §7: precision at t = 1e-3 --------------------------------------------------------

/// The expansion alone, float32 as a plain implementation would do it: ‖x‖² − 2s⟨x,a⟩ + s²‖a‖².
fn naive_weights(
    atoms: &[f32],
    d: usize,
    x: &[f32],
    noise: Noise,
    bias: Option<&[f64]>,
) -> Vec<f64> {
    let s = noise.s as f32;
    let xn: f32 = x.iter().map(|v| v * v).sum();
    let l: Vec<f64> = atoms
        .chunks(d)
        .enumerate()
        .map(|(i, a)| {
            let an: f32 = a.iter().map(|v| v * v).sum();
            let dot: f32 = a.iter().zip(x).map(|(a, x)| a * x).sum();
            let d2 = xn - 2.0 * s * dot + s * s * an;
            -(d2 as f64) / (2.0 * noise.v) + bias.map_or(0.0, |b| b[i])
        })
        .collect();
    let m = l.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = l.iter().map(|&v| (v - m).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

/// Checks prior and σ = 0.05 posterior weights at t = 1e-3 against the float64 reference on
/// rows x = s a_j + √v ε; returns the worst |Δw| of the naive expansion on the same rows.
fn check_small_t(atoms: &[f32], d: usize, targets: &[usize], seed: u64) -> f64 {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let noise = Schedule::default().noise(1e-3);
    let mut cpu = CpuBackend::new(atoms, d).unwrap();
    let mut reference = ReferenceBackend::new(atoms, d).unwrap();
    // Inpainting: the measurement sees everything outside a central box.
    let side = (d as f64).sqrt() as usize;
    let keep = |k: usize| {
        let (r, c) = (k / side, k % side);
        !((side / 4..3 * side / 4).contains(&r) && (side / 4..3 * side / 4).contains(&c))
    };
    let bias = mask_bias(&mut rng, atoms, d, 0.05, &keep);
    let id = cpu.add_bias(&bias).unwrap();
    reference.add_bias(&bias).unwrap();
    let mut naive_worst = 0.0f64;
    for &j in targets {
        let x: Vec<f32> = (0..d)
            .map(|k| (noise.s * atoms[j * d + k] as f64 + noise.v.sqrt() * normal(&mut rng)) as f32)
            .collect();
        for (set, b) in [
            (WeightSet::Prior, None),
            (WeightSet::Biased(id), Some(&bias[..])),
        ] {
            let want = reference.weights(&x, noise, set);
            let got = cpu.weights(&x, noise, set).unwrap();
            let err = max_abs_diff(&got, &want);
            assert!(err <= 1e-4, "atom {j} {set:?}: max |Δw| = {err}");
            naive_worst =
                naive_worst.max(max_abs_diff(&naive_weights(atoms, d, &x, noise, b), &want));
            // The pass itself: its max weight and ESS agree with the reference weights.
            let out = cpu.weighted_means(&x, noise, &[set]).unwrap();
            let st = out.sets[0].stats[0];
            let wmax = want.iter().cloned().fold(0.0, f64::max);
            let ess = 1.0 / want.iter().map(|w| w * w).sum::<f64>();
            assert!(
                (st.max_weight - wmax).abs() <= 1e-4,
                "{j} {set:?} max weight"
            );
            assert!(
                (st.ess / ess - 1.0).abs() <= 1e-3,
                "{j} {set:?} ess {} vs {ess}",
                st.ess
            );
        }
    }
    naive_worst
}

#[test]
fn small_t_weights_on_fashion_mnist() {
    let Some((atoms, d)) = first_train_images(5000) else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let targets: Vec<usize> = (0..6).map(|_| rng.random_range(0..5000)).collect();
    check_small_t(&atoms, d, &targets, 11);
}

#[test]
fn small_t_weights_with_near_duplicate_atoms() {
    // Real images when available (mean ≈ −0.4, where the expansion is worst), else 8-bit noise.
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (mut atoms, d) =
        first_train_images(400).unwrap_or_else(|| (random_atoms(&mut rng, 400, 784), 784));
    // Five base atoms, each with four copies perturbed by uniform noise of size 1e-3.
    let mut targets = Vec::new();
    for base in [3usize, 50, 120, 260, 399] {
        for _ in 0..4 {
            let copy: Vec<f32> = atoms[base * d..(base + 1) * d]
                .iter()
                .map(|&a| a + rng.random_range(-1e-3..1e-3f32))
                .collect();
            targets.push(atoms.len() / d);
            atoms.extend(copy);
        }
    }
    let targets: Vec<usize> = targets.into_iter().step_by(3).collect();
    let naive = check_small_t(&atoms, d, &targets, 5);
    eprintln!("naive expansion max abs dw = {naive}");
    // The same check on the naive float32 expansion fails badly: the test can tell.
    assert!(
        naive > 1e-2,
        "naive expansion unexpectedly accurate: max |Δw| = {naive}"
    );
}

//! Certified pruning of the CPU backend (design §8 "Certified pruning"): the pruned pass against
//! the unpruned one and the float64 reference, within the certified bound δ ≤ ε plus float32
//! rounding, on a 6000-atom Fashion-MNIST subset at four times and on random clustered data.

mod common;

use common::fashion::first_train_images;
use fslens::diffusion::Schedule;
use fslens::engine::cpu::CpuBackend;
use fslens::engine::reference::ReferenceBackend;
use fslens::engine::{Backend, Noise, PassOutput, PruneOptions, WeightSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

fn normal(rng: &mut ChaCha8Rng) -> f64 {
    rng.sample::<f64, _>(StandardNormal)
}

/// Rows x_b = s a_j + √v ε for random atoms j, and one row s·truth + √v ε.
fn particles(
    rng: &mut ChaCha8Rng,
    atoms: &[f32],
    d: usize,
    rows: usize,
    truth: &[f32],
    noise: Noise,
) -> Vec<f32> {
    let n = atoms.len() / d;
    let mut x = Vec::with_capacity(rows * d);
    for row in 0..rows {
        let base: Vec<f32> = if row == 0 {
            truth.to_vec()
        } else {
            let j = rng.random_range(0..n);
            atoms[j * d..(j + 1) * d].to_vec()
        };
        for &a in &base {
            x.push((noise.s * a as f64 + noise.v.sqrt() * normal(rng)) as f32);
        }
    }
    x
}

/// Inpainting log-likelihoods b_i = −‖M(y − a_i)‖²/(2σ²), y = M·truth + σ η, M = the left half.
fn half_mask_bias(rng: &mut ChaCha8Rng, atoms: &[f32], d: usize, truth: &[f32]) -> Vec<f64> {
    let sigma = 0.1;
    let side = (d as f64).sqrt() as usize;
    // Square images: the left half; otherwise every coordinate.
    let keep = |k: usize| side * side != d || k % side < side / 2;
    let y: Vec<f64> = truth
        .iter()
        .map(|&t| t as f64 + sigma * normal(rng))
        .collect();
    atoms
        .chunks(d)
        .map(|a| {
            let r2: f64 = (0..d)
                .filter(|&k| keep(k))
                .map(|k| (y[k] - a[k] as f64).powi(2))
                .sum();
            -r2 / (2.0 * sigma * sigma)
        })
        .collect()
}

fn norm(v: impl Iterator<Item = f64>) -> f64 {
    v.map(|x| x * x).sum::<f64>().sqrt()
}

/// Checks one pruned pass against an unpruned one (or the reference) for every row and set:
/// log Z, the means (‖m − m̃‖ ≤ δ·max_i ‖a_i − m̃‖ + `tol_mean`) and the nearest atoms.
fn check_within_bound(
    atoms: &[f32],
    d: usize,
    pruned: &PassOutput,
    full: &PassOutput,
    delta: f64,
    tol_mean: f64,
    what: &str,
) {
    for (k, (p, f)) in pruned.sets.iter().zip(&full.sets).enumerate() {
        for b in 0..p.stats.len() {
            let (lp, lf) = (p.stats[b].log_norm, f.stats[b].log_norm);
            // log Z − log Z_kept ∈ [0, δ], plus float32 rounding of both passes.
            let tol_lz = 1e-6 * (1.0 + lf.abs());
            assert!(
                lf - lp >= -tol_lz && lf - lp <= delta + tol_lz,
                "{what} set {k} row {b}: log Z {lf} vs pruned {lp}, δ = {delta:e}"
            );
            let mp = &p.means[b * d..(b + 1) * d];
            let mf = &f.means[b * d..(b + 1) * d];
            let spread = atoms
                .chunks(d)
                .map(|a| norm(a.iter().zip(mp).map(|(&x, &m)| x as f64 - m as f64)))
                .fold(0.0, f64::max);
            let diff = norm(mp.iter().zip(mf).map(|(&x, &y)| x as f64 - y as f64));
            assert!(
                diff <= delta * spread + tol_mean,
                "{what} set {k} row {b}: ‖Δm‖ = {diff:e} > δ·{spread:.2} + {tol_mean:e}"
            );
        }
    }
    let ip: Vec<usize> = pruned.nearest.iter().map(|n| n.index).collect();
    let iff: Vec<usize> = full.nearest.iter().map(|n| n.index).collect();
    assert_eq!(ip, iff, "{what}: nearest atoms");
}

#[test]
fn fashion_subset_pruned_matches_unpruned_within_the_bound() {
    let Some((mut atoms, d)) = first_train_images(6001) else {
        return;
    };
    let truth = atoms.split_off(6000 * d);
    let n = atoms.len() / d;
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let bias = half_mask_bias(&mut rng, &atoms, d, &truth);
    let mut full = CpuBackend::new(&atoms, d).unwrap();
    let mut pruned = CpuBackend::new(&atoms, d)
        .unwrap()
        .with_pruning(PruneOptions::default())
        .unwrap();
    let eps = PruneOptions::default().epsilon;
    let id_f = full.add_bias(&bias).unwrap();
    let id_p = pruned.add_bias(&bias).unwrap();
    let schedule = Schedule::default();
    let mut visited_at = Vec::new();
    for t in [1e-3, 0.01, 0.1, 0.5] {
        let noise = schedule.noise(t);
        let x = particles(&mut rng, &atoms, d, 7, &truth, noise);
        let sp = [WeightSet::Prior, WeightSet::Biased(id_p)];
        let sf = [WeightSet::Prior, WeightSet::Biased(id_f)];
        let _ = pruned.take_pruning();
        let out_p = pruned.weighted_means(&x, noise, &sp).unwrap();
        let ctr = pruned.take_pruning().unwrap();
        let out_f = full.weighted_means(&x, noise, &sf).unwrap();
        assert_eq!(ctr.passes, 1);
        assert!(
            ctr.max_bound <= eps,
            "t = {t}: realised δ = {:e} > ε",
            ctr.max_bound
        );
        visited_at.push((t, ctr.atoms_visited));
        check_within_bound(
            &atoms,
            d,
            &out_p,
            &out_f,
            ctr.max_bound,
            2e-4,
            &format!("t = {t}"),
        );
        // The weights of one row, in the caller's order: ‖w − w̃‖₁ ≤ 2δ + float32 rounding.
        for (set_p, set_f) in sp.iter().zip(&sf) {
            let _ = pruned.take_pruning();
            let wp = pruned.weights(&x[..d], noise, *set_p).unwrap();
            let wf = full.weights(&x[..d], noise, *set_f).unwrap();
            let l1: f64 = wp.iter().zip(&wf).map(|(a, b)| (a - b).abs()).sum();
            assert!(l1 <= 2.0 * eps + 2e-5, "t = {t} {set_p:?}: ‖Δw‖₁ = {l1:e}");
            let arg = |w: &[f64]| (0..w.len()).max_by(|&a, &b| w[a].total_cmp(&w[b])).unwrap();
            assert_eq!(arg(&wp), arg(&wf), "t = {t}: heaviest atom index");
        }
    }
    eprintln!("atoms visited of {n} (6 rows near atoms, 1 near a held-out image): {visited_at:?}");
    // Pruning must do something (else this test checks little): rows near atoms at t = 1e-3
    // need about one cluster each. (A row far from every atom, like the held-out one, needs
    // most clusters: its weights are decided by distances that differ by ~v.)
    let noise = schedule.noise(1e-3);
    let x = particles(&mut rng, &atoms, d, 7, &truth, noise);
    let _ = pruned.take_pruning();
    let near = pruned
        .weighted_means(&x[d..], noise, &[WeightSet::Prior])
        .unwrap();
    let ctr = pruned.take_pruning().unwrap();
    assert!(
        ctr.atoms_visited < n as u64 / 4,
        "t = 1e-3, 6 rows near atoms: visited {} of {n}",
        ctr.atoms_visited
    );
    let full_near = full
        .weighted_means(&x[d..], noise, &[WeightSet::Prior])
        .unwrap();
    check_within_bound(
        &atoms,
        d,
        &near,
        &full_near,
        ctr.max_bound,
        2e-4,
        "near rows",
    );
}

/// Atoms in `blobs` tight Gaussian blobs (σ = 0.05 around centres of scale 1) in D dims.
fn blob_atoms(rng: &mut ChaCha8Rng, n: usize, d: usize, blobs: usize) -> Vec<f32> {
    let centres: Vec<f64> = (0..blobs * d).map(|_| normal(rng)).collect();
    (0..n)
        .flat_map(|i| {
            let c = i % blobs;
            (0..d)
                .map(|k| (centres[c * d + k] + 0.05 * normal(rng)) as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn random_blobs_match_the_float64_reference() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (n, d) = (900, 24);
    let atoms = blob_atoms(&mut rng, n, d, 12);
    let truth = atoms[5 * d..6 * d].to_vec();
    let bias = half_mask_bias(&mut rng, &atoms, d, &truth);
    let mut reference = ReferenceBackend::new(&atoms, d).unwrap();
    let id_r = reference.add_bias(&bias).unwrap();
    // One cluster per blob and more: both partition sizes certify the same way.
    for clusters in [Some(12), None] {
        let opts = PruneOptions {
            epsilon: 1e-6,
            clusters,
        };
        let mut pruned = CpuBackend::new(&atoms, d)
            .unwrap()
            .with_pruning(opts)
            .unwrap();
        let id_p = pruned.add_bias(&bias).unwrap();
        for t in [1e-3, 0.05, 0.3] {
            let noise = Schedule::default().noise(t);
            let x = particles(&mut rng, &atoms, d, 5, &truth, noise);
            let _ = pruned.take_pruning();
            let out_p = pruned
                .weighted_means(&x, noise, &[WeightSet::Prior, WeightSet::Biased(id_p)])
                .unwrap();
            let ctr = pruned.take_pruning().unwrap();
            let out_r = reference
                .weighted_means(&x, noise, &[WeightSet::Prior, WeightSet::Biased(id_r)])
                .unwrap();
            assert!(
                ctr.max_bound <= opts.epsilon,
                "t = {t}: δ = {:e}",
                ctr.max_bound
            );
            if t == 1e-3 {
                assert!(
                    ctr.atoms_visited < n as u64,
                    "k = {clusters:?}: nothing pruned at t = 1e-3"
                );
            }
            check_within_bound(
                &atoms,
                d,
                &out_p,
                &out_r,
                ctr.max_bound,
                1e-4,
                &format!("k = {clusters:?}, t = {t}"),
            );
        }
    }
}

#[test]
fn large_t_visits_every_atom() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (n, d) = (600, 16);
    let atoms = blob_atoms(&mut rng, n, d, 6);
    let pruned = CpuBackend::new(&atoms, d)
        .unwrap()
        .with_pruning(PruneOptions::default())
        .unwrap();
    let full = CpuBackend::new(&atoms, d).unwrap();
    let noise = Schedule::default().noise(1.0);
    let x: Vec<f32> = (0..4 * d).map(|_| normal(&mut rng) as f32).collect();
    let out_p = pruned
        .weighted_means(&x, noise, &[WeightSet::Prior])
        .unwrap();
    let ctr = pruned.take_pruning().unwrap();
    assert_eq!(ctr.atoms_visited, n as u64);
    assert_eq!(ctr.atoms_total, n as u64);
    assert_eq!(ctr.max_bound, 0.0);
    let out_f = full.weighted_means(&x, noise, &[WeightSet::Prior]).unwrap();
    check_within_bound(&atoms, d, &out_p, &out_f, 0.0, 1e-5, "t = 1");
}

#[test]
fn covariance_products_use_the_pruned_weights_correctly() {
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (n, d) = (700, 20);
    let atoms = blob_atoms(&mut rng, n, d, 10);
    let pruned = CpuBackend::new(&atoms, d)
        .unwrap()
        .with_pruning(PruneOptions::default())
        .unwrap();
    let reference = ReferenceBackend::new(&atoms, d).unwrap();
    let truth = atoms[..d].to_vec();
    for t in [1e-3, 0.1] {
        let noise = Schedule::default().noise(t);
        let x = particles(&mut rng, &atoms, d, 4, &truth, noise);
        let g: Vec<f32> = (0..x.len()).map(|_| normal(&mut rng) as f32).collect();
        // The prior pass keeps its (pruned) weights; C·g reuses them.
        let out = pruned
            .weighted_means(&x, noise, &[WeightSet::Prior])
            .unwrap();
        let m = &out.sets[0].means;
        let got = pruned
            .covariance_products(&x, noise, WeightSet::Prior, m, &g)
            .unwrap();
        let want = reference
            .covariance_products(&x, noise, WeightSet::Prior, m, &g)
            .unwrap();
        let err = got
            .iter()
            .zip(&want)
            .map(|(a, b)| (a - b).abs())
            .fold(0.0f32, f32::max);
        let scale = want.iter().map(|v| v.abs()).fold(1e-3f32, f32::max);
        assert!(
            err <= 1e-3 * scale,
            "t = {t}: max |ΔCg| = {err:e} (scale {scale:e})"
        );
    }
}

#[test]
fn bad_options_name_their_keys() {
    let atoms = vec![0.0f32, 1.0, 2.0, 3.0];
    let e = CpuBackend::new(&atoms, 2)
        .unwrap()
        .with_pruning(PruneOptions {
            epsilon: 0.5,
            clusters: None,
        })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("prune_epsilon"), "{e}");
    let e = CpuBackend::new(&atoms, 2)
        .unwrap()
        .with_pruning(PruneOptions {
            epsilon: 1e-7,
            clusters: Some(3),
        })
        .err()
        .unwrap()
        .to_string();
    assert!(e.contains("prune_clusters"), "{e}");
}

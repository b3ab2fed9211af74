use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::*;
use crate::data::Dataset;
use crate::engine::cpu::CpuBackend;
use crate::operators::{Identity, PixelSelection};

const SHAPE: ImageShape = ImageShape {
    height: 4,
    width: 4,
    channels: 1,
};

/// Four labelled classes of 4×4 images, 40 each: class c is +0.5 on the pixels q ≡ c (mod 4)
/// and −0.5 elsewhere, plus N(0, 0.05²) per pixel.
fn classes(seed: u64) -> Dataset {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for i in 0..160 {
        let c = i % 4;
        labels.push(c as u32);
        for q in 0..16 {
            let base = if q % 4 == c { 0.5 } else { -0.5 };
            let e: f64 = rng.sample(StandardNormal);
            images.push((base + 0.05 * e) as f32);
        }
    }
    Dataset {
        source: "test".into(),
        shape: SHAPE,
        images,
        labels: Some(labels),
        class_names: None,
        eight_bit: false,
    }
}

/// ω with class masses `mass` (uniform within a class; a zero mass becomes e^−200 relative).
fn omega_with(ds: &Dataset, mass: [f64; 4]) -> Vec<f64> {
    let labels = ds.labels.as_ref().unwrap();
    let per = 40.0;
    let logits: Vec<f64> = labels
        .iter()
        .map(|&c| {
            let p = mass[c as usize];
            if p > 0.0 { (p / per).ln() } else { -200.0 }
        })
        .collect();
    crate::engine::logsumexp::softmax(&logits)
}

struct Fixture {
    ds: Dataset,
    omega: Vec<f64>,
    op: Identity,
    truth: Vec<f32>,
    backend: CpuBackend,
}

fn fixture(mass: [f64; 4]) -> Fixture {
    let ds = classes(5);
    let omega = omega_with(&ds, mass);
    let truth = ds.image(0).to_vec();
    let backend = CpuBackend::new(&ds.images, 16).unwrap();
    Fixture {
        op: Identity::new(SHAPE),
        omega,
        truth,
        backend,
        ds,
    }
}

impl Fixture {
    fn posterior(&self) -> ExactPosterior<'_> {
        ExactPosterior::new(
            &self.ds,
            &self.omega,
            Some(Measured {
                operator: &self.op,
                y: &self.truth,
                sigma: 0.1,
            }),
            Some(&self.truth),
            Schedule::default(),
            Options::default(),
        )
    }
}

#[test]
fn spread_closed_form_matches_monte_carlo_of_exact_draws() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(3);
    let shape = ImageShape::new(2, 3, 1);
    let n = 30;
    let ds = Dataset {
        source: "test".into(),
        shape,
        images: (0..n * 6).map(|_| rng.random_range(-1.0f32..1.0)).collect(),
        labels: None,
        class_names: None,
        eight_bit: false,
    };
    let logits: Vec<f64> = (0..n).map(|_| 2.0 * rng.random::<f64>()).collect();
    let omega = crate::engine::logsumexp::softmax(&logits);
    let op = Identity::new(shape);
    let truth = ds.image(0).to_vec();
    let post = ExactPosterior::new(
        &ds,
        &omega,
        Some(Measured {
            operator: &op,
            y: &truth,
            sigma: 0.1,
        }),
        Some(&truth),
        Schedule::default(),
        Options::default(),
    );
    for &t in &[0.02, 0.3, 0.8] {
        let noise = post.schedule.noise(t);
        let k = 40_000;
        let cloud = post.draw(noise, k, 17);
        let est = cloud_spread(&cloud, 6);
        // Standard error of the trace estimate from the per-particle squared deviations.
        let mut mean = [0.0f64; 6];
        for x in cloud.chunks(6) {
            for (m, &v) in mean.iter_mut().zip(x) {
                *m += v as f64 / k as f64;
            }
        }
        let q: Vec<f64> = cloud
            .chunks(6)
            .map(|x| {
                x.iter()
                    .zip(&mean)
                    .map(|(&v, m)| (v as f64 - m).powi(2))
                    .sum()
            })
            .collect();
        let se = MeanStd::of(&q).std / (k as f64).sqrt();
        let want = post.exact_spread(noise);
        assert!(
            (est - want).abs() < 5.0 * se,
            "t={t}: {est} vs {want} (se {se})"
        );
    }
}

#[test]
fn exact_draws_have_no_hallucination_and_lie_on_support() {
    let f = fixture([0.7, 0.3, 0.0, 0.0]);
    let post = f.posterior();
    let t = 0.05;
    let noise = post.schedule.noise(t);
    let k = 4000;
    let reference_cloud = post.draw(noise, k, 1);
    let ra = post.analyse(&f.backend, &reference_cloud, noise).unwrap();
    let reference = post.exact_cloud_from(t, &reference_cloud, &ra, true);
    // q99 is the nearest-rank 99th percentile of ‖x/s − a_nearest‖: between 0.5 % and 1 % of
    // the reference lies beyond it, and the threshold adds ½ρ.
    let beyond = ra
        .nearest
        .iter()
        .filter(|n| n.dist2.sqrt() / noise.s > reference.exact_distance_q99)
        .count() as f64
        / k as f64;
    assert!(beyond <= 0.01 && beyond > 0.005, "{beyond}");
    assert!(
        (reference.off_support_distance
            - reference.exact_distance_q99
            - OFF_SUPPORT_MARGIN * post.atom_scale)
            .abs()
            < 1e-12
    );
    let own = post.metrics(t, &reference_cloud, &ra, &reference);
    assert!(own.off_support_rate <= 0.01);
    assert_eq!(own.mode_tv_to_exact_cloud, 0.0);
    // A fresh exact cloud: no ruled-out mass, (nearly) nothing off support.
    let cloud = post.draw(noise, k, 2);
    let a = post.analyse(&f.backend, &cloud, noise).unwrap();
    let m = post.metrics(t, &cloud, &a, &reference);
    assert_eq!(m.hallucination_rate, 0.0);
    assert!(m.off_support_rate <= 0.01, "{}", m.off_support_rate);
    assert!((m.spread_ratio - 1.0).abs() < 0.1, "{}", m.spread_ratio);
    assert!(m.psnr_denoised.mean.is_finite() && m.ssim_denoised.mean <= 1.0);
}

/// Brute force: every atom against every other, float64, plain median.
fn atom_scale_brute(atoms: &[f32], dim: usize) -> f64 {
    let n = atoms.len() / dim;
    let mut best: Vec<f64> = (0..n)
        .map(|j| {
            (0..n)
                .filter(|&i| i != j)
                .map(|i| {
                    (0..dim)
                        .map(|q| (atoms[j * dim + q] as f64 - atoms[i * dim + q] as f64).powi(2))
                        .sum::<f64>()
                        .sqrt()
                })
                .fold(f64::INFINITY, f64::min)
        })
        .collect();
    best.sort_by(f64::total_cmp);
    if n % 2 == 1 {
        best[n / 2]
    } else {
        0.5 * (best[n / 2 - 1] + best[n / 2])
    }
}

#[test]
fn atom_scale_is_the_median_nearest_other_atom_distance() {
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    for (n, dim) in [(7, 3), (200, 70), (301, 5)] {
        let mut atoms: Vec<f32> = (0..n * dim)
            .map(|_| rng.random_range(-1.0f32..1.0))
            .collect();
        // A duplicate pair: each is the other's nearest atom at distance 0.
        let copy = atoms[..dim].to_vec();
        atoms[dim..2 * dim].copy_from_slice(&copy);
        let got = atom_scale(&atoms, dim, 4);
        let want = atom_scale_brute(&atoms, dim);
        assert!((got - want).abs() <= 1e-12 * want, "n={n}: {got} vs {want}");
    }
    assert_eq!(atom_scale(&[0.5, 0.5], 2, 0), 0.0);
    // Above the sample cap: an estimate from 1000 atoms, within a few % of the full median.
    let (n, dim) = (3000, 8);
    let atoms: Vec<f32> = (0..n * dim)
        .map(|_| rng.random_range(-1.0f32..1.0))
        .collect();
    let got = atom_scale(&atoms, dim, 4);
    let want = atom_scale_brute(&atoms, dim);
    assert!((got / want - 1.0).abs() < 0.05, "{got} vs {want}");
}

#[test]
fn off_support_flags_perturbed_atoms_but_not_residual_step_noise() {
    let f = fixture([0.7, 0.3, 0.0, 0.0]);
    let post = f.posterior();
    let rho = post.atom_scale;
    assert!(rho > 0.0);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(13);
    // At t_min: exact draws with 2.7× the exact residual noise (what Euler–Maruyama's last
    // steps leave) stay on support; heavy atoms moved by a random vector of norm ρ do not.
    let t = 1e-3;
    let noise = post.schedule.noise(t);
    let reference_cloud = post.draw(noise, 2000, 1);
    let ra = post.analyse(&f.backend, &reference_cloud, noise).unwrap();
    let reference = post.exact_cloud_from(t, &reference_cloud, &ra, true);
    let noisy: Vec<f32> = post
        .draw(Noise { s: noise.s, v: 0.0 }, 1000, 2)
        .iter()
        .map(|&x| {
            let e: f64 = rng.sample(StandardNormal);
            (x as f64 + 2.7 * noise.v.sqrt() * e) as f32
        })
        .collect();
    let a = post.analyse(&f.backend, &noisy, noise).unwrap();
    assert_eq!(
        post.metrics(t, &noisy, &a, &reference).off_support_rate,
        0.0
    );
    let moved = perturbed(
        &post.draw(Noise { s: 1.0, v: 0.0 }, 1000, 3),
        16,
        rho,
        &mut rng,
    );
    let moved_t: Vec<f32> = moved.iter().map(|&x| (x as f64 * noise.s) as f32).collect();
    let a = post.analyse(&f.backend, &moved_t, noise).unwrap();
    let rate = post.metrics(t, &moved_t, &a, &reference).off_support_rate;
    assert!(rate > 0.95, "{rate}");
    // At t = 0 (clean samples, as `fslens diagnose` scores them): the exact draws' own
    // distances are 0, the threshold is ½ρ.
    let picks: Vec<usize> = (0..500).map(|j| j % 80).collect();
    let (zc, za) = post.atoms_at_zero(&picks);
    let zero = post.exact_cloud_from(0.0, &zc, &za, false);
    assert_eq!(zero.exact_distance_q99, 0.0);
    assert!((zero.off_support_distance - 0.5 * rho).abs() < 1e-12);
    let clean = Noise { s: 1.0, v: noise.v };
    let a = post.analyse(&f.backend, &moved, clean).unwrap();
    assert!(post.metrics(0.0, &moved, &a, &zero).off_support_rate > 0.95);
    let at_third = perturbed(
        &post.draw(Noise { s: 1.0, v: 0.0 }, 1000, 4),
        16,
        rho / 3.0,
        &mut rng,
    );
    let a = post.analyse(&f.backend, &at_third, clean).unwrap();
    assert_eq!(
        post.metrics(0.0, &at_third, &a, &zero).off_support_rate,
        0.0
    );
}

/// Each row moved by an independent random direction of norm `norm`.
fn perturbed(rows: &[f32], dim: usize, norm: f64, rng: &mut impl Rng) -> Vec<f32> {
    rows.chunks(dim)
        .flat_map(|x| {
            let e: Vec<f64> = (0..dim).map(|_| rng.sample(StandardNormal)).collect();
            let len = e.iter().map(|v| v * v).sum::<f64>().sqrt();
            x.iter()
                .zip(e)
                .map(|(&v, ei)| (v as f64 + norm * ei / len) as f32)
                .collect::<Vec<_>>()
        })
        .collect()
}

#[test]
fn particles_from_a_ruled_out_mode_are_all_hallucinated_and_off_support_flags_far_ones() {
    let f = fixture([0.7, 0.3, 0.0, 0.0]);
    let post = f.posterior();
    let t = 0.05;
    let noise = post.schedule.noise(t);
    let reference_cloud = post.draw(noise, 2000, 1);
    let reference = post.exact_cloud_from(
        t,
        &reference_cloud,
        &post.analyse(&f.backend, &reference_cloud, noise).unwrap(),
        true,
    );
    // Exact-style draws around class-2 atoms (ω ≈ 0 there).
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(9);
    let mut cloud = Vec::new();
    for j in 0..200 {
        let i = 4 * (j % 40) + 2;
        for &a in f.ds.image(i) {
            let e: f64 = rng.sample(StandardNormal);
            cloud.push((noise.s * a as f64 + noise.v.sqrt() * e) as f32);
        }
    }
    let a = post.analyse(&f.backend, &cloud, noise).unwrap();
    let m = post.metrics(t, &cloud, &a, &reference);
    assert_eq!(m.hallucination_rate, 1.0);
    assert!((m.mode_weights[2] - 1.0).abs() < 1e-12);
    assert!((m.mode_tv - 1.0).abs() < 1e-9);
    // The all-zero image is ‖0 − s a_i‖ ≈ 2 from every atom, far beyond exact draws.
    let between = vec![0.0f32; cloud.len()];
    let b = post.analyse(&f.backend, &between, noise).unwrap();
    assert_eq!(
        post.metrics(t, &between, &b, &reference).off_support_rate,
        1.0
    );
}

#[test]
fn mode_tv_of_exact_draws_is_small_and_of_prior_draws_large() {
    let f = fixture([0.6, 0.3, 0.1, 0.0]);
    let post = f.posterior();
    let t = 1e-3;
    let noise = post.schedule.noise(t);
    let k = 2000;
    let exact = post.draw(noise, k, 4);
    let a = post.analyse(&f.backend, &exact, noise).unwrap();
    let reference = post.exact_cloud_from(t, &exact, &a, true);
    let m = post.metrics(t, &exact, &a, &reference);
    // E TV ≤ ½ Σ_m √(p_m (1 − p_m) / K) for multinomial frequencies.
    let bound: f64 = 0.5
        * post
            .exact_mode_weights
            .iter()
            .map(|p| (p * (1.0 - p) / k as f64).sqrt())
            .sum::<f64>();
    assert!(m.mode_tv < 3.0 * bound, "{} vs bound {bound}", m.mode_tv);
    // Prior draws: uniform over atoms, 1/4 per class → TV = ½(0.35 + 0.05 + 0.15 + 0.25) = 0.4.
    let uniform = vec![1.0 / 160.0; 160];
    let prior_post = ExactPosterior {
        omega: &uniform,
        ..f.posterior()
    };
    let prior = prior_post.draw(noise, k, 5);
    let pa = post.analyse(&f.backend, &prior, noise).unwrap();
    let pm = post.metrics(t, &prior, &pa, &reference);
    assert!((pm.mode_tv - 0.4).abs() < 0.05, "{}", pm.mode_tv);
    assert!(pm.hallucination_rate > 0.2);
}

#[test]
fn data_fit_is_the_normalised_residual() {
    let f = fixture([0.5, 0.5, 0.0, 0.0]);
    let mut y = f.truth.clone();
    y[3] += 0.3;
    y[7] -= 0.4;
    let post = ExactPosterior {
        measurement: Some(Measured {
            operator: &f.op,
            y: &y,
            sigma: 0.1,
        }),
        ..f.posterior()
    };
    let fit = post.data_fit(&f.truth);
    let want = (0.3f64 * 0.3 + 0.4 * 0.4) / (16.0 * 0.01);
    assert!((fit[0] - want).abs() < 1e-5 * want, "{} vs {want}", fit[0]);
}

/// On real data (Fashion-MNIST, 500 training images): ρ equals the brute-force median, the
/// residual noise of an Euler–Maruyama run (2.7× an exact draw's) at t_min stays on support,
/// and atoms moved by ρ are flagged (at t_min and at t = 0) while atoms moved by 0.4ρ are not.
#[test]
fn off_support_rule_on_fashion_mnist() {
    let Some(dir) = crate::data::idx::tests::fashion_dir() else {
        return;
    };
    let all = crate::data::idx::fashion_mnist(&dir, false).unwrap();
    let ds = crate::data::preprocess::subset_first(&all, 500).unwrap();
    let d = ds.dim();
    let rho = atom_scale(&ds.images, d, 0);
    let want = atom_scale_brute(&ds.images, d);
    assert!((rho - want).abs() <= 1e-12 * want, "{rho} vs {want}");
    let omega = vec![1.0 / 500.0; 500];
    let op = Identity::new(ds.shape);
    let truth = ds.image(0).to_vec();
    let post = ExactPosterior::new(
        &ds,
        &omega,
        Some(Measured {
            operator: &op,
            y: &truth,
            sigma: 0.1,
        }),
        Some(&truth),
        Schedule::default(),
        Options::default(),
    );
    assert_eq!(post.atom_scale, rho);
    let backend = CpuBackend::new(&ds.images, d).unwrap();
    let t = 1e-3;
    let noise = post.schedule.noise(t);
    let reference_cloud = post.draw(noise, 1000, 1);
    let ra = post.analyse(&backend, &reference_cloud, noise).unwrap();
    let reference = post.exact_cloud_from(t, &reference_cloud, &ra, true);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(5);
    let noisy: Vec<f32> = post
        .draw(Noise { s: noise.s, v: 0.0 }, 500, 2)
        .iter()
        .map(|&x| {
            let e: f64 = rng.sample(StandardNormal);
            (x as f64 + 2.7 * noise.v.sqrt() * e) as f32
        })
        .collect();
    let a = post.analyse(&backend, &noisy, noise).unwrap();
    assert_eq!(
        post.metrics(t, &noisy, &a, &reference).off_support_rate,
        0.0
    );
    let clean = post.draw(Noise { s: 1.0, v: 0.0 }, 500, 3);
    let moved = perturbed(&clean, d, rho, &mut rng);
    let moved_t: Vec<f32> = moved.iter().map(|&x| (x as f64 * noise.s) as f32).collect();
    let a = post.analyse(&backend, &moved_t, noise).unwrap();
    let rate = post.metrics(t, &moved_t, &a, &reference).off_support_rate;
    assert!(rate > 0.95, "t_min: {rate}");
    let (zc, za) = post.atoms_at_zero(&(0..500).collect::<Vec<_>>());
    let zero = post.exact_cloud_from(0.0, &zc, &za, false);
    let at_zero = Noise { s: 1.0, v: noise.v };
    let a = post.analyse(&backend, &moved, at_zero).unwrap();
    assert!(post.metrics(0.0, &moved, &a, &zero).off_support_rate > 0.95);
    let near = perturbed(&clean, d, 0.4 * rho, &mut rng);
    let a = post.analyse(&backend, &near, at_zero).unwrap();
    assert_eq!(post.metrics(0.0, &near, &a, &zero).off_support_rate, 0.0);
}

/// Likelihood-mode hallucination against a float64 reimplementation of the rule: a particle
/// counts when min_i ‖x/s − a_i‖ > q99(dist) + ½ρ and Σ_j (y_j − (x/s)_j)²/(mσ²) ≤ q99(fit),
/// both q99 nearest-rank over the exact cloud. The measurement sees the first two rows only;
/// particles that copy y there and are 0 on the hidden rows fit y far from every atom.
#[test]
fn likelihood_hallucination_counts_off_support_particles_that_fit_y() {
    let ds = classes(5);
    let observed: Vec<bool> = (0..16).map(|q| q < 8).collect();
    let op = PixelSelection::new(SHAPE, &observed, "test".into()).unwrap();
    let truth = ds.image(0).to_vec();
    let y: Vec<f32> = truth[..8].to_vec();
    let sigma = 0.1;
    let b: Vec<f64> = (0..160)
        .map(|i| {
            let a = ds.image(i);
            -(0..8)
                .map(|j| (y[j] as f64 - a[j] as f64).powi(2))
                .sum::<f64>()
                / (2.0 * sigma * sigma)
        })
        .collect();
    let omega = crate::engine::logsumexp::softmax(&b);
    let post = ExactPosterior::new(
        &ds,
        &omega,
        Some(Measured {
            operator: &op,
            y: &y,
            sigma,
        }),
        Some(&truth),
        Schedule::default(),
        Options::default(),
    );
    let backend = CpuBackend::new(&ds.images, 16).unwrap();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(21);
    for t in [1e-3, 0.05, 0.0] {
        let noise = post.schedule.noise(t);
        let (reference_cloud, ra) = if t == 0.0 {
            post.atoms_at_zero(&Exact::draw_atoms(&omega, 1000, &mut rng))
        } else {
            let c = post.draw(noise, 1000, 1);
            let a = post.analyse(&backend, &c, noise).unwrap();
            (c, a)
        };
        let reference = post.exact_cloud_from(t, &reference_cloud, &ra, true);
        // 30 particles that copy y on the seen rows and are 0 (between the classes' ±0.5)
        // on the hidden ones, 30 all-zero particles (off support, fitting badly), 40 exact.
        let exact = post.draw(noise, 40, 2);
        let mut cloud = Vec::new();
        for j in 0..60 {
            for q in 0..16 {
                let clean = if j < 30 && q < 8 { y[q] as f64 } else { 0.0 };
                let e: f64 = rng.sample(StandardNormal);
                cloud.push((noise.s * clean + noise.v.sqrt() * e) as f32);
            }
        }
        cloud.extend_from_slice(&exact);
        let a = if t == 0.0 {
            post.analyse(&backend, &cloud, Noise { s: 1.0, v: 1e-5 })
                .unwrap()
        } else {
            post.analyse(&backend, &cloud, noise).unwrap()
        };
        let got = post.metrics(t, &cloud, &a, &reference);

        // The rule in float64, from scratch.
        let scaled = |x: &[f32]| -> Vec<f64> { x.iter().map(|&v| v as f64 / noise.s).collect() };
        let nearest = |x: &[f64]| -> f64 {
            (0..160)
                .map(|i| {
                    x.iter()
                        .zip(ds.image(i))
                        .map(|(p, &q)| (p - q as f64).powi(2))
                        .sum::<f64>()
                })
                .fold(f64::INFINITY, f64::min)
                .sqrt()
        };
        let fit = |x: &[f64]| -> f64 {
            (0..8).map(|j| (y[j] as f64 - x[j]).powi(2)).sum::<f64>() / (8.0 * sigma * sigma)
        };
        let q99 = |mut v: Vec<f64>| -> f64 {
            v.sort_by(f64::total_cmp);
            v[(0.99 * v.len() as f64).ceil() as usize - 1]
        };
        let rows: Vec<Vec<f64>> = reference_cloud.chunks(16).map(scaled).collect();
        let dist_q99 = q99(rows.iter().map(|x| nearest(x)).collect());
        let fit_q99 = q99(rows.iter().map(|x| fit(x)).collect());
        assert!(
            (reference.data_fit_q99 - fit_q99).abs() <= 1e-6 * fit_q99,
            "t={t}"
        );
        assert!(
            (got.data_fit_q99 - fit_q99).abs() <= 1e-6 * fit_q99,
            "t={t}"
        );
        let counted: Vec<bool> = cloud
            .chunks(16)
            .map(scaled)
            .map(|x| nearest(&x) > dist_q99 + 0.5 * post.atom_scale && fit(&x) <= fit_q99)
            .collect();
        let want = counted.iter().filter(|&&c| c).count() as f64 / 100.0;
        assert_eq!(got.likelihood_hallucination_rate, want, "t={t}");
        // What the cloud was built to show: the y-copies count (at large t the noise blurs
        // the fit of a few), the zero images are off support but do not fit, exact draws
        // never count.
        assert!(counted[..30].iter().filter(|&&c| c).count() >= 27, "t={t}");
        assert!(counted[30..].iter().all(|&c| !c), "t={t}");
        assert!(
            got.off_support_rate >= 0.6,
            "t={t}: {}",
            got.off_support_rate
        );
    }
    // Without a measurement the rate is unknown (NaN, null in JSON).
    let blind = ExactPosterior::new(
        &ds,
        &omega,
        None,
        None,
        Schedule::default(),
        Options::default(),
    );
    let noise = blind.schedule.noise(0.05);
    let c = blind.draw(noise, 200, 3);
    let a = blind.analyse(&backend, &c, noise).unwrap();
    let r = blind.exact_cloud_from(0.05, &c, &a, true);
    let m = blind.metrics(0.05, &c, &a, &r);
    assert!(m.likelihood_hallucination_rate.is_nan() && r.data_fit_q99.is_nan());
    assert_eq!(m.off_support_rate, 0.0);
}

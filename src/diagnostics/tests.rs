use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;

use super::*;
use crate::data::Dataset;
use crate::engine::cpu::CpuBackend;
use crate::operators::Identity;

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
    crate::samplers::softmax(&logits)
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
            &self.op,
            &self.truth,
            0.1,
            &self.truth,
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
    let omega = crate::samplers::softmax(&logits);
    let op = Identity::new(shape);
    let truth = ds.image(0).to_vec();
    let post = ExactPosterior::new(
        &ds,
        &omega,
        &op,
        &truth,
        0.1,
        &truth,
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
fn exact_draws_have_no_hallucination_and_one_percent_off_support() {
    let f = fixture([0.7, 0.3, 0.0, 0.0]);
    let post = f.posterior();
    let t = 0.05;
    let noise = post.schedule.noise(t);
    let k = 4000;
    let reference_cloud = post.draw(noise, k, 1);
    let ra = post.analyse(&f.backend, &reference_cloud, noise).unwrap();
    let reference = post.reference_from(t, &ra, true);
    // The reference cloud itself: by the nearest-rank definition at most 1 % lies beyond.
    let own = post.score(t, &reference_cloud, &ra, &reference);
    assert!(own.off_support_rate <= 0.01 && own.off_support_rate > 0.005);
    assert_eq!(own.mode_tv_to_exact_cloud, 0.0);
    // A fresh exact cloud: no ruled-out mass, ~1 % off support (binomial, 4 standard errors).
    let cloud = post.draw(noise, k, 2);
    let a = post.analyse(&f.backend, &cloud, noise).unwrap();
    let m = post.score(t, &cloud, &a, &reference);
    assert_eq!(m.hallucination_rate, 0.0);
    let se = (0.01f64 * 0.99 / k as f64).sqrt();
    assert!(
        (m.off_support_rate - 0.01).abs() < 4.0 * se + 1.0 / k as f64,
        "{}",
        m.off_support_rate
    );
    assert!((m.spread_ratio - 1.0).abs() < 0.1, "{}", m.spread_ratio);
    assert!(m.psnr_denoised.mean.is_finite() && m.ssim_denoised.mean <= 1.0);
}

#[test]
fn particles_from_a_ruled_out_mode_are_all_hallucinated_and_off_support_flags_far_ones() {
    let f = fixture([0.7, 0.3, 0.0, 0.0]);
    let post = f.posterior();
    let t = 0.05;
    let noise = post.schedule.noise(t);
    let reference_cloud = post.draw(noise, 2000, 1);
    let reference = post.reference_from(
        t,
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
    let m = post.score(t, &cloud, &a, &reference);
    assert_eq!(m.hallucination_rate, 1.0);
    assert!((m.mode_weights[2] - 1.0).abs() < 1e-12);
    assert!((m.mode_tv - 1.0).abs() < 1e-9);
    // The all-zero image is ‖0 − s a_i‖ ≈ 2 from every atom, far beyond exact draws.
    let between = vec![0.0f32; cloud.len()];
    let b = post.analyse(&f.backend, &between, noise).unwrap();
    assert_eq!(
        post.score(t, &between, &b, &reference).off_support_rate,
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
    let reference = post.reference_from(t, &a, true);
    let m = post.score(t, &exact, &a, &reference);
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
    let pm = post.score(t, &prior, &pa, &reference);
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
        y: &y,
        ..f.posterior()
    };
    let fit = post.data_fit(&f.truth);
    let want = (0.3f64 * 0.3 + 0.4 * 0.4) / (16.0 * 0.01);
    assert!((fit[0] - want).abs() < 1e-5 * want, "{} vs {want}", fit[0]);
}

//! The closed forms of `fslens::analytic` (design §11) against independent references:
//! float64 quadrature in one dimension, Monte Carlo in D dimensions, finite differences.

use fslens::analytic::{Mixture, MixtureDensity};
use fslens::diffusion::Schedule;
use fslens::engine::Noise;
use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn gauss(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

fn normal_pdf(x: f64, m: f64, var: f64) -> f64 {
    (-(x - m) * (x - m) / (2.0 * var)).exp() / (2.0 * std::f64::consts::PI * var).sqrt()
}

/// A 1-D mixture of Gaussians (variances may be 0: points).
fn mix1(w: &[f64], mu: &[f64], var: &[f64]) -> Mixture {
    Mixture::new(
        w,
        mu.iter().map(|&m| DVector::from_element(1, m)).collect(),
        var.iter()
            .map(|&v| DMatrix::from_element(1, 1, v))
            .collect(),
        "test",
    )
    .unwrap()
}

/// Trapezoid rule of f on [lo, hi] with n intervals.
fn trapezoid(f: impl Fn(f64) -> f64, lo: f64, hi: f64, n: usize) -> f64 {
    let h = (hi - lo) / n as f64;
    let mut s = 0.5 * (f(lo) + f(hi));
    for i in 1..n {
        s += f(lo + i as f64 * h);
    }
    s * h
}

#[test]
fn one_dimensional_posterior_matches_quadrature() {
    let (w, mu, var) = ([0.5, 0.3, 0.2], [-1.0, 0.4, 2.0], [0.09, 0.25, 0.04]);
    let prior = mix1(&w, &mu, &var);
    let (a, sigma, y) = (1.7, 0.6, 0.9);
    let post = prior
        .condition(
            &DMatrix::from_element(1, 1, a),
            &DVector::from_element(1, y),
            sigma,
        )
        .unwrap();
    // Unnormalised posterior density of component k and in all, by quadrature.
    let comp = |k: usize, x: f64| {
        w[k] * normal_pdf(x, mu[k], var[k]) * normal_pdf(y, a * x, sigma * sigma)
    };
    let dens = |x: f64| (0..3).map(|k| comp(k, x)).sum::<f64>();
    let (lo, hi, n) = (-8.0, 8.0, 200_000);
    let z = trapezoid(dens, lo, hi, n);
    assert!(
        (post.log_evidence - z.ln()).abs() < 1e-9,
        "{} vs {}",
        post.log_evidence,
        z.ln()
    );
    let mean = trapezoid(|x| x * dens(x), lo, hi, n) / z;
    let var_q = trapezoid(|x| (x - mean).powi(2) * dens(x), lo, hi, n) / z;
    let p = &post.posterior;
    assert!(
        (p.mean()[0] - mean).abs() < 1e-9,
        "{} vs {mean}",
        p.mean()[0]
    );
    assert!((p.covariance()[(0, 0)] - var_q).abs() < 1e-9);
    for k in 0..3 {
        let wk = trapezoid(|x| comp(k, x), lo, hi, n) / z;
        assert!((p.components[k].weight - wk).abs() < 1e-9, "w_{k}");
    }
    // The diffused posterior density at several x_t against ∫ p(x0|y) N(x_t; s x0, v) dx0.
    let sched = Schedule::default();
    for &t in &[0.05, 0.3, 0.8] {
        let noise = sched.noise(t);
        let at = MixtureDensity::new(&p.diffuse(noise)).unwrap();
        for &xt in &[-1.5, -0.2, 0.3, 1.1] {
            let q = trapezoid(
                |x0| dens(x0) * normal_pdf(xt, noise.s * x0, noise.v),
                lo,
                hi,
                n,
            ) / z;
            let got = at.log_density(&[xt]).exp();
            assert!(
                (got - q).abs() < 1e-8 * q.max(1e-3),
                "t={t} x={xt}: {got} vs {q}"
            );
        }
    }
}

#[test]
fn discrete_prior_posterior_is_the_reweighted_points() {
    // Three points on a line: the posterior keeps the points, weights ∝ π_k N(y; a p_k, σ²).
    let (w, pts) = ([0.2, 0.5, 0.3], [-1.0, 0.0, 1.0]);
    let prior = mix1(&w, &pts, &[0.0; 3]);
    let (a, sigma, y) = (1.0, 0.4, 0.7);
    let post = prior
        .condition(
            &DMatrix::from_element(1, 1, a),
            &DVector::from_element(1, y),
            sigma,
        )
        .unwrap();
    let raw: Vec<f64> = (0..3)
        .map(|k| w[k] * normal_pdf(y, a * pts[k], sigma * sigma))
        .collect();
    let z: f64 = raw.iter().sum();
    for k in 0..3 {
        let c = &post.posterior.components[k];
        assert!((c.weight - raw[k] / z).abs() < 1e-14);
        assert_eq!(c.mean[0], pts[k]);
        assert!(c.cov[(0, 0)].abs() < 1e-15);
    }
    assert!((post.log_evidence - z.ln()).abs() < 1e-12);
    // A point mass has no density at t = 0; at t > 0 it is Σ w_k N(s p_k, v).
    assert!(MixtureDensity::new(&post.posterior).is_err());
    let noise = Schedule::default().noise(0.2);
    let at = MixtureDensity::new(&post.posterior.diffuse(noise)).unwrap();
    let q: f64 = (0..3)
        .map(|k| raw[k] / z * normal_pdf(0.3, noise.s * pts[k], noise.v))
        .sum();
    assert!((at.log_density(&[0.3]).exp() - q).abs() < 1e-13);
}

/// A random SPD matrix B Bᵀ/D + c I.
fn spd(d: usize, c: f64, rng: &mut ChaCha8Rng) -> DMatrix<f64> {
    let b = DMatrix::from_fn(d, d, |_, _| gauss(rng));
    &b * b.transpose() / d as f64 + DMatrix::identity(d, d) * c
}

fn random_problem(rng: &mut ChaCha8Rng) -> (Mixture, DMatrix<f64>, f64) {
    let d = 3;
    let means = (0..2)
        .map(|_| DVector::from_fn(d, |_, _| 1.5 * gauss(rng)))
        .collect();
    let covs = (0..2).map(|_| spd(d, 0.1, rng) * 0.3).collect();
    let prior = Mixture::new(&[0.6, 0.4], means, covs, "test").unwrap();
    let a = DMatrix::from_fn(2, d, |_, _| gauss(rng));
    (prior, a, 0.8)
}

#[test]
fn posterior_moments_and_weights_match_importance_weighted_prior_draws() {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    let (prior, a, sigma) = random_problem(&mut rng);
    let x_true = DVector::from_column_slice(&prior.sampler().draw(1, &mut rng).0);
    let noise = DVector::from_fn(2, |_, _| gauss(&mut rng));
    let y = &a * &x_true + noise * sigma;
    let post = prior.condition(&a, &y, sigma).unwrap().posterior;
    // Monte Carlo: 400k prior draws weighted by the likelihood (float64 naive sums).
    let n = 400_000;
    let (xs, labels) = prior.sampler().draw(n, &mut rng);
    let d = prior.dim;
    let mut lw = Vec::with_capacity(n);
    for row in xs.chunks(d) {
        let r = &y - &a * DVector::from_column_slice(row);
        lw.push(-r.norm_squared() / (2.0 * sigma * sigma));
    }
    let max = lw.iter().cloned().fold(f64::MIN, f64::max);
    let wts: Vec<f64> = lw.iter().map(|l| (l - max).exp()).collect();
    let total: f64 = wts.iter().sum();
    let ess = total * total / wts.iter().map(|w| w * w).sum::<f64>();
    assert!(ess > 10_000.0, "ESS {ess}");
    let mut mean = vec![0.0; d];
    let mut comp = [0.0; 2];
    for ((row, w), &l) in xs.chunks(d).zip(&wts).zip(&labels) {
        for j in 0..d {
            mean[j] += w * row[j] / total;
        }
        comp[l as usize] += w / total;
    }
    let mut cov = vec![0.0; d * d];
    for (row, w) in xs.chunks(d).zip(&wts) {
        for i in 0..d {
            for j in 0..d {
                cov[i * d + j] += w * (row[i] - mean[i]) * (row[j] - mean[j]) / total;
            }
        }
    }
    let (pm, pc) = (post.mean(), post.covariance());
    // Standard errors are about sqrt(Var/ESS): allow 5 of them.
    let tol = 5.0 / ess.sqrt();
    for i in 0..d {
        let sd = pc[(i, i)].sqrt();
        assert!(
            (pm[i] - mean[i]).abs() < tol * sd,
            "mean {i}: {} vs {}",
            pm[i],
            mean[i]
        );
        for j in 0..d {
            let scale = (pc[(i, i)] * pc[(j, j)]).sqrt();
            assert!(
                (pc[(i, j)] - cov[i * d + j]).abs() < 2.0 * tol * scale,
                "cov {i}{j}"
            );
        }
    }
    for k in 0..2 {
        let wk = post.components[k].weight;
        assert!(
            (wk - comp[k]).abs() < tol.max(5e-3),
            "w_{k}: {wk} vs {}",
            comp[k]
        );
    }
}

#[test]
fn score_is_the_gradient_of_the_log_density() {
    let mut rng = ChaCha8Rng::seed_from_u64(3);
    let (prior, a, sigma) = random_problem(&mut rng);
    let y = DVector::from_vec(vec![0.4, -0.7]);
    let post = prior.condition(&a, &y, sigma).unwrap().posterior;
    for &t in &[0.02, 0.3, 1.0] {
        let noise = Schedule::default().noise(t);
        let dens = MixtureDensity::new(&post.diffuse(noise)).unwrap();
        for _ in 0..4 {
            let x: Vec<f64> = (0..3).map(|_| noise.s * gauss(&mut rng) * 1.5).collect();
            let g = dens.score(&x);
            let h = 1e-5 * noise.v.sqrt().max(1e-2);
            for j in 0..3 {
                let (mut xp, mut xm) = (x.clone(), x.clone());
                xp[j] += h;
                xm[j] -= h;
                let fd = (dens.log_density(&xp) - dens.log_density(&xm)) / (2.0 * h);
                assert!(
                    (g[j] - fd).abs() < 1e-5 * (1.0 + fd.abs()),
                    "t={t} j={j}: {} vs {fd}",
                    g[j]
                );
            }
            let r: f64 = dens.responsibilities(&x).iter().sum();
            assert!((r - 1.0).abs() < 1e-12);
        }
    }
}

#[test]
fn draws_match_the_closed_form_moments_and_diffusion() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (prior, _, _) = random_problem(&mut rng);
    let noise = Noise { s: 0.6, v: 0.64 };
    let mix = prior.diffuse(noise);
    let (xs, labels) = mix.sampler().draw(200_000, &mut rng);
    let d = mix.dim;
    let n = labels.len() as f64;
    let (m, c) = (mix.mean(), mix.covariance());
    let emp_mean: Vec<f64> = (0..d)
        .map(|j| xs.chunks(d).map(|r| r[j]).sum::<f64>() / n)
        .collect();
    for j in 0..d {
        let se = (c[(j, j)] / n).sqrt();
        assert!((emp_mean[j] - m[j]).abs() < 5.0 * se, "mean {j}");
        let var: f64 = xs
            .chunks(d)
            .map(|r| (r[j] - emp_mean[j]).powi(2))
            .sum::<f64>()
            / n;
        assert!(
            (var - c[(j, j)]).abs() < 0.02 * c[(j, j)],
            "var {j}: {var} vs {}",
            c[(j, j)]
        );
        // Diffusion: s μ_k, s² C_k + v I per component.
        let comp = &mix.components[0];
        let pk = &prior.components[0];
        assert!((comp.mean[j] - 0.6 * pk.mean[j]).abs() < 1e-15);
        assert!((comp.cov[(j, j)] - (0.36 * pk.cov[(j, j)] + 0.64)).abs() < 1e-14);
    }
    let frac0 = labels.iter().filter(|&&l| l == 0).count() as f64 / n;
    assert!((frac0 - 0.6).abs() < 5.0 * (0.24 / n).sqrt());
}

#[test]
fn bad_mixtures_are_config_errors() {
    let e = |r: fslens::Result<Mixture>| r.unwrap_err().to_string();
    let v = |x: f64| DVector::from_element(1, x);
    let m = |x: f64| DMatrix::from_element(1, 1, x);
    assert!(
        e(Mixture::new(
            &[1.0],
            vec![v(0.0)],
            vec![m(-1.0)],
            "data.prior"
        ))
        .contains("semi-definite")
    );
    assert!(
        e(Mixture::new(
            &[-1.0],
            vec![v(0.0)],
            vec![m(1.0)],
            "data.prior"
        ))
        .contains("data.prior")
    );
    assert!(
        e(Mixture::new(
            &[1.0, 1.0],
            vec![v(0.0)],
            vec![m(1.0)],
            "data.prior"
        ))
        .contains("per component")
    );
    let asym = DMatrix::from_row_slice(2, 2, &[1.0, 0.5, 0.0, 1.0]);
    assert!(
        e(Mixture::new(
            &[1.0],
            vec![DVector::zeros(2)],
            vec![asym],
            "k"
        ))
        .contains("symmetric")
    );
}

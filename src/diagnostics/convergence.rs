//! How far a posterior approximation at time t is from the analytic posterior at t (design
//! §11): the numbers `fslens converge` reports for the finite-sample posterior at each N and
//! for each sampler's cloud.
//!
//! With the analytic x_t | y of mean μ*, covariance Σ* and component weights w*:
//!
//!     mean error   ‖μ − μ*‖ / √tr Σ*          (in units of the posterior's spread)
//!     cov error    ‖Σ − Σ*‖_F / ‖Σ*‖_F
//!     weight TV    ½ Σ_k |w_k − w*_k|
//!     SW₂          sliced Wasserstein-2 between a cloud and as many analytic draws:
//!                  √(mean over L unit directions u of (1/K) Σ_j (sort(⟨x, u⟩)_j − sort(⟨z, u⟩)_j)²)
//!
//! The finite-sample posterior over x_t is Σ_i ω_i N(s a_i, v I): μ = s Σ ω_i a_i,
//! Σ = s² Cov_ω(a) + v I, and its component weights are Σ_{i: label_i = k} ω_i — closed forms,
//! no sampling. A cloud's component weights are its mean responsibilities (1/K) Σ_j r_k(x_j)
//! under the analytic posterior at t, an unbiased estimate of w* for exact draws.

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::Serialize;

use crate::Result;
use crate::analytic::{Mixture, MixtureDensity};
use crate::engine::Noise;

/// The analytic posterior at one t, as the comparisons need it.
pub struct Reference {
    pub mean: DVector<f64>,
    pub cov: DMatrix<f64>,
    pub weights: Vec<f64>,
    density: MixtureDensity,
    /// √tr Σ* and ‖Σ*‖_F.
    spread: f64,
    cov_norm: f64,
}

impl Reference {
    /// From the analytic posterior diffused to t (covariances positive definite).
    pub fn new(at_t: &Mixture) -> Result<Reference> {
        let cov = at_t.covariance();
        Ok(Reference {
            mean: at_t.mean(),
            spread: cov.trace().sqrt(),
            cov_norm: cov.norm(),
            cov,
            weights: at_t.weights(),
            density: MixtureDensity::new(at_t)?,
        })
    }

    /// The three moment errors of an approximation with `mean`, `cov`, component `weights`.
    pub fn errors(&self, mean: &DVector<f64>, cov: &DMatrix<f64>, weights: &[f64]) -> Errors {
        Errors {
            mean_error: (mean - &self.mean).norm() / self.spread,
            cov_error: (cov - &self.cov).norm() / self.cov_norm,
            weight_tv: 0.5
                * self
                    .weights
                    .iter()
                    .zip(weights)
                    .map(|(a, b)| (a - b).abs())
                    .sum::<f64>(),
            sliced_wasserstein: None,
        }
    }

    /// Mean responsibilities of a cloud (K × D, float64).
    pub fn cloud_weights(&self, cloud: &[f64], dim: usize) -> Vec<f64> {
        let mut w = vec![0.0; self.weights.len()];
        let n = cloud.len() / dim;
        for x in cloud.chunks(dim) {
            for (a, r) in w.iter_mut().zip(self.density.responsibilities(x)) {
                *a += r / n as f64;
            }
        }
        w
    }

    /// The errors of a cloud: its sample mean and covariance (K − 1), its mean
    /// responsibilities, and SW₂ against `reference` (analytic draws, as many as the cloud).
    pub fn cloud_errors(
        &self,
        cloud: &[f64],
        dim: usize,
        reference: &[f64],
        slices: usize,
        seed: u64,
    ) -> Errors {
        let (mean, cov) = cloud_moments(cloud, dim);
        let mut e = self.errors(&mean, &cov, &self.cloud_weights(cloud, dim));
        e.sliced_wasserstein = Some(sliced_wasserstein(cloud, reference, dim, slices, seed));
        e
    }
}

/// One approximation's errors at one t (see the module notes).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct Errors {
    pub mean_error: f64,
    pub cov_error: f64,
    pub weight_tv: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sliced_wasserstein: Option<f64>,
}

/// Σ ω_i a_i, Cov_ω(a) = Σ ω_i (a_i − ā)(a_i − ā)ᵀ and Σ_{i∈k} ω_i over atoms (N × D) with
/// weights ω (summing to 1) and labels in 0..k; atoms with ω_i below 10⁻¹⁸ of the largest
/// weight are skipped (they move nothing at float64 precision).
pub fn weighted_atom_moments(
    atoms: &[f32],
    dim: usize,
    omega: &[f64],
    labels: &[u32],
    components: usize,
) -> (DVector<f64>, DMatrix<f64>, Vec<f64>) {
    let floor = omega.iter().cloned().fold(0.0, f64::max) * 1e-18;
    let kept: Vec<usize> = (0..omega.len()).filter(|&i| omega[i] > floor).collect();
    let mut mean = DVector::zeros(dim);
    let mut comp = vec![0.0; components];
    for &i in &kept {
        let a = &atoms[i * dim..(i + 1) * dim];
        for (m, &x) in mean.iter_mut().zip(a) {
            *m += omega[i] * f64::from(x);
        }
        comp[labels[i] as usize] += omega[i];
    }
    // Centred rows scaled by √ω_i, then one Gram product per block (nalgebra's GEMM).
    const BLOCK: usize = 4096;
    let mut cov = DMatrix::zeros(dim, dim);
    for block in kept.chunks(BLOCK) {
        let mut c = DMatrix::zeros(dim, block.len());
        for (j, &i) in block.iter().enumerate() {
            let w = omega[i].sqrt();
            for d in 0..dim {
                c[(d, j)] = w * (f64::from(atoms[i * dim + d]) - mean[d]);
            }
        }
        cov.gemm(1.0, &c, &c.transpose(), 1.0);
    }
    (mean, cov, comp)
}

/// The finite-sample posterior's moments at noise (s, v) from its moments at t = 0:
/// s ā and s² Cov_ω + v I.
pub fn diffuse_moments(
    mean: &DVector<f64>,
    cov: &DMatrix<f64>,
    noise: Noise,
) -> (DVector<f64>, DMatrix<f64>) {
    let d = mean.len();
    (
        mean * noise.s,
        cov * (noise.s * noise.s) + DMatrix::identity(d, d) * noise.v,
    )
}

/// Sample mean and covariance (K − 1 normalisation) of a cloud, K × D.
pub fn cloud_moments(cloud: &[f64], dim: usize) -> (DVector<f64>, DMatrix<f64>) {
    let n = cloud.len() / dim;
    let x = DMatrix::from_row_slice(n, dim, cloud);
    let mean = x.row_mean().transpose();
    let mut c = x;
    for mut row in c.row_iter_mut() {
        row -= mean.transpose();
    }
    let cov = c.transpose() * &c / (n.max(2) - 1) as f64;
    (mean, cov)
}

/// SW₂ between two clouds of the same size (K × D each) over `slices` seeded random unit
/// directions (module notes).
pub fn sliced_wasserstein(a: &[f64], b: &[f64], dim: usize, slices: usize, seed: u64) -> f64 {
    assert_eq!(a.len(), b.len(), "sliced Wasserstein of clouds of one size");
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let mut total = 0.0;
    for _ in 0..slices {
        let mut u: Vec<f64> = (0..dim).map(|_| StandardNormal.sample(&mut rng)).collect();
        let norm = u.iter().map(|x| x * x).sum::<f64>().sqrt();
        u.iter_mut().for_each(|x| *x /= norm);
        let project = |c: &[f64]| {
            let mut p: Vec<f64> = c
                .chunks(dim)
                .map(|x| x.iter().zip(&u).map(|(a, b)| a * b).sum())
                .collect();
            p.sort_by(f64::total_cmp);
            p
        };
        let (pa, pb) = (project(a), project(b));
        total += pa
            .iter()
            .zip(&pb)
            .map(|(x, y)| (x - y) * (x - y))
            .sum::<f64>()
            / pa.len() as f64;
    }
    (total / slices as f64).sqrt()
}

/// The least-squares slope of ln y on ln x over the points with x, y > 0; None with fewer
/// than two such points.
pub fn log_log_slope(points: &[(f64, f64)]) -> Option<f64> {
    let p: Vec<(f64, f64)> = points
        .iter()
        .filter(|(x, y)| *x > 0.0 && *y > 0.0 && x.is_finite() && y.is_finite())
        .map(|(x, y)| (x.ln(), y.ln()))
        .collect();
    if p.len() < 2 {
        return None;
    }
    let n = p.len() as f64;
    let (mx, my) = (
        p.iter().map(|q| q.0).sum::<f64>() / n,
        p.iter().map(|q| q.1).sum::<f64>() / n,
    );
    let sxx: f64 = p.iter().map(|q| (q.0 - mx).powi(2)).sum();
    let sxy: f64 = p.iter().map(|q| (q.0 - mx) * (q.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_moments_match_naive_sums() {
        let (n, d) = (300, 3);
        let atoms: Vec<f32> = (0..n * d)
            .map(|i| ((i * 37 % 101) as f32 / 50.0) - 1.0)
            .collect();
        let raw: Vec<f64> = (0..n).map(|i| 1.0 + (i % 7) as f64).collect();
        let z: f64 = raw.iter().sum();
        let omega: Vec<f64> = raw.iter().map(|r| r / z).collect();
        let labels: Vec<u32> = (0..n).map(|i| (i % 2) as u32).collect();
        let (m, c, w) = weighted_atom_moments(&atoms, d, &omega, &labels, 2);
        let mut mn = [0.0; 3];
        for i in 0..n {
            for j in 0..d {
                mn[j] += omega[i] * atoms[i * d + j] as f64;
            }
        }
        for a in 0..d {
            assert!((m[a] - mn[a]).abs() < 1e-13);
            for b in 0..d {
                let naive: f64 = (0..n)
                    .map(|i| {
                        omega[i]
                            * (atoms[i * d + a] as f64 - mn[a])
                            * (atoms[i * d + b] as f64 - mn[b])
                    })
                    .sum();
                assert!((c[(a, b)] - naive).abs() < 1e-13);
            }
        }
        let w0: f64 = (0..n).filter(|i| i % 2 == 0).map(|i| omega[i]).sum();
        assert!((w[0] - w0).abs() < 1e-14 && (w[0] + w[1] - 1.0).abs() < 1e-12);
    }

    #[test]
    fn sliced_wasserstein_of_a_shift_and_slopes() {
        // In 1-D every slice is ±1: SW₂ of a shifted cloud is the shift exactly.
        let a: Vec<f64> = (0..50).map(|i| (i as f64).sin()).collect();
        let b: Vec<f64> = a.iter().map(|x| x + 0.3).collect();
        assert!((sliced_wasserstein(&a, &b, 1, 5, 0) - 0.3).abs() < 1e-12);
        assert_eq!(sliced_wasserstein(&a, &a, 1, 5, 0), 0.0);
        // In D dimensions a shift δ gives SW₂² = mean_u ⟨u, δ⟩² ≈ ‖δ‖²/D.
        let d = 4;
        let a: Vec<f64> = (0..40 * d).map(|i| ((i * 13 % 17) as f64) / 17.0).collect();
        let b: Vec<f64> = a
            .iter()
            .enumerate()
            .map(|(i, x)| if i % d == 0 { x + 1.0 } else { *x })
            .collect();
        let sw = sliced_wasserstein(&a, &b, d, 4000, 1);
        assert!((sw * sw - 0.25).abs() < 0.03, "{sw}");
        let pts: Vec<(f64, f64)> = [1e2, 1e3, 1e4]
            .iter()
            .map(|&n: &f64| (n, 3.0 * n.powf(-0.5)))
            .collect();
        assert!((log_log_slope(&pts).unwrap() + 0.5).abs() < 1e-12);
        assert!(log_log_slope(&pts[..1]).is_none());
    }

    #[test]
    fn exact_moments_have_zero_error_and_cloud_moments_are_unbiased() {
        let m = Mixture::new(
            &[0.3, 0.7],
            vec![
                DVector::from_vec(vec![1.0, 0.0]),
                DVector::from_vec(vec![-1.0, 0.5]),
            ],
            vec![DMatrix::identity(2, 2) * 0.2, DMatrix::identity(2, 2) * 0.1],
            "t",
        )
        .unwrap();
        let r = Reference::new(&m).unwrap();
        let e = r.errors(&m.mean(), &m.covariance(), &m.weights());
        assert_eq!((e.mean_error, e.cov_error, e.weight_tv), (0.0, 0.0, 0.0));
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        let (x, _) = m.sampler().draw(20_000, &mut rng);
        let (z, _) = m.sampler().draw(20_000, &mut rng);
        let e = r.cloud_errors(&x, 2, &z, 32, 0);
        assert!(
            e.mean_error < 0.03 && e.cov_error < 0.03 && e.weight_tv < 0.01,
            "{e:?}"
        );
        assert!(e.sliced_wasserstein.unwrap() < 0.03);
    }
}

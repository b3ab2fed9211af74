//! A Gaussian mixture in float64: moments, sampling, the diffused marginal and the
//! posterior under a linear Gaussian measurement (the closed forms of the module notes).

use nalgebra::{DMatrix, DVector};
use rand::Rng;
use rand_distr::StandardNormal;

use crate::engine::Noise;
use crate::engine::logsumexp::{log_sum_exp, softmax};
use crate::{Error, Result};

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// One component N(mean, cov) with its mixture weight.
#[derive(Clone, Debug, PartialEq)]
pub struct Component {
    pub weight: f64,
    pub mean: DVector<f64>,
    /// Symmetric positive semi-definite (zero for a discrete prior's points).
    pub cov: DMatrix<f64>,
}

/// Σ_k π_k N(μ_k, C_k) in D dimensions; the weights sum to 1.
#[derive(Clone, Debug, PartialEq)]
pub struct Mixture {
    pub dim: usize,
    pub components: Vec<Component>,
}

/// The posterior of a measurement: the mixture over x₀ | y and log p(y).
#[derive(Clone, Debug)]
pub struct Conditioned {
    pub posterior: Mixture,
    /// log p(y) = log Σ_k π_k N(y; A μ_k, G_k), the evidence.
    pub log_evidence: f64,
}

impl Mixture {
    /// A mixture from weights (normalised here; non-negative, not all zero), means and
    /// covariances (symmetric PSD, checked to 10⁻⁹ of their scale). `key` names the config
    /// table the values came from in errors.
    pub fn new(
        weights: &[f64],
        means: Vec<DVector<f64>>,
        covs: Vec<DMatrix<f64>>,
        key: &str,
    ) -> Result<Mixture> {
        let k = weights.len();
        if k == 0 || means.len() != k || covs.len() != k {
            return Err(Error::config(
                key,
                format!(
                    "needs one weight, mean and covariance per component; got {k} weights, {} means, {} covariances",
                    means.len(),
                    covs.len()
                ),
            ));
        }
        let dim = means[0].len();
        let total: f64 = weights.iter().sum();
        if dim == 0
            || weights.iter().any(|w| !(w.is_finite() && *w >= 0.0))
            || !(total > 0.0 && total.is_finite())
        {
            return Err(Error::config(
                key,
                format!(
                    "weights must be finite, non-negative and not all zero, in dimension ≥ 1; got {weights:?} in D = {dim}"
                ),
            ));
        }
        let mut components = Vec::with_capacity(k);
        for (j, ((w, mean), cov)) in weights.iter().zip(means).zip(covs).enumerate() {
            check_component(j, dim, &mean, &cov, key)?;
            components.push(Component {
                weight: w / total,
                mean,
                cov,
            });
        }
        Ok(Mixture { dim, components })
    }

    pub fn weights(&self) -> Vec<f64> {
        self.components.iter().map(|c| c.weight).collect()
    }

    /// E x = Σ_k π_k μ_k.
    pub fn mean(&self) -> DVector<f64> {
        let mut m = DVector::zeros(self.dim);
        for c in &self.components {
            m.axpy(c.weight, &c.mean, 1.0);
        }
        m
    }

    /// Cov x = Σ_k π_k (C_k + (μ_k − m)(μ_k − m)ᵀ) (the law of total covariance).
    pub fn covariance(&self) -> DMatrix<f64> {
        let m = self.mean();
        let mut cov = DMatrix::zeros(self.dim, self.dim);
        for c in &self.components {
            let d = &c.mean - &m;
            cov += c.weight * (&c.cov + &d * d.transpose());
        }
        cov
    }

    /// The law of x_t = s x + √v ε: Σ_k π_k N(s μ_k, s² C_k + v I).
    pub fn diffuse(&self, noise: Noise) -> Mixture {
        let (s, v) = (noise.s, noise.v);
        let eye = DMatrix::<f64>::identity(self.dim, self.dim);
        Mixture {
            dim: self.dim,
            components: self
                .components
                .iter()
                .map(|c| Component {
                    weight: c.weight,
                    mean: &c.mean * s,
                    cov: &c.cov * (s * s) + &eye * v,
                })
                .collect(),
        }
    }

    /// The posterior under y = A x + σ n (A is m × D): weights w_k ∝ π_k N(y; A μ_k, G_k),
    /// means m_k and covariances P_k of the module notes, and the evidence log p(y).
    pub fn condition(&self, a: &DMatrix<f64>, y: &DVector<f64>, sigma: f64) -> Result<Conditioned> {
        let m = a.nrows();
        if a.ncols() != self.dim || y.len() != m {
            return Err(Error::input(format!(
                "measurement shapes do not match: A is {}×{}, y has {} values, the prior has D = {}",
                a.nrows(),
                a.ncols(),
                y.len(),
                self.dim
            )));
        }
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(Error::config(
                "measurement.sigma",
                format!("must be a positive number, got {sigma}"),
            ));
        }
        let mut log_w = Vec::with_capacity(self.components.len());
        let mut parts = Vec::with_capacity(self.components.len());
        for c in &self.components {
            // K = C Aᵀ (D × m); G = A K + σ² I.
            let k = &c.cov * a.transpose();
            let mut g = a * &k;
            for i in 0..m {
                g[(i, i)] += sigma * sigma;
            }
            let g = symmetrise(g);
            let chol = g.clone().cholesky().ok_or_else(|| {
                Error::input("A C Aᵀ + σ² I is not positive definite (σ too small for float64?)")
            })?;
            let r = y - a * &c.mean;
            let z = chol
                .l()
                .solve_lower_triangular(&r)
                .expect("Cholesky factor");
            let log_det: f64 = 2.0 * chol.l().diagonal().iter().map(|d| d.ln()).sum::<f64>();
            log_w.push(c.weight.ln() - 0.5 * (z.norm_squared() + log_det + m as f64 * LN_2PI));
            let gi_r = chol.solve(&r);
            let mean = &c.mean + &k * gi_r;
            let gi_kt = chol.solve(&k.transpose());
            let cov = symmetrise(&c.cov - &k * gi_kt);
            parts.push((mean, cov));
        }
        let log_evidence = log_sum_exp(&log_w);
        let weights = softmax(&log_w);
        let components = weights
            .into_iter()
            .zip(parts)
            .map(|(weight, (mean, cov))| Component { weight, mean, cov })
            .collect();
        Ok(Conditioned {
            posterior: Mixture {
                dim: self.dim,
                components,
            },
            log_evidence,
        })
    }

    /// A sampler holding a factor F_k (F_k F_kᵀ = C_k) of every component.
    pub fn sampler(&self) -> MixtureSampler {
        let factors = self.components.iter().map(|c| psd_factor(&c.cov)).collect();
        let mut cdf = Vec::with_capacity(self.components.len());
        let mut acc = 0.0;
        for c in &self.components {
            acc += c.weight;
            cdf.push(acc);
        }
        MixtureSampler {
            mixture: self.clone(),
            factors,
            cdf,
        }
    }
}

/// Draws from a [`Mixture`]: component k ~ Cat(π), then μ_k + F_k ε.
#[derive(Clone, Debug)]
pub struct MixtureSampler {
    mixture: Mixture,
    factors: Vec<Option<DMatrix<f64>>>,
    cdf: Vec<f64>,
}

impl MixtureSampler {
    /// One draw into `out` (D values); returns its component.
    pub fn draw_into(&self, rng: &mut impl Rng, out: &mut [f64]) -> usize {
        let total = *self.cdf.last().expect("a mixture has components");
        let u = rng.random::<f64>() * total;
        let k = self
            .cdf
            .partition_point(|&c| c <= u)
            .min(self.cdf.len() - 1);
        let c = &self.mixture.components[k];
        out.copy_from_slice(c.mean.as_slice());
        if let Some(f) = &self.factors[k] {
            let e = DVector::from_iterator(
                f.ncols(),
                (0..f.ncols()).map(|_| rng.sample(StandardNormal)),
            );
            for (o, v) in out.iter_mut().zip((f * e).iter()) {
                *o += v;
            }
        }
        k
    }

    /// n draws, n × D row-major, and each draw's component.
    pub fn draw(&self, n: usize, rng: &mut impl Rng) -> (Vec<f64>, Vec<u32>) {
        let d = self.mixture.dim;
        let mut x = vec![0.0; n * d];
        let labels = x
            .chunks_mut(d)
            .map(|row| self.draw_into(rng, row) as u32)
            .collect();
        (x, labels)
    }
}

/// F with F Fᵀ = C for a symmetric PSD C (eigenvalues below zero from rounding clamped to
/// 0); `None` for C = 0 (a point mass).
fn psd_factor(c: &DMatrix<f64>) -> Option<DMatrix<f64>> {
    if c.iter().all(|&v| v == 0.0) {
        return None;
    }
    if let Some(ch) = c.clone().cholesky() {
        return Some(ch.l());
    }
    let eig = c.clone().symmetric_eigen();
    let mut f = eig.eigenvectors;
    for (j, &l) in eig.eigenvalues.iter().enumerate() {
        let r = l.max(0.0).sqrt();
        f.column_mut(j).scale_mut(r);
    }
    Some(f)
}

/// ½(M + Mᵀ): products like C Aᵀ G⁻¹ A C are symmetric only up to rounding.
fn symmetrise(m: DMatrix<f64>) -> DMatrix<f64> {
    let t = m.transpose();
    (m + t) * 0.5
}

fn check_component(
    j: usize,
    dim: usize,
    mean: &DVector<f64>,
    cov: &DMatrix<f64>,
    key: &str,
) -> Result<()> {
    if mean.len() != dim || cov.nrows() != dim || cov.ncols() != dim {
        return Err(Error::config(
            key,
            format!(
                "component {j}: mean has {} values and covariance is {}×{}, but D = {dim}",
                mean.len(),
                cov.nrows(),
                cov.ncols()
            ),
        ));
    }
    if mean.iter().chain(cov.iter()).any(|v| !v.is_finite()) {
        return Err(Error::config(
            key,
            format!("component {j}: mean and covariance must be finite"),
        ));
    }
    let scale = cov.iter().fold(0.0f64, |a, v| a.max(v.abs()));
    let asym = (cov - cov.transpose())
        .iter()
        .fold(0.0f64, |a, v| a.max(v.abs()));
    if asym > 1e-9 * scale {
        return Err(Error::config(
            key,
            format!("component {j}: covariance is not symmetric (|C − Cᵀ| up to {asym:e})"),
        ));
    }
    if scale > 0.0 {
        let min = cov.clone().symmetric_eigen().eigenvalues.min();
        if min < -1e-9 * scale {
            return Err(Error::config(
                key,
                format!(
                    "component {j}: covariance is not positive semi-definite (smallest eigenvalue {min:e})"
                ),
            ));
        }
    }
    Ok(())
}

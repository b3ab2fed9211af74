//! Density, responsibilities and score of a Gaussian mixture with positive definite
//! covariances (a diffused mixture at t > 0 always has them: s² P_k + v I with v > 0).
//!
//!     log p(x) = log Σ_k π_k N(x; μ_k, Σ_k),   r_k(x) = π_k N(x; μ_k, Σ_k) / p(x),
//!     ∇ log p(x) = Σ_k r_k(x) (−Σ_k⁻¹ (x − μ_k)).

use nalgebra::{DMatrix, DVector};

use super::Mixture;
use crate::engine::logsumexp::{log_sum_exp, softmax};
use crate::{Error, Result};

const LN_2PI: f64 = 1.837_877_066_409_345_3;

/// A mixture with each covariance factored once (Σ_k = L_k L_kᵀ).
#[derive(Clone, Debug)]
pub struct MixtureDensity {
    dim: usize,
    log_weights: Vec<f64>,
    means: Vec<DVector<f64>>,
    factors: Vec<DMatrix<f64>>,
    /// −½ log det(2π Σ_k).
    log_norms: Vec<f64>,
}

impl MixtureDensity {
    /// Fails when a covariance is not positive definite (a point mass has no density: diffuse
    /// it to some t > 0 first).
    pub fn new(mixture: &Mixture) -> Result<MixtureDensity> {
        let d = mixture.dim;
        let mut out = MixtureDensity {
            dim: d,
            log_weights: Vec::new(),
            means: Vec::new(),
            factors: Vec::new(),
            log_norms: Vec::new(),
        };
        for (k, c) in mixture.components.iter().enumerate() {
            let chol = c.cov.clone().cholesky().ok_or_else(|| {
                Error::input(format!(
                    "component {k}'s covariance is not positive definite, so the mixture has no density; evaluate it at a time t > 0"
                ))
            })?;
            let l = chol.l();
            let log_det: f64 = 2.0 * l.diagonal().iter().map(|v| v.ln()).sum::<f64>();
            out.log_weights.push(c.weight.ln());
            out.means.push(c.mean.clone());
            out.log_norms.push(-0.5 * (log_det + d as f64 * LN_2PI));
            out.factors.push(l);
        }
        Ok(out)
    }

    /// z_k = L_k⁻¹ (x − μ_k) for every component.
    fn whitened(&self, x: &[f64]) -> Vec<DVector<f64>> {
        assert_eq!(x.len(), self.dim, "a point of the mixture's dimension");
        let x = DVector::from_column_slice(x);
        self.means
            .iter()
            .zip(&self.factors)
            .map(|(m, l)| {
                l.solve_lower_triangular(&(&x - m))
                    .expect("Cholesky factor")
            })
            .collect()
    }

    fn component_logs(&self, z: &[DVector<f64>]) -> Vec<f64> {
        z.iter()
            .enumerate()
            .map(|(k, z)| self.log_weights[k] + self.log_norms[k] - 0.5 * z.norm_squared())
            .collect()
    }

    /// log p(x).
    pub fn log_density(&self, x: &[f64]) -> f64 {
        log_sum_exp(&self.component_logs(&self.whitened(x)))
    }

    /// The responsibilities r_k(x) (they sum to 1).
    pub fn responsibilities(&self, x: &[f64]) -> Vec<f64> {
        softmax(&self.component_logs(&self.whitened(x)))
    }

    /// ∇ log p(x) = −Σ_k r_k(x) Σ_k⁻¹ (x − μ_k), with Σ_k⁻¹ (x − μ_k) = L_k⁻ᵀ z_k.
    pub fn score(&self, x: &[f64]) -> Vec<f64> {
        let z = self.whitened(x);
        let r = softmax(&self.component_logs(&z));
        let mut g = DVector::zeros(self.dim);
        for ((rk, zk), l) in r.iter().zip(&z).zip(&self.factors) {
            if *rk == 0.0 {
                continue;
            }
            let u = l.tr_solve_lower_triangular(zk).expect("Cholesky factor");
            g.axpy(-rk, &u, 1.0);
        }
        g.as_slice().to_vec()
    }
}

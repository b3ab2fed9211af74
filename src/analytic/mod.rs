//! Analytic priors with closed-form posteriors: Gaussian mixtures in float64 (design §11).
//!
//! A prior Σ_k π_k N(μ_k, C_k) (a single Gaussian is K = 1; a discrete prior has C_k = 0)
//! under a linear measurement y = A x₀ + σ n, n ~ N(0, I), has a Gaussian-mixture posterior
//! ([`Mixture::condition`]):
//!
//!     G_k = A C_k Aᵀ + σ² I,   w_k ∝ π_k N(y; A μ_k, G_k),
//!     m_k = μ_k + C_k Aᵀ G_k⁻¹ (y − A μ_k),   P_k = C_k − C_k Aᵀ G_k⁻¹ A C_k,
//!
//! and under the VP forward process x_t = s x₀ + √v ε (design §2) every mixture stays one
//! ([`Mixture::diffuse`]): x_t | y ~ Σ_k w_k N(s m_k, s² P_k + v I). Its density and score
//! are in [`density`]. These are the references `fslens converge` measures the
//! finite-sample posterior against: the empirical prior of N draws from the analytic prior.
//!
//! Linear algebra is nalgebra's (Cholesky for solves and densities, the symmetric eigen
//! decomposition for sampling factors of possibly singular covariances).

pub mod density;
pub mod mixture;

pub use density::MixtureDensity;
pub use mixture::{Component, Conditioned, Mixture, MixtureSampler};

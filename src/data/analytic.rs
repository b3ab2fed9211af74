//! Analytic priors as data sets (`data.kind` = "gaussian", "gmm", "discrete"): the
//! `[data.prior]` table names a Gaussian mixture (given or seeded means, covariances and
//! weights; a discrete prior's points), and the atoms are `count` seeded draws from it.
//! Labels are the generating component, so the class machinery (mode weights, mode TV)
//! reads components as modes.
//!
//! ```toml
//! [data]
//! kind = "gmm"
//! count = 10000
//! seed = 0
//! [data.prior]
//! dim = 64            # D (or implied by `means` / `points`)
//! image = [8, 8]      # the shape the report draws (default: a square, else 1 × D)
//! components = 4      # K for seeded means
//! mean_scale = 0.5    # seeded means ~ N(0, mean_scale² I)
//! std = 0.25          # C_k = std² I, or std² W_k with random_covariance = true
//! random_covariance = false  # W_k = B Bᵀ/(2D) + ½ I, B with N(0, 1) entries (seeded)
//! # means = [[…], …], covariances = [[[…]]], weights = [0.4, 0.6], points = [[…], …]
//! ```
//!
//! Seeds: the prior's parameters come from stream 0 of ChaCha8(seed), the atoms from stream 1,
//! so the same prior gets more atoms as `count` grows (a draw does not depend on the count).

use nalgebra::{DMatrix, DVector};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};
use serde::{Deserialize, Serialize};

use super::{Dataset, ImageShape};
use crate::analytic::Mixture;
use crate::{Error, Result};

/// Which analytic family (`data.kind`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// One Gaussian (K = 1).
    Gaussian,
    /// K Gaussians.
    Gmm,
    /// K points (covariances 0).
    Discrete,
}

impl Family {
    pub fn name(self) -> &'static str {
        match self {
            Family::Gaussian => "gaussian",
            Family::Gmm => "gmm",
            Family::Discrete => "discrete",
        }
    }
}

/// The `[data.prior]` table (every key optional; see the module notes).
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriorConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub dim: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<[usize; 2]>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub components: Option<usize>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub means: Option<Vec<Vec<f64>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mean_scale: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub std: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub random_covariance: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub covariances: Option<Vec<Vec<Vec<f64>>>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub weights: Option<Vec<f64>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub points: Option<Vec<Vec<f64>>>,
}

// Config values compare as written (no NaN reaches a config through TOML numbers we accept).
impl Eq for PriorConfig {}

const KEY: &str = "data.prior";
/// Defaults: seeded means ~ N(0, 0.5² I), isotropic std 0.25, K = 4 (gmm) or 3 (discrete).
pub const DEFAULT_MEAN_SCALE: f64 = 0.5;
pub const DEFAULT_STD: f64 = 0.25;
pub const DEFAULT_DIM: usize = 64;

impl PriorConfig {
    /// The mixture this table describes for `family`, seeded parameters from `seed`.
    pub fn mixture(&self, family: Family, seed: u64) -> Result<Mixture> {
        self.check_keys(family)?;
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        rng.set_stream(0);
        let given = match family {
            Family::Discrete => self.points.as_ref(),
            _ => self.means.as_ref(),
        };
        let k = match (family, given) {
            (_, Some(m)) => m.len(),
            (Family::Gaussian, None) => 1,
            (Family::Gmm, None) => self.components.unwrap_or(4),
            (Family::Discrete, None) => self.components.unwrap_or(3),
        };
        if k == 0 || (family == Family::Gaussian && k != 1) {
            return Err(Error::config(
                KEY,
                format!(
                    "{} needs {} component(s), got {k}",
                    family.name(),
                    if family == Family::Gaussian {
                        "exactly 1"
                    } else {
                        "at least 1"
                    }
                ),
            ));
        }
        let dim = match given {
            Some(m) => m[0].len(),
            None => self.dim.unwrap_or(DEFAULT_DIM),
        };
        if dim == 0 || self.dim.is_some_and(|d| d != dim) {
            return Err(Error::config(
                format!("{KEY}.dim"),
                format!(
                    "is {:?} but the given means/points have {dim} values; make them agree",
                    self.dim
                ),
            ));
        }
        let scale = positive(self.mean_scale, DEFAULT_MEAN_SCALE, "mean_scale")?;
        let means: Vec<DVector<f64>> = match given {
            Some(m) => m.iter().map(|v| DVector::from_column_slice(v)).collect(),
            None => (0..k)
                .map(|_| DVector::from_fn(dim, |_, _| scale * sample_normal(&mut rng)))
                .collect(),
        };
        let covs = self.covariances_for(family, k, dim, &mut rng)?;
        let weights = match &self.weights {
            Some(w) => w.clone(),
            None => vec![1.0; k],
        };
        if weights.len() != k {
            return Err(Error::config(
                format!("{KEY}.weights"),
                format!(
                    "has {} weights for {k} components; give one per component",
                    weights.len()
                ),
            ));
        }
        Mixture::new(&weights, means, covs, KEY)
    }

    fn covariances_for(
        &self,
        family: Family,
        k: usize,
        dim: usize,
        rng: &mut ChaCha8Rng,
    ) -> Result<Vec<DMatrix<f64>>> {
        if family == Family::Discrete {
            return Ok(vec![DMatrix::zeros(dim, dim); k]);
        }
        if let Some(c) = &self.covariances {
            if c.len() != k {
                return Err(Error::config(
                    format!("{KEY}.covariances"),
                    format!(
                        "has {} matrices for {k} components; give one D × D matrix per component",
                        c.len()
                    ),
                ));
            }
            return c
                .iter()
                .map(|rows| {
                    if rows.len() != dim || rows.iter().any(|r| r.len() != dim) {
                        return Err(Error::config(
                            format!("{KEY}.covariances"),
                            format!("each matrix must be {dim} × {dim} (D × D)"),
                        ));
                    }
                    Ok(DMatrix::from_fn(dim, dim, |i, j| rows[i][j]))
                })
                .collect();
        }
        let std = positive(self.std, DEFAULT_STD, "std")?;
        let var = std * std;
        Ok((0..k)
            .map(|_| {
                if self.random_covariance == Some(true) {
                    let b = DMatrix::from_fn(dim, dim, |_, _| sample_normal(rng));
                    (&b * b.transpose() / (2.0 * dim as f64) + DMatrix::identity(dim, dim) * 0.5)
                        * var
                } else {
                    DMatrix::identity(dim, dim) * var
                }
            })
            .collect())
    }

    /// Keys that do not apply to `family` are errors.
    fn check_keys(&self, family: Family) -> Result<()> {
        let bad: &[(&str, bool)] = match family {
            Family::Discrete => &[
                ("means", self.means.is_some()),
                ("std", self.std.is_some()),
                ("covariances", self.covariances.is_some()),
                ("random_covariance", self.random_covariance.is_some()),
            ],
            Family::Gaussian | Family::Gmm => &[("points", self.points.is_some())],
        };
        if let Some((key, _)) = bad.iter().find(|(_, set)| *set) {
            return Err(Error::config(
                format!("{KEY}.{key}"),
                format!(
                    "does not apply to data.kind = \"{}\"; remove it",
                    family.name()
                ),
            ));
        }
        if family == Family::Gaussian && self.components.is_some_and(|k| k != 1) {
            return Err(Error::config(
                format!("{KEY}.components"),
                "a gaussian prior has one component; use kind = \"gmm\" for more",
            ));
        }
        Ok(())
    }

    /// D as the table implies it (the given means or points, else `dim`, else 64), before
    /// any check (for the memory estimate).
    pub fn expected_dim(&self) -> usize {
        match (&self.means, &self.points) {
            (Some(m), _) | (None, Some(m)) if !m.is_empty() => m[0].len(),
            _ => self.dim.unwrap_or(DEFAULT_DIM),
        }
    }

    /// The image shape of D values: `image` when given (h·w must be D), else a square when D
    /// is one, else 1 × D.
    pub fn shape(&self, dim: usize) -> Result<ImageShape> {
        match self.image {
            Some([h, w]) if h * w == dim => Ok(ImageShape::new(h, w, 1)),
            Some([h, w]) => Err(Error::config(
                format!("{KEY}.image"),
                format!(
                    "[{h}, {w}] holds {} values but D = {dim}; give [h, w] with h·w = D",
                    h * w
                ),
            )),
            None => {
                let r = (dim as f64).sqrt().round() as usize;
                Ok(if r * r == dim {
                    ImageShape::new(r, r, 1)
                } else {
                    ImageShape::new(1, dim, 1)
                })
            }
        }
    }
}

fn positive(v: Option<f64>, default: f64, key: &str) -> Result<f64> {
    let x = v.unwrap_or(default);
    if x.is_finite() && x > 0.0 {
        Ok(x)
    } else {
        Err(Error::config(
            format!("{KEY}.{key}"),
            format!("must be a positive number, got {x}"),
        ))
    }
}

fn sample_normal(rng: &mut ChaCha8Rng) -> f64 {
    StandardNormal.sample(rng)
}

/// `count` draws from `mixture` (stream 1 of ChaCha8(seed)) as a data set of `shape`,
/// labelled by their component.
pub fn draw_atoms(
    mixture: &Mixture,
    family: Family,
    count: usize,
    seed: u64,
    shape: ImageShape,
) -> Result<Dataset> {
    if count == 0 {
        return Err(Error::config("data.count", "must be at least 1"));
    }
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    let (x, labels) = mixture.sampler().draw(count, &mut rng);
    let prefix = if family == Family::Discrete {
        "point"
    } else {
        "component"
    };
    Ok(Dataset {
        source: format!(
            "{}:K={},D={}",
            family.name(),
            mixture.components.len(),
            mixture.dim
        ),
        shape,
        images: x.iter().map(|&v| v as f32).collect(),
        labels: Some(labels),
        class_names: Some(
            (0..mixture.components.len())
                .map(|k| format!("{prefix} {k}"))
                .collect(),
        ),
        eight_bit: false,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg(s: &str) -> PriorConfig {
        toml::from_str(s).unwrap()
    }

    #[test]
    fn given_and_seeded_priors() {
        let c = cfg("points = [[-1.0], [0.0], [1.0]]\nweights = [1, 2, 1]");
        let m = c.mixture(Family::Discrete, 0).unwrap();
        assert_eq!(m.weights(), vec![0.25, 0.5, 0.25]);
        let ds = draw_atoms(&m, Family::Discrete, 4000, 3, c.shape(1).unwrap()).unwrap();
        assert_eq!(ds.shape, ImageShape::new(1, 1, 1));
        // Every atom is one of the points, and its label says which.
        for (x, &l) in ds.images.iter().zip(ds.labels.as_ref().unwrap()) {
            assert_eq!(*x, l as f32 - 1.0);
        }
        let frac = ds
            .labels
            .as_ref()
            .unwrap()
            .iter()
            .filter(|&&l| l == 1)
            .count() as f64
            / 4000.0;
        assert!((frac - 0.5).abs() < 5.0 * (0.25f64 / 4000.0).sqrt());
        // Seeded gmm: same seed same prior; more atoms keep the first ones.
        let c = cfg("dim = 16\ncomponents = 3\nrandom_covariance = true");
        let m = c.mixture(Family::Gmm, 5).unwrap();
        assert_eq!(m, c.mixture(Family::Gmm, 5).unwrap());
        assert_eq!((m.dim, m.components.len()), (16, 3));
        let a = draw_atoms(&m, Family::Gmm, 10, 5, c.shape(16).unwrap()).unwrap();
        let b = draw_atoms(&m, Family::Gmm, 20, 5, c.shape(16).unwrap()).unwrap();
        assert_eq!(a.images[..], b.images[..160]);
        assert_eq!(a.shape, ImageShape::new(4, 4, 1));
        let g = cfg("means = [[0.5, -0.5]]\ncovariances = [[[1.0, 0.3], [0.3, 2.0]]]")
            .mixture(Family::Gaussian, 0)
            .unwrap();
        assert_eq!(g.components[0].cov[(1, 0)], 0.3);
    }

    #[test]
    fn bad_tables_name_the_key() {
        let e = |c: &str, f: Family| cfg(c).mixture(f, 0).unwrap_err().to_string();
        assert!(e("std = 0.1", Family::Discrete).contains("data.prior.std"));
        assert!(e("points = [[1.0]]", Family::Gmm).contains("data.prior.points"));
        assert!(e("components = 2", Family::Gaussian).contains("data.prior.components"));
        assert!(e("dim = 3\nmeans = [[1.0, 2.0]]", Family::Gmm).contains("data.prior.dim"));
        assert!(e("weights = [1.0]\ncomponents = 2", Family::Gmm).contains("data.prior.weights"));
        assert!(e("std = -1", Family::Gmm).contains("data.prior.std"));
        assert!(
            e("means = [[0.0]]\ncovariances = [[[1.0, 0.0]]]", Family::Gmm)
                .contains("data.prior.covariances")
        );
        assert!(
            cfg("image = [3, 3]")
                .shape(8)
                .unwrap_err()
                .to_string()
                .contains("data.prior.image")
        );
        assert!(toml::from_str::<PriorConfig>("sdt = 1").is_err());
    }
}

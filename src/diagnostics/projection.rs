//! The direction u of the paper-style (t, ⟨x_t, u⟩) density picture (design §6), and the
//! projections of clouds on it.
//!
//! By default u points from the mean image of the second heaviest exact mode to that of the
//! heaviest, μ_m = Σ_{i∈m} ω_i a_i / Σ_{i∈m} ω_i, so the two modes the posterior chooses
//! between lie apart along it: u = (μ_1 − μ_2)/‖μ_1 − μ_2‖. `[diagnostics] direction =
//! "atoms:i,j"` gives u = (a_i − a_j)/‖a_i − a_j‖ instead.

use super::ExactPosterior;
use crate::{Error, Result};

/// What `[diagnostics] direction` asks for.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DirectionSpec {
    /// From the second heaviest exact mode's mean image to the heaviest's.
    Modes,
    /// From atom j to atom i: `atoms:i,j`.
    Atoms(usize, usize),
}

impl std::fmt::Display for DirectionSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DirectionSpec::Modes => f.write_str("modes"),
            DirectionSpec::Atoms(i, j) => write!(f, "atoms:{i},{j}"),
        }
    }
}

impl serde::Serialize for DirectionSpec {
    fn serialize<S: serde::Serializer>(&self, s: S) -> std::result::Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for DirectionSpec {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(d)?;
        DirectionSpec::parse(&text).map_err(serde::de::Error::custom)
    }
}

impl DirectionSpec {
    /// Parses `modes` or `atoms:i,j`.
    pub fn parse(text: &str) -> Result<DirectionSpec> {
        let text = text.trim();
        if text == "modes" {
            return Ok(DirectionSpec::Modes);
        }
        let bad = || {
            Error::config(
                "diagnostics.direction",
                format!(
                    "expected \"modes\" or \"atoms:i,j\" (two different atom indices), got {text:?}"
                ),
            )
        };
        let rest = text.strip_prefix("atoms:").ok_or_else(bad)?;
        let parts: Vec<&str> = rest.split(',').map(str::trim).collect();
        if parts.len() != 2 {
            return Err(bad());
        }
        let i = parts[0].parse::<usize>().map_err(|_| bad())?;
        let j = parts[1].parse::<usize>().map_err(|_| bad())?;
        if i == j {
            return Err(bad());
        }
        Ok(DirectionSpec::Atoms(i, j))
    }
}

/// A unit direction in image space and what it is, in words (for the plot's axis label).
#[derive(Clone, Debug, PartialEq)]
pub struct Direction {
    /// D values, ‖u‖ = 1.
    pub u: Vec<f64>,
    /// E.g. `"Shirt − Coat"` or `"atom 3 − atom 7"`.
    pub label: String,
}

impl Direction {
    /// The direction `spec` asks for under `posterior`. The mode direction falls back to the
    /// two heaviest atoms with different images when there is only one mode or the two mode
    /// means coincide; an `atoms:i,j` pair out of range or of equal images is an error.
    pub fn new(posterior: &ExactPosterior, spec: DirectionSpec) -> Result<Direction> {
        let d = posterior.dim();
        let n = posterior.omega.len();
        let atom = |i: usize| -> Vec<f64> {
            posterior.atoms[i * d..(i + 1) * d]
                .iter()
                .map(|&v| v as f64)
                .collect()
        };
        match spec {
            DirectionSpec::Atoms(i, j) => {
                if i >= n || j >= n {
                    return Err(Error::config(
                        "diagnostics.direction",
                        format!(
                            "atoms:{i},{j} names an atom beyond the {n} atoms (0-based, after the hold-out)"
                        ),
                    ));
                }
                unit(
                    difference(&atom(i), &atom(j)),
                    format!("atom {i} − atom {j}"),
                )
                .ok_or_else(|| {
                    Error::config(
                        "diagnostics.direction",
                        format!("atoms {i} and {j} are the same image; pick two that differ"),
                    )
                })
            }
            DirectionSpec::Modes => {
                let modes = &posterior.modes;
                let mut order: Vec<usize> = (0..modes.names.len()).collect();
                order.sort_by(|&a, &b| {
                    posterior.exact_mode_weights[b].total_cmp(&posterior.exact_mode_weights[a])
                });
                if order.len() >= 2 {
                    let (first, second) = (order[0], order[1]);
                    let (m1, m2) = (mode_mean(posterior, first), mode_mean(posterior, second));
                    if let (Some(m1), Some(m2)) = (m1, m2) {
                        let label = format!("{} − {}", modes.names[first], modes.names[second]);
                        if let Some(dir) = unit(difference(&m1, &m2), label) {
                            return Ok(dir);
                        }
                    }
                }
                // One mode, or modes whose means coincide: the two heaviest distinct atoms.
                let mut atoms: Vec<usize> = (0..n).collect();
                atoms.sort_by(|&a, &b| posterior.omega[b].total_cmp(&posterior.omega[a]));
                let first = atoms[0];
                let a1 = atom(first);
                for &other in &atoms[1..] {
                    if let Some(dir) = unit(
                        difference(&a1, &atom(other)),
                        format!("atom {first} − atom {other}"),
                    ) {
                        return Ok(dir);
                    }
                }
                // Every atom is the same image: any axis shows the (single) mode.
                let mut u = vec![0.0; d];
                if d > 0 {
                    u[0] = 1.0;
                }
                Ok(Direction {
                    u,
                    label: "pixel 0 (all atoms are equal)".into(),
                })
            }
        }
    }

    /// ⟨x_k, u⟩ for every row x_k of `cloud` (K × D), summed in float64.
    pub fn project(&self, cloud: &[f32]) -> Vec<f32> {
        let d = self.u.len();
        if d == 0 {
            return Vec::new();
        }
        cloud
            .chunks(d)
            .map(|x| {
                x.iter()
                    .zip(&self.u)
                    .map(|(&a, &b)| a as f64 * b)
                    .sum::<f64>() as f32
            })
            .collect()
    }
}

/// μ_m = Σ_{i∈m} ω_i a_i / Σ_{i∈m} ω_i, or the plain mean of the mode's atoms when its exact
/// mass underflows to 0; `None` for a mode without atoms.
fn mode_mean(posterior: &ExactPosterior, mode: usize) -> Option<Vec<f64>> {
    let d = posterior.dim();
    let members: Vec<usize> = (0..posterior.omega.len())
        .filter(|&i| posterior.modes.of_atom[i] == mode)
        .collect();
    if members.is_empty() {
        return None;
    }
    let mass: f64 = members.iter().map(|&i| posterior.omega[i]).sum();
    let mut mean = vec![0.0f64; d];
    for &i in &members {
        let w = if mass > 0.0 {
            posterior.omega[i] / mass
        } else {
            1.0 / members.len() as f64
        };
        for (m, &a) in mean.iter_mut().zip(&posterior.atoms[i * d..(i + 1) * d]) {
            *m += w * a as f64;
        }
    }
    Some(mean)
}

fn difference(a: &[f64], b: &[f64]) -> Vec<f64> {
    a.iter().zip(b).map(|(x, y)| x - y).collect()
}

/// v/‖v‖, or `None` when ‖v‖ is 0 (or too small to give a direction).
fn unit(v: Vec<f64>, label: String) -> Option<Direction> {
    let norm = v.iter().map(|x| x * x).sum::<f64>().sqrt();
    if norm.is_nan() || norm <= 1e-9 {
        return None;
    }
    Some(Direction {
        u: v.into_iter().map(|x| x / norm).collect(),
        label,
    })
}

#[cfg(test)]
mod tests {
    use rand::{Rng, SeedableRng};

    use super::*;
    use crate::data::{Dataset, ImageShape};
    use crate::diagnostics::{Measured, Options};
    use crate::diffusion::Schedule;
    use crate::operators::Identity;

    /// Three labelled classes of 2×3 images with random pixels, ω from random logits with
    /// class 2 made heaviest and class 0 second.
    fn data(seed: u64) -> (Dataset, Vec<f64>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let n = 30;
        let images = (0..n * 6).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let labels: Vec<u32> = (0..n).map(|i| (i % 3) as u32).collect();
        let logits: Vec<f64> = labels
            .iter()
            .map(|&c| [1.0, -3.0, 2.0][c as usize] + 0.5 * rng.random::<f64>())
            .collect();
        let ds = Dataset {
            source: "test".into(),
            shape: ImageShape::new(2, 3, 1),
            images,
            labels: Some(labels),
            class_names: Some(vec!["a".into(), "b".into(), "c".into()]),
            eight_bit: false,
        };
        (ds, crate::engine::logsumexp::softmax(&logits))
    }

    #[test]
    fn mode_direction_is_the_unit_difference_of_weighted_mode_means() {
        let (ds, omega) = data(1);
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
        let dir = Direction::new(&post, DirectionSpec::Modes).unwrap();
        assert_eq!(dir.label, "c − a");
        // Naive reference: weighted means of classes 2 and 0.
        let mean = |c: u32| -> Vec<f64> {
            let mut m = [0.0f64; 6];
            let mut mass = 0.0;
            for (i, &w) in omega.iter().enumerate() {
                if i % 3 == c as usize {
                    mass += w;
                    for (mq, &a) in m.iter_mut().zip(ds.image(i)) {
                        *mq += w * a as f64;
                    }
                }
            }
            m.iter().map(|v| v / mass).collect()
        };
        let (m2, m0) = (mean(2), mean(0));
        let diff: Vec<f64> = m2.iter().zip(&m0).map(|(a, b)| a - b).collect();
        let norm = diff.iter().map(|v| v * v).sum::<f64>().sqrt();
        for (u, v) in dir.u.iter().zip(&diff) {
            assert!((u - v / norm).abs() < 1e-12);
        }
        // Projections: float64 dot products of each row.
        let cloud: Vec<f32> = ds.images[..12].to_vec();
        let p = dir.project(&cloud);
        assert_eq!(p.len(), 2);
        for (k, &pk) in p.iter().enumerate() {
            let naive: f64 = (0..6).map(|q| cloud[k * 6 + q] as f64 * dir.u[q]).sum();
            assert!((pk as f64 - naive).abs() < 1e-6);
        }
        // atoms:i,j
        let dir = Direction::new(&post, DirectionSpec::Atoms(4, 7)).unwrap();
        assert_eq!(dir.label, "atom 4 − atom 7");
        let norm: f64 = dir.u.iter().map(|v| v * v).sum::<f64>();
        assert!((norm - 1.0).abs() < 1e-12);
        assert!(Direction::new(&post, DirectionSpec::Atoms(4, 30)).is_err());
    }

    #[test]
    fn direction_spec_parses_and_rejects() {
        assert_eq!(DirectionSpec::parse("modes").unwrap(), DirectionSpec::Modes);
        assert_eq!(
            DirectionSpec::parse("atoms:3, 12").unwrap(),
            DirectionSpec::Atoms(3, 12)
        );
        for bad in ["atoms:3", "atoms:3,3", "atoms:a,b", "mode", ""] {
            let e = DirectionSpec::parse(bad).unwrap_err().to_string();
            assert!(e.contains("diagnostics.direction"), "{e}");
        }
    }
}

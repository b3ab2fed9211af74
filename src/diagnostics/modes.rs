//! Modes: a grouping of the atoms into the places a posterior can put its mass (design §6).
//!
//! With class labels the modes are the classes. Without them they are k-means clusters:
//! `k` clusters of the exact posterior's heavy atoms (the smallest set holding 99.9 % of ω)
//! and up to `k` clusters of the remaining, light atoms (the prior modes the measurement rules
//! out: without them every atom would join a heavy cluster and no mode could ever have
//! negligible exact mass, so prior-mode hallucination could never show). Every atom then
//! joins its nearest centre among all of them, except that a heavy atom keeps its heavy
//! cluster.

use rand::{Rng, SeedableRng};
use serde::Serialize;

use crate::data::Dataset;
use crate::engine::direct_dist2;

/// Fraction of ω the heavy atoms hold.
pub const HEAVY_MASS: f64 = 0.999;
/// At most this many atoms enter each k-means (the heaviest, or a seeded sample of the rest).
pub const KMEANS_CAP: usize = 4096;
const KMEANS_ITERATIONS: usize = 100;

/// Where the modes came from.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ModeSource {
    Classes,
    Clusters,
}

/// A mode per atom.
#[derive(Clone, Debug)]
pub struct Modes {
    pub source: ModeSource,
    /// Mode names: class names, or `posterior-j` / `prior-j` clusters.
    pub names: Vec<String>,
    /// Mode index of every atom (N entries).
    pub of_atom: Vec<usize>,
}

impl Modes {
    /// The classes of a labelled data set (one mode per class, named), or `None`.
    pub fn from_labels(ds: &Dataset) -> Option<Modes> {
        Modes::from_classes(ds.labels.as_deref()?, ds.class_names.as_deref())
    }

    /// One mode per class of `labels` (one per atom), named by `class_names` where given,
    /// else by number; `None` for no atoms.
    pub fn from_classes(labels: &[u32], class_names: Option<&[String]>) -> Option<Modes> {
        let count = labels.iter().copied().max()? as usize + 1;
        let count = class_names.map_or(count, |n| n.len().max(count));
        let names = (0..count)
            .map(|c| match class_names {
                Some(n) if c < n.len() => n[c].clone(),
                _ => c.to_string(),
            })
            .collect();
        Some(Modes {
            source: ModeSource::Classes,
            names,
            of_atom: labels.iter().map(|&l| l as usize).collect(),
        })
    }

    /// k-means modes of the atoms (N × D) under the exact posterior ω (see the module doc).
    pub fn from_clusters(atoms: &[f32], dim: usize, omega: &[f64], k: usize, seed: u64) -> Modes {
        let n = omega.len();
        let k = k.max(1);
        let mut order: Vec<usize> = (0..n).collect();
        order.sort_by(|&a, &b| omega[b].total_cmp(&omega[a]));
        let mut heavy_count = 0;
        let mut acc = 0.0;
        for &i in &order {
            heavy_count += 1;
            acc += omega[i];
            if acc >= HEAVY_MASS || heavy_count == KMEANS_CAP {
                break;
            }
        }
        let heavy = &order[..heavy_count];
        let mut light: Vec<usize> = order[heavy_count..].to_vec();
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed ^ 0x6d6f_6465_7321);
        if light.len() > KMEANS_CAP {
            // Partial Fisher–Yates: a seeded uniform sample of the light atoms.
            for j in 0..KMEANS_CAP {
                let r = rng.random_range(j..light.len());
                light.swap(j, r);
            }
            light.truncate(KMEANS_CAP);
        }
        let gather = |idx: &[usize]| -> Vec<f32> {
            idx.iter()
                .flat_map(|&i| atoms[i * dim..(i + 1) * dim].iter().copied())
                .collect()
        };
        let heavy_fit = kmeans(&gather(heavy), dim, k, seed);
        let mut centres = heavy_fit.centres.clone();
        let heavy_k = centres.len() / dim;
        let mut names: Vec<String> = (0..heavy_k).map(|j| format!("posterior-{j}")).collect();
        if !light.is_empty() {
            let light_fit = kmeans(&gather(&light), dim, k, seed.wrapping_add(1));
            let light_k = light_fit.centres.len() / dim;
            centres.extend_from_slice(&light_fit.centres);
            names.extend((0..light_k).map(|j| format!("prior-{j}")));
        }
        let mut of_atom = nearest_centres(atoms, dim, &centres);
        for (&i, &c) in heavy.iter().zip(&heavy_fit.assignment) {
            of_atom[i] = c;
        }
        Modes {
            source: ModeSource::Clusters,
            names,
            of_atom,
        }
    }

    /// Class modes when `ds` has labels, else [`Modes::from_clusters`].
    pub fn for_dataset(ds: &Dataset, omega: &[f64], clusters: usize, seed: u64) -> Modes {
        Modes::from_labels(ds)
            .unwrap_or_else(|| Modes::from_clusters(&ds.images, ds.dim(), omega, clusters, seed))
    }

    pub fn len(&self) -> usize {
        self.names.len()
    }
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Exact mode weights: W_m = Σ_{i ∈ m} ω_i.
    pub fn exact_weights(&self, omega: &[f64]) -> Vec<f64> {
        let mut w = vec![0.0; self.len()];
        for (&m, &o) in self.of_atom.iter().zip(omega) {
            w[m] += o;
        }
        w
    }

    /// Mode weights of a cloud from each particle's atom: fraction of particles per mode.
    pub fn weights_of(&self, atoms_of_particles: &[usize]) -> Vec<f64> {
        let mut w = vec![0.0; self.len()];
        let share = 1.0 / atoms_of_particles.len().max(1) as f64;
        for &i in atoms_of_particles {
            w[self.of_atom[i]] += share;
        }
        w
    }
}

/// A k-means fit: `k' ≤ k` centres (k' × D, float64 sums rounded to f32) and the centre of
/// every point.
#[derive(Clone, Debug)]
pub struct KMeans {
    pub centres: Vec<f32>,
    pub assignment: Vec<usize>,
}

/// Lloyd's k-means with k-means++ seeding (seeded), k' = min(k, #points) centres, at most
/// 100 iterations or until no point changes centre. An emptied centre keeps its place.
pub fn kmeans(points: &[f32], dim: usize, k: usize, seed: u64) -> KMeans {
    let n = points.len() / dim.max(1);
    if n == 0 {
        return KMeans {
            centres: Vec::new(),
            assignment: Vec::new(),
        };
    }
    let k = k.clamp(1, n);
    let row = |i: usize| &points[i * dim..(i + 1) * dim];
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    // k-means++: each next centre drawn with probability ∝ squared distance to the chosen.
    let mut centres: Vec<f32> = row(rng.random_range(0..n)).to_vec();
    let mut d2: Vec<f64> = (0..n).map(|i| dist2(row(i), &centres[..dim])).collect();
    while centres.len() / dim < k {
        let total: f64 = d2.iter().sum();
        let pick = if total > 0.0 {
            let u = rng.random::<f64>() * total;
            let mut acc = 0.0;
            d2.iter()
                .position(|&v| {
                    acc += v;
                    acc > u
                })
                .unwrap_or(n - 1)
        } else {
            break; // every point coincides with a centre: fewer distinct centres suffice
        };
        let c = row(pick).to_vec();
        for (i, di) in d2.iter_mut().enumerate() {
            *di = di.min(dist2(row(i), &c));
        }
        centres.extend(c);
    }
    let mut assignment = nearest_centres(points, dim, &centres);
    for _ in 0..KMEANS_ITERATIONS {
        let kk = centres.len() / dim;
        let mut sums = vec![0.0f64; kk * dim];
        let mut counts = vec![0usize; kk];
        for (i, &a) in assignment.iter().enumerate() {
            counts[a] += 1;
            for (s, &p) in sums[a * dim..(a + 1) * dim].iter_mut().zip(row(i)) {
                *s += p as f64;
            }
        }
        for j in 0..kk {
            if counts[j] > 0 {
                for q in 0..dim {
                    centres[j * dim + q] = (sums[j * dim + q] / counts[j] as f64) as f32;
                }
            }
        }
        let next = nearest_centres(points, dim, &centres);
        if next == assignment {
            break;
        }
        assignment = next;
    }
    KMeans {
        centres,
        assignment,
    }
}

/// argmin_j ‖p − c_j‖² for every row p (float64 sums), on rayon threads.
pub fn nearest_centres(points: &[f32], dim: usize, centres: &[f32]) -> Vec<usize> {
    use rayon::prelude::*;
    points
        .par_chunks(dim)
        .map(|p| {
            centres
                .chunks(dim)
                .map(|c| dist2(p, c))
                .enumerate()
                .min_by(|a, b| a.1.total_cmp(&b.1))
                .map_or(0, |(j, _)| j)
        })
        .collect()
}

/// ‖a − b‖² in float64 ([`direct_dist2`] with s = 1).
fn dist2(a: &[f32], b: &[f32]) -> f64 {
    direct_dist2(a, b, 1.0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand_distr::StandardNormal;

    /// Four planted blobs in 5-D, 50 points each, centres 10 apart, noise 0.3.
    fn blobs(seed: u64) -> (Vec<f32>, Vec<usize>) {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        let dim = 5;
        let mut pts = Vec::new();
        let mut labels = Vec::new();
        for i in 0..200 {
            let c = i % 4;
            labels.push(c);
            for q in 0..dim {
                let centre = if q == c { 10.0 } else { 0.0 };
                let e: f64 = rng.sample(StandardNormal);
                pts.push((centre + 0.3 * e) as f32);
            }
        }
        (pts, labels)
    }

    /// Whether two labelings are the same partition (a bijection between their labels).
    fn same_partition(a: &[usize], b: &[usize]) -> bool {
        let mut map = std::collections::HashMap::new();
        let mut back = std::collections::HashMap::new();
        a.iter()
            .zip(b)
            .all(|(&x, &y)| *map.entry(x).or_insert(y) == y && *back.entry(y).or_insert(x) == x)
    }

    #[test]
    fn kmeans_recovers_planted_clusters() {
        for seed in 0..5 {
            let (pts, labels) = blobs(seed);
            let fit = kmeans(&pts, 5, 4, seed);
            assert_eq!(fit.centres.len(), 4 * 5);
            assert!(same_partition(&fit.assignment, &labels), "seed {seed}");
        }
    }

    #[test]
    fn cluster_modes_split_heavy_atoms_from_ruled_out_ones() {
        // Blobs 0 and 1 carry the posterior, blobs 2 and 3 have ω ≈ 0.
        let (pts, labels) = blobs(11);
        let logits: Vec<f64> = labels
            .iter()
            .map(|&c| if c < 2 { 0.0 } else { -40.0 })
            .collect();
        let omega = crate::engine::logsumexp::softmax(&logits);
        let modes = Modes::from_clusters(&pts, 5, &omega, 2, 3);
        assert_eq!(modes.source, ModeSource::Clusters);
        assert!(same_partition(&modes.of_atom, &labels));
        let w = modes.exact_weights(&omega);
        let heavy: Vec<f64> = w.iter().copied().filter(|&x| x > 1e-3).collect();
        assert_eq!(heavy.len(), 2);
        assert!(heavy.iter().all(|&x| (x - 0.5).abs() < 1e-9));
        assert!((w.iter().sum::<f64>() - 1.0).abs() < 1e-12);
        // Mode names: the heavy clusters come first.
        assert!(modes.names[0].starts_with("posterior-") && modes.names[3].starts_with("prior-"));
    }
}

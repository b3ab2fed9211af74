//! The one-time partition of the atoms for certified pruning (module `prune`): k-means with the
//! backend's own GEMMs, then the exact radii the bounds need.
//!
//! Lloyd's iterations from k distinct atoms drawn with a fixed seed: each assigns every atom to
//! the centroid minimising ‖a − μ_c‖² = ‖a‖² + ‖μ_c‖² − 2⟨a, μ_c⟩ (the products A·Mᵀ by the
//! `gemm` crate, blocks of atoms in parallel), then moves each centroid to its members' mean
//! (float64 sums). The partition only has to be good for speed, not exact: what the bounds
//! rely on is computed afterwards, exactly, for the final assignment —
//!
//!   μ_c = the members' mean (rounded to float32; the bounds use the rounded vector),
//!   r_c = max_{i∈c} ‖a_i − μ_c‖, by float64 direct differences, raised by 1e-12 relative,
//!
//! so ‖a_i − μ_c‖ ≤ r_c holds for every member whatever the float32 rounding of the GEMMs.
//! Empty clusters are dropped (k can shrink).

use rand::SeedableRng;
use rand::seq::index::sample;
use rayon::prelude::*;

use super::gemm::gemm_rm;
use crate::engine::direct_dist2;

/// Atoms per GEMM block of the assignment step.
const ASSIGN_BLOCK: usize = 1024;
/// Relative safety margin on the radii (float64 rounding of the direct distances and sqrt).
const RADIUS_MARGIN: f64 = 1e-12;

/// The partition, in the backend's storage order: cluster c owns storage positions
/// `start[c]..start[c + 1]`.
pub(super) struct Clusters {
    /// Storage position → the caller's atom index.
    pub(super) order: Vec<usize>,
    /// k + 1 offsets.
    pub(super) start: Vec<usize>,
    /// k × D float32 centroids.
    pub(super) centroids: Vec<f32>,
    /// r_c ≥ max over members of ‖a_i − μ_c‖ (float64, exact up to the margin).
    pub(super) radius: Vec<f64>,
}

impl Clusters {
    pub(super) fn len(&self) -> usize {
        self.radius.len()
    }
    pub(super) fn size(&self, c: usize) -> usize {
        self.start[c + 1] - self.start[c]
    }
}

/// k-means of the N × `d` `atoms` into at most `k` clusters, `iterations` Lloyd steps from k
/// atoms drawn with `seed`; runs on `pool`.
pub(super) fn kmeans(
    atoms: &[f32],
    d: usize,
    k: usize,
    iterations: usize,
    seed: u64,
    pool: &rayon::ThreadPool,
) -> Clusters {
    let n = atoms.len() / d;
    let k = k.clamp(1, n);
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut centroids: Vec<f32> = sample(&mut rng, n, k)
        .into_iter()
        .flat_map(|i| atoms[i * d..(i + 1) * d].iter().copied())
        .collect();
    let mut assign = vec![0usize; n];
    for _ in 0..iterations {
        pool.install(|| assign_nearest(atoms, d, &centroids, &mut assign));
        let (means, counts) = member_means(atoms, d, k, &assign);
        for c in 0..k {
            if counts[c] > 0 {
                centroids[c * d..(c + 1) * d].copy_from_slice(&means[c * d..(c + 1) * d]);
            }
        }
    }
    pool.install(|| assign_nearest(atoms, d, &centroids, &mut assign));
    finish(atoms, d, k, &assign, pool)
}

/// assign[i] = argmin_c ‖a_i − μ_c‖² through the GEMM A_block · Mᵀ.
fn assign_nearest(atoms: &[f32], d: usize, centroids: &[f32], assign: &mut [usize]) {
    let k = centroids.len() / d;
    let cnorm: Vec<f32> = centroids
        .chunks(d)
        .map(|m| m.iter().map(|&v| v * v).sum())
        .collect();
    assign
        .par_chunks_mut(ASSIGN_BLOCK)
        .enumerate()
        .for_each(|(blk, out)| {
            let rows = out.len();
            let a = &atoms[blk * ASSIGN_BLOCK * d..(blk * ASSIGN_BLOCK + rows) * d];
            let mut dots = vec![0.0f32; rows * k];
            // SAFETY: dots rows × k; a rows × d (row stride d); centroids k × d read as
            // the d × k matrix Mᵀ (row stride 1, column stride d).
            unsafe {
                gemm_rm(
                    rows,
                    k,
                    d,
                    dots.as_mut_ptr(),
                    k,
                    false,
                    a.as_ptr(),
                    d,
                    1,
                    centroids.as_ptr(),
                    1,
                    d,
                );
            }
            for (i, o) in out.iter_mut().enumerate() {
                let row = &dots[i * k..(i + 1) * k];
                let mut best = (f32::INFINITY, 0);
                for (c, (&dot, &cn)) in row.iter().zip(&cnorm).enumerate() {
                    let v = cn - 2.0 * dot;
                    if v < best.0 {
                        best = (v, c);
                    }
                }
                *o = best.1;
            }
        });
}

/// The members' means (float64 sums, rounded) and the counts of each cluster.
fn member_means(atoms: &[f32], d: usize, k: usize, assign: &[usize]) -> (Vec<f32>, Vec<usize>) {
    let mut sums = vec![0.0f64; k * d];
    let mut counts = vec![0usize; k];
    for (a, &c) in atoms.chunks(d).zip(assign) {
        counts[c] += 1;
        for (s, &v) in sums[c * d..(c + 1) * d].iter_mut().zip(a) {
            *s += v as f64;
        }
    }
    let means = sums
        .chunks(d)
        .zip(&counts)
        .flat_map(|(s, &n)| s.iter().map(move |&v| (v / n.max(1) as f64) as f32))
        .collect();
    (means, counts)
}

/// The partition of the final assignment: storage order, centroids, exact radii.
fn finish(
    atoms: &[f32],
    d: usize,
    k: usize,
    assign: &[usize],
    pool: &rayon::ThreadPool,
) -> Clusters {
    let (means, counts) = member_means(atoms, d, k, assign);
    let kept: Vec<usize> = (0..k).filter(|&c| counts[c] > 0).collect();
    let mut order: Vec<usize> = (0..assign.len()).collect();
    // Stable: members keep the caller's order within a cluster.
    let mut new_id = vec![usize::MAX; k];
    for (j, &c) in kept.iter().enumerate() {
        new_id[c] = j;
    }
    order.sort_by_key(|&i| new_id[assign[i]]);
    let mut start = vec![0usize];
    let mut acc = 0;
    for &c in &kept {
        acc += counts[c];
        start.push(acc);
    }
    let centroids: Vec<f32> = kept
        .iter()
        .flat_map(|&c| means[c * d..(c + 1) * d].iter().copied())
        .collect();
    let radius: Vec<f64> = pool.install(|| {
        (0..kept.len())
            .into_par_iter()
            .map(|j| {
                let mu = &centroids[j * d..(j + 1) * d];
                let far = order[start[j]..start[j + 1]]
                    .iter()
                    .map(|&i| direct_dist2(&atoms[i * d..(i + 1) * d], mu, 1.0).sqrt())
                    .fold(0.0f64, f64::max);
                far * (1.0 + RADIUS_MARGIN)
            })
            .collect()
    });
    Clusters {
        order,
        start,
        centroids,
        radius,
    }
}

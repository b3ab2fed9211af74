//! Certified pruning: a pass that skips clusters of atoms whose total weight is provably
//! below ε relative to the atoms it visits.
//!
//! The atoms are partitioned once (module `clusters`) and stored cluster by cluster. For row
//! b of a block, cluster c (centroid μ_c, radius r_c) and a weight set with bias β (stored
//! shifted, as the pass sees it), each member's squared distance is bounded below by the
//! larger of the triangle inequality's
//! ‖x_b − s a_i‖ ≥ (‖x_b − s μ_c‖ − s‖a_i − μ_c‖)₊ ≥ (‖x_b − s μ_c‖ − s r_c)₊ (with
//! ‖x_b − s μ_c‖ by float64 direct differences, lowered by 1e-12 relative) and the per-atom
//! projection bound of module `projection`, so
//!
//!   ℓ_bi ≤ u_bi = −(bound)/(2v) + β_i,   Σ_{i∈c} e^{ℓ_bi} ≤ e^{U_bc},  U_bc = log Σ_{i∈c} e^{u_bi}
//!
//! (terms more than 40 nats below the cluster's largest u counted as e^{−40} each). The triangle
//! bound alone (n_c e^{ub_bc}, ub_bc = −(‖x − sμ_c‖ − s r_c)₊²/(2v) + max_c β) pruned nothing on
//! Fashion-MNIST: k-means radii in 784 dimensions exceed the gaps between clusters. The pass
//! runs in two phases per row block:
//! 1. for every row and set, the cluster with the largest U_bc is visited (the usual chunked
//!    pass over its contiguous atoms), which gives log Z_b,1 = log Σ_{visited} e^{ℓ_bi};
//! 2. per row and set, the unvisited clusters sorted by their mass bound e^{U_bc − log Z_b,1}
//!    are skipped from the smallest up while their sum stays ≤ ε; the rest must be visited. A
//!    cluster is skipped only when every row and set may skip it, and the clusters of phase 2
//!    are visited by a second chunked pass whose task states merge exactly with phase 1's.
//!
//! Visiting only adds mass, so with the final log Z_b,kept ≥ log Z_b,1 the realised bound
//!
//!   δ = max_{b, set} Σ_{c skipped} e^{U_bc − log Z_b,kept} ≤ ε
//!
//! holds (it is reported per pass: [`crate::engine::PruneCounters`]). log Z_b,1 comes from the
//! float32 pass and is lowered by [`LOG_Z_MARGIN`] nats before the decision.
//!
//! # What δ certifies
//! Let Z = Z_K + Z_S (kept and skipped atoms), so Z_S ≤ δ Z_K. The pruned weights are
//! w̃_i = e^{ℓ_i}/Z_K on kept atoms and 0 on skipped ones; the exact ones w_i = e^{ℓ_i}/Z. Then
//! - log Z − log Z_K = log(1 + Z_S/Z_K) ∈ [0, δ];
//! - Σ_S w_i = Z_S/Z ≤ δ/(1 + δ), and for kept atoms w̃_i − w_i = w_i Z_S/Z_K ≤ δ w_i, so
//!   ‖w − w̃‖₁ = 2 Z_S/Z ≤ 2δ/(1 + δ);
//! - the means: m = (Z_K m̃ + Z_S m_S)/Z with m_S the skipped atoms' weighted mean, so
//!   m − m̃ = (Z_S/Z)(m_S − m̃) and ‖m − m̃‖ ≤ δ/(1 + δ) · max_{i skipped} ‖a_i − m̃‖
//!   ≤ δ · max_i ‖a_i − m̃‖;
//! - the largest weight: the heaviest atom has mass ≥ 1/N of Z_K, so for ε < 1/N it is never
//!   skipped and max w̃ = max w · Z/Z_K, a relative change ≤ δ.
//!
//! The nearest atom does not depend on the weights: after the pass, every skipped cluster
//! whose distance lower bound (below) does not exceed some row's best distance is scanned
//! for distances only (the pass's distance GEMM and direct recomputation of candidates), so
//! the nearest atom is the unpruned one.
//!
//! C·g passes (`covariance_products`) are not pruned: with kept prior weights they skip the
//! chunks whose weights are all zero (the skipped clusters' weights are stored as 0, so they
//! use exactly the pruned weights); without, they visit all atoms.

use std::sync::Mutex;

use rayon::prelude::*;

use super::CpuBackend;
use super::clusters::Clusters;
use super::pass::{ChunkBuffers, RowJob, TaskState};
use super::projection::Projection;
use super::weight_cache::{ChunkMaxima, WeightRows};
use crate::engine::{PruneCounters, WeightSet, direct_dist2};

/// Nats subtracted from phase 1's float32 log Z before it serves as a lower bound.
pub(super) const LOG_Z_MARGIN: f64 = 1e-4;
/// Relative lowering of ‖x − s μ_c‖ for its float64 rounding.
const DIST_MARGIN: f64 = 1e-12;
/// Lloyd iterations of the partition.
pub(super) const KMEANS_ITERATIONS: usize = 6;
/// Seed of the partition's start (fixed: the partition, hence the visited set, is reproducible).
pub(super) const KMEANS_SEED: u64 = 0x7072_756e_65;

/// The partition and the pruning state of a backend.
pub(super) struct Pruning {
    pub(super) clusters: Clusters,
    /// The per-atom distance bound (module `projection`).
    pub(super) projection: Projection,
    pub(super) epsilon: f64,
    pub(super) counters: Mutex<PruneCounters>,
}

/// Per row block: the bounds of every (row, cluster).
pub(super) struct Geometry {
    pub(super) k: usize,
    /// rows × k: a lower bound on min_{i∈c} ‖x_b − s a_i‖² (for the nearest atom).
    pub(super) near: Vec<f64>,
    /// Per set, rows × k: log of an upper bound on the cluster's mass Σ_{i∈c} e^{ℓ_bi}
    /// (stored bias frame; module docs).
    pub(super) log_mass: Vec<Vec<f64>>,
}

/// Bounds more than this many nats below a cluster's largest are counted as e^{−FAR} each
/// (an upper bound that spares their exponentials).
const FAR: f64 = 40.0;

impl Pruning {
    /// The bounds of the rows of `job` for the sets whose stored biases (storage order, None
    /// for the prior) are `biases` (module docs).
    pub(super) fn geometry(
        &self,
        job: &RowJob,
        biases: &[Option<&[f64]>],
        pool: &rayon::ThreadPool,
    ) -> Geometry {
        let k = self.clusters.len();
        let sets = biases.len();
        // Per row: k near values, then sets × k log masses.
        let per_row: Vec<Vec<f64>> = pool.install(|| {
            (0..job.rows)
                .into_par_iter()
                .map(|b| self.row_bounds(job, b, biases))
                .collect()
        });
        let mut near = Vec::with_capacity(job.rows * k);
        let mut log_mass = vec![Vec::with_capacity(job.rows * k); sets];
        for row in &per_row {
            near.extend_from_slice(&row[..k]);
            for (j, lm) in log_mass.iter_mut().enumerate() {
                lm.extend_from_slice(&row[k * (1 + j)..k * (2 + j)]);
            }
        }
        Geometry { k, near, log_mass }
    }

    /// Row b's bounds: k nearest-distance bounds, then per set k log mass bounds. Each
    /// member's squared distance is bounded below by the larger of the projection bound and
    /// the cluster ball bound L² = max(0, ‖x − s μ_c‖ − s r_c)²; its logit above by
    /// −(that)/(2v) + β_i; the cluster's mass by the log-sum-exp of those.
    fn row_bounds(&self, job: &RowJob, b: usize, biases: &[Option<&[f64]>]) -> Vec<f64> {
        let cl = &self.clusters;
        let k = cl.len();
        let d = job.d;
        let (s, v) = (job.noise.s, job.noise.v);
        let xb = job.row(b);
        let rc = self.projection.row(xb);
        let mut out = vec![0.0; k * (1 + biases.len())];
        let mut lb = Vec::new();
        for c in 0..k {
            let mu = &cl.centroids[c * d..(c + 1) * d];
            let dc = direct_dist2(xb, mu, s).sqrt() * (1.0 - DIST_MARGIN);
            let l = (dc - s * cl.radius[c]).max(0.0);
            let (a0, a1) = (cl.start[c], cl.start[c + 1]);
            lb.clear();
            lb.extend((a0..a1).map(|i| self.projection.lower_d2(&rc, s, i).max(l * l)));
            out[c] = lb.iter().cloned().fold(f64::INFINITY, f64::min);
            for (j, bias) in biases.iter().enumerate() {
                let u = |q: usize| -lb[q] / (2.0 * v) + bias.map_or(0.0, |bb| bb[a0 + q]);
                let top = (0..lb.len()).map(u).fold(f64::NEG_INFINITY, f64::max);
                let mut sum = 0.0;
                for q in 0..lb.len() {
                    let e = u(q) - top;
                    sum += if e > -FAR { e.exp() } else { (-FAR).exp() };
                }
                out[k * (1 + j) + c] = top + sum.ln();
            }
        }
        out
    }

    /// Phase 1: the cluster of largest mass bound of every row of every set.
    pub(super) fn first_visits(&self, ubs: &[Vec<f64>], k: usize) -> Vec<bool> {
        let mut visit = vec![false; k];
        for ub in ubs {
            for row in ub.chunks(k) {
                let best = row
                    .iter()
                    .enumerate()
                    .fold(
                        (f64::NEG_INFINITY, 0),
                        |a, (c, &u)| if u > a.0 { (u, c) } else { a },
                    );
                visit[best.1] = true;
            }
        }
        visit
    }

    /// Phase 2: adds to `visit` every cluster some row of some set cannot skip, given the lower
    /// bounds `log_z[set][b]` on the visited mass (module docs).
    pub(super) fn second_visits(&self, ubs: &[Vec<f64>], log_z: &[Vec<f64>], visit: &mut [bool]) {
        let k = visit.len();
        let mut must = vec![false; k];
        let mut masses: Vec<(f64, usize)> = Vec::with_capacity(k);
        for (ub, lz) in ubs.iter().zip(log_z) {
            for (row, &l) in ub.chunks(k).zip(lz) {
                masses.clear();
                masses.extend(
                    (0..k)
                        .filter(|&c| !visit[c])
                        .map(|c| ((row[c] - l).exp(), c)),
                );
                masses.sort_by(|a, b| a.0.total_cmp(&b.0));
                let mut sum = 0.0;
                for &(m, c) in &masses {
                    sum += m;
                    if !(sum <= self.epsilon) {
                        must[c] = true;
                    }
                }
            }
        }
        for (v, m) in visit.iter_mut().zip(must) {
            *v |= m;
        }
    }

    /// δ = max over rows and sets of Σ_{c not visited} (mass bound of c) / Z_b,kept.
    pub(super) fn realised_bound(
        &self,
        ubs: &[Vec<f64>],
        log_z: &[Vec<f64>],
        visit: &[bool],
    ) -> f64 {
        let k = visit.len();
        let mut delta: f64 = 0.0;
        for (ub, lz) in ubs.iter().zip(log_z) {
            for (row, &l) in ub.chunks(k).zip(lz) {
                let s: f64 = (0..k)
                    .filter(|&c| !visit[c])
                    .map(|c| (row[c] - l).exp())
                    .sum();
                delta = delta.max(s);
            }
        }
        delta
    }

    /// The chunks (first atom, atoms) covering the clusters with `pick[c]`, consecutive
    /// clusters merged, runs cut into chunks of at most `chunk` atoms.
    pub(super) fn chunks_of(&self, pick: &[bool], chunk: usize) -> Vec<(usize, usize)> {
        let st = &self.clusters.start;
        let mut out = Vec::new();
        let mut c = 0;
        while c < pick.len() {
            if !pick[c] {
                c += 1;
                continue;
            }
            let a0 = st[c];
            while c < pick.len() && pick[c] {
                c += 1;
            }
            let a1 = st[c];
            out.extend((a0..a1).step_by(chunk).map(|i0| (i0, chunk.min(a1 - i0))));
        }
        out
    }
}

/// What a pruned sweep returns besides the merged state: the chunk maxima (for the kept
/// weights) and which clusters it visited.
pub(super) struct PrunedSweep {
    pub(super) state: TaskState,
    pub(super) maxima: Vec<ChunkMaxima>,
    pub(super) visit: Vec<bool>,
}

impl CpuBackend {
    /// The pruning state; only called when pruning is on.
    fn pruning_state(&self) -> &Pruning {
        self.prune.as_ref().expect("called only with pruning on")
    }

    /// A pruned pass over the rows of `job` (module docs): two sweeps, the exact nearest
    /// atoms, and, with `count`, the counters updated.
    pub(super) fn pruned_sweep(
        &self,
        job: &RowJob,
        sets: &[WeightSet],
        keep: Option<(usize, WeightRows)>,
        chunk: usize,
        count: bool,
    ) -> PrunedSweep {
        let p = self.pruning_state();
        let biases: Vec<Option<&[f64]>> = sets
            .iter()
            .map(|&set| self.bias_values(set, 0..self.n).1)
            .collect();
        let geo = p.geometry(job, &biases, &self.pool);
        let ubs = &geo.log_mass;
        let mut visit = p.first_visits(&ubs, geo.k);
        let (first, mut maxima) = self.sweep(job, sets, keep, &p.chunks_of(&visit, chunk));
        let log_z1 = log_norms(&first, sets.len(), job.rows, LOG_Z_MARGIN);
        let before = visit.clone();
        p.second_visits(&ubs, &log_z1, &mut visit);
        let extra: Vec<bool> = visit.iter().zip(&before).map(|(&v, &b)| v && !b).collect();
        let extra_chunks = p.chunks_of(&extra, chunk);
        let mut state = if extra_chunks.is_empty() {
            first
        } else {
            let (second, m2) = self.sweep(job, sets, keep, &extra_chunks);
            maxima.extend(m2);
            TaskState::merge(vec![first, second], self.d)
        };
        let log_z = log_norms(&state, sets.len(), job.rows, 0.0);
        let checked = self.nearest_in_skipped(job, &geo, &visit, &mut state);
        if count {
            let visited: usize = (0..geo.k)
                .filter(|&c| visit[c])
                .map(|c| p.clusters.size(c))
                .sum();
            let mut ctr = p.counters.lock().unwrap_or_else(|e| e.into_inner());
            ctr.add(&PruneCounters {
                passes: 1,
                atoms_visited: visited as u64,
                atoms_total: self.n as u64,
                max_bound: p.realised_bound(&ubs, &log_z, &visit),
                nearest_checked: checked as u64,
            });
        }
        PrunedSweep {
            state,
            maxima,
            visit,
        }
    }

    /// Finds the nearest atom among the skipped clusters that may hold one (some row's
    /// distance lower bound ≤ its best so far): the same distance GEMM and direct
    /// recomputation of candidates as the full pass (module `window`), without the weights;
    /// returns the atoms scanned.
    fn nearest_in_skipped(
        &self,
        job: &RowJob,
        geo: &Geometry,
        visit: &[bool],
        state: &mut TaskState,
    ) -> usize {
        let p = self.pruning_state();
        let k = geo.k;
        let rows = job.rows;
        let scan: Vec<bool> = (0..k)
            .map(|c| !visit[c] && (0..rows).any(|b| geo.near[b * k + c] <= state.nearest[b].0))
            .collect();
        let chunk = self.chunk_size(rows);
        let chunks = p.chunks_of(&scan, chunk);
        if chunks.is_empty() {
            return 0;
        }
        let tasks = (4 * self.threads).min(chunks.len()).max(1);
        let found: Vec<Vec<(f64, usize)>> = self.pool.install(|| {
            (0..tasks)
                .into_par_iter()
                .map(|t| {
                    let run = &chunks[chunks.len() * t / tasks..chunks.len() * (t + 1) / tasks];
                    let mut best = state.nearest.clone();
                    let mut bufs = ChunkBuffers::new(rows, chunk, 1);
                    for &(i0, c) in run {
                        bufs.distances(self, job, i0, c, None);
                        bufs.nearest(self, job, i0, c, &mut best);
                    }
                    best
                })
                .collect()
        });
        for best in found {
            for (a, b) in state.nearest.iter_mut().zip(best) {
                if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
                    *a = b;
                }
            }
        }
        chunks.iter().map(|c| c.1).sum()
    }
}

/// log Z_b (stored frame) of every set and row of `state`, lowered by `margin`.
fn log_norms(state: &TaskState, sets: usize, rows: usize, margin: f64) -> Vec<Vec<f64>> {
    (0..sets)
        .map(|k| {
            (0..rows)
                .map(|b| state.sets[k].row_sums(b).log_norm_stored() - margin)
                .collect()
        })
        .collect()
}

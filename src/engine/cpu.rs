//! The CPU backend: chunked passes over the atoms with an online log-sum-exp, GEMMs from the
//! `gemm` crate, threads from rayon.
//!
//! # One pass
//! The atoms are cut into chunks of `chunk` rows; each rayon task walks a contiguous run of
//! chunks with its own per-row state (running max M, S0 = Σe^{ℓ−M}, S2 = Σe^{2(ℓ−M)},
//! SL = Σe^{ℓ−M}(ℓ−M), acc = Σe^{ℓ−M} a_i), and the task states are merged exactly at the end
//! (rescaling each by e^{M_t − M}). Per chunk:
//! 1. distance GEMM: G = X·A_cᵀ, then d̃_bi = ‖x_b‖² + s²‖a_i‖² − 2s G_bi (float32);
//! 2. logits ℓ̃_bi = −d̃_bi/(2v) + β_i for every requested bias set (the GEMM is shared);
//! 3. the precision fix of design §7 (below) replaces the logits that matter by direct ones;
//! 4. w_bi = e^{ℓ_bi − M_b} (zero when ℓ − M < −60), then acc += W·A_c (second GEMM).
//!
//! Then ESS = S0²/S2, max weight = 1/S0, entropy = log S0 − SL/S0, log_norm = M + log S0 and
//! mean = acc/S0. Memory: the atoms (N·D), plus per task K·B·D accumulators and a few B×chunk
//! buffers; B×N×D is never formed, and batches above `row_block` rows go in row blocks.
//!
//! # Precision (design §7)
//! The expansion cancels catastrophically when x ≈ s a_j. Its error is bounded (realistically,
//! i.e. with random-walk rounding √D·u rather than the worst case D·u, u = 2⁻²⁴) by
//!
//!   E_b = u·[2(‖x_b‖² + s²·max‖a‖²) + 2s(2 + √D)·‖x_b‖·max‖a‖]
//!
//! (rounding of ‖a‖² to float32 and of the two additions: u·(‖x‖² + s²‖a‖²) twice; the GEMM dot
//! product: u√D·Σ|x_d a_d| ≤ u√D‖x‖‖a‖, times 2s; the final rounding of 2s⟨x,a⟩: 2su‖x‖‖a‖,
//! times 2 for slack). In nats that is δ_b = E_b/(2v). At D = 784 on Fashion-MNIST E ≈ 2e-3 (the
//! measured error is ≈ 2e-4), so δ ≈ 50 nats at t = 1e-3 (v ≈ 2e-5) and ≈ 1e-3 nats at v ≈ 1.
//! When δ_b > 1e-5 nats, every atom whose approximate logit lies within W + 2δ_b nats of the
//! row's running maximum M is recomputed by direct differences Σ_d (x_d − s a_d)² in float64
//! (the products of two float32 are exact in float64, so the only error is the final rounding).
//! The window is W = min(30, ln(2δ_b/τ) − ln S0) (≥ 0), τ = 1e-6, S0 the running Σe^{ℓ−M}:
//! the final weight of an atom is at most e^{ℓ_i − M}/S0 (M and S0 of the atoms seen so far),
//! and the expansion moves it by at most a factor e^{±δ}, i.e. by ≲ 2δ·w_i; outside the window
//! that is below τ (and outside 30 nats its weight is below 1e-13 anyway). The running max only
//! grows and S0 only adds, so a window taken against them is safe. When more than
//! `SPREAD_CANDIDATES` atoms of a chunk fall in the window, S0 is first raised by the chunk's
//! own approximate sum Σ e^{ℓ̃ − M} (times e^{−δ}, a lower bound of its exact part): without
//! that, the first chunk of every task (S0 = 0) recomputed up to all its atoms directly when
//! the weights are spread out, which made a prior pass at t ≈ 0.3 cost twice a concentrated one. Typically 1–4 atoms per row
//! are recomputed at small t (where it matters: δ ≈ 50 nats); when the weights are spread out
//! S0 grows and the window closes, so the pass stays at GEMM speed (errors of many small
//! weights are independent roundings and average out; the tests check the means at D = 784).
//!
//! # Subnormals
//! Weights with ℓ − M < −60 are set to exactly 0, and a rescale factor e^{M_old − M_new} below
//! e^{−60} zeroes the accumulators instead of scaling them, so no GEMM ever sees a subnormal
//! operand (e^{−60} ≈ 8.8e-27 times any pixel ≥ 1e-11 is still normal). The mass thrown away is
//! at most N·e^{−60} relative to the largest weight.

mod weight_cache;

use std::sync::{Arc, Mutex};

use super::{Backend, BiasId, Neighbor, Noise, PassOutput, RowStats, WeightedMean, Weights};
use crate::{Error, Result};
use rayon::prelude::*;
use weight_cache::{ChunkMaxima, PriorWeights, WeightRows};

/// Atom ranges per worker thread (each with its own accumulators, merged at the end).
const TASKS_PER_THREAD: usize = 4;
/// GEMM left operands with at most this many rows take the column-major-output path.
const SMALL_GEMM_ROWS: usize = 64;
/// Unit roundoff of float32.
const U32: f64 = 1.0 / 16_777_216.0;
/// Logits more than this far below the running max get weight exactly 0.
const CLAMP: f32 = -60.0;
/// Candidate window (nats) beyond twice the error bound.
const WINDOW: f64 = 30.0;
/// Below this error bound (nats) the expansion is used as is.
const NEGLIGIBLE_NATS: f64 = 1e-5;
/// Largest tolerated error bound of one normalised weight left to the expansion.
const WEIGHT_TOL: f64 = 1e-6;
/// Above this many candidates in a chunk, the chunk's own weight sum is used to close the
/// window (module docs).
const SPREAD_CANDIDATES: usize = 16;
/// Default budget for the prior weights kept after a pass (B × N float32; module
/// `weight_cache`): 256 MiB holds B = 1024 rows of N = 60000 atoms.
pub const DEFAULT_WEIGHT_CACHE_BYTES: usize = 256 << 20;

/// CPU implementation of [`Backend`]. See the module documentation for the algorithm.
pub struct CpuBackend {
    atoms: Vec<f32>,
    n: usize,
    d: usize,
    /// ‖a_i‖², summed in float64 and rounded once.
    norms2: Vec<f32>,
    /// max_i ‖a_i‖.
    max_norm: f64,
    /// Registered biases shifted by their max, in float32 for the bulk pass…
    biases32: Vec<Vec<f32>>,
    /// … and in float64 for the recomputed candidates.
    biases64: Vec<Vec<f64>>,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Atoms per chunk when set by [`CpuBackend::with_blocking`]; else [`chunk_for_rows`].
    chunk: Option<usize>,
    row_block: usize,
    /// The prior weights of the last pass that asked for them (module `weight_cache`).
    prior_weights: Mutex<Option<Arc<PriorWeights>>>,
    weight_cache_bytes: usize,
}

/// Default atoms per chunk for a block of `rows` rows. Small batches: 128 atoms (≈ 400 KB of
/// 784-float atoms, read once from memory for both GEMMs and kept in L2 between them); large
/// batches: 512, which gives the weighted-sum GEMM a longer inner dimension (measured on the
/// 2-core Xeon: B = 16 is ~25% slower at 512, B = 256 a few % faster).
pub fn chunk_for_rows(rows: usize) -> usize {
    if rows <= 64 { 128 } else { 512 }
}
/// Default cap on rows per block.
pub const DEFAULT_ROW_BLOCK: usize = 256;

impl CpuBackend {
    /// `atoms` is N × D row-major float32; every value must be finite. Uses all cores, or
    /// `RAYON_NUM_THREADS` of them when that is set.
    /// Copies the atoms; [`CpuBackend::from_vec`] takes them without a copy.
    pub fn new(atoms: &[f32], d: usize) -> Result<CpuBackend> {
        Self::from_vec(atoms.to_vec(), d)
    }

    /// As [`CpuBackend::new`], taking ownership of the atom store (no second copy in memory).
    pub fn from_vec(atoms: Vec<f32>, d: usize) -> Result<CpuBackend> {
        if d == 0 {
            return Err(Error::input(
                "cpu backend: the dimension D must be at least 1",
            ));
        }
        if atoms.is_empty() || !atoms.len().is_multiple_of(d) {
            return Err(Error::input(format!(
                "cpu backend: {} atom values do not split into rows of D = {d} \
                 (need a non-empty N × D array)",
                atoms.len()
            )));
        }
        if let Some(pos) = atoms.iter().position(|a| !a.is_finite()) {
            return Err(Error::input(format!(
                "cpu backend: atom {} has a non-finite value {} at coordinate {}; \
                 clean the data set first",
                pos / d,
                atoms[pos],
                pos % d
            )));
        }
        let n = atoms.len() / d;
        let norms64: Vec<f64> = atoms
            .chunks(d)
            .map(|a| a.iter().map(|&v| (v as f64) * (v as f64)).sum())
            .collect();
        let max_norm = norms64.iter().cloned().fold(0.0, f64::max).sqrt();
        // RAYON_NUM_THREADS, as for rayon's global pool, else every core.
        let threads = std::env::var("RAYON_NUM_THREADS")
            .ok()
            .and_then(|v| v.parse::<usize>().ok())
            .filter(|&t| t > 0)
            .unwrap_or_else(|| {
                std::thread::available_parallelism()
                    .map(|t| t.get())
                    .unwrap_or(1)
            });
        Ok(CpuBackend {
            atoms,
            n,
            d,
            norms2: norms64.iter().map(|&v| v as f32).collect(),
            max_norm,
            biases32: Vec::new(),
            biases64: Vec::new(),
            pool: build_pool(threads)?,
            threads,
            chunk: None,
            row_block: DEFAULT_ROW_BLOCK,
            prior_weights: Mutex::new(None),
            weight_cache_bytes: DEFAULT_WEIGHT_CACHE_BYTES,
        })
    }

    /// Keeps the prior weights of a pass for the C·g passes that follow it when B·N·4 ≤
    /// `bytes` (0 turns keeping off; default [`DEFAULT_WEIGHT_CACHE_BYTES`]).
    pub fn with_weight_cache(mut self, bytes: usize) -> CpuBackend {
        self.weight_cache_bytes = bytes;
        self.prior_weights = Mutex::new(None);
        self
    }

    /// Uses `threads` worker threads (≥ 1) instead of all cores.
    pub fn with_threads(mut self, threads: usize) -> Result<CpuBackend> {
        if threads == 0 {
            return Err(Error::config("threads", "must be at least 1"));
        }
        self.pool = build_pool(threads)?;
        self.threads = threads;
        Ok(self)
    }

    /// Sets atoms per chunk and the cap on rows per block (tuning; defaults
    /// [`chunk_for_rows`], [`DEFAULT_ROW_BLOCK`]).
    pub fn with_blocking(mut self, chunk: usize, row_block: usize) -> Result<CpuBackend> {
        if chunk == 0 || row_block == 0 {
            return Err(Error::config(
                "chunk/row_block",
                "chunk and row block sizes must be at least 1",
            ));
        }
        self.chunk = Some(chunk);
        self.row_block = row_block;
        Ok(self)
    }

    pub fn threads(&self) -> usize {
        self.threads
    }

    /// The atoms, N × D row-major.
    pub fn atom_store(&self) -> &[f32] {
        &self.atoms
    }

    /// For tests and diagnostics: the normalised weights w_i of one row, computed by the same
    /// chunked float32 expansion and candidate recomputation as [`Backend::weighted_means`]
    /// (single-threaded), returned in float64.
    pub fn weights(&self, x_row: &[f32], noise: Noise, set: Weights) -> Result<Vec<f64>> {
        if x_row.len() != self.d {
            return Err(Error::input(format!(
                "cpu backend: weights() takes one row of D = {} values, got {}",
                self.d,
                x_row.len()
            )));
        }
        self.check_pass(x_row, noise, &[set])?;
        let job = RowJob::new(self, x_row, noise);
        let chunk = self.chunk_size(1);
        let mut bufs = ChunkBuffers::new(1, chunk, 1);
        let mut m_run = vec![f64::NEG_INFINITY];
        let mut s0 = vec![0.0f64];
        // ℓ_i − M_at_that_chunk and that M, for each atom.
        let mut logits = Vec::with_capacity(self.n);
        for i0 in (0..self.n).step_by(chunk) {
            let c = chunk.min(self.n - i0);
            bufs.distances(self, &job, i0, c, None);
            let old = m_run[0];
            self.relative_logits(&job, &mut bufs, i0, c, set, &mut m_run, &s0);
            if s0[0] > 0.0 {
                s0[0] *= (old - m_run[0]).exp();
            }
            s0[0] += bufs.rel[..c]
                .iter()
                .filter(|&&r| r >= CLAMP)
                .map(|&r| (r as f64).exp())
                .sum::<f64>();
            logits.extend(bufs.rel[..c].iter().map(|&r| {
                if r < CLAMP {
                    f64::NEG_INFINITY
                } else {
                    r as f64 + m_run[0]
                }
            }));
        }
        let max = m_run[0];
        let e: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
        let z: f64 = e.iter().sum();
        Ok(e.into_iter().map(|v| v / z).collect())
    }

    fn check_pass(&self, x: &[f32], noise: Noise, sets: &[Weights]) -> Result<()> {
        if x.is_empty() || !x.len().is_multiple_of(self.d) {
            return Err(Error::input(format!(
                "cpu backend: x has {} values, not a non-empty multiple of D = {}",
                x.len(),
                self.d
            )));
        }
        if let Some(pos) = x.iter().position(|v| !v.is_finite()) {
            return Err(Error::input(format!(
                "cpu backend: x row {} has a non-finite value at coordinate {}",
                pos / self.d,
                pos % self.d
            )));
        }
        if !(noise.s.is_finite() && noise.s >= 0.0 && noise.v.is_finite() && noise.v > 0.0) {
            return Err(Error::input(format!(
                "cpu backend: need finite s ≥ 0 and v > 0, got s = {}, v = {}",
                noise.s, noise.v
            )));
        }
        for set in sets {
            if let Weights::Biased(BiasId(k)) = set
                && *k >= self.biases32.len()
            {
                return Err(Error::input(format!(
                    "cpu backend: bias id {k} was not registered ({} biases known)",
                    self.biases32.len()
                )));
            }
        }
        Ok(())
    }

    fn chunk_size(&self, rows: usize) -> usize {
        self.chunk.unwrap_or_else(|| chunk_for_rows(rows))
    }

    /// Splits the chunks of the atom set into one contiguous run per task.
    fn task_ranges(&self, chunk: usize) -> Vec<(usize, usize)> {
        let chunks = self.n.div_ceil(chunk);
        // A few tasks per thread: rayon balances them when a core is busy with other work.
        let tasks = (TASKS_PER_THREAD * self.threads).min(chunks).max(1);
        (0..tasks)
            .map(|t| {
                let c0 = chunks * t / tasks;
                let c1 = chunks * (t + 1) / tasks;
                (c0 * chunk, (c1 * chunk).min(self.n))
            })
            .collect()
    }

    /// Writes rel[b·c + i] = ℓ_bi − M_b (float32) for the chunk, updating the running max M_b
    /// of each row; logits within the window of M are recomputed directly (module docs).
    /// `s0` is the running Σe^{ℓ−M} of earlier chunks (relative to the M on entry).
    #[allow(clippy::too_many_arguments)]
    fn relative_logits(
        &self,
        job: &RowJob,
        bufs: &mut ChunkBuffers,
        i0: usize,
        c: usize,
        set: Weights,
        m_run: &mut [f64],
        s0: &[f64],
    ) {
        let inv2v = (1.0 / (2.0 * job.noise.v)) as f32;
        let (b32, b64): (Option<&[f32]>, Option<&[f64]>) = match set {
            Weights::Prior => (None, None),
            Weights::Biased(BiasId(k)) => (
                Some(&self.biases32[k][i0..i0 + c]),
                Some(&self.biases64[k][i0..i0 + c]),
            ),
        };
        for b in 0..job.rows {
            let dist = &bufs.dots[b * c..(b + 1) * c];
            let rel = &mut bufs.rel[b * c..(b + 1) * c];
            // Approximate logits first (into rel), their max, then the window.
            let cmax = match b32 {
                None => logits_prior(dist, inv2v, rel),
                Some(beta) => logits_biased(dist, inv2v, beta, rel),
            } as f64;
            let delta = job.delta[b];
            if delta > NEGLIGIBLE_NATS {
                let m_approx = m_run[b].max(cmax);
                // Final w_i ≤ e^{ℓ_i − M}/S0_so_far, and its error is ≤ 2δ·w_i: atoms whose
                // bound stays below WEIGHT_TOL need no recomputation (when weights are spread
                // out, S0 grows and the window closes).
                let ln_s0 = if s0[b] > 0.0 {
                    s0[b].ln() + (m_run[b] - m_approx)
                } else {
                    f64::NEG_INFINITY
                };
                let ln_tol = (2.0 * delta / WEIGHT_TOL).ln();
                let mut window = WINDOW.min(ln_tol - ln_s0).max(0.0);
                let mut cut = (m_approx - (window + 2.0 * delta)) as f32;
                if window > 0.0 && rel.iter().filter(|&&r| r >= cut).count() > SPREAD_CANDIDATES {
                    // Many atoms near the max: the weights are spread out, and this chunk's
                    // own sum already bounds every weight. Σ e^{ℓ̃ − M̃} over the chunk, less δ
                    // for its logits' error, is a lower bound on its part of S0.
                    let chunk_sum: f64 = rel.iter().map(|&r| (r as f64 - m_approx).exp()).sum();
                    let prev = if s0[b] > 0.0 {
                        s0[b] * (m_run[b] - m_approx).exp()
                    } else {
                        0.0
                    };
                    let ln_s = (prev + chunk_sum).ln() - delta;
                    window = WINDOW.min(ln_tol - ln_s).max(0.0);
                    cut = (m_approx - (window + 2.0 * delta)) as f32;
                }
                let mut m_new = m_run[b];
                let xb = job.row(b);
                let exact = &mut bufs.exact[b * c..(b + 1) * c];
                let touched = &mut bufs.touched;
                // Candidates: overwrite with the exact logit relative to m_approx (kept in f64
                // until the final max is known).
                bufs.cand.clear();
                for i in 0..c {
                    if rel[i] >= cut {
                        let d2 = if exact[i].is_nan() {
                            let v = direct_dist2(xb, self.atom(i0 + i), job.noise.s);
                            exact[i] = v;
                            touched.push(b * c + i);
                            v
                        } else {
                            exact[i]
                        };
                        let l = -d2 / (2.0 * job.noise.v) + b64.map_or(0.0, |bb| bb[i]);
                        m_new = m_new.max(l);
                        bufs.cand.push((i, l));
                    }
                }
                // Non-candidates, relative to the new max; the window guarantees they are far
                // below it, so float32 is plenty.
                let shift = m_new as f32;
                for r in rel.iter_mut() {
                    *r -= shift;
                }
                for &(i, l) in &bufs.cand {
                    rel[i] = (l - m_new) as f32;
                }
                m_run[b] = m_new;
            } else {
                let m_new = m_run[b].max(cmax);
                let shift = m_new as f32;
                for r in rel.iter_mut() {
                    *r -= shift;
                }
                m_run[b] = m_new;
            }
        }
    }

    fn atom(&self, i: usize) -> &[f32] {
        &self.atoms[i * self.d..(i + 1) * self.d]
    }

    /// One row block of `weighted_means`: returns per set the merged state and the nearest.
    /// With `keep = Some((k, w))`, also the normalised weights of set k, written into `w`
    /// (rows × N).
    fn means_block(
        &self,
        x: &[f32],
        noise: Noise,
        sets: &[Weights],
        keep: Option<(usize, &mut [f32])>,
    ) -> (Vec<WeightedMean>, Vec<Neighbor>) {
        let (keep, kept_rows) = match keep {
            Some((k, w)) => (Some(k), Some(w)),
            None => (None, None),
        };
        let mut kept_rows = kept_rows;
        let writer = kept_rows.as_deref_mut().map(|w| WeightRows::new(w, self.n));
        let job = RowJob::new(self, x, noise);
        let rows = job.rows;
        let chunk = self.chunk_size(rows);
        let ranges = self.task_ranges(chunk);
        let tasks: Vec<(TaskState, ChunkMaxima)> = self.pool.install(|| {
            ranges
                .par_iter()
                .map(|&(a0, a1)| {
                    let mut st = TaskState::new(rows, self.d, sets.len());
                    let mut maxima = ChunkMaxima::default();
                    let mut bufs = ChunkBuffers::new(rows, chunk, 1);
                    for i0 in (a0..a1).step_by(chunk) {
                        let c = chunk.min(a1 - i0);
                        bufs.distances(self, &job, i0, c, None);
                        for (k, &set) in sets.iter().enumerate() {
                            let sk = &mut st.sets[k];
                            let old = sk.m.clone();
                            self.relative_logits(&job, &mut bufs, i0, c, set, &mut sk.m, &sk.s0);
                            sk.rescale(&old, self.d);
                            sk.add_weights(&mut bufs, c);
                            if keep == Some(k)
                                && let Some(wr) = writer
                            {
                                // SAFETY: this task owns atoms a0..a1; the array is rows × N.
                                unsafe { wr.write(&bufs.rel[..rows * c], rows, i0, c) };
                                maxima.record(&sk.m, i0, c);
                            }
                            // acc += W · A_chunk
                            unsafe {
                                gemm_rm(
                                    rows,
                                    self.d,
                                    c,
                                    sk.acc.as_mut_ptr(),
                                    self.d,
                                    true,
                                    bufs.rel.as_ptr(),
                                    c,
                                    1,
                                    self.atoms[i0 * self.d..].as_ptr(),
                                    self.d,
                                    1,
                                );
                            }
                        }
                        bufs.nearest(self, &job, i0, c, &mut st.nearest);
                    }
                    (st, maxima)
                })
                .collect()
        });
        let (states, maxima): (Vec<TaskState>, Vec<ChunkMaxima>) = tasks.into_iter().unzip();
        let merged = TaskState::merge(states, self.d);
        let mut out = Vec::with_capacity(sets.len());
        for sk in &merged.sets {
            let mut means = vec![0.0f32; rows * self.d];
            let mut stats = Vec::with_capacity(rows);
            for b in 0..rows {
                let s0 = sk.s0[b];
                let inv = (1.0 / s0) as f32;
                for (o, &a) in means[b * self.d..(b + 1) * self.d]
                    .iter_mut()
                    .zip(&sk.acc[b * self.d..(b + 1) * self.d])
                {
                    *o = a * inv;
                }
                stats.push(RowStats {
                    log_norm: sk.m[b] + s0.ln(),
                    ess: s0 * s0 / sk.s2[b],
                    max_weight: 1.0 / s0,
                    entropy: (s0.ln() - sk.sl[b] / s0).max(0.0),
                });
            }
            out.push(WeightedMean { means, stats });
        }
        let nearest = merged
            .nearest
            .iter()
            .map(|&(dist2, index)| Neighbor { index, dist2 })
            .collect();
        if let (Some(k), Some(w)) = (keep, kept_rows) {
            let log_norm: Vec<f64> = out[k].stats.iter().map(|s| s.log_norm).collect();
            self.pool
                .install(|| weight_cache::normalise(w, &maxima, &log_norm, self.n));
        }
        (out, nearest)
    }

    #[allow(clippy::needless_range_loop)] // rows index several per-row arrays
    fn cov_block(
        &self,
        x: &[f32],
        noise: Noise,
        set: Weights,
        means: &[f32],
        g: &[f32],
    ) -> Vec<f32> {
        let job = RowJob::new(self, x, noise);
        let rows = job.rows;
        let d = self.d;
        let mg = row_dots(means, g, d);
        let chunk = self.chunk_size(rows);
        let ranges = self.task_ranges(chunk);
        let states: Vec<TaskState> = self.pool.install(|| {
            ranges
                .par_iter()
                .map(|&(a0, a1)| {
                    let mut st = TaskState::new(rows, d, 1);
                    let mut bufs = ChunkBuffers::new(rows, chunk, 2);
                    for i0 in (a0..a1).step_by(chunk) {
                        let c = chunk.min(a1 - i0);
                        bufs.distances(self, &job, i0, c, Some(g));
                        let sk = &mut st.sets[0];
                        let old = sk.m.clone();
                        self.relative_logits(&job, &mut bufs, i0, c, set, &mut sk.m, &sk.s0);
                        sk.rescale(&old, d);
                        sk.add_weights(&mut bufs, c);
                        // c_bi = w_bi (⟨a_i, g_b⟩ − ⟨m_b, g_b⟩); Σ_i c_bi kept in `sl`'s twin.
                        for b in 0..rows {
                            let mgb = mg[b] as f32;
                            let proj = &bufs.dots[(rows + b) * c..(rows + b + 1) * c];
                            let w = &mut bufs.rel[b * c..(b + 1) * c];
                            let mut sum = 0.0f32;
                            for (wi, &p) in w.iter_mut().zip(proj) {
                                *wi *= p - mgb;
                                sum += *wi;
                            }
                            sk.csum[b] += sum as f64;
                        }
                        unsafe {
                            gemm_rm(
                                rows,
                                d,
                                c,
                                sk.acc.as_mut_ptr(),
                                d,
                                true,
                                bufs.rel.as_ptr(),
                                c,
                                1,
                                self.atoms[i0 * d..].as_ptr(),
                                d,
                                1,
                            );
                        }
                    }
                    st
                })
                .collect()
        });
        let merged = TaskState::merge(states, d);
        let sk = &merged.sets[0];
        let mut out = vec![0.0f32; rows * d];
        for b in 0..rows {
            let inv = 1.0 / sk.s0[b];
            let cs = sk.csum[b];
            for j in 0..d {
                let v = (sk.acc[b * d + j] as f64 - means[b * d + j] as f64 * cs) * inv;
                out[b * d + j] = v as f32;
            }
        }
        out
    }
}

/// ⟨m_b, g_b⟩ per row of D values, summed in float64 (the C·g expansion subtracts it).
fn row_dots(m: &[f32], g: &[f32], d: usize) -> Vec<f64> {
    m.chunks(d)
        .zip(g.chunks(d))
        .map(|(m, g)| m.iter().zip(g).map(|(&a, &b)| a as f64 * b as f64).sum())
        .collect()
}

fn build_pool(threads: usize) -> Result<rayon::ThreadPool> {
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build()
        .map_err(|e| Error::Backend {
            backend: "cpu".into(),
            problem: format!("could not start {threads} worker threads: {e}"),
        })
}

/// The rows of one block and what depends only on them.
struct RowJob<'a> {
    x: &'a [f32],
    rows: usize,
    d: usize,
    noise: Noise,
    /// ‖x_b‖² (float64 sum, rounded).
    xn: Vec<f32>,
    /// Expansion error bound in nats, δ_b = E_b/(2v).
    delta: Vec<f64>,
    /// The bound in squared-distance units, E_b.
    err: Vec<f64>,
}

impl<'a> RowJob<'a> {
    fn new(be: &CpuBackend, x: &'a [f32], noise: Noise) -> Self {
        let d = be.d;
        let rows = x.len() / d;
        let s = noise.s;
        let an = be.max_norm;
        let mut xn = Vec::with_capacity(rows);
        let mut delta = Vec::with_capacity(rows);
        let mut err = Vec::with_capacity(rows);
        for xb in x.chunks(d) {
            let n2: f64 = xb.iter().map(|&v| v as f64 * v as f64).sum();
            let nx = n2.sqrt();
            let e = U32
                * (2.0 * (n2 + s * s * an * an) + 2.0 * s * (2.0 + (d as f64).sqrt()) * nx * an);
            xn.push(n2 as f32);
            err.push(e);
            delta.push(e / (2.0 * noise.v));
        }
        RowJob {
            x,
            rows,
            d,
            noise,
            xn,
            delta,
            err,
        }
    }
    fn row(&self, b: usize) -> &[f32] {
        &self.x[b * self.d..(b + 1) * self.d]
    }
}

/// Per-task scratch for one chunk.
struct ChunkBuffers {
    /// (stack·B) × chunk GEMM output X·A_cᵀ, turned in place into the approximate squared
    /// distances (rows 0..B); below it, for C·g, the projections G·A_cᵀ.
    dots: Vec<f32>,
    /// Minimum of each row's approximate distances in the chunk.
    dmin: Vec<f32>,
    /// Direct squared distances, NaN where not computed, B × chunk; reset lazily through
    /// `touched` (usually a handful of entries) so that it stays out of the cache.
    exact: Vec<f64>,
    touched: Vec<usize>,
    /// Logits relative to the running max, B × chunk; then in place the weights (or the C·g
    /// coefficients), the left operand of the weighted-sum GEMM.
    rel: Vec<f32>,
    /// Candidate list of one row.
    cand: Vec<(usize, f64)>,
    /// Stacked [X; G] when `stack` = 2.
    lhs: Vec<f32>,
    /// Column-major GEMM output for small row counts (see `distances`).
    dots_cm: Vec<f32>,
}

impl ChunkBuffers {
    fn new(rows: usize, chunk: usize, stack: usize) -> Self {
        ChunkBuffers {
            dots: vec![0.0; stack * rows * chunk],
            dmin: vec![0.0; rows],
            exact: vec![f64::NAN; rows * chunk],
            touched: Vec::new(),
            rel: vec![0.0; rows * chunk],
            cand: Vec::new(),
            lhs: Vec::new(),
            dots_cm: Vec::new(),
        }
    }

    /// dots[r·c + i] = ⟨lhs_r, a_{i0+i}⟩ for the m rows of `lhs` (row-major m × D) and the c
    /// atoms of the chunk.
    ///
    /// # Safety
    /// `lhs` must point at m·D readable values.
    unsafe fn products(&mut self, be: &CpuBackend, lhs: *const f32, m: usize, i0: usize, c: usize) {
        let d = be.d;
        let atoms = be.atoms[i0 * d..].as_ptr();
        if m <= SMALL_GEMM_ROWS {
            // Few rows: a column-major destination keeps the GEMM in its m = rows orientation,
            // where the atoms (rhs, unit row stride) are read in place instead of being packed
            // for every chunk; packing them cost more than the 16-row product itself.
            self.dots_cm.resize(m * c, 0.0);
            // SAFETY: dots_cm holds m×c, lhs m×d, atoms from row i0 at least c×d values.
            unsafe {
                gemm::gemm(
                    m,
                    c,
                    d,
                    self.dots_cm.as_mut_ptr(),
                    m as isize,
                    1,
                    false,
                    lhs,
                    1,
                    d as isize,
                    atoms,
                    d as isize,
                    1,
                    1.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::None,
                );
            }
            for r in 0..m {
                for (i, o) in self.dots[r * c..(r + 1) * c].iter_mut().enumerate() {
                    *o = self.dots_cm[i * m + r];
                }
            }
        } else {
            // SAFETY: dots holds m×c, lhs m×d, atoms from row i0 at least c×d values.
            unsafe {
                gemm_rm(
                    m,
                    c,
                    d,
                    self.dots.as_mut_ptr(),
                    c,
                    false,
                    lhs,
                    d,
                    1,
                    atoms,
                    1,
                    d,
                );
            }
        }
    }

    /// d̃_bi = ‖x_b‖² + s²‖a_i‖² − 2s⟨x_b, a_i⟩ for the chunk (layout B × c); with `g`, also the
    /// projections ⟨g_b, a_i⟩ in rows B..2B of `dots`.
    fn distances(&mut self, be: &CpuBackend, job: &RowJob, i0: usize, c: usize, g: Option<&[f32]>) {
        let rows = job.rows;
        let (lhs, m) = match g {
            None => (job.x.as_ptr(), rows),
            Some(g) => {
                if self.lhs.is_empty() {
                    self.lhs.extend_from_slice(job.x);
                    self.lhs.extend_from_slice(g);
                }
                (self.lhs.as_ptr(), 2 * rows)
            }
        };
        // SAFETY: lhs points at m rows of D values (job.x, or the stacked [X; G]).
        unsafe { self.products(be, lhs, m, i0, c) };
        let s = job.noise.s as f32;
        let s2 = s * s;
        let an = &be.norms2[i0..i0 + c];
        for b in 0..rows {
            self.dmin[b] = distances_row(&mut self.dots[b * c..(b + 1) * c], an, job.xn[b], s, s2);
        }
        for &k in &self.touched {
            self.exact[k] = f64::NAN;
        }
        self.touched.clear();
    }

    /// Updates (dist2, index) of each row with the chunk: atoms whose approximate distance is
    /// within 2E of the chunk's approximate minimum, and below best + E, are recomputed directly.
    #[allow(clippy::needless_range_loop)] // rows index several per-row arrays
    fn nearest(
        &mut self,
        be: &CpuBackend,
        job: &RowJob,
        i0: usize,
        c: usize,
        best: &mut [(f64, usize)],
    ) {
        for b in 0..job.rows {
            let dist = &self.dots[b * c..(b + 1) * c];
            let cmin = self.dmin[b] as f64;
            let e = job.err[b];
            let cut = (best[b].0.min(cmin + e) + e) as f32;
            for i in 0..c {
                if dist[i] <= cut {
                    let ex = &mut self.exact[b * c + i];
                    if ex.is_nan() {
                        *ex = direct_dist2(job.row(b), be.atom(i0 + i), job.noise.s);
                        self.touched.push(b * c + i);
                    }
                    if *ex < best[b].0 {
                        best[b] = (*ex, i0 + i);
                    }
                }
            }
        }
    }
}

/// Online log-sum-exp state of one bias set over B rows.
struct SetState {
    m: Vec<f64>,
    s0: Vec<f64>,
    s2: Vec<f64>,
    sl: Vec<f64>,
    /// Σ c_i of the covariance pass.
    csum: Vec<f64>,
    acc: Vec<f32>,
}

impl SetState {
    fn new(rows: usize, d: usize) -> Self {
        SetState {
            m: vec![f64::NEG_INFINITY; rows],
            s0: vec![0.0; rows],
            s2: vec![0.0; rows],
            sl: vec![0.0; rows],
            csum: vec![0.0; rows],
            acc: vec![0.0; rows * d],
        }
    }

    /// Rescales row b from max `old[b]` to `self.m[b]`: S0·r, S2·r², SL·r + (M_old − M_new)S0·r,
    /// acc·r, with r = e^{M_old − M_new}; r < e^{−60} zeroes the row (no subnormals).
    #[allow(clippy::needless_range_loop)] // rows index several per-row arrays
    fn rescale(&mut self, old: &[f64], d: usize) {
        for b in 0..self.m.len() {
            if old[b] == self.m[b] || self.s0[b] == 0.0 {
                continue;
            }
            let dm = old[b] - self.m[b];
            if dm < CLAMP as f64 {
                self.s0[b] = 0.0;
                self.s2[b] = 0.0;
                self.sl[b] = 0.0;
                self.csum[b] = 0.0;
                self.acc[b * d..(b + 1) * d].fill(0.0);
                continue;
            }
            let r = dm.exp();
            self.sl[b] = r * (self.sl[b] + dm * self.s0[b]);
            self.s0[b] *= r;
            self.s2[b] *= r * r;
            self.csum[b] *= r;
            let rf = r as f32;
            for a in &mut self.acc[b * d..(b + 1) * d] {
                *a *= rf;
            }
        }
    }

    /// rel → w = e^{rel} in place (0 below −60), and S0, S2, SL updated.
    fn add_weights(&mut self, bufs: &mut ChunkBuffers, c: usize) {
        for b in 0..self.m.len() {
            let (s0, s2, sl) = weights_row(&mut bufs.rel[b * c..(b + 1) * c]);
            self.s0[b] += s0;
            self.s2[b] += s2;
            self.sl[b] += sl;
        }
    }
}

struct TaskState {
    sets: Vec<SetState>,
    /// (dist2, index) per row.
    nearest: Vec<(f64, usize)>,
}

impl TaskState {
    fn new(rows: usize, d: usize, sets: usize) -> Self {
        TaskState {
            sets: (0..sets).map(|_| SetState::new(rows, d)).collect(),
            nearest: vec![(f64::INFINITY, 0); rows],
        }
    }

    /// Exact merge: the common max is the max of the task maxima; each task's sums are scaled
    /// by e^{M_t − M} (zeroed below e^{−60}).
    fn merge(mut states: Vec<TaskState>, d: usize) -> TaskState {
        let mut first = states.remove(0);
        for st in states {
            for (a, b) in first.nearest.iter_mut().zip(&st.nearest) {
                if b.0 < a.0 || (b.0 == a.0 && b.1 < a.1) {
                    *a = *b;
                }
            }
            for (sa, mut sb) in first.sets.iter_mut().zip(st.sets) {
                let rows = sa.m.len();
                let m: Vec<f64> = sa.m.iter().zip(&sb.m).map(|(a, b)| a.max(*b)).collect();
                let old_a = std::mem::replace(&mut sa.m, m.clone());
                sa.rescale(&old_a, d);
                let old_b = std::mem::replace(&mut sb.m, m);
                sb.rescale(&old_b, d);
                for b in 0..rows {
                    sa.s0[b] += sb.s0[b];
                    sa.s2[b] += sb.s2[b];
                    sa.sl[b] += sb.sl[b];
                    sa.csum[b] += sb.csum[b];
                }
                for (x, y) in sa.acc.iter_mut().zip(&sb.acc) {
                    *x += y;
                }
            }
        }
        first
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        format!(
            "cpu ({} thread{}, f32, gemm)",
            self.threads,
            if self.threads == 1 { "" } else { "s" }
        )
    }
    fn atoms(&self) -> usize {
        self.n
    }
    fn dim(&self) -> usize {
        self.d
    }

    /// Stores β − max β (float32 and float64).
    fn add_bias(&mut self, bias: &[f64]) -> Result<BiasId> {
        let max = super::check_bias("cpu", bias, self.n)?;
        let shifted: Vec<f64> = bias.iter().map(|&b| b - max).collect();
        self.biases32
            .push(shifted.iter().map(|&b| b as f32).collect());
        self.biases64.push(shifted);
        Ok(BiasId(self.biases32.len() - 1))
    }

    fn weighted_means(&self, x: &[f32], noise: Noise, sets: &[Weights]) -> Result<PassOutput> {
        self.check_pass(x, noise, sets)?;
        let mut out: Vec<WeightedMean> = sets
            .iter()
            .map(|_| WeightedMean {
                means: Vec::with_capacity(x.len()),
                stats: Vec::new(),
            })
            .collect();
        let mut nearest = Vec::new();
        let rows = x.len() / self.d;
        let keep = sets
            .iter()
            .position(|&s| s == Weights::Prior)
            .filter(|_| rows * self.n * 4 <= self.weight_cache_bytes);
        // Reuse the last pass's array when no C·g call still holds it: a fresh 60 MB one per
        // step costs page faults and zeroing comparable to the weights' own work.
        let mut kept = Vec::new();
        if keep.is_some() {
            let old = self
                .prior_weights
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .take();
            if let Some(old) = old.and_then(|a| Arc::try_unwrap(a).ok()) {
                kept = old.into_weights();
            }
            kept.resize(rows * self.n, 0.0);
        }
        let step = self.row_block * self.d;
        for (bi, xb) in x.chunks(step).enumerate() {
            let block_rows = xb.len() / self.d;
            let w = keep.map(|k| {
                let r0 = bi * self.row_block;
                (k, &mut kept[r0 * self.n..(r0 + block_rows) * self.n])
            });
            let (sets_out, near) = self.means_block(xb, noise, sets, w);
            for (o, s) in out.iter_mut().zip(sets_out) {
                o.means.extend_from_slice(&s.means);
                o.stats.extend_from_slice(&s.stats);
            }
            nearest.extend(near);
        }
        if keep.is_some() {
            let cache = PriorWeights::new(x.to_vec(), kept, noise, self.d, self.n);
            *self.prior_weights.lock().unwrap_or_else(|e| e.into_inner()) = Some(Arc::new(cache));
        }
        Ok(PassOutput { sets: out, nearest })
    }

    fn covariance_products(
        &self,
        x: &[f32],
        noise: Noise,
        set: Weights,
        means: &[f32],
        g: &[f32],
    ) -> Result<Vec<f32>> {
        self.check_pass(x, noise, &[set])?;
        for (name, v) in [("means", means), ("g", g)] {
            if v.len() != x.len() {
                return Err(Error::input(format!(
                    "cpu backend: {name} has {} values but x has {} (both B × D)",
                    v.len(),
                    x.len()
                )));
            }
            if v.iter().any(|a| !a.is_finite()) {
                return Err(Error::input(format!(
                    "cpu backend: {name} has a non-finite value"
                )));
            }
        }
        let step = self.row_block * self.d;
        let mut out = Vec::with_capacity(x.len());
        let cache = if set == Weights::Prior {
            self.prior_weights
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .clone()
        } else {
            None
        };
        if let Some(cache) = cache
            && let Some(rows) = cache.lookup(x, noise)
        {
            for ((kb, mb), gb) in rows
                .chunks(self.row_block)
                .zip(means.chunks(step))
                .zip(g.chunks(step))
            {
                out.extend(self.cov_block_kept(&cache, kb, mb, gb));
            }
            return Ok(out);
        }
        for ((xb, mb), gb) in x.chunks(step).zip(means.chunks(step)).zip(g.chunks(step)) {
            out.extend(self.cov_block(xb, noise, set, mb, gb));
        }
        Ok(out)
    }
}

/// Row-major dst (m × n, row stride `dst_rs`) = [dst +] lhs (m × k) · rhs (k × n), where lhs
/// and rhs are given by (row stride, column stride). Single-threaded: tasks run in parallel.
#[allow(clippy::too_many_arguments)]
unsafe fn gemm_rm(
    m: usize,
    n: usize,
    k: usize,
    dst: *mut f32,
    dst_rs: usize,
    accumulate: bool,
    lhs: *const f32,
    lhs_rs: usize,
    lhs_cs: usize,
    rhs: *const f32,
    rhs_rs: usize,
    rhs_cs: usize,
) {
    unsafe {
        gemm::gemm(
            m,
            n,
            k,
            dst,
            1,
            dst_rs as isize,
            accumulate,
            lhs,
            lhs_cs as isize,
            lhs_rs as isize,
            rhs,
            rhs_cs as isize,
            rhs_rs as isize,
            1.0f32,
            1.0f32,
            false,
            false,
            false,
            gemm::Parallelism::None,
        );
    }
}

/// Σ_d (x_d − s a_d)² in float64: s·a_d of two float32 values is exact in float64.
pub fn direct_dist2(x: &[f32], a: &[f32], s: f64) -> f64 {
    let mut acc = [0.0f64; 8];
    let xc = x.chunks_exact(8);
    let ac = a.chunks_exact(8);
    let (xr, ar) = (xc.remainder(), ac.remainder());
    for (xs, as_) in xc.zip(ac) {
        for j in 0..8 {
            let e = xs[j] as f64 - s * as_[j] as f64;
            acc[j] += e * e;
        }
    }
    let mut tail = 0.0;
    for (&xv, &av) in xr.iter().zip(ar) {
        let e = xv as f64 - s * av as f64;
        tail += e * e;
    }
    acc.iter().sum::<f64>() + tail
}

// ---- elementwise kernels, compiled for AVX-512/AVX2 when the CPU has them -------------------

macro_rules! dispatch {
    ($name:ident, $body:ident, ($($arg:ident : $ty:ty),*) -> $ret:ty) => {
        fn $name($($arg: $ty),*) -> $ret {
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx512f,avx2,fma")]
                unsafe fn v4($($arg: $ty),*) -> $ret { $body($($arg),*) }
                #[target_feature(enable = "avx2,fma")]
                unsafe fn v3($($arg: $ty),*) -> $ret { $body($($arg),*) }
                if std::arch::is_x86_feature_detected!("avx512f") {
                    return unsafe { v4($($arg),*) };
                }
                if std::arch::is_x86_feature_detected!("avx2")
                    && std::arch::is_x86_feature_detected!("fma")
                {
                    return unsafe { v3($($arg),*) };
                }
            }
            $body($($arg),*)
        }
    };
}

/// In place: dots_i → ‖x‖² + s²‖a_i‖² − 2s·dots_i; returns the minimum.
#[inline(always)]
fn distances_body(row: &mut [f32], an: &[f32], xn: f32, s: f32, s2: f32) -> f32 {
    let two_s = 2.0 * s;
    let mut lanes = [f32::INFINITY; 16];
    for (k, (o, &a)) in row.iter_mut().zip(an).enumerate() {
        let v = (xn + s2 * a) - two_s * *o;
        *o = v;
        let l = &mut lanes[k % 16];
        *l = if v < *l { v } else { *l };
    }
    lanes
        .iter()
        .fold(f32::INFINITY, |m, &v| if v < m { v } else { m })
}
dispatch!(distances_row, distances_body, (row: &mut [f32], an: &[f32], xn: f32, s: f32, s2: f32) -> f32);

/// out_i = −d_i/(2v); returns the maximum.
#[inline(always)]
fn logits_prior_body(dist: &[f32], inv2v: f32, out: &mut [f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    for (k, (o, &d)) in out.iter_mut().zip(dist).enumerate() {
        let v = -d * inv2v;
        *o = v;
        let l = &mut lanes[k % 16];
        *l = if v > *l { v } else { *l };
    }
    lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}
dispatch!(logits_prior, logits_prior_body, (dist: &[f32], inv2v: f32, out: &mut [f32]) -> f32);

/// out_i = β_i − d_i/(2v); returns the maximum.
#[inline(always)]
fn logits_biased_body(dist: &[f32], inv2v: f32, beta: &[f32], out: &mut [f32]) -> f32 {
    let mut lanes = [f32::NEG_INFINITY; 16];
    for (k, ((o, &d), &bb)) in out.iter_mut().zip(dist).zip(beta).enumerate() {
        let v = bb - d * inv2v;
        *o = v;
        let l = &mut lanes[k % 16];
        *l = if v > *l { v } else { *l };
    }
    lanes
        .iter()
        .fold(f32::NEG_INFINITY, |m, &v| if v > m { v } else { m })
}
dispatch!(logits_biased, logits_biased_body, (dist: &[f32], inv2v: f32, beta: &[f32], out: &mut [f32]) -> f32);

/// e^r for r ≤ 0 (relative error ≈ 2e-7), branch-free so that it vectorises: 2^k·p(f) with
/// k = round(r/ln 2), f = r − k ln 2 ∈ [−ln2/2, ln2/2] and p a degree-6 Taylor polynomial.
#[inline(always)]
fn exp_neg(r: f32) -> f32 {
    const LOG2E: f32 = std::f32::consts::LOG2_E;
    const LN2_HI: f32 = 0.693_145_75;
    const LN2_LO: f32 = 1.428_606_8e-6;
    const ROUND: f32 = 12_582_912.0; // 1.5·2^23: adding it rounds to an integer
    let r = r.max(-87.0);
    let k = (r * LOG2E + ROUND) - ROUND;
    let f = (r - k * LN2_HI) - k * LN2_LO;
    let p = 1.0
        + f * (1.0
            + f * (0.5
                + f * (1.0 / 6.0 + f * (1.0 / 24.0 + f * (1.0 / 120.0 + f * (1.0 / 720.0))))));
    let scale = f32::from_bits(((k as i32 + 127) as u32) << 23);
    p * scale
}

/// In place r_i → w_i = e^{r_i} (0 when r_i < −60); returns (Σw, Σw², Σw·r), accumulated in
/// float32 per lane over one chunk row.
#[inline(always)]
fn weights_body(rel: &mut [f32]) -> (f64, f64, f64) {
    let mut s0 = [0.0f32; 16];
    let mut s2 = [0.0f32; 16];
    let mut sl = [0.0f32; 16];
    let mut rc = rel.chunks_exact_mut(16);
    for r16 in &mut rc {
        for j in 0..16 {
            let r = r16[j];
            let e = if r < CLAMP { 0.0 } else { exp_neg(r) };
            r16[j] = e;
            s0[j] += e;
            s2[j] += e * e;
            sl[j] += e * r;
        }
    }
    let (mut t0, mut t2, mut tl) = (0.0f64, 0.0f64, 0.0f64);
    for wo in rc.into_remainder() {
        let r = *wo;
        let e = if r < CLAMP { 0.0 } else { exp_neg(r) };
        *wo = e;
        t0 += e as f64;
        t2 += (e * e) as f64;
        tl += (e * r) as f64;
    }
    for j in 0..16 {
        t0 += s0[j] as f64;
        t2 += s2[j] as f64;
        tl += sl[j] as f64;
    }
    (t0, t2, tl)
}
dispatch!(weights_row, weights_body, (rel: &mut [f32]) -> (f64, f64, f64));

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fast_exp_matches_std() {
        let mut worst = 0.0f64;
        let mut r = -60.0f32;
        while r <= 0.0 {
            let got = exp_neg(r) as f64;
            let want = (r as f64).exp();
            worst = worst.max((got / want - 1.0).abs());
            r += 0.001_37;
        }
        assert!(worst < 5e-7, "worst relative error {worst}");
        assert_eq!(exp_neg(0.0), 1.0);
    }

    #[test]
    fn direct_distance_is_float64_exact() {
        let x: Vec<f32> = (0..37).map(|i| (i as f32 * 0.37).sin()).collect();
        let a: Vec<f32> = (0..37).map(|i| (i as f32 * 0.11).cos()).collect();
        let s = 0.731;
        let want: f64 = x
            .iter()
            .zip(&a)
            .map(|(&x, &a)| (x as f64 - s * a as f64).powi(2))
            .sum();
        assert!((direct_dist2(&x, &a, s) - want).abs() <= 1e-14 * want);
    }
}

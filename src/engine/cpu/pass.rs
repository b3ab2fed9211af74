//! One pass over the atoms: chunks, tasks, and the exact merge of their states.
//!
//! The atoms are cut into chunks of `chunk` rows; each rayon task walks a contiguous run of
//! chunks with its own per-row state (running max M, S0 = Σe^{ℓ−M}, S2 = Σe^{2(ℓ−M)},
//! SL = Σe^{ℓ−M}(ℓ−M), acc = Σe^{ℓ−M} a_i), and the task states are merged exactly at the end
//! (rescaling each by e^{M_t − M}). Per chunk:
//! 1. distance GEMM: G = X·A_cᵀ, then d̃_bi = ‖x_b‖² + s²‖a_i‖² − 2s G_bi (float32);
//! 2. logits ℓ̃_bi = −d̃_bi/(2v) + β_i for every requested bias set (the GEMM is shared);
//! 3. the precision fix of design §7 (module `window`) replaces the logits that matter by
//!    direct ones;
//! 4. w_bi = e^{ℓ_bi − M_b} (zero when ℓ − M < −60), then acc += W·A_c (second GEMM).
//!
//! Then the row statistics of [`logsumexp`]: ESS = S0²/S2, max weight = 1/S0, entropy =
//! log S0 − SL/S0, log_norm = M + log S0 + the bias shift, and mean = acc/S0. Memory: the atoms (N·D), plus per task K·B·D accumulators and a few B×chunk
//! buffers; B×N×D is never formed, and batches above `row_block` rows go in row blocks.
//!
//! # Subnormals
//! Weights with ℓ − M < −60 are set to exactly 0, and a rescale factor e^{M_old − M_new} below
//! e^{−60} zeroes the accumulators instead of scaling them, so no GEMM ever sees a subnormal
//! operand (e^{−60} ≈ 8.8e-27 times any pixel ≥ 1e-11 is still normal). The mass thrown away is
//! at most N·e^{−60} relative to the largest weight.

use rayon::prelude::*;

use super::gemm::gemm_rm;
use super::simd::{distances_row, weights_row};
use super::weight_cache::{self, ChunkMaxima, WeightRows};
use super::{CLAMP, CpuBackend, window};
use crate::engine::logsumexp::{self, RowSums};
use crate::engine::{Neighbor, Noise, WeightSet, WeightedMean};

/// Atom ranges per worker thread (each with its own accumulators, merged at the end).
const TASKS_PER_THREAD: usize = 4;

impl CpuBackend {
    /// Splits the chunks of the atom set into one contiguous run per task.
    pub(super) fn task_ranges(&self, chunk: usize) -> Vec<(usize, usize)> {
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

    /// The chunks (first atom, atoms) of the whole atom set.
    pub(super) fn all_chunks(&self, chunk: usize) -> Vec<(usize, usize)> {
        (0..self.n)
            .step_by(chunk)
            .map(|i0| (i0, chunk.min(self.n - i0)))
            .collect()
    }

    /// One sweep over `chunks` for the rows of `job`: the chunks cut into one contiguous run
    /// per task (as [`CpuBackend::task_ranges`] cuts the whole set), each task's state, merged
    /// exactly. With `keep = Some((k, w))` the weights e^{ℓ − M} of set k are written into
    /// `w`'s columns of the chunks and the chunk maxima returned.
    pub(super) fn sweep(
        &self,
        job: &RowJob,
        sets: &[WeightSet],
        keep: Option<(usize, WeightRows)>,
        chunks: &[(usize, usize)],
    ) -> (TaskState, Vec<ChunkMaxima>) {
        let rows = job.rows;
        let chunk = chunks.iter().map(|c| c.1).max().unwrap_or(1);
        let tasks = (TASKS_PER_THREAD * self.threads).min(chunks.len()).max(1);
        let runs: Vec<&[(usize, usize)]> = (0..tasks)
            .map(|t| &chunks[chunks.len() * t / tasks..chunks.len() * (t + 1) / tasks])
            .collect();
        let out: Vec<(TaskState, ChunkMaxima)> = self.pool.install(|| {
            runs.par_iter()
                .map(|run| {
                    let mut st = TaskState::new(rows, self.d, sets.len());
                    let mut maxima = ChunkMaxima::default();
                    let mut bufs = ChunkBuffers::new(rows, chunk, 1);
                    for &(i0, c) in run.iter() {
                        bufs.distances(self, job, i0, c, None);
                        for (k, &set) in sets.iter().enumerate() {
                            let sk = &mut st.sets[k];
                            let old = sk.m.clone();
                            self.relative_logits(job, &mut bufs, i0, c, set, &mut sk.m, &sk.s0);
                            sk.rescale(&old, self.d);
                            sk.add_weights(&mut bufs, c);
                            if let Some((kk, wr)) = keep
                                && kk == k
                            {
                                // SAFETY: this task owns these chunks; the array is rows × N.
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
                                    self.chunk_atoms(&bufs.decoded, i0, c).as_ptr(),
                                    self.d,
                                    1,
                                );
                            }
                        }
                        bufs.nearest(self, job, i0, c, &mut st.nearest);
                    }
                    (st, maxima)
                })
                .collect()
        });
        let (states, maxima): (Vec<TaskState>, Vec<ChunkMaxima>) = out.into_iter().unzip();
        (TaskState::merge(states, self.d), maxima)
    }

    /// One row block of `weighted_means`: returns per set the merged state and the nearest.
    /// With `keep = Some((k, w))`, also the normalised weights of set k, written into `w`
    /// (rows × N; 0 for the atoms a pruned pass skipped).
    pub(super) fn means_block(
        &self,
        x: &[f32],
        noise: Noise,
        sets: &[WeightSet],
        keep: Option<(usize, &mut [f32])>,
    ) -> (Vec<WeightedMean>, Vec<Neighbor>) {
        let (keep, mut kept_rows) = match keep {
            Some((k, w)) => (Some(k), Some(w)),
            None => (None, None),
        };
        let writer = kept_rows.as_deref_mut().map(|w| WeightRows::new(w, self.n));
        let keep_w = keep.zip(writer);
        let job = RowJob::new(self, x, noise);
        let rows = job.rows;
        let chunk = self.chunk_size(rows);
        let (merged, maxima) = match &self.prune {
            None => self.sweep(&job, sets, keep_w, &self.all_chunks(chunk)),
            Some(p) => {
                let swept = self.pruned_sweep(&job, sets, keep_w, chunk, true);
                if let Some(w) = kept_rows.as_deref_mut() {
                    let skipped: Vec<bool> = swept.visit.iter().map(|v| !v).collect();
                    for (i0, c) in p.chunks_of(&skipped, chunk) {
                        for row in w.chunks_mut(self.n) {
                            row[i0..i0 + c].fill(0.0);
                        }
                    }
                }
                (swept.state, swept.maxima)
            }
        };
        let mut out = Vec::with_capacity(sets.len());
        let d = self.d;
        for (sk, &set) in merged.sets.iter().zip(sets) {
            let mut means = vec![0.0f32; rows * d];
            let mut stats = Vec::with_capacity(rows);
            let shift = self.bias_shift(set);
            for b in 0..rows {
                let r = b * d..(b + 1) * d;
                logsumexp::finish_mean(&sk.acc[r.clone()], sk.s0[b], &mut means[r]);
                stats.push(sk.row_sums(b).finish(shift));
            }
            out.push(WeightedMean { means, stats });
        }
        let nearest = merged
            .nearest
            .iter()
            .map(|&(dist2, index)| Neighbor { index, dist2 })
            .collect();
        if let (Some(k), Some(w)) = (keep, kept_rows) {
            // log Z in the frame of the chunk maxima, i.e. of the bias as stored.
            let sk = &merged.sets[k];
            let log_norm: Vec<f64> = (0..rows)
                .map(|b| sk.row_sums(b).log_norm_stored())
                .collect();
            self.pool
                .install(|| weight_cache::normalise(w, &maxima, &log_norm, self.n));
        }
        (out, nearest)
    }

    #[allow(clippy::needless_range_loop)] // rows index several per-row arrays
    pub(super) fn cov_block(
        &self,
        set: WeightSet,
        x: &[f32],
        noise: Noise,
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
                                self.chunk_atoms(&bufs.decoded, i0, c).as_ptr(),
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
pub(super) fn row_dots(m: &[f32], g: &[f32], d: usize) -> Vec<f64> {
    m.chunks(d)
        .zip(g.chunks(d))
        .map(|(m, g)| m.iter().zip(g).map(|(&a, &b)| a as f64 * b as f64).sum())
        .collect()
}

/// The rows of one block and what depends only on them.
pub(super) struct RowJob<'a> {
    pub(super) x: &'a [f32],
    pub(super) rows: usize,
    pub(super) d: usize,
    pub(super) noise: Noise,
    /// ‖x_b‖² (float64 sum, rounded).
    pub(super) xn: Vec<f32>,
    /// Expansion error bound in nats, δ_b = E_b/(2v).
    pub(super) delta: Vec<f64>,
    /// The bound in squared-distance units, E_b.
    pub(super) err: Vec<f64>,
}

impl<'a> RowJob<'a> {
    pub(super) fn new(be: &CpuBackend, x: &'a [f32], noise: Noise) -> Self {
        let d = be.d;
        let rows = x.len() / d;
        let s = noise.s;
        let an = be.max_norm;
        let mut xn = Vec::with_capacity(rows);
        let mut delta = Vec::with_capacity(rows);
        let mut err = Vec::with_capacity(rows);
        for xb in x.chunks(d) {
            let n2: f64 = xb.iter().map(|&v| v as f64 * v as f64).sum();
            let e = window::error_bound(n2, s, an, d);
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
    pub(super) fn row(&self, b: usize) -> &[f32] {
        &self.x[b * self.d..(b + 1) * self.d]
    }
}

/// Per-task scratch for one chunk.
pub(super) struct ChunkBuffers {
    /// (stack·B) × chunk GEMM output X·A_cᵀ, turned in place into the approximate squared
    /// distances (rows 0..B); below it, for C·g, the projections G·A_cᵀ.
    pub(super) dots: Vec<f32>,
    /// Minimum of each row's approximate distances in the chunk.
    pub(super) dmin: Vec<f32>,
    /// Direct squared distances, NaN where not computed, B × chunk; reset lazily through
    /// `touched` (usually a handful of entries) so that it stays out of the cache.
    pub(super) exact: Vec<f64>,
    pub(super) touched: Vec<usize>,
    /// Logits relative to the running max, B × chunk; then in place the weights (or the C·g
    /// coefficients), the left operand of the weighted-sum GEMM.
    pub(super) rel: Vec<f32>,
    /// Candidate list of one row.
    pub(super) cand: Vec<(usize, f64)>,
    /// Stacked [X; G] when `stack` = 2.
    pub(super) lhs: Vec<f32>,
    /// Column-major GEMM output for small row counts (see `distances`).
    pub(super) dots_cm: Vec<f32>,
    /// The chunk's atoms decoded to float32 (c × D) for a u8 / f16 store; unused for f32,
    /// whose GEMMs read the store in place (module `store`).
    pub(super) decoded: Vec<f32>,
}

impl ChunkBuffers {
    pub(super) fn new(rows: usize, chunk: usize, stack: usize) -> Self {
        ChunkBuffers {
            dots: vec![0.0; stack * rows * chunk],
            dmin: vec![0.0; rows],
            exact: vec![f64::NAN; rows * chunk],
            touched: Vec::new(),
            rel: vec![0.0; rows * chunk],
            cand: Vec::new(),
            lhs: Vec::new(),
            dots_cm: Vec::new(),
            decoded: Vec::new(),
        }
    }

    /// Decodes the atoms [i0, i0 + c) for the chunk's GEMMs and direct distances (nothing
    /// for an f32 store); every chunk loads before its first use.
    pub(super) fn load(&mut self, be: &CpuBackend, i0: usize, c: usize) {
        be.store.load(i0 * be.d, c * be.d, &mut self.decoded);
    }

    /// d̃_bi = ‖x_b‖² + s²‖a_i‖² − 2s⟨x_b, a_i⟩ for the chunk (layout B × c); with `g`, also the
    /// projections ⟨g_b, a_i⟩ in rows B..2B of `dots`.
    pub(super) fn distances(
        &mut self,
        be: &CpuBackend,
        job: &RowJob,
        i0: usize,
        c: usize,
        g: Option<&[f32]>,
    ) {
        self.load(be, i0, c);
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
}

/// Online log-sum-exp state of one bias set over B rows.
pub(super) struct SetState {
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
            let mut sums = RowSums {
                m: old[b],
                s0: self.s0[b],
                s2: self.s2[b],
                sl: self.sl[b],
            };
            let r = sums.rescale(self.m[b]);
            (self.s0[b], self.s2[b], self.sl[b]) = (sums.s0, sums.s2, sums.sl);
            self.csum[b] *= r;
            let rf = r as f32;
            for a in &mut self.acc[b * d..(b + 1) * d] {
                *a *= rf;
            }
        }
    }

    /// The sums of row b.
    pub(super) fn row_sums(&self, b: usize) -> RowSums {
        RowSums {
            m: self.m[b],
            s0: self.s0[b],
            s2: self.s2[b],
            sl: self.sl[b],
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

pub(super) struct TaskState {
    pub(super) sets: Vec<SetState>,
    /// (dist2, index in the caller's order) per row.
    pub(super) nearest: Vec<(f64, usize)>,
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
    pub(super) fn merge(mut states: Vec<TaskState>, d: usize) -> TaskState {
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

//! The prior weights of the last pass, kept for the covariance products that follow it.
//!
//! Every approximate sampler makes a prior pass for m(x) and then one or more passes for C·g
//! with the same weights and the same x (σ-DPS, ζ-DPS, ΠGDM: one; TMPD: one per CG
//! iteration). Recomputing the weights costs the distance GEMM (2·B·N·D flops), their
//! exponentials and the precision fix again; kept, a C·g pass is two GEMMs, the projections
//! p_bi = ⟨g_b, a_i⟩ and the weighted sum, with
//!
//!   C g_b = Σ_i w_bi (a_i − m_b)(p_bi − ⟨m_b, g_b⟩) = Σ_i c_bi a_i − m_b Σ_i c_bi,
//!   c_bi = w_bi (p_bi − ⟨m_b, g_b⟩),
//!
//! 4·B·N·D flops instead of 6·B·N·D, and chunks where every requested row has weight 0 (most
//! of them at small t) are skipped. The weights are stored normalised, B × N float32, for the
//! rows of the last pass that asked for [`WeightSet::Prior`], when B·N·4 bytes fit the backend's
//! budget ([`super::DEFAULT_WEIGHT_CACHE_BYTES`]). A C·g call uses them only when every one of
//! its rows equals (bit for bit) a kept row and the noise is the same; anything else takes
//! the full pass, so the cache can never change a result beyond float32 rounding order.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hash, Hasher};

use rayon::prelude::*;

use super::gemm::gemm_rm;
use super::pass::{ChunkBuffers, row_dots};
use super::{CLAMP, CpuBackend};
use crate::engine::Noise;

/// Weights below this are stored as 0 (keeps subnormals out of the GEMMs; the mass dropped is
/// at most N·1e-30).
const FLUSH: f32 = 1e-30;

/// Where the tasks of a prior pass write e^{ℓ − M_chunk}: the rows × N array that becomes the
/// kept weights. Tasks own disjoint atom ranges, so their writes never overlap.
#[derive(Clone, Copy)]
pub(super) struct WeightRows {
    ptr: *mut f32,
    n: usize,
}

// SAFETY: tasks write disjoint column ranges [i0, i0 + c) of the rows (their own atom ranges),
// and the array outlives the pass (`means_block` joins every task before it returns).
unsafe impl Send for WeightRows {}
unsafe impl Sync for WeightRows {}

impl WeightRows {
    pub(super) fn new(w: &mut [f32], n: usize) -> Self {
        WeightRows {
            ptr: w.as_mut_ptr(),
            n,
        }
    }

    /// Copies the chunk's weights `w` (rows × c) into columns [i0, i0 + c) of every row.
    ///
    /// # Safety
    /// The array must hold `rows` rows of N and no other task may write these columns.
    pub(super) unsafe fn write(&self, w: &[f32], rows: usize, i0: usize, c: usize) {
        for b in 0..rows {
            // SAFETY: row b, columns i0..i0 + c lie inside the array and belong to this task.
            let dst = unsafe { std::slice::from_raw_parts_mut(self.ptr.add(b * self.n + i0), c) };
            dst.copy_from_slice(&w[b * c..(b + 1) * c]);
        }
    }
}

/// The running max each chunk's weights are relative to: per chunk (first atom, atoms) and
/// its rows' maxima.
#[derive(Default)]
pub(super) struct ChunkMaxima {
    chunks: Vec<(usize, usize)>,
    /// chunks × rows.
    max: Vec<f64>,
}

impl ChunkMaxima {
    pub(super) fn record(&mut self, running_max: &[f64], i0: usize, c: usize) {
        self.chunks.push((i0, c));
        self.max.extend_from_slice(running_max);
    }
}

/// In place, w_bi = e_bi · e^{M_chunk,b − log Z_b} for every row of `w` (rows × N), from the
/// tasks' chunk maxima and the rows' final log-normalisers log Z_b = M_b + log S0_b.
pub(super) fn normalise(w: &mut [f32], maxima: &[ChunkMaxima], log_norm: &[f64], n: usize) {
    let rows = log_norm.len();
    w.par_chunks_mut(n).enumerate().for_each(|(b, row)| {
        for k in maxima {
            for (j, &(i0, c)) in k.chunks.iter().enumerate() {
                let f = k.max[j * rows + b] - log_norm[b];
                let part = &mut row[i0..i0 + c];
                if f < 2.0 * CLAMP as f64 {
                    part.fill(0.0); // every weight of this chunk is below e^{−120}
                    continue;
                }
                let factor = f.exp() as f32;
                for v in part.iter_mut() {
                    let x = *v * factor;
                    *v = if x < FLUSH { 0.0 } else { x };
                }
            }
        }
    });
}

/// The normalised prior weights of the rows of one pass.
pub(super) struct PriorWeights {
    noise: Noise,
    d: usize,
    n: usize,
    /// The rows, rows × D, to check a match bit for bit.
    x: Vec<f32>,
    /// rows × N.
    w: Vec<f32>,
    /// Hash of a row's bits → its first index.
    index: HashMap<u64, usize>,
}

fn row_hash(row: &[f32]) -> u64 {
    let mut h = DefaultHasher::new();
    bytemuck::cast_slice::<f32, u32>(row).hash(&mut h);
    h.finish()
}

impl PriorWeights {
    pub(super) fn new(x: Vec<f32>, w: Vec<f32>, noise: Noise, d: usize, n: usize) -> Self {
        let mut index = HashMap::with_capacity(x.len() / d);
        for (b, row) in x.chunks(d).enumerate() {
            index.entry(row_hash(row)).or_insert(b);
        }
        PriorWeights {
            noise,
            d,
            n,
            x,
            w,
            index,
        }
    }

    /// The kept row index of every row of `x`, if all of them were kept at this noise.
    pub(super) fn lookup(&self, x: &[f32], noise: Noise) -> Option<Vec<usize>> {
        if noise != self.noise {
            return None;
        }
        x.chunks(self.d)
            .map(|row| {
                let &b = self.index.get(&row_hash(row))?;
                (self.x[b * self.d..(b + 1) * self.d] == *row).then_some(b)
            })
            .collect()
    }

    fn row(&self, b: usize) -> &[f32] {
        &self.w[b * self.n..(b + 1) * self.n]
    }

    /// The weights array, for reuse by the next pass (no new allocation, no page faults).
    pub(super) fn into_weights(self) -> Vec<f32> {
        self.w
    }
}

impl CpuBackend {
    /// C·g for rows whose prior weights are kept (`kept[b]` = kept row of row b): the module's
    /// formula, two GEMMs per chunk, chunks without weight skipped.
    pub(super) fn cov_block_kept(
        &self,
        cache: &PriorWeights,
        kept: &[usize],
        means: &[f32],
        g: &[f32],
    ) -> Vec<f32> {
        let rows = kept.len();
        let d = self.d;
        let mg = row_dots(means, g, d);
        let chunk = self.chunk_size(rows);
        let ranges = self.task_ranges(chunk);
        let parts: Vec<(Vec<f32>, Vec<f64>)> = self.pool.install(|| {
            ranges
                .par_iter()
                .map(|&(a0, a1)| {
                    let mut acc = vec![0.0f32; rows * d];
                    let mut csum = vec![0.0f64; rows];
                    let mut bufs = ChunkBuffers::new(rows, chunk, 1);
                    for i0 in (a0..a1).step_by(chunk) {
                        let c = chunk.min(a1 - i0);
                        let weighted = kept
                            .iter()
                            .any(|&k| cache.row(k)[i0..i0 + c].iter().any(|&w| w != 0.0));
                        if !weighted {
                            continue;
                        }
                        bufs.load(self, i0, c);
                        // SAFETY: g holds rows × D values.
                        unsafe { bufs.products(self, g.as_ptr(), rows, i0, c) };
                        for (b, &k) in kept.iter().enumerate() {
                            let w = &cache.row(k)[i0..i0 + c];
                            let p = &bufs.dots[b * c..(b + 1) * c];
                            let coef = &mut bufs.rel[b * c..(b + 1) * c];
                            let mgb = mg[b] as f32;
                            let mut sum = 0.0f32;
                            for ((o, &wi), &pi) in coef.iter_mut().zip(w).zip(p) {
                                *o = wi * (pi - mgb);
                                sum += *o;
                            }
                            csum[b] += sum as f64;
                        }
                        // acc += coef · A_chunk
                        // SAFETY: acc rows×d, rel rows×c, atoms from i0 at least c×d values.
                        unsafe {
                            gemm_rm(
                                rows,
                                d,
                                c,
                                acc.as_mut_ptr(),
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
                    (acc, csum)
                })
                .collect()
        });
        let mut acc = vec![0.0f64; rows * d];
        let mut csum = vec![0.0f64; rows];
        for (pa, pc) in parts {
            for (a, &v) in acc.iter_mut().zip(&pa) {
                *a += v as f64;
            }
            for (a, &v) in csum.iter_mut().zip(&pc) {
                *a += v;
            }
        }
        let mut out = vec![0.0f32; rows * d];
        for b in 0..rows {
            for j in 0..d {
                out[b * d + j] = (acc[b * d + j] - means[b * d + j] as f64 * csum[b]) as f32;
            }
        }
        out
    }
}

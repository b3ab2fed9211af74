//! The precision fix of design §7: which logits of the float32 expansion are recomputed by
//! direct differences.
//!
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

use super::CpuBackend;
use super::pass::{ChunkBuffers, RowJob};
use super::simd::{logits_biased, logits_prior};
use crate::engine::{WeightSet, direct_dist2};

/// Unit roundoff of float32, u = 2⁻²⁴.
const F32_UNIT_ROUNDOFF: f64 = 1.0 / 16_777_216.0;
/// Candidate window (nats) beyond twice the error bound.
const WINDOW: f64 = 30.0;
/// Below this error bound (nats) the expansion is used as is.
const NEGLIGIBLE_NATS: f64 = 1e-5;
/// Largest tolerated error bound of one normalised weight left to the expansion.
const WEIGHT_TOL: f64 = 1e-6;
/// Above this many candidates in a chunk, the chunk's own weight sum is used to close the
/// window (module docs).
const SPREAD_CANDIDATES: usize = 16;

/// The expansion's error bound in squared-distance units for a row with ‖x‖² = `x_norm2`
/// (module docs): E = u·[2(‖x‖² + s²·max‖a‖²) + 2s(2 + √D)·‖x‖·max‖a‖].
pub(super) fn error_bound(x_norm2: f64, s: f64, max_norm: f64, d: usize) -> f64 {
    let nx = x_norm2.sqrt();
    let an = max_norm;
    F32_UNIT_ROUNDOFF
        * (2.0 * (x_norm2 + s * s * an * an) + 2.0 * s * (2.0 + (d as f64).sqrt()) * nx * an)
}

impl CpuBackend {
    /// of each row; logits within the window of M are recomputed directly (module docs).
    /// `s0` is the running Σe^{ℓ−M} of earlier chunks (relative to the M on entry).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn relative_logits(
        &self,
        job: &RowJob,
        bufs: &mut ChunkBuffers,
        i0: usize,
        c: usize,
        set: WeightSet,
        m_run: &mut [f64],
        s0: &[f64],
    ) {
        let inv2v = (1.0 / (2.0 * job.noise.v)) as f32;
        let (b32, b64) = self.bias_values(set, i0..i0 + c);
        let d = self.d;
        let atoms = self.chunk_atoms(&bufs.decoded, i0, c);
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
                            let v = direct_dist2(xb, &atoms[i * d..(i + 1) * d], job.noise.s);
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
}

impl ChunkBuffers {
    /// Updates (dist2, index) of each row with the chunk: atoms whose approximate distance is
    /// within 2E of the chunk's approximate minimum, and below best + E, are recomputed directly.
    #[allow(clippy::needless_range_loop)] // rows index several per-row arrays
    pub(super) fn nearest(
        &mut self,
        be: &CpuBackend,
        job: &RowJob,
        i0: usize,
        c: usize,
        best: &mut [(f64, usize)],
    ) {
        let d = be.d;
        let atoms = be.chunk_atoms(&self.decoded, i0, c);
        for b in 0..job.rows {
            let dist = &self.dots[b * c..(b + 1) * c];
            let cmin = self.dmin[b] as f64;
            let e = job.err[b];
            let cut = (best[b].0.min(cmin + e) + e) as f32;
            for i in 0..c {
                if dist[i] <= cut {
                    let ex = &mut self.exact[b * c + i];
                    if ex.is_nan() {
                        *ex = direct_dist2(job.row(b), &atoms[i * d..(i + 1) * d], job.noise.s);
                        self.touched.push(b * c + i);
                    }
                    // Indices in the caller's order (a pruned backend stores the atoms
                    // permuted); ties go to the smaller one, as in the merge of tasks.
                    let idx = be.original(i0 + i);
                    if *ex < best[b].0 || (*ex == best[b].0 && idx < best[b].1) {
                        best[b] = (*ex, idx);
                    }
                }
            }
        }
    }
}

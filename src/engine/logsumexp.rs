//! Online log-sum-exp: the one place where the backends' row statistics are defined.
//!
//! A row's logits ℓ_i arrive in pieces (chunks of atoms on the CPU, splits on the GPU); each
//! piece keeps its sums relative to its own maximum M,
//!
//!   S0 = Σ_i e^{ℓ_i − M},   S2 = Σ_i e^{2(ℓ_i − M)},   SL = Σ_i e^{ℓ_i − M} (ℓ_i − M),
//!
//! (and weighted sums acc = Σ_i e^{ℓ_i − M} a_i, kept by the backends). Moving the sums to a
//! larger maximum M' multiplies them by r = e^{M − M'} ([`RowSums::rescale`]), so pieces merge
//! exactly ([`RowSums::merge`]); at the end ([`RowSums::finish`]) the row statistics are
//!
//!   log Z = M + log S0 (+ the bias shift, below),   ESS = S0² / S2,   max w = 1 / S0,
//!   H = log S0 − SL / S0,   mean = acc / S0,
//!
//! where max w = 1/S0 because the largest term of S0 is e⁰.
//!
//! # The one meaning of log Z
//! [`RowStats::log_norm`](super::RowStats::log_norm) is log Σ_i exp(ℓ_i) with the bias exactly
//! as the caller registered it. Backends may store a bias shifted by its maximum (float32 is
//! exact near the weights that matter); they pass that shift to [`RowSums::finish`], which adds
//! it back, so that the CPU, the GPU and the float64 reference all return the same quantity.

use super::RowStats;

/// Logits more than this many nats below a row's running maximum are dropped by the CPU pass
/// (weight exactly 0, and sums rescaled by less than e^{CLAMP} are zeroed): no GEMM ever sees
/// a subnormal operand. The mass dropped is at most N·e^{−60} relative to the largest weight.
pub const CLAMP: f64 = -60.0;

/// The sums of one row's weights relative to its running maximum M: S0, S2 and SL of the
/// module docs. An empty row has M = −∞ and S0 = 0.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSums {
    pub m: f64,
    pub s0: f64,
    pub s2: f64,
    pub sl: f64,
}

impl RowSums {
    /// No terms yet.
    pub const EMPTY: RowSums = RowSums {
        m: f64::NEG_INFINITY,
        s0: 0.0,
        s2: 0.0,
        sl: 0.0,
    };

    /// Moves the sums to the maximum `m` ≥ M: with δ = M − m and r = e^δ,
    ///
    ///   S0 → r S0,   S2 → r² S2,   SL → r (SL + δ S0),
    ///
    /// (SL gains δ S0 because each ℓ_i − M becomes ℓ_i − m = ℓ_i − M + δ). Returns r, by which
    /// the caller scales its weighted sums.
    pub fn rescale(&mut self, m: f64) -> f64 {
        let dm = self.m - m;
        let r = dm.exp();
        self.sl = r * (self.sl + dm * self.s0);
        self.s0 *= r;
        self.s2 *= r * r;
        self.m = m;
        r
    }

    /// Adds the sums of another piece of the same row, both relative to the same maximum.
    pub fn add(&mut self, other: &RowSums) {
        self.s0 += other.s0;
        self.s2 += other.s2;
        self.sl += other.sl;
    }

    /// Exact merge of partial sums: M = max_p M_p over the non-empty pieces (S0_p > 0), each
    /// rescaled to M ([`RowSums::rescale`]) and added in order.
    pub fn merge(parts: impl Iterator<Item = RowSums> + Clone) -> RowSums {
        let m = common_max(parts.clone().map(|p| (p.m, p.s0)));
        let mut out = RowSums {
            m,
            ..RowSums::EMPTY
        };
        for mut p in parts.filter(|p| p.s0 > 0.0) {
            p.rescale(m);
            out.add(&p);
        }
        out
    }

    /// log Z relative to the bias as stored: M + log S0.
    pub fn log_norm_stored(&self) -> f64 {
        self.m + self.s0.ln()
    }

    /// The row statistics: log Z = M + log S0 + `shift` (the amount the backend subtracted from
    /// the registered bias; 0 for the prior), ESS = S0²/S2, max w = 1/S0 and the entropy
    /// H = log S0 − SL/S0, clamped at 0 (it is ≥ 0; rounding may take it just below).
    pub fn finish(&self, shift: f64) -> RowStats {
        let s0 = self.s0;
        RowStats {
            log_norm: self.log_norm_stored() + shift,
            ess: s0 * s0 / self.s2,
            max_weight: 1.0 / s0,
            entropy: (s0.ln() - self.sl / s0).max(0.0),
        }
    }
}

/// The common maximum M = max_p M_p of partial sums given as (M_p, S0_p), over the non-empty
/// ones (S0_p > 0); −∞ when all are empty.
pub fn common_max(parts: impl Iterator<Item = (f64, f64)>) -> f64 {
    parts
        .filter(|&(_, s0)| s0 > 0.0)
        .map(|(m, _)| m)
        .fold(f64::NEG_INFINITY, f64::max)
}

/// mean_d = acc_d / S0, written into `out`: one float32 reciprocal, then a product per value.
pub fn finish_mean(acc: &[f32], s0: f64, out: &mut [f32]) {
    let inv = (1.0 / s0) as f32;
    for (o, &a) in out.iter_mut().zip(acc) {
        *o = a * inv;
    }
}

/// log Σ_i e^{ℓ_i} in float64, as M + log Σ_i e^{ℓ_i − M} with M = max_i ℓ_i.
pub fn log_sum_exp(logits: &[f64]) -> f64 {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let z: f64 = logits.iter().map(|&l| (l - max).exp()).sum();
    max + z.ln()
}

/// w_i = e^{ℓ_i − M} / Σ_j e^{ℓ_j − M} in float64, M = max_i ℓ_i subtracted first.
pub fn softmax(logits: &[f64]) -> Vec<f64> {
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let e: Vec<f64> = logits.iter().map(|&l| (l - max).exp()).collect();
    let z: f64 = e.iter().sum();
    e.into_iter().map(|v| v / z).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sums of `logits` relative to their own max, term by term.
    fn sums(logits: &[f64]) -> RowSums {
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let mut s = RowSums {
            m,
            ..RowSums::EMPTY
        };
        for &l in logits {
            let e = (l - m).exp();
            s.s0 += e;
            s.s2 += e * e;
            s.sl += e * (l - m);
        }
        s
    }

    #[test]
    fn merged_pieces_equal_the_whole_row() {
        let logits: Vec<f64> = (0..40)
            .map(|i| (i as f64 * 0.77).sin() * 9.0 - 3.0)
            .collect();
        let whole = sums(&logits).finish(2.5);
        let parts: Vec<RowSums> = logits.chunks(7).map(sums).chain([RowSums::EMPTY]).collect();
        let merged = RowSums::merge(parts.iter().copied()).finish(2.5);
        for (a, b) in [
            (whole.log_norm, merged.log_norm),
            (whole.ess, merged.ess),
            (whole.max_weight, merged.max_weight),
            (whole.entropy, merged.entropy),
        ] {
            assert!((a - b).abs() <= 1e-12 * a.abs().max(1.0), "{a} vs {b}");
        }
        // Against the direct formulas on the softmax weights.
        let w = softmax(&logits);
        let lz = log_sum_exp(&logits) + 2.5;
        let ess = 1.0 / w.iter().map(|w| w * w).sum::<f64>();
        let h = -w.iter().map(|&w| w * w.ln()).sum::<f64>();
        let wmax = w.iter().cloned().fold(0.0, f64::max);
        assert!((merged.log_norm - lz).abs() <= 1e-12 * lz.abs());
        assert!((merged.ess / ess - 1.0).abs() <= 1e-12);
        assert!((merged.entropy - h).abs() <= 1e-12);
        assert!((merged.max_weight - wmax).abs() <= 1e-15);
    }

    #[test]
    fn softmax_sums_to_one_and_survives_large_logits() {
        let w = softmax(&[1000.0, 1000.0 + 2f64.ln(), -1e300]);
        assert!((w[0] - 1.0 / 3.0).abs() < 1e-12 && (w[1] - 2.0 / 3.0).abs() < 1e-12);
        assert_eq!(w[2], 0.0);
        assert!((log_sum_exp(&[1000.0, 1000.0]) - (1000.0 + 2f64.ln())).abs() < 1e-12);
    }
}

//! The float64 reference backend: direct differences, no expansion, no chunking, no tricks.
//!
//! It is the oracle every test compares the fast backends with, and it is slow on purpose:
//! O(B·N·D) float64 work per pass with the plainest possible loops. Do not optimise it.

use super::logsumexp::{log_sum_exp, softmax};
use super::{
    Backend, BiasId, Neighbor, Noise, PassOutput, RowStats, WeightSet, WeightedMean, direct_dist2,
};
use crate::{Error, Result};

pub struct ReferenceBackend {
    /// N × D as given; every use converts to float64 (exactly).
    atoms: Vec<f32>,
    n: usize,
    d: usize,
    /// By id; a removed bias leaves an empty slot (ids are never reused).
    biases: Vec<Option<Vec<f64>>>,
}

impl ReferenceBackend {
    /// `atoms` is N × D row-major.
    pub fn new(atoms: &[f32], d: usize) -> Result<Self> {
        if d == 0 || atoms.is_empty() || !atoms.len().is_multiple_of(d) {
            return Err(Error::input(format!(
                "reference backend: {} atom values do not split into rows of D = {d}",
                atoms.len()
            )));
        }
        Ok(ReferenceBackend {
            atoms: atoms.to_vec(),
            n: atoms.len() / d,
            d,
            biases: Vec::new(),
        })
    }

    fn atom(&self, i: usize) -> &[f32] {
        &self.atoms[i * self.d..(i + 1) * self.d]
    }

    /// ‖x − s a_i‖² by direct differences ([`direct_dist2`]).
    pub fn dist2(&self, x: &[f32], s: f64, i: usize) -> f64 {
        direct_dist2(x, self.atom(i), s)
    }

    /// The logits ℓ_i = −‖x − s a_i‖²/(2v) + β_i of one row, in float64.
    pub fn logits(&self, x: &[f32], noise: Noise, set: WeightSet) -> Vec<f64> {
        (0..self.n)
            .map(|i| {
                let bias = match set {
                    WeightSet::Prior => 0.0,
                    WeightSet::Biased(BiasId(k)) => {
                        // Callers check the set first (`check_sets`).
                        self.biases[k].as_ref().expect("a registered bias")[i]
                    }
                };
                -self.dist2(x, noise.s, i) / (2.0 * noise.v) + bias
            })
            .collect()
    }

    /// The normalised weights of one row, in float64.
    pub fn weights(&self, x: &[f32], noise: Noise, set: WeightSet) -> Vec<f64> {
        softmax(&self.logits(x, noise, set))
    }

    /// An error for a set whose bias id was never registered or was removed.
    fn check_sets(&self, sets: &[WeightSet]) -> Result<()> {
        for set in sets {
            if let WeightSet::Biased(BiasId(k)) = *set
                && !matches!(self.biases.get(k), Some(Some(_)))
            {
                return Err(Error::input(format!(
                    "reference backend: bias id {k} is not registered (never, or removed)"
                )));
            }
        }
        Ok(())
    }

    fn mean_of(&self, w: &[f64]) -> Vec<f64> {
        let mut m = vec![0.0; self.d];
        for (i, &wi) in w.iter().enumerate() {
            for (mj, &a) in m.iter_mut().zip(self.atom(i)) {
                *mj += wi * a as f64;
            }
        }
        m
    }
}

impl Backend for ReferenceBackend {
    fn describe(&self) -> String {
        "reference (float64, direct differences)".into()
    }
    fn atoms(&self) -> usize {
        self.n
    }
    fn dim(&self) -> usize {
        self.d
    }
    fn add_bias(&mut self, bias: &[f64]) -> Result<BiasId> {
        super::check_bias("reference", bias, self.n)?;
        self.biases.push(Some(bias.to_vec()));
        Ok(BiasId(self.biases.len() - 1))
    }

    fn remove_bias(&mut self, BiasId(k): BiasId) -> Result<()> {
        match self.biases.get_mut(k) {
            Some(slot @ Some(_)) => {
                *slot = None;
                Ok(())
            }
            _ => Err(Error::input(format!(
                "reference backend: bias id {k} is not registered (never, or removed)"
            ))),
        }
    }

    fn live_biases(&self) -> usize {
        self.biases.iter().flatten().count()
    }

    fn weighted_means(&self, x: &[f32], noise: Noise, sets: &[WeightSet]) -> Result<PassOutput> {
        self.check_sets(sets)?;
        let rows = x.len() / self.d;
        let mut out: Vec<WeightedMean> = sets
            .iter()
            .map(|_| WeightedMean {
                means: Vec::new(),
                stats: Vec::new(),
            })
            .collect();
        let mut nearest = Vec::with_capacity(rows);
        for xb in x.chunks(self.d) {
            for (k, &set) in sets.iter().enumerate() {
                let l = self.logits(xb, noise, set);
                // log Z with the bias as registered: the reference never shifts it.
                let log_norm = log_sum_exp(&l);
                let w: Vec<f64> = l.iter().map(|&li| (li - log_norm).exp()).collect();
                let ess = 1.0 / w.iter().map(|wi| wi * wi).sum::<f64>();
                let max_weight = w.iter().cloned().fold(0.0, f64::max);
                let entropy = -w
                    .iter()
                    .filter(|&&wi| wi > 0.0)
                    .map(|&wi| wi * wi.ln())
                    .sum::<f64>();
                out[k]
                    .means
                    .extend(self.mean_of(&w).into_iter().map(|v| v as f32));
                out[k].stats.push(RowStats {
                    log_norm,
                    ess,
                    max_weight,
                    entropy,
                });
            }
            let (index, dist2) = (0..self.n)
                .map(|i| (i, self.dist2(xb, noise.s, i)))
                .fold((0, f64::INFINITY), |a, b| if b.1 < a.1 { b } else { a });
            nearest.push(Neighbor { index, dist2 });
        }
        Ok(PassOutput { sets: out, nearest })
    }

    fn covariance_products(
        &self,
        x: &[f32],
        noise: Noise,
        set: WeightSet,
        _means: &[f32],
        g: &[f32],
    ) -> Result<Vec<f32>> {
        self.check_sets(&[set])?;
        // The reference ignores the caller's means and uses its own float64 ones.
        let mut out = Vec::with_capacity(x.len());
        for (xb, gb) in x.chunks(self.d).zip(g.chunks(self.d)) {
            let w = self.weights(xb, noise, set);
            let m = self.mean_of(&w);
            let mut cg = vec![0.0f64; self.d];
            for (i, &wi) in w.iter().enumerate() {
                let a = self.atom(i);
                let proj: f64 = a
                    .iter()
                    .zip(&m)
                    .zip(gb)
                    .map(|((&a, &m), &g)| (a as f64 - m) * g as f64)
                    .sum();
                for ((c, &a), &m) in cg.iter_mut().zip(a).zip(&m) {
                    *c += wi * (a as f64 - m) * proj;
                }
            }
            out.extend(cg.into_iter().map(|v| v as f32));
        }
        Ok(out)
    }
}

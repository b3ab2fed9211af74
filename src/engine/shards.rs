//! Atoms split across several backends (several GPUs, or the ranks of an MPI job), and the exact
//! merge of what each shard returns.
//!
//! Shard k holds the contiguous atoms [o_k, o_{k+1}) and answers a pass as if its atoms were the
//! whole set: per row its log-normaliser L_k, mean m_k, ESS_k, max weight W_k and entropy H_k.
//! With p_k = e^{L_k − L} the share of the row's mass on shard k, L = log Σ_k e^{L_k}, the whole
//! set's row is (float64, no approximation):
//!
//!   m = Σ_k p_k m_k,   1/ESS = Σ_k p_k² / ESS_k,   W = max_k p_k W_k,
//!   H = Σ_k p_k (H_k − log p_k),
//!
//! since the global weight of atom i on shard k is p_k w_ki, so Σ w² = Σ_k p_k² Σ_i w_ki² and
//! −Σ w log w = −Σ_k p_k Σ_i w_ki (log p_k + log w_ki). The nearest atom is the nearest of the
//! shards' nearest (ties to the lower index, as one backend would choose). The covariance
//! product follows the law of total covariance: with C_k g the product of shard k around its own
//! mean m_k,
//!
//!   C g = Σ_k p_k [ C_k g + (m_k − m) ⟨m_k − m, g⟩ ].
//!
//! These merges are the functions [`merge_passes`] and [`merge_covariance`], shared by
//! [`ShardedBackend`] (shards in one process) and any transport that gathers the shards' results
//! from elsewhere (MPI ranks): every participant merges the same parts in the same order, so all
//! of them get bit-identical results.

use std::collections::BTreeMap;
use std::sync::Mutex;

use super::logsumexp::log_sum_exp;
use super::{Backend, BiasId, Neighbor, Noise, PassOutput, RowStats, WeightSet, WeightedMean};
use crate::{Error, Result};

/// Offsets o_0 = 0 < o_1 < … < o_K = N of K contiguous, nearly equal shards of N atoms (the first
/// N mod K shards get one atom more). An error when K is 0 or exceeds N.
pub fn even_split(n: usize, k: usize) -> Result<Vec<usize>> {
    if k == 0 || k > n {
        return Err(Error::input(format!(
            "cannot split {n} atoms into {k} shards: each shard needs at least one atom \
             (use fewer devices or ranks)"
        )));
    }
    Ok((0..=k).map(|j| j * (n / k) + j.min(n % k)).collect())
}

/// One row of each shard merged into the whole set's row: the shares p_k = e^{L_k − L}, and the
/// statistics of the module docs.
fn merge_row(parts: &[RowStats]) -> (Vec<f64>, RowStats) {
    let logs: Vec<f64> = parts.iter().map(|p| p.log_norm).collect();
    let log_norm = log_sum_exp(&logs);
    let shares: Vec<f64> = logs.iter().map(|&l| (l - log_norm).exp()).collect();
    let mut inv_ess = 0.0;
    let mut max_weight = 0.0f64;
    let mut entropy = 0.0;
    for (p, st) in shares.iter().zip(parts) {
        inv_ess += p * p / st.ess;
        max_weight = max_weight.max(p * st.max_weight);
        if *p > 0.0 {
            entropy += p * (st.entropy - p.ln());
        }
    }
    let stats = RowStats {
        log_norm,
        ess: 1.0 / inv_ess,
        max_weight,
        entropy: entropy.max(0.0),
    };
    (shares, stats)
}

/// The shares p_bk = e^{L_bk − L_b} of each row b on each shard k (rows × shards), from one
/// weight set's per-shard results.
pub fn shard_shares(parts: &[&WeightedMean]) -> Vec<Vec<f64>> {
    let rows = parts.first().map_or(0, |p| p.stats.len());
    (0..rows)
        .map(|b| {
            let stats: Vec<RowStats> = parts.iter().map(|p| p.stats[b]).collect();
            merge_row(&stats).0
        })
        .collect()
}

/// One weight set merged over shards (module docs); `d` values per row.
pub fn merge_set(parts: &[&WeightedMean], d: usize) -> WeightedMean {
    let rows = parts.first().map_or(0, |p| p.stats.len());
    let mut means = vec![0.0f32; rows * d];
    let mut stats = Vec::with_capacity(rows);
    let mut acc = vec![0.0f64; d];
    for b in 0..rows {
        let row: Vec<RowStats> = parts.iter().map(|p| p.stats[b]).collect();
        let (shares, st) = merge_row(&row);
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (p, part) in shares.iter().zip(parts) {
            for (a, &m) in acc.iter_mut().zip(&part.means[b * d..(b + 1) * d]) {
                *a += p * f64::from(m);
            }
        }
        for (o, a) in means[b * d..(b + 1) * d].iter_mut().zip(&acc) {
            *o = *a as f32;
        }
        stats.push(st);
    }
    WeightedMean { means, stats }
}

/// Whole passes of the shards merged: every weight set by [`merge_set`], and the nearest atom of
/// each row with the shard's index moved by its offset (`offsets[k]` = first atom of shard k).
pub fn merge_passes(parts: &[PassOutput], offsets: &[usize], d: usize) -> PassOutput {
    let sets = parts.first().map_or(0, |p| p.sets.len());
    let merged = (0..sets)
        .map(|j| {
            let of_set: Vec<&WeightedMean> = parts.iter().map(|p| &p.sets[j]).collect();
            merge_set(&of_set, d)
        })
        .collect();
    let rows = parts.first().map_or(0, |p| p.nearest.len());
    let nearest = (0..rows)
        .map(|b| {
            let mut best = Neighbor {
                index: usize::MAX,
                dist2: f64::INFINITY,
            };
            for (part, &o) in parts.iter().zip(offsets) {
                let n = part.nearest[b];
                // Strictly smaller only: on a tie the lower shard (lower index) stays.
                if n.dist2 < best.dist2 || best.index == usize::MAX {
                    best = Neighbor {
                        index: n.index + o,
                        dist2: n.dist2,
                    };
                }
            }
            best
        })
        .collect();
    PassOutput {
        sets: merged,
        nearest,
    }
}

/// C g of the whole set from the shards' own products (law of total covariance, module docs):
/// `shares` is rows × shards (p_bk, [`shard_shares`]), `shard_means[k]` and `shard_cg[k]` are
/// rows × d (m_k and C_k g around m_k), `mean` and `g` rows × d.
pub fn merge_covariance(
    shares: &[Vec<f64>],
    shard_means: &[&[f32]],
    shard_cg: &[&[f32]],
    mean: &[f32],
    g: &[f32],
    d: usize,
) -> Vec<f32> {
    let rows = shares.len();
    let mut out = vec![0.0f32; rows * d];
    let mut acc = vec![0.0f64; d];
    for b in 0..rows {
        let r = b * d..(b + 1) * d;
        acc.iter_mut().for_each(|a| *a = 0.0);
        for (k, &p) in shares[b].iter().enumerate() {
            let mk = &shard_means[k][r.clone()];
            let proj: f64 = mk
                .iter()
                .zip(&mean[r.clone()])
                .zip(&g[r.clone()])
                .map(|((&a, &m), &gv)| (f64::from(a) - f64::from(m)) * f64::from(gv))
                .sum();
            let cg = &shard_cg[k][r.clone()];
            for (j, a) in acc.iter_mut().enumerate() {
                let dm = f64::from(mk[j]) - f64::from(mean[b * d + j]);
                *a += p * (f64::from(cg[j]) + dm * proj);
            }
        }
        for (o, a) in out[r].iter_mut().zip(&acc) {
            *o = *a as f32;
        }
    }
    out
}

/// The shards' parts of the last pass, kept for [`Backend::covariance_products`], which needs
/// each shard's share and own mean of the same weights. Shared by every backend that merges
/// shards (in one process or over ranks).
#[derive(Default)]
pub struct KeptParts(Mutex<Option<KeptPass>>);

struct KeptPass {
    x: Vec<f32>,
    noise: Noise,
    sets: Vec<WeightSet>,
    parts: Vec<PassOutput>,
}

impl KeptParts {
    /// Keeps the parts of a pass over `x` at `noise` for `sets`.
    pub fn keep(&self, x: &[f32], noise: Noise, sets: &[WeightSet], parts: Vec<PassOutput>) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = Some(KeptPass {
            x: x.to_vec(),
            noise,
            sets: sets.to_vec(),
            parts,
        });
    }

    /// Forgets the kept pass (a bias it may name was removed).
    pub fn clear(&self) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }

    /// Calls `f` with every shard's result for `set` on `x` at `noise`: the kept pass when it
    /// was on the same particles (bit for bit) and noise and asked for `set`, else the parts
    /// `fresh` computes for `[set]` (then kept).
    pub fn with_set<T>(
        &self,
        x: &[f32],
        noise: Noise,
        set: WeightSet,
        fresh: impl FnOnce() -> Result<Vec<PassOutput>>,
        f: impl FnOnce(&[&WeightedMean]) -> Result<T>,
    ) -> Result<T> {
        let mut kept = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let reusable = kept.as_ref().is_some_and(|k| {
            k.noise == noise
                && k.x.len() == x.len()
                && k.x.iter().zip(x).all(|(a, b)| a.to_bits() == b.to_bits())
                && k.sets.contains(&set)
        });
        if !reusable {
            *kept = Some(KeptPass {
                x: x.to_vec(),
                noise,
                sets: vec![set],
                parts: fresh()?,
            });
        }
        let Some(pass) = kept.as_ref() else {
            return Err(Error::input("no pass to take the shards' means from"));
        };
        let j = pass.sets.iter().position(|&s| s == set).unwrap_or(0);
        let of_set: Vec<&WeightedMean> = pass.parts.iter().map(|p| &p.sets[j]).collect();
        f(&of_set)
    }
}

/// C g of the whole set from one weight set's per-shard results `of_set` and the shards' own
/// products `shard_cg` (each around its shard's mean): [`merge_covariance`] with the shares
/// [`shard_shares`].
pub fn merge_shard_products(
    of_set: &[&WeightedMean],
    shard_cg: &[Vec<f32>],
    mean: &[f32],
    g: &[f32],
    d: usize,
) -> Vec<f32> {
    let shares = shard_shares(of_set);
    let means: Vec<&[f32]> = of_set.iter().map(|p| p.means.as_slice()).collect();
    let cgs: Vec<&[f32]> = shard_cg.iter().map(|c| c.as_slice()).collect();
    merge_covariance(&shares, &means, &cgs, mean, g, d)
}

/// A backend over several backends, each holding a contiguous shard of the atoms (module docs).
/// Passes run on all shards at once (a thread each: a GPU shard waits on its own device) and are
/// merged exactly.
pub struct ShardedBackend {
    shards: Vec<Box<dyn Backend>>,
    /// offsets[k] = first atom of shard k; offsets[K] = N.
    offsets: Vec<usize>,
    d: usize,
    /// The shards' own ids of each bias registered here, by this backend's id.
    biases: BTreeMap<usize, Vec<BiasId>>,
    next_bias: usize,
    kept: KeptParts,
}

impl ShardedBackend {
    /// Joins `shards` in order: shard k's atom i is atom o_k + i of the whole set.
    pub fn new(shards: Vec<Box<dyn Backend>>) -> Result<ShardedBackend> {
        let Some(first) = shards.first() else {
            return Err(Error::input("a sharded backend needs at least one shard"));
        };
        let d = first.dim();
        let mut offsets = vec![0];
        for s in &shards {
            if s.dim() != d {
                return Err(Error::input(format!(
                    "shards disagree on D: {} has {} values per atom, the first has {d}",
                    s.describe(),
                    s.dim()
                )));
            }
            offsets.push(offsets.last().unwrap_or(&0) + s.atoms());
        }
        Ok(ShardedBackend {
            shards,
            offsets,
            d,
            biases: BTreeMap::new(),
            next_bias: 0,
            kept: KeptParts::default(),
        })
    }

    /// offsets[k] = first atom of shard k; the last entry is N.
    pub fn offsets(&self) -> &[usize] {
        &self.offsets
    }

    /// The shards, in atom order.
    pub fn shards(&self) -> &[Box<dyn Backend>] {
        &self.shards
    }

    /// Runs `f` on every shard at once (one thread each) and returns the results in shard order.
    fn on_shards<T: Send>(
        &self,
        f: impl Fn(usize, &dyn Backend) -> Result<T> + Sync,
    ) -> Result<Vec<T>> {
        if self.shards.len() == 1 {
            return Ok(vec![f(0, self.shards[0].as_ref())?]);
        }
        std::thread::scope(|scope| {
            let handles: Vec<_> = self
                .shards
                .iter()
                .enumerate()
                .map(|(k, s)| {
                    let f = &f;
                    scope.spawn(move || f(k, s.as_ref()))
                })
                .collect();
            handles
                .into_iter()
                .map(|h| {
                    h.join()
                        .unwrap_or_else(|_| Err(Error::input("a shard's thread panicked")))
                })
                .collect()
        })
    }

    /// Shard k's name for `set`.
    fn shard_set(&self, set: WeightSet, k: usize) -> Result<WeightSet> {
        match set {
            WeightSet::Prior => Ok(WeightSet::Prior),
            WeightSet::Biased(BiasId(id)) => match self.biases.get(&id) {
                Some(ids) => Ok(WeightSet::Biased(ids[k])),
                None => Err(Error::input(format!(
                    "sharded backend: bias id {id} is not registered (never, or removed)"
                ))),
            },
        }
    }

    fn shard_passes(&self, x: &[f32], noise: Noise, sets: &[WeightSet]) -> Result<Vec<PassOutput>> {
        let per_shard: Vec<Vec<WeightSet>> = (0..self.shards.len())
            .map(|k| sets.iter().map(|&s| self.shard_set(s, k)).collect())
            .collect::<Result<_>>()?;
        self.on_shards(|k, s| s.weighted_means(x, noise, &per_shard[k]))
    }
}

impl Backend for ShardedBackend {
    fn describe(&self) -> String {
        // Every shard with its atoms: "2 shards: atoms 0..500 on gpu: …; atoms 500..1000 on …".
        let parts: Vec<String> = self
            .shards
            .iter()
            .enumerate()
            .map(|(k, s)| {
                let (a, b) = (self.offsets[k], self.offsets[k + 1]);
                format!("atoms {a}..{b} on {}", s.describe())
            })
            .collect();
        format!("{} shards: {}", self.shards.len(), parts.join("; "))
    }

    fn atoms(&self) -> usize {
        self.offsets[self.shards.len()]
    }

    fn dim(&self) -> usize {
        self.d
    }

    fn add_bias(&mut self, bias: &[f64]) -> Result<BiasId> {
        super::check_bias("sharded", bias, self.atoms())?;
        let mut ids = Vec::with_capacity(self.shards.len());
        for (k, s) in self.shards.iter_mut().enumerate() {
            ids.push(s.add_bias(&bias[self.offsets[k]..self.offsets[k + 1]])?);
        }
        let id = self.next_bias;
        self.next_bias += 1;
        self.biases.insert(id, ids);
        Ok(BiasId(id))
    }

    fn remove_bias(&mut self, id: BiasId) -> Result<()> {
        let Some(ids) = self.biases.remove(&id.0) else {
            return Err(Error::input(format!(
                "sharded backend: bias id {} is not registered (never, or removed)",
                id.0
            )));
        };
        for (s, sid) in self.shards.iter_mut().zip(ids) {
            s.remove_bias(sid)?;
        }
        // A kept pass may name the removed bias: forget it.
        self.kept.clear();
        Ok(())
    }

    fn live_biases(&self) -> usize {
        self.biases.len()
    }

    fn weighted_means(&self, x: &[f32], noise: Noise, sets: &[WeightSet]) -> Result<PassOutput> {
        let parts = self.shard_passes(x, noise, sets)?;
        let out = merge_passes(&parts, &self.offsets, self.d);
        self.kept.keep(x, noise, sets, parts);
        Ok(out)
    }

    fn covariance_products(
        &self,
        x: &[f32],
        noise: Noise,
        set: WeightSet,
        means: &[f32],
        g: &[f32],
    ) -> Result<Vec<f32>> {
        let per_shard: Vec<WeightSet> = (0..self.shards.len())
            .map(|k| self.shard_set(set, k))
            .collect::<Result<_>>()?;
        let fresh = || self.shard_passes(x, noise, &[set]);
        self.kept.with_set(x, noise, set, fresh, |of_set| {
            let cgs = self.on_shards(|k, s| {
                s.covariance_products(x, noise, per_shard[k], &of_set[k].means, g)
            })?;
            Ok(merge_shard_products(of_set, &cgs, means, g, self.d))
        })
    }

    fn device_seconds(&self) -> Option<f64> {
        let secs: Vec<f64> = self
            .shards
            .iter()
            .filter_map(|s| s.device_seconds())
            .collect();
        (!secs.is_empty()).then(|| secs.iter().sum())
    }

    fn device_seconds_by_kernel(&self) -> Vec<(&'static str, f64)> {
        let mut by: Vec<(&'static str, f64)> = Vec::new();
        for s in &self.shards {
            for (name, t) in s.device_seconds_by_kernel() {
                match by.iter_mut().find(|(n, _)| *n == name) {
                    Some(e) => e.1 += t,
                    None => by.push((name, t)),
                }
            }
        }
        by
    }
}

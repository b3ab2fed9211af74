//! The CPU backend: chunked passes over the atoms with an online log-sum-exp
//! ([`super::logsumexp`]), GEMMs from the `gemm` crate, threads from rayon.
//!
//! The parts: [`pass`] (one pass: chunks, tasks and their exact merge), [`window`] (the
//! precision fix of design §7: which logits are recomputed by direct differences), [`gemm`]
//! (the `gemm` crate calls), [`simd`] (the elementwise kernels, compiled for AVX-512/AVX2) and
//! [`weight_cache`] (the prior weights kept for the C·g passes that follow a pass) and [`store`]
//! (the atoms as f32, u8 codes or f16, decoded chunk by chunk for the GEMMs).

mod clusters;
mod gemm;
mod pass;
mod projection;
mod prune;
mod simd;
mod store;
mod weight_cache;
mod window;

use std::sync::{Arc, Mutex};

use super::gpu::Storage;
use super::{
    Backend, BiasId, Noise, PassOutput, PruneCounters, PruneOptions, WeightSet, WeightedMean,
};
use crate::{Error, Result};
use pass::{ChunkBuffers, RowJob};
use store::AtomStore;
use weight_cache::PriorWeights;

/// Logits more than this far below the running max get weight exactly 0 (float32 copy of
/// [`super::logsumexp::CLAMP`] for the kernels).
const CLAMP: f32 = super::logsumexp::CLAMP as f32;
/// Default budget for the prior weights kept after a pass (B × N float32; module
/// `weight_cache`): 256 MiB holds B = 1024 rows of N = 60000 atoms.
pub const DEFAULT_WEIGHT_CACHE_BYTES: usize = 256 << 20;

/// A registered bias, shifted by its max: in float32 for the bulk pass, in float64 for the
/// recomputed candidates, and the shift, added back to log Z.
struct StoredBias {
    b32: Vec<f32>,
    b64: Vec<f64>,
    shift: f64,
    /// With pruning: the max of `b64` over each cluster (empty without).
    cluster_max: Vec<f64>,
}

/// CPU implementation of [`Backend`]. The algorithm is in the docs of the modules `pass` (one
/// pass) and `window` (precision).
pub struct CpuBackend {
    /// The atom store, N × D: f32 shared (not copied) with whoever built the backend from an
    /// [`Arc`] ([`CpuBackend::from_shared`]), or u8 / f16 ([`CpuBackend::with_storage`]).
    store: AtomStore,
    n: usize,
    d: usize,
    /// ‖a_i‖² of the stored (decoded) atoms, summed in float64 and rounded once.
    norms2: Vec<f32>,
    /// max_i ‖a_i‖.
    max_norm: f64,
    /// The biases by id: slot k holds bias k until [`Backend::remove_bias`] empties it. Ids
    /// are never reused (a removed id stays refused), so a slot of a few words stays per
    /// bias ever registered while its 12·N bytes are freed.
    biases: Vec<Option<StoredBias>>,
    pool: rayon::ThreadPool,
    threads: usize,
    /// Atoms per chunk when set by [`CpuBackend::with_blocking`]; else [`chunk_for_rows`].
    chunk: Option<usize>,
    row_block: usize,
    /// The prior weights of the last pass that asked for them (module `weight_cache`).
    prior_weights: Mutex<Option<Arc<PriorWeights>>>,
    weight_cache_bytes: usize,
    /// Certified pruning (module `prune`), when on: the atoms are then stored cluster by
    /// cluster, and every index the backend returns is mapped back to the caller's order.
    prune: Option<prune::Pruning>,
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
    /// `RAYON_NUM_THREADS` of them when that is set, or as many as rayon's global pool when the caller sized it.
    /// Copies the atoms; [`CpuBackend::from_vec`] takes them without a copy.
    pub fn new(atoms: &[f32], d: usize) -> Result<CpuBackend> {
        Self::from_vec(atoms.to_vec(), d)
    }

    /// As [`CpuBackend::new`], taking ownership of the atom store (no second copy in memory).
    pub fn from_vec(atoms: Vec<f32>, d: usize) -> Result<CpuBackend> {
        Self::from_shared(Arc::new(atoms), d)
    }

    /// As [`CpuBackend::new`], sharing the atom store with the caller (no second copy in
    /// memory: the lens keeps the same store for its exact draws).
    pub fn from_shared(atoms: Arc<Vec<f32>>, d: usize) -> Result<CpuBackend> {
        check_atoms(&atoms, d)?;
        Self::from_store(AtomStore::F32(atoms), d)
    }

    /// As [`CpuBackend::new`], keeping the atoms in `storage` (config key `storage`): f32
    /// (4 bytes a value), u8 (1 byte, exact, only for atoms with at most 256 distinct
    /// values, else an error naming `storage`) or f16 (2 bytes; rounds the atoms, so it
    /// changes the prior). The passes decode one chunk at a time (module `store`).
    pub fn with_storage(atoms: &[f32], d: usize, storage: Storage) -> Result<CpuBackend> {
        check_atoms(atoms, d)?;
        Self::from_store(AtomStore::encode(atoms, storage)?, d)
    }

    /// The backend over a memory-mapped data-cache entry (module `store`, variant
    /// `Mapped`): the atoms stay in the file and the page cache; the passes decode one chunk
    /// at a time. A float32 entry with a non-finite value is refused, naming the file.
    pub fn from_mapped(atoms: Arc<crate::data::mapped::MappedAtoms>) -> Result<CpuBackend> {
        let d = atoms.dim();
        Self::from_store(AtomStore::Mapped(atoms), d)
    }

    /// The backend over a checked, encoded store; norms from the decoded values.
    fn from_store(store: AtomStore, d: usize) -> Result<CpuBackend> {
        let n = store.len() / d;
        let mut scratch = Vec::new();
        let mut norms64 = Vec::with_capacity(n);
        // Decoded in blocks of 256 atoms, as the passes will see them.
        for i0 in (0..n).step_by(256) {
            let c = 256.min(n - i0);
            store.load(i0 * d, c * d, &mut scratch);
            let vals = store.values(&scratch, i0 * d, c * d);
            // Only a mapped float32 entry can bring a non-finite value this far (the other
            // stores were built from checked atoms).
            if let AtomStore::Mapped(m) = &store
                && let Some(pos) = vals.iter().position(|v| !v.is_finite())
            {
                return Err(Error::data(
                    m.path(),
                    format!(
                        "atom {} has a non-finite value at coordinate {}; clean the source and \
                         delete this cache entry",
                        i0 + pos / d,
                        pos % d
                    ),
                ));
            }
            norms64.extend(
                vals.chunks(d)
                    .map(|a| a.iter().map(|&v| (v as f64) * (v as f64)).sum::<f64>()),
            );
        }
        let max_norm = norms64.iter().cloned().fold(0.0, f64::max).sqrt();
        // As many as rayon's global pool: the CLI's --threads sizes it before any engine is
        // built, else RAYON_NUM_THREADS, else every core.
        let threads = rayon::current_num_threads();
        Ok(CpuBackend {
            store,
            n,
            d,
            norms2: norms64.iter().map(|&v| v as f32).collect(),
            max_norm,
            biases: Vec::new(),
            pool: build_pool(threads)?,
            threads,
            chunk: None,
            row_block: DEFAULT_ROW_BLOCK,
            prior_weights: Mutex::new(None),
            weight_cache_bytes: DEFAULT_WEIGHT_CACHE_BYTES,
            prune: None,
        })
    }

    /// Turns certified pruning on (module `prune`): partitions the atoms by k-means into
    /// `opts.clusters` (default ⌈√N⌉) clusters and stores them cluster by cluster (an f32
    /// store shared with the caller is copied: +N·D·4 bytes). Errors name `prune_epsilon`
    /// (must lie in (0, 0.01]) and `prune_clusters` (1 ..= N).
    pub fn with_pruning(mut self, opts: PruneOptions) -> Result<CpuBackend> {
        if !(opts.epsilon > 0.0 && opts.epsilon <= 0.01) {
            return Err(Error::config(
                "prune_epsilon",
                format!(
                    "is {}; the certified relative mass must lie in (0, 0.01] (default 1e-7)",
                    opts.epsilon
                ),
            ));
        }
        let k = match opts.clusters {
            Some(k) if k == 0 || k > self.n => {
                return Err(Error::config(
                    "prune_clusters",
                    format!("is {k}; must lie in 1 ..= N = {} (default ⌈√N⌉)", self.n),
                ));
            }
            Some(k) => k,
            None => (self.n as f64).sqrt().ceil() as usize,
        };
        let d = self.d;
        let mut scratch = Vec::new();
        self.store.load(0, self.n * d, &mut scratch);
        let atoms = self.store.values(&scratch, 0, self.n * d);
        let cl = clusters::kmeans(
            atoms,
            d,
            k,
            prune::KMEANS_ITERATIONS,
            prune::KMEANS_SEED,
            &self.pool,
        );
        let store = self.store.permuted(&cl.order, d)?;
        let sorted: Vec<f32> = cl
            .order
            .iter()
            .flat_map(|&i| atoms[i * d..(i + 1) * d].iter().copied())
            .collect();
        let projection = projection::Projection::new(&sorted, d, prune::KMEANS_SEED, &self.pool);
        drop(sorted);
        let norms2 = cl.order.iter().map(|&i| self.norms2[i]).collect();
        for b in self.biases.iter_mut().flatten() {
            b.b64 = cl.order.iter().map(|&i| b.b64[i]).collect();
            b.b32 = cl.order.iter().map(|&i| b.b32[i]).collect();
            b.cluster_max = cluster_max(&b.b64, &cl.start);
        }
        self.store = store;
        self.norms2 = norms2;
        self.prior_weights = Mutex::new(None);
        self.prune = Some(prune::Pruning {
            clusters: cl,
            projection,
            epsilon: opts.epsilon,
            counters: Mutex::new(PruneCounters::default()),
        });
        Ok(self)
    }

    /// The caller's index of the atom at storage position `i`.
    pub(super) fn original(&self, i: usize) -> usize {
        self.prune.as_ref().map_or(i, |p| p.clusters.order[i])
    }

    /// The number of clusters when pruning is on.
    pub fn prune_clusters(&self) -> Option<usize> {
        self.prune.as_ref().map(|p| p.clusters.len())
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

    /// The atoms, N × D row-major float32, when they are stored as f32 in the caller's order
    /// (None for u8 / f16, and with pruning, which stores them permuted:
    /// [`CpuBackend::atom_values`] decodes one).
    pub fn atom_store(&self) -> Option<&[f32]> {
        if self.prune.is_some() {
            return None;
        }
        self.store.as_f32()
    }

    /// Atom `i` (the caller's index) as the passes compute with it (decoded from u8 / f16);
    /// panics past N.
    pub fn atom_values(&self, i: usize) -> Vec<f32> {
        let i = match &self.prune {
            Some(p) => p
                .clusters
                .order
                .iter()
                .position(|&o| o == i)
                .expect("i < N"),
            None => i,
        };
        let mut scratch = Vec::new();
        self.store.load(i * self.d, self.d, &mut scratch);
        self.store.values(&scratch, i * self.d, self.d).to_vec()
    }

    /// Whether the atoms are a memory-mapped file ([`CpuBackend::from_mapped`]).
    pub fn is_mapped(&self) -> bool {
        matches!(self.store, AtomStore::Mapped(_))
    }

    /// How the atoms are stored.
    pub fn storage(&self) -> Storage {
        self.store.storage()
    }

    /// Bytes the atom store holds (N·D·4 for f32, N·D for u8, N·D·2 for f16).
    pub fn store_bytes(&self) -> usize {
        self.store.bytes()
    }

    /// For tests and diagnostics: the normalised weights w_i of one row, computed by the same
    /// chunked float32 expansion and candidate recomputation as [`Backend::weighted_means`]
    /// (single-threaded), returned in float64.
    pub fn weights(&self, x_row: &[f32], noise: Noise, set: WeightSet) -> Result<Vec<f64>> {
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
        // With pruning, the chunks of the clusters a pass on this row visits.
        let chunks = match &self.prune {
            None => self.all_chunks(chunk),
            Some(p) => p.chunks_of(
                &self.pruned_sweep(&job, &[set], None, chunk, false).visit,
                chunk,
            ),
        };
        let mut bufs = ChunkBuffers::new(1, chunk, 1);
        let mut m_run = vec![f64::NEG_INFINITY];
        let mut s0 = vec![0.0f64];
        // ℓ_i − M_at_that_chunk and that M, for each atom (−∞ for skipped atoms).
        let mut logits = vec![f64::NEG_INFINITY; self.n];
        for (i0, c) in chunks {
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
            for (o, &r) in logits[i0..i0 + c].iter_mut().zip(&bufs.rel[..c]) {
                *o = if r < CLAMP {
                    f64::NEG_INFINITY
                } else {
                    r as f64 + m_run[0]
                };
            }
        }
        // The largest logit is the final running max (its relative logit is exactly 0).
        let w = super::logsumexp::softmax(&logits);
        Ok(match &self.prune {
            None => w,
            Some(p) => {
                let mut out = vec![0.0; self.n];
                for (pos, &i) in p.clusters.order.iter().enumerate() {
                    out[i] = w[pos];
                }
                out
            }
        })
    }

    fn check_pass(&self, x: &[f32], noise: Noise, sets: &[WeightSet]) -> Result<()> {
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
            if let WeightSet::Biased(id) = *set {
                self.bias_entry(id)?;
            }
        }
        Ok(())
    }

    /// The stored bias of `id`; an error for an id never registered or already removed.
    fn bias_entry(&self, BiasId(k): BiasId) -> Result<&StoredBias> {
        match self.biases.get(k) {
            Some(Some(b)) => Ok(b),
            Some(None) => Err(Error::input(format!(
                "cpu backend: bias id {k} was removed (its posterior was dropped); register \
                 the bias again for a new id"
            ))),
            None => Err(Error::input(format!(
                "cpu backend: bias id {k} was not registered ({} ids issued)",
                self.biases.len()
            ))),
        }
    }

    /// The float32 and float64 bias values of atoms `range` under `set` (None for the
    /// prior); the set was checked by the pass.
    pub(super) fn bias_values(
        &self,
        set: WeightSet,
        range: std::ops::Range<usize>,
    ) -> (Option<&[f32]>, Option<&[f64]>) {
        match set {
            WeightSet::Prior => (None, None),
            WeightSet::Biased(BiasId(k)) => match &self.biases[k] {
                Some(b) => (Some(&b.b32[range.clone()]), Some(&b.b64[range])),
                None => unreachable!("bias {k} checked by the pass"),
            },
        }
    }

    pub(super) fn chunk_size(&self, rows: usize) -> usize {
        self.chunk.unwrap_or_else(|| chunk_for_rows(rows))
    }

    /// What was subtracted from the bias of `set` when it was stored (0 for the prior; the
    /// set was checked by the pass).
    fn bias_shift(&self, set: WeightSet) -> f64 {
        match set {
            WeightSet::Prior => 0.0,
            WeightSet::Biased(id) => self.bias_entry(id).map_or(0.0, |b| b.shift),
        }
    }

    /// The float32 atoms of the chunk [i0, i0 + c) (c × D): the store in place, or the
    /// chunk `bufs` decoded ([`ChunkBuffers::distances`] loads it).
    pub(super) fn chunk_atoms<'a>(&'a self, decoded: &'a [f32], i0: usize, c: usize) -> &'a [f32] {
        self.store.values(decoded, i0 * self.d, c * self.d)
    }
}

impl Backend for CpuBackend {
    fn describe(&self) -> String {
        let pruned = match &self.prune {
            Some(p) => format!(
                ", pruned: {} clusters, ε = {:e}",
                p.clusters.len(),
                p.epsilon
            ),
            None => String::new(),
        };
        format!(
            "cpu ({} thread{}, {}{}, gemm{pruned})",
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.store.storage().name(),
            if self.is_mapped() { " mapped" } else { "" }
        )
    }
    fn atoms(&self) -> usize {
        self.n
    }
    fn dim(&self) -> usize {
        self.d
    }

    /// Stores β − max β (float32 and float64); log Z adds max β back.
    fn add_bias(&mut self, bias: &[f64]) -> Result<BiasId> {
        let max = super::check_bias("cpu", bias, self.n)?;
        // With pruning the atoms are stored in cluster order, and so is their bias.
        let (b64, cluster_max): (Vec<f64>, Vec<f64>) = match &self.prune {
            None => (bias.iter().map(|&b| b - max).collect(), Vec::new()),
            Some(p) => {
                let b: Vec<f64> = p.clusters.order.iter().map(|&i| bias[i] - max).collect();
                let cm = cluster_max(&b, &p.clusters.start);
                (b, cm)
            }
        };
        self.biases.push(Some(StoredBias {
            b32: b64.iter().map(|&b| b as f32).collect(),
            b64,
            shift: max,
            cluster_max,
        }));
        Ok(BiasId(self.biases.len() - 1))
    }

    /// Frees the bias's values; its slot stays empty so the id is never issued again.
    fn remove_bias(&mut self, id: BiasId) -> Result<()> {
        self.bias_entry(id)?;
        self.biases[id.0] = None;
        Ok(())
    }

    fn live_biases(&self) -> usize {
        self.biases.iter().filter(|b| b.is_some()).count()
    }

    fn take_pruning(&self) -> Option<PruneCounters> {
        let p = self.prune.as_ref()?;
        let mut c = p.counters.lock().unwrap_or_else(|e| e.into_inner());
        Some(std::mem::take(&mut *c))
    }

    fn weighted_means(&self, x: &[f32], noise: Noise, sets: &[WeightSet]) -> Result<PassOutput> {
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
            .position(|&s| s == WeightSet::Prior)
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
        set: WeightSet,
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
        let cache = if set == WeightSet::Prior {
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
            out.extend(self.cov_block(set, xb, noise, mb, gb));
        }
        Ok(out)
    }
}

/// The max of `b` over each cluster `start[c]..start[c + 1]`.
fn cluster_max(b: &[f64], start: &[usize]) -> Vec<f64> {
    start
        .windows(2)
        .map(|w| {
            b[w[0]..w[1]]
                .iter()
                .cloned()
                .fold(f64::NEG_INFINITY, f64::max)
        })
        .collect()
}

/// N × D atoms: D ≥ 1, a non-empty whole number of rows, every value finite.
fn check_atoms(atoms: &[f32], d: usize) -> Result<()> {
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
    Ok(())
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

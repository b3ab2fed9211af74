//! The finite-sample engine: sums over atoms with squared-L2 softmax weights.
//!
//! For a batch of particles x_b (B × D), diffusion scalars s, v and a bias vector β over the
//! atoms (zero for the prior, b_i = log p(y | a_i) for the posterior), the logits are
//!
//!   ℓ_bi = −‖x_b − s a_i‖² / (2v) + β_i,   w_bi = softmax_i(ℓ_b·).
//!
//! A [`Backend`] answers, per row: the log-normaliser log Σ_i exp ℓ_bi, the effective sample
//! size 1/Σ w², the largest weight, the entropy −Σ w log w, the weighted mean Σ w_i a_i (for
//! several bias sets in one pass over the atoms), the nearest atom, and the covariance product
//! C·g = Σ_i w_i (a_i − m)⟨a_i − m, g⟩ (design §3). It knows nothing of samplers.

pub mod cpu;
pub mod devices;
pub mod gpu;
pub mod logsumexp;
pub mod ranks;
pub mod reference;
pub mod shards;

use crate::choices::Choice;
use crate::data::Dataset;
use crate::{Error, Result};
pub use devices::Devices;

/// Which weights a pass uses: the prior (no bias) or a registered bias vector.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum WeightSet {
    Prior,
    Biased(BiasId),
}

/// Handle of a bias vector registered with [`Backend::add_bias`] (unique for the backend's
/// life: [`Backend::remove_bias`] never lets an id name another bias).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BiasId(pub usize);

/// Statistics of one row's weights.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct RowStats {
    /// log Z = log Σ_i exp ℓ_i, with ℓ_i = −‖x − s a_i‖²/(2v) + β_i and β exactly as registered
    /// with [`Backend::add_bias`] (0 for the prior): a backend that stores β shifted adds the
    /// shift back ([`logsumexp::RowSums::finish`]), so every backend returns this same value.
    pub log_norm: f64,
    /// 1 / Σ_i w_i², between 1 and N.
    pub ess: f64,
    /// max_i w_i.
    pub max_weight: f64,
    /// −Σ_i w_i log w_i, in nats.
    pub entropy: f64,
}

/// The nearest atom to x/s: argmin_i ‖x − s a_i‖², with that squared distance.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Neighbor {
    pub index: usize,
    pub dist2: f64,
}

/// The weighted mean and statistics of one bias set over a batch.
#[derive(Clone, Debug)]
pub struct WeightedMean {
    /// B × D, row b = Σ_i w_bi a_i.
    pub means: Vec<f32>,
    /// B rows.
    pub stats: Vec<RowStats>,
}

/// Everything one pass over the atoms returns.
#[derive(Clone, Debug)]
pub struct PassOutput {
    /// One entry per requested weight set, in request order.
    pub sets: Vec<WeightedMean>,
    /// Nearest atom of each row (independent of the bias).
    pub nearest: Vec<Neighbor>,
}

/// The diffusion scalars of a pass: x_t = s x_0 + √v ε.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Noise {
    pub s: f64,
    pub v: f64,
}

/// A compute backend over one fixed atom set. Both the CPU and the GPU implement it; tests
/// run the same case on each and compare with the float64 reference in [`reference`].
pub trait Backend: Send + Sync {
    /// e.g. `cpu (2 threads)` or `gpu: NVIDIA H100 (Vulkan)`.
    fn describe(&self) -> String;
    /// N.
    fn atoms(&self) -> usize;
    /// D.
    fn dim(&self) -> usize;
    /// Registers a bias vector β (N values, finite) for later passes. Softmax weights do not
    /// change when β is shifted by a constant, and backends may store it shifted by max β
    /// (keeps float32 exact near the weights that matter); [`RowStats::log_norm`] is still
    /// log Σ_i exp(−‖x − s a_i‖²/(2v) + β_i) with β as given here: the shift is added back.
    fn add_bias(&mut self, bias: &[f64]) -> Result<BiasId>;
    /// Forgets a bias registered with [`Backend::add_bias`] and frees its N values (host and
    /// device). Ids are never reused: a pass or a second removal naming a removed id is an
    /// error, never another bias's weights; the other biases keep their ids and give the
    /// same results bit for bit.
    fn remove_bias(&mut self, id: BiasId) -> Result<()>;
    /// The biases registered and not removed (what the backend holds N values for).
    fn live_biases(&self) -> usize;
    /// One pass over the atoms for the B = x.len()/D rows of x: for each requested weight set
    /// the weighted means and row statistics, and the nearest atom of each row.
    fn weighted_means(&self, x: &[f32], noise: Noise, sets: &[WeightSet]) -> Result<PassOutput>;
    /// C·g per row: Σ_i w_bi (a_i − m_b)⟨a_i − m_b, g_b⟩ with the weights of `set`, where
    /// m_b = `means` row b (the weighted mean of the same weights, from a previous pass).
    ///
    /// # The pass cache
    /// Samplers call this right after a [`Backend::weighted_means`] pass on the same particles,
    /// so a backend may keep part of that pass and reuse it here: the CPU keeps the normalised
    /// prior weights (when the pass asked for [`WeightSet::Prior`] and B·N float32 fit its
    /// budget; C·g then costs two GEMMs instead of three), the GPU keeps the pair distances
    /// ‖x_b − s a_i‖² (any set; they depend on x and s only). The contract, tested on both
    /// backends by one test body:
    /// - reuse happens only when the rows of `x` equal kept rows bit for bit and the noise
    ///   matches (CPU: any subset of the kept rows, same [`Noise`]; GPU: the whole kept x, same
    ///   s); anything else recomputes, so a pass on other particles or at another noise level
    ///   never leaks stale data into the result;
    /// - with and without reuse the result is the same C·g up to float32 rounding order: both
    ///   stay within the backend's tolerance of the float64 reference.
    fn covariance_products(
        &self,
        x: &[f32],
        noise: Noise,
        set: WeightSet,
        means: &[f32],
        g: &[f32],
    ) -> Result<Vec<f32>>;
    /// Seconds the device itself spent in passes so far, where the backend can measure it
    /// (GPU timestamp queries); None elsewhere. Benchmarks difference two readings.
    fn device_seconds(&self) -> Option<f64> {
        None
    }
    /// The device seconds so far per kernel (name, seconds), where the backend times its
    /// kernels separately; empty elsewhere.
    fn device_seconds_by_kernel(&self) -> Vec<(&'static str, f64)> {
        Vec::new()
    }
    /// What certified pruning did since the previous call (the call resets the counters), where
    /// the backend prunes (the CPU backend with [`PruneOptions`]); None elsewhere. The run
    /// loop reads it after each step.
    fn take_pruning(&self) -> Option<PruneCounters> {
        None
    }
}

/// Certified pruning of the CPU backend (config `prune`, `prune_epsilon`, `prune_clusters`;
/// design §8 "Certified pruning").
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct PruneOptions {
    /// ε: the largest mass, relative to the visited atoms' Σ e^ℓ, that the skipped clusters may
    /// carry in any row (default 1e-7).
    pub epsilon: f64,
    /// k of the k-means partition (default ⌈√N⌉).
    pub clusters: Option<usize>,
}

/// Default ε of [`PruneOptions`].
pub const DEFAULT_PRUNE_EPSILON: f64 = 1e-7;

impl Default for PruneOptions {
    fn default() -> Self {
        PruneOptions {
            epsilon: DEFAULT_PRUNE_EPSILON,
            clusters: None,
        }
    }
}

/// Counters of the pruned passes since the last reading ([`Backend::take_pruning`]).
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct PruneCounters {
    /// Passes (row blocks of `weighted_means`) counted.
    pub passes: u64,
    /// Atoms the passes visited, summed over passes.
    pub atoms_visited: u64,
    /// N per pass, summed over passes (the unpruned cost).
    pub atoms_total: u64,
    /// The largest realised bound δ = max_b Σ_skipped n_c e^{ub_bc − log Z_b,kept} of the
    /// passes, over rows and weight sets (0 when nothing was skipped).
    pub max_bound: f64,
    /// Atoms of skipped clusters whose distance was computed to keep the nearest atom exact.
    pub nearest_checked: u64,
}

impl PruneCounters {
    /// Adds `other` (sums, and the max of the bounds).
    pub fn add(&mut self, other: &PruneCounters) {
        self.passes += other.passes;
        self.atoms_visited += other.atoms_visited;
        self.atoms_total += other.atoms_total;
        self.max_bound = self.max_bound.max(other.max_bound);
        self.nearest_checked += other.nearest_checked;
    }
}

/// Whether the CPU backend prunes (config `prune`, flag `--prune`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum PruneChoice {
    #[default]
    Off,
    On,
}

impl Choice for PruneChoice {
    const KEY: &'static str = "prune";
    const WHAT: &'static str = "certified pruning";
    const NAMES: &'static [(&'static str, Self)] =
        &[("off", PruneChoice::Off), ("on", PruneChoice::On)];
}
crate::choice_by_name!(PruneChoice);

/// Checks a bias vector for `add_bias` (one finite value per atom) and returns its maximum,
/// which backends subtract before storing it in float32.
pub fn check_bias(backend: &str, bias: &[f64], atoms: usize) -> Result<f64> {
    if bias.len() != atoms {
        return Err(Error::input(format!(
            "{backend} backend: bias has {} values but there are {atoms} atoms",
            bias.len()
        )));
    }
    if let Some(i) = bias.iter().position(|b| !b.is_finite()) {
        return Err(Error::input(format!(
            "{backend} backend: bias value {i} is {} (must be finite; a log-likelihood of −∞ \
             means the measurement rules the atom out: drop the atom instead)",
            bias[i]
        )));
    }
    Ok(bias.iter().cloned().fold(f64::NEG_INFINITY, f64::max))
}

/// ‖x − s a‖² = Σ_d (x_d − s a_d)² by direct differences in float64: s·a_d of a float64 s and
/// a float32 a_d is rounded once, and there is no cancellation as in the expansion
/// ‖x‖² − 2s⟨x, a⟩ + s²‖a‖², so the result is good to a few float64 roundings. The one direct
/// distance of the crate: the CPU backend's candidate recomputation (design §7), the float64
/// reference, the diagnostics' nearest-atom distances and k-means (s = 1) all call it. Eight
/// running sums keep it vectorisable.
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

/// Which backend runs the passes (config `backend`, flag `--backend`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum BackendKind {
    /// `gpu` when a hardware adapter (discrete, integrated or virtual) exists, else `cpu`: a
    /// software adapter (llvmpipe) is about 30× slower than the CPU backend (README,
    /// Performance).
    #[default]
    Auto,
    /// The multithreaded CPU backend.
    Cpu,
    /// The WGSL backend on the best adapter found, the Mesa software one included
    /// (`FSLENS_ADAPTER=substring` picks one by name).
    Gpu,
}

impl Choice for BackendKind {
    const KEY: &'static str = "backend";
    const WHAT: &'static str = "backend";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", BackendKind::Auto),
        ("cpu", BackendKind::Cpu),
        ("gpu", BackendKind::Gpu),
    ];
}
crate::choice_by_name!(BackendKind);

/// How a backend stores the atoms (config `storage`, flag `--storage`), on the GPU and the CPU
/// alike: `auto` is u8 for 8-bit data sets (exact) on the GPU and f32 otherwise; `u8` is refused for data
/// with more than 256 distinct values and `f16` changes the prior (README "Atom storage").
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum StorageChoice {
    #[default]
    Auto,
    Fixed(gpu::Storage),
}

impl Choice for StorageChoice {
    const KEY: &'static str = "storage";
    const WHAT: &'static str = "atom storage";
    const NAMES: &'static [(&'static str, Self)] = &[
        ("auto", StorageChoice::Auto),
        ("f32", StorageChoice::Fixed(gpu::Storage::F32)),
        ("u8", StorageChoice::Fixed(gpu::Storage::U8)),
        ("f16", StorageChoice::Fixed(gpu::Storage::F16)),
    ];
}
crate::choice_by_name!(StorageChoice);

impl StorageChoice {
    /// The storage for `atoms`: `auto` resolved by whether they are 8-bit.
    pub fn resolve(self, atoms: &Dataset) -> gpu::Storage {
        match self {
            StorageChoice::Auto if atoms.eight_bit => gpu::Storage::U8,
            StorageChoice::Auto => gpu::Storage::F32,
            StorageChoice::Fixed(s) => s,
        }
    }

    /// The storage on the backend that runs: on the GPU as [`StorageChoice::resolve`]; on the
    /// CPU `auto` is f32, because every CPU caller keeps the f32 images anyway (the lens for
    /// its exact draws, a run for the exact sampler) and shares them with an f32 store, where
    /// a u8 store would sit beside them; `u8`/`f16` are honoured on both.
    pub fn resolve_on(self, on_gpu: bool, eight_bit: bool) -> gpu::Storage {
        match self {
            StorageChoice::Auto if on_gpu && eight_bit => gpu::Storage::U8,
            StorageChoice::Auto => gpu::Storage::F32,
            StorageChoice::Fixed(s) => s,
        }
    }
}

/// Builds the backend `kind` over the images of `atoms` with the atom storage `storage`
/// ([`StorageChoice::resolve_on`]; the CPU backend copies the images for f32, encodes them
/// for u8 / f16) on `devices` (GPU only; several split the atoms, [`devices`]).
pub fn create(
    kind: BackendKind,
    storage: StorageChoice,
    devices: Devices,
    atoms: &Dataset,
) -> Result<Box<dyn Backend>> {
    build(
        kind,
        storage,
        devices,
        atoms.eight_bit,
        &atoms.images,
        atoms.dim(),
        None,
    )
}

/// As [`create`], with certified pruning when `prune` is Some: the CPU backend
/// ([`cpu::CpuBackend::with_pruning`]) for `cpu` and `auto` (pruning is a CPU feature, so
/// `auto` picks the CPU); `gpu` is an error naming `prune` (not built for the GPU).
pub fn create_pruned(
    kind: BackendKind,
    storage: StorageChoice,
    devices: Devices,
    prune: Option<PruneOptions>,
    atoms: &Dataset,
) -> Result<Box<dyn Backend>> {
    let Some(opts) = prune else {
        return create(kind, storage, devices, atoms);
    };
    if kind == BackendKind::Gpu {
        return Err(Error::config(
            "prune",
            "certified pruning is built for the CPU backend only; use backend = \"cpu\" or \
             prune = \"off\"",
        ));
    }
    devices.check_backend(BackendKind::Cpu)?;
    let d = atoms.dim();
    let storage = storage.resolve_on(false, atoms.eight_bit);
    let pruned_cpu = |images: &[f32]| -> Result<Box<dyn Backend>> {
        let cpu = match storage {
            gpu::Storage::F32 => cpu::CpuBackend::new(images, d)?,
            s => cpu::CpuBackend::with_storage(images, d, s)?,
        };
        Ok(Box::new(cpu.with_pruning(opts)?))
    };
    // Under several ranks each rank prunes its own shard.
    if let Some(world) = ranks::world() {
        return Ok(Box::new(ranks::build(
            world.clone(),
            &atoms.images,
            d,
            pruned_cpu,
        )?));
    }
    pruned_cpu(&atoms.images)
}

/// Builds the backend `kind` over `images` (N × `d`, `eight_bit` when they are 8-bit) in
/// `storage` ([`StorageChoice::resolve_on`]) on `devices`: the CPU backend shares an f32 store
/// (no second copy in memory) or keeps a u8 / f16 encoding beside the caller's f32 images; the
/// GPU one uploads it (each device its own shard).
pub fn create_shared(
    kind: BackendKind,
    storage: StorageChoice,
    devices: Devices,
    eight_bit: bool,
    images: &std::sync::Arc<Vec<f32>>,
    d: usize,
) -> Result<Box<dyn Backend>> {
    build(kind, storage, devices, eight_bit, images, d, Some(images))
}

/// The backend over `images`; under an installed world of several ranks ([`ranks`]), this
/// rank's [`ranks::RankBackend`] over its shard (the local backend then copies its shard only).
fn build(
    kind: BackendKind,
    storage: StorageChoice,
    devices: Devices,
    eight_bit: bool,
    images: &[f32],
    d: usize,
    shared: Option<&std::sync::Arc<Vec<f32>>>,
) -> Result<Box<dyn Backend>> {
    devices.check_backend(kind)?;
    if let Some(world) = ranks::world() {
        let joined = ranks::build(world.clone(), images, d, |shard| {
            build_local(kind, storage, devices, eight_bit, shard, d, None)
        })?;
        return Ok(Box::new(joined));
    }
    build_local(kind, storage, devices, eight_bit, images, d, shared)
}

/// The backend over `images` in this process.
fn build_local(
    kind: BackendKind,
    storage: StorageChoice,
    devices: Devices,
    eight_bit: bool,
    images: &[f32],
    d: usize,
    shared: Option<&std::sync::Arc<Vec<f32>>>,
) -> Result<Box<dyn Backend>> {
    let on_gpu = match kind {
        BackendKind::Cpu => false,
        BackendKind::Gpu => true,
        BackendKind::Auto => devices.auto_uses_gpu(),
    };
    let storage = storage.resolve_on(on_gpu, eight_bit);
    if on_gpu {
        build_gpu(storage, devices, images, d)
    } else {
        build_cpu(storage, images, d, shared)
    }
}

/// The GPU backend on `devices` (one device, or a [`shards::ShardedBackend`] over several).
fn build_gpu(
    storage: gpu::Storage,
    devices: Devices,
    images: &[f32],
    d: usize,
) -> Result<Box<dyn Backend>> {
    let opts = gpu::GpuOptions {
        storage,
        ..Default::default()
    };
    Ok(devices::open_gpus(images, d, &opts, &devices)?.0)
}

/// The CPU backend, sharing the caller's f32 store when there is one.
fn build_cpu(
    storage: gpu::Storage,
    images: &[f32],
    d: usize,
    shared: Option<&std::sync::Arc<Vec<f32>>>,
) -> Result<Box<dyn Backend>> {
    Ok(Box::new(match (storage, shared) {
        (gpu::Storage::F32, Some(store)) => cpu::CpuBackend::from_shared(store.clone(), d)?,
        (gpu::Storage::F32, None) => cpu::CpuBackend::new(images, d)?,
        (s, _) => cpu::CpuBackend::with_storage(images, d, s)?,
    }))
}

/// Whether `auto` picks the GPU: only when the preferred adapter is real hardware.
pub fn auto_uses_gpu() -> bool {
    gpu::list_adapters().iter().any(|a| {
        a.preferred
            && matches!(
                a.device_type.as_str(),
                "DiscreteGpu" | "IntegratedGpu" | "VirtualGpu"
            )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

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

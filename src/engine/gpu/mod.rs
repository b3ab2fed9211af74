//! The wgpu backend: WGSL compute kernels (shaders/) over an atom store kept on the device.
//!
//! A pass runs, for each wave of atoms (a run of whole splits of one storage binding):
//! distances.wgsl (pair distances ‖x_b − s a_j‖², and projections ⟨a_j − m_b, g_b⟩ for C·g,
//! a register-blocked GEMM-shaped tile kernel), split_weights.wgsl (per split and row: the max
//! logit M_p, the weights e^{ℓ−M_p} into a scratch matrix, the partial S0, S2, SL, SC and the
//! nearest atom) and weighted_sums.wgsl (per split: Σ_j W_rj a_j, a register-blocked GEMM);
//! then merge_partials.wgsl combines the splits' partial sums exactly (rescaling by
//! e^{M_p − M}) and the host merges the row statistics in float64. Atom sets larger than one
//! binding are split over as many bindings as the adapter's `max_storage_buffer_binding_size`
//! requires. An atom set larger than GPU memory is refused with an out-of-memory error naming
//! the sizes, not streamed: re-uploading the atoms every pass would make the GPU slower than
//! the CPU backend, which is then the right tool.
//!
//! Why three kernels and not one fused flash-attention pass: the weighted sum has D outputs
//! per row (784 to 12288 here, not attention's 64–128), too many to keep in registers across
//! the atom loop, so a fused pass must read and write its accumulators in memory per atom
//! tile. Split in two GEMM-shaped halves around a B × split scratch of weights, each half
//! keeps a 4 × 4 register block per thread and streams its operands once per tile.
//!
//! Atom storage ([`Storage`]): f32; u8 (a 256-entry table, exact for 8-bit data, so its
//! results equal f32 storage bit for bit — tested); f16 (two per word, decoded exactly by the
//! core WGSL `unpack2x16float`, so it runs on every adapter and all arithmetic stays f32).
//! f16 changes the prior itself. Measured in float64 on Fashion-MNIST (6000 atoms, 32
//! particles around training and test images; test `f16_prior_shift_on_8bit_data`): pixels
//! move by up to 2.4e-4; the gap between the two largest logits moves by up to 26 nats (mean
//! 8) at t = 1e-3, 1.1 nats (mean 0.4) at t = 1e-2 and 0.05 nats at t = 0.1. Those particles'
//! weights still did not change at t ≤ 1e-2 (total variation < 1e-70: the top atom wins by
//! far more than that), but reached a total-variation distance of 5e-3 at t = 0.1 where many
//! atoms share the weight. So: use u8 for 8-bit data (exact, smallest) and f32 otherwise;
//! f16 only where a prior perturbed by ~1e-2 in total variation is acceptable, and never for
//! comparisons against the exact posterior near t = 0 between near-duplicate atoms.

//!
//! The backend is made of owned parts, each in its own module: the atom store and the biases
//! on the device (`store`), the tuning (`tuning`: options checked against the adapter, the
//! budgets and the plans of a pass), the pass cache of kept distances (`cache`), the per-pass
//! scratch and the block that runs one submission (`block`), and the device timing (`timing`).

mod atoms;
mod block;
mod cache;
mod device;
mod kernels;
mod shaders;
mod store;
mod timing;
mod tuning;

use std::time::Duration;

pub use atoms::{Storage, f16_stored, stored_values};
pub use device::{AdapterInfoRow, list_adapters};

use super::logsumexp::{RowSums, common_max};
use super::{Backend, BiasId, Neighbor, Noise, PassOutput, RowStats, WeightSet, WeightedMean};
use crate::{Error, Result};
use block::{BlockOutput, Scratch};
use cache::{KEPT_DISTANCES_MAX_BYTES, Kept, PassCache};
use device::{Gpu, backend_error};
use kernels::Pipelines;
use store::{AtomStore, BiasStore};
use timing::PassTimer;
use tuning::Tuning;

/// Sets per pass (the `bias_off` vec4 of the shaders).
const KMAX: usize = 4;
/// Largest number of partial slots merge_partials.wgsl accepts.
const PMAX: usize = 2048;
/// Floats per partial statistics record.
const STAT: usize = 6;
/// Atoms per split at most: bounds the loops of one shader invocation (Mesa's llvmpipe stops
/// an invocation silently after 65535 loop iterations; weighted_sums.wgsl runs about
/// 2 iterations per atom of its split).
const SPLIT_MAX: usize = 8192;
/// Most loop iterations (estimated) one invocation may run on a CPU adapter.
const CPU_ADAPTER_LOOP_LIMIT: usize = 50_000;

/// Options of [`GpuBackend::new`].
#[derive(Clone, Debug)]
pub struct GpuOptions {
    pub storage: Storage,
    /// Use at most this many bytes per atom binding (below the adapter's limit), e.g. to test
    /// the multi-binding path on small data.
    pub max_binding_bytes: Option<u64>,
    /// Keep only adapters whose name contains this text (overrides `FSLENS_ADAPTER`).
    pub adapter: Option<String>,
    /// Open the adapter with this index in [`list_adapters`] (as `fslens info` numbers them)
    /// instead of the best one; wins over `adapter` and `FSLENS_ADAPTER`. Opening the same
    /// index twice gives two independent devices on one adapter (config `devices = "0,0"`).
    pub adapter_index: Option<usize>,
    /// Create the shaders without runtime bounds checks (`create_shader_module_trusted`).
    /// Every index in the kernels is guarded explicitly, so this is safe for them.
    pub trusted_shaders: bool,
    /// Workgroups to aim for in the weighted-sums dispatch (dimension tiles × row tiles ×
    /// splits); default 1024 on a GPU, 16 on a CPU adapter.
    pub target_workgroups: Option<usize>,
    /// Dimensions distances.wgsl stages through workgroup memory per step in the means passes
    /// (its `DK` override constant): a multiple of 16 from 16 to 256, default 16. Workgroup
    /// memory grows as 16·DK·32 + 1024 bytes and must fit the adapter's limit. (The covariance
    /// pass stages three operands and always uses 16.)
    pub tile_dims: Option<usize>,
    /// Rows per tile of the GEMM-shaped kernels (their `TY` override constant, times 4): 16 or
    /// 64. Default: 16 for blocks of at most 16 rows, else 64.
    pub tile_rows: Option<usize>,
    /// Rows per thread of weighted_sums.wgsl's register block (its `RY`): 4 (default) or 8,
    /// which doubles that kernel's tile rows and halves its workgroup-memory reads per
    /// multiply-add.
    pub sums_block_rows: Option<usize>,
    /// Bytes of scratch (distances, projections, weights of one wave of atoms) a pass may use;
    /// default 256 MiB (capped by the adapter's binding size). Less means more waves.
    pub scratch_bytes: Option<u64>,
    /// Largest B × N float32 buffer of distances a pass keeps on the device for the C·g pass
    /// that follows on the same particles; default 256 MiB, 0 turns keeping off.
    pub kept_bytes: Option<u64>,
    /// Longest wait for one submission before giving up with an error.
    pub timeout: Duration,
}

impl Default for GpuOptions {
    fn default() -> Self {
        GpuOptions {
            storage: Storage::F32,
            max_binding_bytes: None,
            adapter: None,
            adapter_index: None,
            trusted_shaders: false,
            target_workgroups: None,
            tile_dims: None,
            tile_rows: None,
            sums_block_rows: None,
            scratch_bytes: None,
            kept_bytes: None,
            timeout: Duration::from_secs(600),
        }
    }
}

/// The GPU implementation of [`Backend`].
pub struct GpuBackend {
    gpu: Gpu,
    /// The atoms on the device.
    atoms: AtomStore,
    /// The registered biases on the device, and their shifts.
    biases: BiasStore,
    pipelines: Pipelines,
    tuning: Tuning,
    /// The distances of the last pass, kept for the C·g pass that follows.
    cache: PassCache,
    /// The uniform parameters and the per-call buffers.
    scratch: Scratch,
    timer: Option<PassTimer>,
}

impl GpuBackend {
    /// Uploads the N × D row-major `atoms` to the best adapter (see [`list_adapters`]) and
    /// builds the pipelines.
    pub fn new(atoms: &[f32], d: usize, opts: GpuOptions) -> Result<GpuBackend> {
        let n = check_atoms(atoms, d)?;
        // Option errors before an adapter is opened.
        Tuning::row_options(&opts)?;
        let gpu = Gpu::open(opts.adapter.as_deref(), opts.adapter_index)?;
        let tuning = Tuning::new(&opts, &gpu, d)?;
        let dpad = atoms::padded_dim(d);
        let enc = atoms::encode(atoms, d, opts.storage)?;
        let adapter_binding = Tuning::adapter_binding(&gpu);
        let max_binding = opts
            .max_binding_bytes
            .map_or(adapter_binding, |m| m.min(adapter_binding));
        let ranges = atoms::split(n, 4 * enc.stride as u64, max_binding & !15)?;
        let total_bytes = enc.words.len() as u64 * 4;
        let (atom_store, biases, scratch, pipelines) = gpu.scoped(
            &format!(
                "uploading {n} atoms × {d} ({} storage, {:.1} MB in {} binding(s) of at most {} \
                 bytes) and building pipelines",
                opts.storage.name(),
                total_bytes as f64 / 1e6,
                ranges.len(),
                max_binding
            ),
            || {
                let store = AtomStore::upload(&gpu, &enc, &ranges, n, d, dpad, opts.storage);
                let pipelines = Pipelines::build(
                    &gpu,
                    opts.storage.shader_code(),
                    opts.trusted_shaders,
                    tuning.tile_dims,
                    tuning.sums_block_rows,
                );
                Ok((
                    store,
                    BiasStore::new(&gpu, n),
                    Scratch::new(&gpu),
                    pipelines,
                ))
            },
        )?;
        let cache = PassCache::new(&gpu, opts.kept_bytes.unwrap_or(KEPT_DISTANCES_MAX_BYTES));
        // Make the upload finish (and fail) here rather than in the first pass.
        gpu.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(opts.timeout),
            })
            .map_err(|e| backend_error(format!("uploading atoms: {e}")))?;
        gpu.check_alive("uploading atoms")?;
        let timer = PassTimer::new(&gpu);
        Ok(GpuBackend {
            gpu,
            atoms: atom_store,
            biases,
            pipelines,
            tuning,
            cache,
            scratch,
            timer,
        })
    }

    /// Number of storage bindings the atom store is split into.
    pub fn bindings(&self) -> usize {
        self.atoms.bindings()
    }

    /// The index of the adapter in use in [`list_adapters`].
    pub fn adapter_index(&self) -> usize {
        self.gpu.index
    }

    /// The adapter in use.
    pub fn adapter_info(&self) -> wgpu::AdapterInfo {
        self.gpu.info.clone()
    }

    fn row_block(&self, rows: usize, k: usize) -> Result<usize> {
        self.tuning.row_block(&self.atoms, rows, k)
    }

    fn check_call(&self, x: &[f32], noise: Noise, sets: &[WeightSet]) -> Result<Vec<u32>> {
        let d = self.atoms.d;
        if x.is_empty() || !x.len().is_multiple_of(d) {
            return Err(Error::input(format!(
                "gpu backend: {} particle values do not split into rows of D = {d}",
                x.len(),
            )));
        }
        if !(noise.s.is_finite() && noise.v.is_finite() && noise.v > 0.0) {
            return Err(Error::input(format!(
                "gpu backend: noise needs finite s and v > 0, got s = {}, v = {}",
                noise.s, noise.v
            )));
        }
        self.biases.offsets(sets)
    }
}

/// N for an N × D row-major atom array of finite values that fits 32-bit indices.
fn check_atoms(atoms: &[f32], d: usize) -> Result<usize> {
    if d == 0 || atoms.is_empty() || !atoms.len().is_multiple_of(d) {
        return Err(Error::input(format!(
            "gpu backend: {} atom values do not split into rows of D = {d}",
            atoms.len()
        )));
    }
    if let Some(i) = atoms.iter().position(|v| !v.is_finite()) {
        return Err(Error::input(format!(
            "gpu backend: atom value {i} (row {}, column {}) is not finite",
            i / d,
            i % d
        )));
    }
    let n = atoms.len() / d;
    if n >= u32::MAX as usize || d >= (1 << 26) {
        return Err(Error::input(format!(
            "gpu backend: N = {n}, D = {d} is too large for 32-bit indices"
        )));
    }
    Ok(n)
}

/// The row statistics of one (row, set) from its partials [M_p, S0_p, S2_p, SL_p, ..], merged
/// in float64 ([`RowSums::merge`]); `shift` is what was subtracted from the bias.
fn merge_stats(parts: impl Iterator<Item = [f32; STAT]> + Clone, shift: f64) -> RowStats {
    RowSums::merge(parts.map(|p| RowSums {
        m: p[0] as f64,
        s0: p[1] as f64,
        s2: p[2] as f64,
        sl: p[3] as f64,
    }))
    .finish(shift)
}

/// SC/S0 of one row from its partials [M_p, S0_p, SC_p], merged in float64 with
/// α_p = e^{M_p − M} (as the merge kernel does for acc and S0).
fn coefficient_ratio(parts: impl Iterator<Item = [f32; 3]> + Clone) -> f64 {
    let m = common_max(parts.clone().map(|p| (p[0] as f64, p[1] as f64)));
    let (mut s0, mut sc) = (0.0, 0.0);
    for p in parts.filter(|p| p[1] > 0.0) {
        let a = (p[0] as f64 - m).exp();
        s0 += a * p[1] as f64;
        sc += a * p[2] as f64;
    }
    sc / s0
}
impl Backend for GpuBackend {
    fn describe(&self) -> String {
        let rows = self
            .tuning
            .tile_rows
            .map_or("by batch".to_string(), |t| t.rows().to_string());
        format!(
            "gpu: {} ({:?}, {:?}, adapter {}), {} atom storage in {} binding(s), tiles: {} dims, {rows} rows, \
             {}×4 sums block",
            self.gpu.info.name,
            self.gpu.info.backend,
            self.gpu.info.device_type,
            self.gpu.index,
            self.atoms.storage.name(),
            self.atoms.bindings(),
            self.tuning.tile_dims,
            self.pipelines.sums_block_rows(),
        )
    }
    fn atoms(&self) -> usize {
        self.atoms.n
    }
    fn dim(&self) -> usize {
        self.atoms.d
    }

    fn add_bias(&mut self, bias: &[f64]) -> Result<BiasId> {
        let max = super::check_bias("gpu", bias, self.atoms.n)?;
        self.biases.add(&self.gpu, bias, max)
    }

    fn remove_bias(&mut self, id: BiasId) -> Result<()> {
        self.biases.remove(&self.gpu, id)
    }

    fn live_biases(&self) -> usize {
        self.biases.len()
    }

    fn weighted_means(&self, x: &[f32], noise: Noise, sets: &[WeightSet]) -> Result<PassOutput> {
        let offsets = self.check_call(x, noise, sets)?;
        let d = self.atoms.d;
        let rows = x.len() / d;
        let mut out: Vec<WeightedMean> = sets
            .iter()
            .map(|_| WeightedMean {
                means: Vec::with_capacity(rows * d),
                stats: Vec::with_capacity(rows),
            })
            .collect();
        let mut nearest = Vec::with_capacity(rows);
        // A pass with no sets still finds the nearest atoms (through the prior).
        let groups: Vec<(usize, &[u32])> = if offsets.is_empty() {
            vec![(0, &[u32::MAX][..])]
        } else {
            offsets
                .chunks(KMAX)
                .enumerate()
                .map(|(g, o)| (g * KMAX, o))
                .collect()
        };
        // A pass keeps its distances (they depend on x and s only) for the C·g pass that
        // usually follows (σ-DPS family) and for its own further groups of sets, when B × N
        // floats fit one binding; they are written there instead of into the wave scratch.
        let keep = self.cache.keeps(&self.gpu, rows, self.atoms.n);
        let mut kept = self.cache.lock();
        if keep {
            kept.reserve(&self.gpu, PassCache::bytes(rows, self.atoms.n));
        }
        let mut r0 = 0;
        while r0 < rows {
            let block = self.row_block(rows - r0, KMAX.min(offsets.len().max(1)))?;
            let xb = &x[r0 * d..(r0 + block) * d];
            for (gi, &(first, offs)) in groups.iter().enumerate() {
                let k = offs.len();
                let mode = match (keep, gi) {
                    (false, _) => Kept::Ignore,
                    (true, 0) => Kept::Write(&kept.buffer, r0 as u32),
                    (true, _) => Kept::Read(&kept.buffer, r0 as u32),
                };
                let BlockOutput {
                    merged: means,
                    stats,
                    near,
                    nparts,
                } = self.run_block(xb, noise, offs, None, mode)?;
                let dpad = self.atoms.dpad;
                for (kk, &off) in offs.iter().enumerate() {
                    if offsets.is_empty() {
                        break;
                    }
                    let set = &mut out[first + kk];
                    let shift = if off == u32::MAX {
                        0.0
                    } else {
                        self.biases.shift(sets[first + kk])
                    };
                    for b in 0..block {
                        let o = (b * k + kk) * dpad;
                        set.means.extend_from_slice(&means[o..o + d]);
                        let parts = (0..nparts).map(|p| {
                            let o = ((p * block + b) * k + kk) * STAT;
                            let mut r = [0.0f32; STAT];
                            r.copy_from_slice(&stats[o..o + STAT]);
                            r
                        });
                        set.stats.push(merge_stats(parts, shift));
                    }
                }
                if gi == 0 {
                    for b in 0..block {
                        let best = (0..nparts)
                            .map(|p| {
                                let o = (p * block + b) * 2;
                                (f32::from_bits(near[o]), near[o + 1])
                            })
                            .filter(|&(_, i)| i != u32::MAX)
                            .min_by(|a, b| a.0.total_cmp(&b.0).then(a.1.cmp(&b.1)))
                            .ok_or_else(|| backend_error("a row found no nearest atom"))?;
                        nearest.push(Neighbor {
                            index: best.1 as usize,
                            dist2: best.0 as f64,
                        });
                    }
                }
            }
            r0 += block;
        }
        if keep {
            kept.remember(x, noise.s);
        }
        Ok(PassOutput { sets: out, nearest })
    }

    fn device_seconds(&self) -> Option<f64> {
        self.timer.as_ref().map(PassTimer::total)
    }

    fn device_seconds_by_kernel(&self) -> Vec<(&'static str, f64)> {
        self.timer
            .as_ref()
            .map_or_else(Vec::new, PassTimer::by_kernel)
    }

    fn covariance_products(
        &self,
        x: &[f32],
        noise: Noise,
        set: WeightSet,
        means: &[f32],
        g: &[f32],
    ) -> Result<Vec<f32>> {
        let offsets = self.check_call(x, noise, &[set])?;
        if means.len() != x.len() || g.len() != x.len() {
            return Err(Error::input(format!(
                "covariance_products: x has {} values but means has {} and g has {}",
                x.len(),
                means.len(),
                g.len()
            )));
        }
        let d = self.atoms.d;
        let rows = x.len() / d;
        let kept = self.cache.lock();
        let use_kept = kept.holds(x, noise.s);
        let mut out = Vec::with_capacity(x.len());
        let mut r0 = 0;
        while r0 < rows {
            let block = self.row_block(rows - r0, 1)?;
            let range = r0 * d..(r0 + block) * d;
            let mut gm = Vec::with_capacity(2 * block * d);
            gm.extend_from_slice(&g[range.clone()]);
            gm.extend_from_slice(&means[range.clone()]);
            let mode = if use_kept {
                Kept::Read(&kept.buffer, r0 as u32)
            } else {
                Kept::Ignore
            };
            let BlockOutput {
                merged: cg,
                stats,
                nparts,
                ..
            } = self.run_block(&x[range.clone()], noise, &offsets, Some(&gm), mode)?;
            // acc/S0 = Σ c a / S0 with c = w ⟨a − m, g⟩; C·g = that − m_b · SC/S0 (SC and S0
            // merged in float64).
            for (b, (row, m)) in cg
                .chunks(self.atoms.dpad)
                .zip(means[range].chunks(d))
                .enumerate()
            {
                let ratio = coefficient_ratio((0..nparts).map(|p| {
                    let o = (p * block + b) * STAT;
                    [stats[o], stats[o + 1], stats[o + 4]]
                }));
                out.extend(
                    row[..d]
                        .iter()
                        .zip(m)
                        .map(|(&c, &mv)| (c as f64 - mv as f64 * ratio) as f32),
                );
            }
            r0 += block;
        }
        Ok(out)
    }
}

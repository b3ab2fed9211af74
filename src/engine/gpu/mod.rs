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

mod atoms;
mod device;
mod kernels;
mod shaders;

use std::sync::Mutex;
use std::time::Duration;

pub use atoms::{Storage, f16_stored, stored_values};
pub use device::{AdapterInfoRow, list_adapters};

use super::{Backend, BiasId, Neighbor, Noise, PassOutput, RowStats, WeightedMean, Weights};
use crate::{Error, Result};
use atoms::ChunkRange;
use device::{Gpu, backend_error};
use kernels::{BlockBuffers, COLS, PairOutputs, Params, Pipelines, RowTile, Step, WaveShape};

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

struct AtomChunk {
    range: ChunkRange,
    buffer: wgpu::Buffer,
}
/// Per-call buffers, grown on demand and reused.
#[derive(Default)]
struct Workspace {
    buffers: Vec<(String, wgpu::Buffer)>,
}

impl Workspace {
    /// The buffer called `name` with at least `size` bytes (re-created larger when needed).
    fn get(&mut self, gpu: &Gpu, name: &str, size: u64, usage: wgpu::BufferUsages) -> wgpu::Buffer {
        let size = size.max(16).next_multiple_of(16);
        if let Some((_, b)) = self
            .buffers
            .iter()
            .find(|(n, b)| n == name && b.size() >= size)
        {
            return b.clone();
        }
        self.buffers.retain(|(n, _)| n != name);
        let b = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some(name),
            size,
            usage,
            mapped_at_creation: false,
        });
        self.buffers.push((name.to_owned(), b.clone()));
        b
    }
}

/// The distances ‖x_b − s a_i‖² of the last pass, kept on the device (B × N float32) for the
/// C·g pass that follows on the same x (and the pass's own further groups of sets).
struct KeptDistances {
    buffer: wgpu::Buffer,
    /// The rows and s they were computed for; None while the buffer holds nothing usable.
    key: Option<(Vec<f32>, f32)>,
}

/// Default largest kept-distance buffer (B × N float32) a pass allocates, so that keeping
/// never costs more device memory than the CPU backend's weight cache; larger passes put their
/// distances in the wave scratch and the C·g pass recomputes them.
const KEPT_DISTANCES_MAX_BYTES: u64 = 256 << 20;

/// What a block does with the kept distances.
#[derive(Clone, Copy)]
enum Kept<'a> {
    Ignore,
    /// Write this block's distances, its first row being global row `row_base`.
    Write(&'a wgpu::Buffer, u32),
    /// Read them instead of computing them.
    Read(&'a wgpu::Buffer, u32),
}

/// Timestamp queries around every compute pass (adapters with TIMESTAMP_QUERY). A block
/// records each dispatch in a compute pass of its own, so that the device time splits by
/// kernel, when it has at most TIMED_PASSES dispatches; otherwise one pass times them all.
struct PassTimer {
    /// Two timestamps per pass: its beginning and its end.
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period: f64,
    times: Mutex<DeviceTimes>,
}

/// Compute passes one block may time separately.
const TIMED_PASSES: usize = 128;

/// Device seconds so far: from the first pass's beginning to the last pass's end of each
/// block, summed; and per kernel (the sum of its passes' durations).
#[derive(Default)]
struct DeviceTimes {
    total: f64,
    by_kernel: Vec<(&'static str, f64)>,
}

impl DeviceTimes {
    fn add(&mut self, kernel: &'static str, seconds: f64) {
        match self.by_kernel.iter_mut().find(|(k, _)| *k == kernel) {
            Some((_, s)) => *s += seconds,
            None => self.by_kernel.push((kernel, seconds)),
        }
    }
}

/// One dispatch of a block: the kernel and the wave it covers.
#[derive(Clone, Copy)]
enum Dispatch {
    Distances(usize, PairOutputs),
    Weights(usize),
    Sums(usize),
    Merge,
}

impl Dispatch {
    fn kernel(self) -> &'static str {
        match self {
            Dispatch::Distances(..) => "distances",
            Dispatch::Weights(_) => "split_weights",
            Dispatch::Sums(_) => "weighted_sums",
            Dispatch::Merge => "merge_partials",
        }
    }
}

/// What one block returns: merged outputs (rows × K × dpad), raw partial stats
/// (P × rows × K × STAT), raw partial nearest (P × rows × 2), and P.
type BlockOutput = (Vec<f32>, Vec<f32>, Vec<u32>, usize);

/// How a block of rows walks the atoms: splits of `split_len` atoms (the last of a binding
/// shorter), grouped into waves of at most `wave_splits` splits that share the scratch.
#[derive(Clone, Copy, Debug)]
struct SplitPlan {
    split_len: usize,
    wave_splits: usize,
}

/// The GPU implementation of [`Backend`].
pub struct GpuBackend {
    gpu: Gpu,
    n: usize,
    d: usize,
    /// D rounded up to 16 (atoms::padded_dim).
    dpad: usize,
    storage: Storage,
    /// vec4<u32> words per atom row.
    stride4: usize,
    chunks: Vec<AtomChunk>,
    table: wgpu::Buffer,
    /// All registered biases, each N values shifted by its max, concatenated.
    bias_host: Vec<f32>,
    bias_shift: Vec<f64>,
    bias_buf: wgpu::Buffer,
    pipelines: Pipelines,
    kept: Mutex<KeptDistances>,
    timer: Option<PassTimer>,
    params: wgpu::Buffer,
    /// Bytes allowed for one per-call binding (partials, x, outputs).
    binding_budget: u64,
    /// Bytes allowed for the scratch of one wave (distances, projections, weights).
    scratch_budget: u64,
    /// Largest kept-distance buffer.
    kept_budget: u64,
    target_workgroups: usize,
    tile_dims: usize,
    tile_rows: Option<RowTile>,
    timeout: Duration,
    cpu_adapter: bool,
    work: Mutex<Workspace>,
}

const STORAGE_RW: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

impl GpuBackend {
    /// Uploads the N × D row-major `atoms` to the best adapter (see [`list_adapters`]) and
    /// builds the pipelines.
    pub fn new(atoms: &[f32], d: usize, opts: GpuOptions) -> Result<GpuBackend> {
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
        let tile_rows = match opts.tile_rows {
            None => None,
            Some(16) => Some(RowTile::Small),
            Some(64) => Some(RowTile::Large),
            Some(other) => {
                return Err(Error::config(
                    "tile_rows",
                    format!("{other} rows per tile; allowed: 16 or 64"),
                ));
            }
        };
        let sums_block_rows = opts.sums_block_rows.unwrap_or(4);
        if sums_block_rows != 4 && sums_block_rows != 8 {
            return Err(Error::config(
                "sums_block_rows",
                format!("{sums_block_rows} rows per thread; allowed: 4 or 8"),
            ));
        }
        let gpu = Gpu::open(opts.adapter.as_deref())?;
        let lim = gpu.limits.clone();
        let tile_dims = opts.tile_dims.unwrap_or(16);
        let wg_bytes = kernels::distances_workgroup_bytes(tile_dims);
        if !(16..=256).contains(&tile_dims)
            || !tile_dims.is_multiple_of(16)
            || wg_bytes > lim.max_compute_workgroup_storage_size as usize
        {
            return Err(Error::config(
                "tile_dims",
                format!(
                    "{tile_dims} dimensions per step need {wg_bytes} bytes of workgroup memory; \
                     allowed: a multiple of 16 from 16 to 256, within the adapter's {} bytes",
                    lim.max_compute_workgroup_storage_size
                ),
            ));
        }
        let cpu_like = gpu.info.device_type == wgpu::DeviceType::Cpu;
        let dpad = atoms::padded_dim(d);
        if cpu_like {
            // distances.wgsl loops over D in steps of DK, each about DK + 30 iterations.
            let per_invocation = d.div_ceil(tile_dims) * (tile_dims + 30);
            if per_invocation > CPU_ADAPTER_LOOP_LIMIT {
                return Err(backend_error(format!(
                    "D = {d} needs about {per_invocation} shader loop iterations per \
                     invocation, more than this software adapter ({}) runs in one; use the \
                     CPU backend",
                    gpu.info.name
                )));
            }
        }
        let enc = atoms::encode(atoms, d, opts.storage)?;
        let adapter_binding = lim.max_storage_buffer_binding_size.min(lim.max_buffer_size);
        let max_binding = opts
            .max_binding_bytes
            .map_or(adapter_binding, |m| m.min(adapter_binding));
        let ranges = atoms::split(n, 4 * enc.stride as u64, max_binding & !15)?;
        let target_workgroups = opts
            .target_workgroups
            .unwrap_or(if cpu_like { 16 } else { 1024 })
            .max(1);
        let binding_budget = adapter_binding.min(256 << 20);
        let scratch_budget = opts
            .scratch_bytes
            .unwrap_or(256 << 20)
            .min(adapter_binding)
            .max(1);
        let total_bytes = enc.words.len() as u64 * 4;

        let (chunks, table, bias_buf, params, pipelines) = gpu.scoped(
            &format!(
                "uploading {n} atoms × {d} ({} storage, {:.1} MB in {} binding(s) of at most {} \
                 bytes) and building pipelines",
                opts.storage.name(),
                total_bytes as f64 / 1e6,
                ranges.len(),
                max_binding
            ),
            || {
                let chunks: Vec<AtomChunk> = ranges
                    .iter()
                    .map(|&range| {
                        let words = &enc.words
                            [range.start * enc.stride..(range.start + range.len) * enc.stride];
                        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                            label: Some("atoms"),
                            size: (words.len() as u64 * 4).next_multiple_of(16),
                            usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                            mapped_at_creation: false,
                        });
                        gpu.queue
                            .write_buffer(&buffer, 0, bytemuck::cast_slice(words));
                        AtomChunk { range, buffer }
                    })
                    .collect();
                let table = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("u8 table"),
                    size: 1024,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                gpu.queue
                    .write_buffer(&table, 0, bytemuck::cast_slice(&enc.table));
                let bias_buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("biases"),
                    size: 16,
                    usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let params = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("params"),
                    size: std::mem::size_of::<Params>() as u64,
                    usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                    mapped_at_creation: false,
                });
                let pipelines = Pipelines::build(
                    &gpu,
                    opts.storage.shader_code(),
                    opts.trusted_shaders,
                    tile_dims,
                    sums_block_rows,
                );
                Ok((chunks, table, bias_buf, params, pipelines))
            },
        )?;
        // Replaced by a B × N buffer at the first pass that fits one binding.
        let no_kept = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kept distances"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        // Make the upload finish (and fail) here rather than in the first pass.
        gpu.device
            .poll(wgpu::PollType::Wait {
                submission_index: None,
                timeout: Some(opts.timeout),
            })
            .map_err(|e| backend_error(format!("uploading atoms: {e}")))?;
        gpu.check_alive("uploading atoms")?;
        let timer = gpu.timestamps.then(|| PassTimer {
            queries: gpu.device.create_query_set(&wgpu::QuerySetDescriptor {
                label: Some("pass timestamps"),
                ty: wgpu::QueryType::Timestamp,
                count: 2 * TIMED_PASSES as u32,
            }),
            resolved: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved timestamps"),
                size: 16 * TIMED_PASSES as u64,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            period: gpu.queue.get_timestamp_period() as f64,
            times: Mutex::new(DeviceTimes::default()),
        });
        Ok(GpuBackend {
            gpu,
            n,
            d,
            dpad,
            storage: opts.storage,
            stride4: enc.stride / 4,
            chunks,
            table,
            bias_host: Vec::new(),
            bias_shift: Vec::new(),
            bias_buf,
            pipelines,
            kept: Mutex::new(KeptDistances {
                buffer: no_kept,
                key: None,
            }),
            timer,
            params,
            binding_budget,
            scratch_budget,
            kept_budget: opts.kept_bytes.unwrap_or(KEPT_DISTANCES_MAX_BYTES),
            target_workgroups,
            tile_dims,
            tile_rows,
            timeout: opts.timeout,
            cpu_adapter: cpu_like,
            work: Mutex::new(Workspace::default()),
        })
    }

    /// Number of storage bindings the atom store is split into.
    pub fn bindings(&self) -> usize {
        self.chunks.len()
    }

    /// The adapter in use.
    pub fn adapter_info(&self) -> wgpu::AdapterInfo {
        self.gpu.info.clone()
    }

    /// Largest row block for `rows` rows and `k` sets: x (and g, m), the outputs and the
    /// partial sums of at least one split per binding must fit a binding.
    fn row_block(&self, rows: usize, k: usize) -> Result<usize> {
        let dpad = self.dpad as u64;
        let per_row = (self.chunks.len() as u64 * k as u64 * dpad * 4).max(2 * dpad * 4);
        // Room in the scratch for splits of SPLIT_MAX atoms: (2 + k) floats per row and atom.
        let by_scratch = self.scratch_budget / ((2 + k) as u64 * SPLIT_MAX as u64 * 4);
        let block = ((self.binding_budget / per_row).min(by_scratch.max(1)) as usize).min(8192);
        if block == 0 {
            return Err(backend_error(format!(
                "D = {} with {} atom bindings and {k} sets needs more than the {} bytes one \
                 binding may hold for even one row",
                self.d,
                self.chunks.len(),
                self.binding_budget
            )));
        }
        Ok(rows.min(block))
    }

    /// Split length and wave size for a block of `rows` rows and `k` sets: enough splits to
    /// give the weighted-sums dispatch about `target_workgroups` workgroups, no more partial
    /// sums than a binding (and the merge kernel) holds, splits of at most SPLIT_MAX atoms.
    fn split_plan(&self, rows: usize, k: usize) -> Result<SplitPlan> {
        let rk = rows * k;
        let tile_rows = self.pipelines.sums_tile_rows(rk, self.tile_rows);
        let tiles = self.dpad.div_ceil(COLS) * rk.div_ceil(tile_rows);
        let wanted = self.target_workgroups.div_ceil(tiles).max(1);
        let by_memory = (self.binding_budget / (rk as u64 * self.dpad as u64 * 4)) as usize;
        let mut most = PMAX.min(by_memory);
        if self.cpu_adapter {
            // merge_partials.wgsl loops over the P slots for each of its ⌈dpad/64⌉ columns.
            most = most.min(CPU_ADAPTER_LOOP_LIMIT / (self.dpad.div_ceil(64) + 3));
        }
        let slots = |len: usize| {
            self.chunks
                .iter()
                .map(|c| c.range.len.div_ceil(len))
                .sum::<usize>()
        };
        // Scratch per atom of a wave: distances and projections (rows) and weights (rk).
        let per_atom = ((2 * rows + rk) * 4) as u64;
        let fit = (self.scratch_budget / per_atom) as usize / COLS * COLS;
        if fit == 0 {
            return Err(backend_error(format!(
                "{COLS} atoms for {rows} rows and {k} sets need {} bytes of scratch, more than \
                 the {} allowed",
                per_atom * COLS as u64,
                self.scratch_budget
            )));
        }
        let mut split_len = self
            .n
            .div_ceil(wanted)
            .next_multiple_of(COLS)
            .min(SPLIT_MAX)
            .min(fit);
        while slots(split_len) > most && split_len < fit {
            split_len = (2 * split_len).min(fit);
        }
        if slots(split_len) > most {
            return Err(backend_error(format!(
                "{} atoms in splits of {split_len} need {} partial sums, more than the {most} \
                 that fit; allow more scratch or pass fewer rows",
                self.n,
                slots(split_len)
            )));
        }
        if self.cpu_adapter && split_len > SPLIT_MAX {
            return Err(backend_error(format!(
                "{} atoms need splits of {split_len} atoms, longer than this software adapter \
                 runs in one shader invocation; use the CPU backend",
                self.n
            )));
        }
        // distances.wgsl's grid: at most 65535 tiles of COLS atoms along x.
        let wave_splits = (fit / split_len).min(65535 * COLS / split_len).max(1);
        Ok(SplitPlan {
            split_len,
            wave_splits,
        })
    }

    /// One submission over all atoms for `x` (rows × D) and the sets at `offsets` (≤ KMAX);
    /// with `gm` (g rows then m rows, rows × D each) the covariance pass. Returns the merged
    /// rows × K × dpad outputs, the raw partial stats (P × rows × K × STAT) and the raw
    /// partial nearest (P × rows × 2).
    fn run_block(
        &self,
        x: &[f32],
        noise: Noise,
        offsets: &[u32],
        gm: Option<&[f32]>,
        kept: Kept,
    ) -> Result<BlockOutput> {
        let (d, dpad) = (self.d, self.dpad);
        let rows = x.len() / d;
        let k = offsets.len();
        let rk = rows * k;
        let plan = self.split_plan(rows, k)?;
        let gpu = &self.gpu;
        let mut work = self.work.lock().unwrap_or_else(|e| e.into_inner());

        // Waves: runs of whole splits of one binding that share the scratch.
        let wave_cap = plan.wave_splits * plan.split_len;
        let w_ld = self
            .chunks
            .iter()
            .map(|c| c.range.len.min(wave_cap))
            .max()
            .unwrap_or(1);
        let mut waves: Vec<(usize, Step, usize)> = Vec::new();
        let mut nparts = 0usize;
        for (ci, c) in self.chunks.iter().enumerate() {
            let mut off = 0;
            while off < c.range.len {
                let len = (c.range.len - off).min(wave_cap);
                let splits = len.div_ceil(plan.split_len);
                let base = c.range.start + off;
                let (dist_ld, dist_col, dist_row0) = match kept {
                    Kept::Write(_, r) | Kept::Read(_, r) => (self.n, base, r as usize),
                    Kept::Ignore => (w_ld, 0, 0),
                };
                let step = Step {
                    n: len as u32,
                    chunk_off: off as u32,
                    base: base as u32,
                    part_base: nparts as u32,
                    split_len: plan.split_len as u32,
                    dist_ld: dist_ld as u32,
                    dist_col: dist_col as u32,
                    dist_row0: dist_row0 as u32,
                    w_ld: w_ld as u32,
                    pad: [0; 3],
                };
                waves.push((ci, step, splits));
                nparts += splits;
                off += len;
            }
        }
        let acc_bytes = (nparts * rk * dpad * 4) as u64;
        let stats_bytes = (nparts * rk * STAT * 4) as u64;
        let near_bytes = (nparts * rows * 2 * 4) as u64;
        let out_bytes = (rk * dpad * 4) as u64;
        let pad_rows = |v: &[f32], out: &mut Vec<f32>| {
            for row in v.chunks(d) {
                out.extend_from_slice(row);
                out.resize(out.len() + dpad - d, 0.0);
            }
        };
        let mut x_pad = Vec::with_capacity(rows * dpad);
        pad_rows(x, &mut x_pad);
        let mut gm_pad = Vec::new();
        if let Some(gm) = gm {
            gm_pad.reserve(2 * rows * dpad);
            pad_rows(gm, &mut gm_pad);
        }
        gpu.scoped(
            &format!("pass over {} atoms for {rows} rows", self.n),
            || {
                let xb = work.get(gpu, "x", (rows * dpad * 4) as u64, STORAGE_RW);
                let gmb = work.get(gpu, "g, m", (gm_pad.len() * 4) as u64, STORAGE_RW);
                let distb = match kept {
                    Kept::Write(b, _) | Kept::Read(b, _) => b.clone(),
                    Kept::Ignore => {
                        work.get(gpu, "distances", (rows * w_ld * 4) as u64, STORAGE_RW)
                    }
                };
                let projb = if gm.is_some() {
                    work.get(gpu, "projections", (rows * w_ld * 4) as u64, STORAGE_RW)
                } else {
                    work.get(gpu, "no projections", 16, STORAGE_RW)
                };
                let weightsb = work.get(gpu, "weights", (rk * w_ld * 4) as u64, STORAGE_RW);
                let accb = work.get(gpu, "partial sums", acc_bytes, STORAGE_RW);
                let statb = work.get(gpu, "partial stats", stats_bytes, STORAGE_RW);
                let nearb = work.get(gpu, "partial nearest", near_bytes, STORAGE_RW);
                let outb = work.get(gpu, "outputs", out_bytes, STORAGE_RW);
                let readb = work.get(
                    gpu,
                    "readback",
                    stats_bytes + near_bytes + out_bytes + 16 * TIMED_PASSES as u64,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                );
                gpu.queue.write_buffer(&xb, 0, bytemuck::cast_slice(&x_pad));
                if !gm_pad.is_empty() {
                    gpu.queue
                        .write_buffer(&gmb, 0, bytemuck::cast_slice(&gm_pad));
                }
                let mut bias_off = [u32::MAX; 4];
                bias_off[..k].copy_from_slice(offsets);
                let params = Params {
                    rows: rows as u32,
                    dim: d as u32,
                    dpad: dpad as u32,
                    nsets: k as u32,
                    s: noise.s as f32,
                    inv2v: (0.5 / noise.v) as f32,
                    stride4: self.stride4 as u32,
                    nparts: nparts as u32,
                    bias_off,
                };
                gpu.queue
                    .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
                // Each wave reads its Step at an aligned offset of one uniform buffer.
                let align = (std::mem::size_of::<Step>() as u64)
                    .next_multiple_of(gpu.limits.min_uniform_buffer_offset_alignment as u64);
                let stepb = work.get(
                    gpu,
                    "steps",
                    waves.len() as u64 * align,
                    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                );
                let mut bytes = vec![0u8; waves.len() * align as usize];
                for (i, (_, step, _)) in waves.iter().enumerate() {
                    let o = i * align as usize;
                    bytes[o..o + std::mem::size_of::<Step>()]
                        .copy_from_slice(bytemuck::bytes_of(step));
                }
                gpu.queue.write_buffer(&stepb, 0, &bytes);
                let buffers = BlockBuffers {
                    params: &self.params,
                    steps: &stepb,
                    table: &self.table,
                    bias: &self.bias_buf,
                    xs: &xb,
                    gm: &gmb,
                    dist: &distb,
                    proj: &projb,
                    weights: &weightsb,
                    part_acc: &accb,
                    part_stats: &statb,
                    part_near: &nearb,
                    out: &outb,
                };
                let pair_outputs = match (gm.is_some(), kept) {
                    (true, Kept::Read(..)) => Some(PairOutputs::Projections),
                    (true, _) => Some(PairOutputs::DistancesAndProjections),
                    (false, Kept::Read(..)) => None,
                    (false, _) => Some(PairOutputs::Distances),
                };
                let shapes: Vec<WaveShape> = waves
                    .iter()
                    .enumerate()
                    .map(|(i, (_, step, splits))| WaveShape {
                        step_offset: i as u64 * align,
                        atoms: step.n as usize,
                        splits: *splits,
                        rows,
                        sets: k,
                        dpad,
                        tile: self.tile_rows,
                    })
                    .collect();
                let mut dispatches = Vec::with_capacity(3 * waves.len() + 1);
                for w in 0..waves.len() {
                    if let Some(outputs) = pair_outputs {
                        dispatches.push(Dispatch::Distances(w, outputs));
                    }
                    dispatches.push(Dispatch::Weights(w));
                    dispatches.push(Dispatch::Sums(w));
                }
                dispatches.push(Dispatch::Merge);
                let record = |cp: &mut wgpu::ComputePass, dispatch: Dispatch| {
                    let p = &self.pipelines;
                    let atoms = |w: usize| &self.chunks[waves[w].0].buffer;
                    match dispatch {
                        Dispatch::Distances(w, outputs) => {
                            p.distances(gpu, cp, outputs, atoms(w), &buffers, &shapes[w])
                        }
                        Dispatch::Weights(w) => {
                            p.split_weights(gpu, cp, gm.is_some(), &buffers, &shapes[w])
                        }
                        Dispatch::Sums(w) => {
                            p.weighted_sums(gpu, cp, atoms(w), &buffers, &shapes[w])
                        }
                        Dispatch::Merge => p.merge(gpu, cp, &buffers, rows, k),
                    }
                };
                // Timed passes: one per dispatch when they fit the query set, else one in all.
                let timed = match &self.timer {
                    Some(_) if dispatches.len() <= TIMED_PASSES => dispatches.len(),
                    Some(_) => 1,
                    None => 0,
                };
                let pass = |enc: &mut wgpu::CommandEncoder, i: usize| {
                    let t = self.timer.as_ref().filter(|_| timed > 0);
                    let desc = wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: t.map(|t| wgpu::ComputePassTimestampWrites {
                            query_set: &t.queries,
                            beginning_of_pass_write_index: Some(2 * i as u32),
                            end_of_pass_write_index: Some(2 * i as u32 + 1),
                        }),
                    };
                    enc.begin_compute_pass(&desc).forget_lifetime()
                };
                let mut enc = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                if timed > 1 {
                    for (i, &dispatch) in dispatches.iter().enumerate() {
                        record(&mut pass(&mut enc, i), dispatch);
                    }
                } else {
                    let mut cp = pass(&mut enc, 0);
                    for &dispatch in &dispatches {
                        record(&mut cp, dispatch);
                    }
                }
                enc.copy_buffer_to_buffer(&statb, 0, &readb, 0, stats_bytes);
                enc.copy_buffer_to_buffer(&nearb, 0, &readb, stats_bytes, near_bytes);
                enc.copy_buffer_to_buffer(&outb, 0, &readb, stats_bytes + near_bytes, out_bytes);
                let results = stats_bytes + near_bytes + out_bytes;
                let stamp_bytes = 16 * timed as u64;
                if let Some(t) = self.timer.as_ref().filter(|_| timed > 0) {
                    enc.resolve_query_set(&t.queries, 0..2 * timed as u32, &t.resolved, 0);
                    enc.copy_buffer_to_buffer(&t.resolved, 0, &readb, results, stamp_bytes);
                }
                let index = gpu.queue.submit([enc.finish()]);
                let bytes = gpu.read_back(&readb, results + stamp_bytes, index, self.timeout)?;
                let (bytes, stamps) = bytes.split_at(results as usize);
                if let Some(t) = self.timer.as_ref().filter(|_| timed > 0) {
                    let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(stamps);
                    let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 * t.period * 1e-9;
                    let mut times = t.times.lock().unwrap_or_else(|e| e.into_inner());
                    times.total += secs(ticks[0], ticks[2 * timed - 1]);
                    if timed > 1 {
                        for (i, dispatch) in dispatches.iter().enumerate() {
                            times.add(dispatch.kernel(), secs(ticks[2 * i], ticks[2 * i + 1]));
                        }
                    }
                }
                let (sb, rest) = bytes.split_at(stats_bytes as usize);
                let (nb, ob) = rest.split_at(near_bytes as usize);
                Ok((
                    bytemuck::pod_collect_to_vec(ob),
                    bytemuck::pod_collect_to_vec(sb),
                    bytemuck::pod_collect_to_vec(nb),
                    nparts,
                ))
            },
        )
    }

    fn check_call(&self, x: &[f32], noise: Noise, sets: &[Weights]) -> Result<Vec<u32>> {
        if x.is_empty() || !x.len().is_multiple_of(self.d) {
            return Err(Error::input(format!(
                "gpu backend: {} particle values do not split into rows of D = {}",
                x.len(),
                self.d
            )));
        }
        if !(noise.s.is_finite() && noise.v.is_finite() && noise.v > 0.0) {
            return Err(Error::input(format!(
                "gpu backend: noise needs finite s and v > 0, got s = {}, v = {}",
                noise.s, noise.v
            )));
        }
        sets.iter()
            .map(|w| match *w {
                Weights::Prior => Ok(u32::MAX),
                Weights::Biased(BiasId(i)) if i < self.bias_shift.len() => Ok((i * self.n) as u32),
                Weights::Biased(BiasId(i)) => Err(Error::input(format!(
                    "gpu backend: bias {i} was never registered ({} are)",
                    self.bias_shift.len()
                ))),
            })
            .collect()
    }

    fn shift(&self, set: Weights) -> f64 {
        match set {
            Weights::Prior => 0.0,
            Weights::Biased(BiasId(i)) => self.bias_shift[i],
        }
    }
}

/// Merges the partial statistics of one (row, set) in float64. With M = max_p M_p over
/// non-empty slots and α_p = e^{M_p − M}: S0 = Σ α S0_p, S2 = Σ α² S2_p,
/// SL = Σ α (SL_p + (M_p − M) S0_p); then log Z = M + ln S0, ESS = S0²/S2, max w = 1/S0
/// (the largest term is e⁰), entropy = ln S0 − SL/S0.
fn merge_stats(parts: impl Iterator<Item = [f32; STAT]> + Clone, shift: f64) -> RowStats {
    let m = parts
        .clone()
        .filter(|p| p[1] > 0.0)
        .map(|p| p[0] as f64)
        .fold(f64::NEG_INFINITY, f64::max);
    let (mut s0, mut s2, mut sl) = (0.0, 0.0, 0.0);
    for p in parts.filter(|p| p[1] > 0.0) {
        let dm = p[0] as f64 - m;
        let a = dm.exp();
        s0 += a * p[1] as f64;
        s2 += a * a * p[2] as f64;
        sl += a * (p[3] as f64 + dm * p[1] as f64);
    }
    RowStats {
        log_norm: m + s0.ln() + shift,
        ess: s0 * s0 / s2,
        max_weight: 1.0 / s0,
        entropy: s0.ln() - sl / s0,
    }
}

/// SC/S0 of one row from its partials [M_p, S0_p, SC_p], merged in float64 with
/// α_p = e^{M_p − M} (as the merge kernel does for acc and S0).
fn coefficient_ratio(parts: impl Iterator<Item = [f32; 3]> + Clone) -> f64 {
    let m = parts
        .clone()
        .filter(|p| p[1] > 0.0)
        .map(|p| p[0] as f64)
        .fold(f64::NEG_INFINITY, f64::max);
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
            .tile_rows
            .map_or("by batch".to_string(), |t| t.rows().to_string());
        format!(
            "gpu: {} ({:?}, {:?}), {} atom storage in {} binding(s), tiles: {} dims, {rows} rows, \
             {}×4 sums block",
            self.gpu.info.name,
            self.gpu.info.backend,
            self.gpu.info.device_type,
            self.storage.name(),
            self.chunks.len(),
            self.tile_dims,
            self.pipelines.sums_block_rows(),
        )
    }
    fn atoms(&self) -> usize {
        self.n
    }
    fn dim(&self) -> usize {
        self.d
    }

    fn add_bias(&mut self, bias: &[f64]) -> Result<BiasId> {
        let max = super::check_bias("gpu", bias, self.n)?;
        let bytes = (self.bias_host.len() + self.n) as u64 * 4;
        if bytes > self.gpu.limits.max_storage_buffer_binding_size {
            return Err(backend_error(format!(
                "{} biases of {} atoms need {bytes} bytes, more than one binding holds",
                self.bias_shift.len() + 1,
                self.n
            )));
        }
        self.bias_host
            .extend(bias.iter().map(|&b| (b - max).max(-1e30) as f32));
        let gpu = &self.gpu;
        let host = &self.bias_host;
        self.bias_buf = gpu.scoped("uploading a bias vector", || {
            let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("biases"),
                size: bytes.next_multiple_of(16),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            gpu.queue.write_buffer(&buf, 0, bytemuck::cast_slice(host));
            Ok(buf)
        })?;
        self.bias_shift.push(max);
        Ok(BiasId(self.bias_shift.len() - 1))
    }

    fn weighted_means(&self, x: &[f32], noise: Noise, sets: &[Weights]) -> Result<PassOutput> {
        let offsets = self.check_call(x, noise, sets)?;
        let rows = x.len() / self.d;
        let d = self.d;
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
        let kept_bytes = (rows * self.n * 4) as u64;
        let keep = kept_bytes <= self.kept_budget
            && kept_bytes <= self.gpu.limits.max_storage_buffer_binding_size
            && kept_bytes <= self.gpu.limits.max_buffer_size;
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        if keep {
            kept.key = None;
            if kept.buffer.size() < kept_bytes {
                kept.buffer = self.gpu.device.create_buffer(&wgpu::BufferDescriptor {
                    label: Some("kept distances"),
                    size: kept_bytes.next_multiple_of(16),
                    usage: wgpu::BufferUsages::STORAGE,
                    mapped_at_creation: false,
                });
            }
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
                let (means, stats, near, nparts) = self.run_block(xb, noise, offs, None, mode)?;
                let dpad = self.dpad;
                for (kk, &off) in offs.iter().enumerate() {
                    if offsets.is_empty() {
                        break;
                    }
                    let set = &mut out[first + kk];
                    let shift = if off == u32::MAX {
                        0.0
                    } else {
                        self.shift(sets[first + kk])
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
            kept.key = Some((x.to_vec(), noise.s as f32));
        }
        Ok(PassOutput { sets: out, nearest })
    }

    fn device_seconds(&self) -> Option<f64> {
        self.timer
            .as_ref()
            .map(|t| t.times.lock().unwrap_or_else(|e| e.into_inner()).total)
    }

    fn device_seconds_by_kernel(&self) -> Vec<(&'static str, f64)> {
        self.timer.as_ref().map_or_else(Vec::new, |t| {
            t.times
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .by_kernel
                .clone()
        })
    }

    fn covariance_products(
        &self,
        x: &[f32],
        noise: Noise,
        set: Weights,
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
        let rows = x.len() / self.d;
        let d = self.d;
        let kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let use_kept = matches!(&kept.key, Some((kx, ks)) if *ks == noise.s as f32 && kx == x);
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
            let (cg, stats, _, nparts) =
                self.run_block(&x[range.clone()], noise, &offsets, Some(&gm), mode)?;
            // acc/S0 = Σ c a / S0 with c = w ⟨a − m, g⟩; C·g = that − m_b · SC/S0 (SC and S0
            // merged in float64).
            for (b, (row, m)) in cg.chunks(self.dpad).zip(means[range].chunks(d)).enumerate() {
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

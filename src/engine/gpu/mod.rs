//! The wgpu backend: WGSL compute kernels (shaders/) over an atom store kept on the device.
//!
//! One pass (weighted_means.wgsl) streams the atoms of one storage binding, split among
//! workgroups along N, against tiles of TR particle rows; each workgroup leaves partial
//! (M, S0, S2, SL, SC, Σ e^{ℓ−M} a) sums for its atom range, merged exactly by
//! merge_partials.wgsl (means, C·g) and on the host in float64 (row statistics, nearest).
//! Atom sets larger than one binding are split over as many bindings as the adapter's
//! `max_storage_buffer_binding_size` requires, one dispatch each, into the same partials.
//! An atom set larger than GPU memory is refused with an out-of-memory error naming the
//! sizes, not streamed: re-uploading the atoms every pass would make the GPU slower than the
//! CPU backend, which is then the right tool.
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
mod shaders;

use std::sync::Mutex;
use std::time::Duration;

pub use atoms::{Storage, f16_stored, stored_values};
pub use device::{AdapterInfoRow, list_adapters};

use super::{Backend, BiasId, Neighbor, Noise, PassOutput, RowStats, WeightedMean, Weights};
use crate::{Error, Result};
use atoms::ChunkRange;
use device::{Gpu, backend_error};

/// Rows per workgroup, atoms per tile and sets per pass: the constants of weighted_means.wgsl.
const TR: usize = 8;
const TA: usize = 32;
const KMAX: usize = 4;
/// Largest number of partial slots merge_partials.wgsl accepts.
const PMAX: usize = 2048;
/// Floats per partial statistics record.
const STAT: usize = 6;

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
    /// Workgroups to aim for per pass (atom splits × row tiles); default: 1024 on a GPU,
    /// 16 on a CPU adapter.
    pub target_workgroups: Option<usize>,
    /// Dimensions staged through workgroup memory per step (the `DK` override constant of
    /// weighted_means.wgsl), 1..=256; default 32. Workgroup memory grows as
    /// 4·(32·(DK+1) + 24·DK) + 7296 bytes and must fit the adapter's limit.
    pub tile_dims: Option<usize>,
    /// Longest wait for one submission before giving up with an error.
    pub timeout: Duration,
    /// Most loop iterations one shader invocation may run (estimated) before a split's atom
    /// range is continued in a further dispatch. Default: 30000 on a CPU adapter (Mesa's
    /// llvmpipe silently stops an invocation after 65535 loop iterations), unlimited otherwise.
    pub loop_budget: Option<u64>,
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
            timeout: Duration::from_secs(600),
            loop_budget: None,
        }
    }
}

/// The uniform `Params` of the shaders (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct Params {
    rows: u32,
    dim: u32,
    nsets: u32,
    nparts: u32,
    s: f32,
    inv2v: f32,
    stride: u32,
    /// Global index of the block's first row, for the kept distances.
    row_base: u32,
    bias_off: [u32; 4],
}

/// The uniform `Chunk` of weighted_means.wgsl.
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
struct ChunkParams {
    n: u32,
    base: u32,
    part_base: u32,
    per_split: u32,
    step_begin: u32,
    step_len: u32,
    first: u32,
    /// N, the row length of the kept distances.
    total: u32,
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

/// The distances ‖x_b − s a_i‖² of the last prior pass, kept on the device (B × N float32)
/// for the C·g pass that follows on the same x (weighted_means.wgsl, KEEP / KEPT).
struct KeptDistances {
    buffer: wgpu::Buffer,
    /// The rows and s they were computed for; None while the buffer holds nothing usable.
    key: Option<(Vec<f32>, f32)>,
}

/// Largest kept-distance buffer (B × N float32) a prior pass allocates, so that keeping never
/// costs more device memory than the CPU backend's weight cache; larger passes recompute.
const KEPT_DISTANCES_MAX_BYTES: u64 = 256 << 20;

/// What a block does with the kept distances.
#[derive(Clone, Copy)]
enum Kept<'a> {
    Ignore,
    /// Write this block's distances, its first row being global row `row_base`.
    Write(&'a wgpu::Buffer, u32),
    /// Read them instead of computing them (covariance pass).
    Read(&'a wgpu::Buffer, u32),
}

/// Timestamp queries around every pass (adapters with TIMESTAMP_QUERY).
struct PassTimer {
    /// Two timestamps: the beginning and the end of a block's compute pass.
    queries: wgpu::QuerySet,
    resolved: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period: f64,
    /// Device seconds over all passes so far.
    total: Mutex<f64>,
}

/// What one block returns: merged outputs (rows × K × D), raw partial stats
/// (P × rows × K × STAT), raw partial nearest (P × rows × 2), and P.
type BlockOutput = (Vec<f32>, Vec<f32>, Vec<u32>, usize);

/// The GPU implementation of [`Backend`].
pub struct GpuBackend {
    gpu: Gpu,
    n: usize,
    d: usize,
    storage: Storage,
    stride: usize,
    chunks: Vec<AtomChunk>,
    table: wgpu::Buffer,
    /// All registered biases, each N values shifted by its max, concatenated.
    bias_host: Vec<f32>,
    bias_shift: Vec<f64>,
    bias_buf: wgpu::Buffer,
    pass_means: wgpu::ComputePipeline,
    /// pass_means that also writes the distances (KEEP).
    pass_means_keep: wgpu::ComputePipeline,
    pass_cov: wgpu::ComputePipeline,
    /// pass_cov from kept distances (KEPT).
    pass_cov_kept: wgpu::ComputePipeline,
    merge: wgpu::ComputePipeline,
    kept: Mutex<KeptDistances>,
    timer: Option<PassTimer>,
    params: wgpu::Buffer,
    /// Bytes allowed for one per-call binding (partials, x, outputs).
    binding_budget: u64,
    target_workgroups: usize,
    tile_dims: usize,
    timeout: Duration,
    loop_budget: Option<u64>,
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
        if n >= u32::MAX as usize || d >= (1 << 28) {
            return Err(Error::input(format!(
                "gpu backend: N = {n}, D = {d} is too large for 32-bit indices"
            )));
        }
        let gpu = Gpu::open(opts.adapter.as_deref())?;
        let lim = gpu.limits.clone();
        let tile_dims = opts.tile_dims.unwrap_or(32);
        let wg_bytes = workgroup_bytes(tile_dims);
        if !(1..=256).contains(&tile_dims)
            || wg_bytes > lim.max_compute_workgroup_storage_size as usize
        {
            return Err(Error::config(
                "tile_dims",
                format!(
                    "{tile_dims} dimensions per step need {wg_bytes} bytes of workgroup memory; \
                     allowed: 1 to 256 and at most the adapter's {} bytes",
                    lim.max_compute_workgroup_storage_size
                ),
            ));
        }
        let enc = atoms::encode(atoms, d, opts.storage)?;
        let adapter_binding = lim.max_storage_buffer_binding_size.min(lim.max_buffer_size);
        let max_binding = opts
            .max_binding_bytes
            .map_or(adapter_binding, |m| m.min(adapter_binding));
        let ranges = atoms::split(n, 4 * enc.stride as u64, max_binding & !3)?;
        let cpu_like = gpu.info.device_type == wgpu::DeviceType::Cpu;
        let target_workgroups = opts
            .target_workgroups
            .unwrap_or(if cpu_like { 16 } else { 1024 })
            .max(1);
        let binding_budget = adapter_binding.min(256 << 20);
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
                let pipelines =
                    build_pipelines(&gpu, opts.storage, opts.trusted_shaders, tile_dims);
                Ok((chunks, table, bias_buf, params, pipelines))
            },
        )?;
        let Pipelines {
            means: pass_means,
            means_keep: pass_means_keep,
            cov: pass_cov,
            cov_kept: pass_cov_kept,
            merge,
        } = pipelines;
        // Replaced by a B × N buffer at the first prior pass that fits one binding.
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
                count: 2,
            }),
            resolved: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("resolved timestamps"),
                size: 16,
                usage: wgpu::BufferUsages::QUERY_RESOLVE | wgpu::BufferUsages::COPY_SRC,
                mapped_at_creation: false,
            }),
            period: gpu.queue.get_timestamp_period() as f64,
            total: Mutex::new(0.0),
        });
        Ok(GpuBackend {
            gpu,
            n,
            d,
            storage: opts.storage,
            stride: enc.stride,
            chunks,
            table,
            bias_host: Vec::new(),
            bias_shift: Vec::new(),
            bias_buf,
            pass_means,
            pass_means_keep,
            pass_cov,
            pass_cov_kept,
            merge,
            kept: Mutex::new(KeptDistances {
                buffer: no_kept,
                key: None,
            }),
            timer,
            params,
            binding_budget,
            target_workgroups,
            tile_dims,
            timeout: opts.timeout,
            loop_budget: opts
                .loop_budget
                .or(if cpu_like { Some(30_000) } else { None }),
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

    /// Largest row block and the partial slots per chunk for `rows` rows and `k` sets.
    fn plan(&self, rows: usize, k: usize) -> Result<(usize, Vec<usize>)> {
        let d = self.d as u64;
        let nchunks = self.chunks.len();
        // Row block: the partials of one slot per chunk, x (and g, m) and the outputs must fit.
        let per_row = (nchunks as u64 * k as u64 * d * 4).max(2 * d * 4);
        let mut block = (self.binding_budget / per_row) as usize / TR * TR;
        block = block.min(8192);
        if block == 0 {
            return Err(backend_error(format!(
                "D = {d} with {nchunks} atom bindings and {k} sets needs more than the \
                 {} bytes one binding may hold for even {TR} rows",
                self.binding_budget
            )));
        }
        let rows = rows.min(block);
        let row_tiles = rows.div_ceil(TR);
        let mut wanted = self.target_workgroups.div_ceil(row_tiles).max(nchunks);
        let mut most = PMAX;
        if let Some(budget) = self.loop_budget {
            // Under a loop budget, more splits beat more sequential dispatches per split; the
            // merge kernel then loops over the P partials for each of its ⌈D/64⌉ columns.
            let atoms_per_step =
                (budget / loop_iterations_per_tile(self.d, k, self.tile_dims)).max(1) as usize * TA;
            wanted = wanted.max(self.n.div_ceil(atoms_per_step));
            most = most.min((budget as usize / (self.d.div_ceil(64) + 2)).max(nchunks));
        }
        let by_memory = (self.binding_budget / (rows as u64 * k as u64 * d * 4)) as usize;
        let total = wanted.min(by_memory).min(most).max(nchunks);
        let splits = self
            .chunks
            .iter()
            .map(|c| {
                let share = (total * c.range.len / self.n).max(1);
                share.min(c.range.len.div_ceil(TA))
            })
            .collect();
        Ok((rows, splits))
    }

    /// One submission over all atom chunks for `x` (rows × D) and `sets` (≤ KMAX); with `gm`
    /// (g rows then m rows) the covariance pass. Returns the merged rows × K × D outputs, the
    /// raw partial stats (P × rows × K × STAT) and the raw partial nearest (P × rows × 2).
    fn run_block(
        &self,
        x: &[f32],
        noise: Noise,
        offsets: &[u32],
        splits: &[usize],
        gm: Option<&[f32]>,
        kept: Kept,
    ) -> Result<BlockOutput> {
        let rows = x.len() / self.d;
        let k = offsets.len();
        let d = self.d;
        let gpu = &self.gpu;
        let mut work = self.work.lock().unwrap();
        let mut part_base = Vec::with_capacity(splits.len());
        let mut per_split = Vec::with_capacity(splits.len());
        let mut nparts = 0usize;
        for (c, &s) in self.chunks.iter().zip(splits) {
            let per = c.range.len.div_ceil(s).next_multiple_of(TA);
            part_base.push(nparts);
            per_split.push(per);
            nparts += c.range.len.div_ceil(per);
        }
        if nparts > PMAX {
            return Err(backend_error(format!(
                "{nparts} partial sums (from {} atom bindings) exceed the merge kernel's \
                 {PMAX}; allow larger bindings",
                self.chunks.len()
            )));
        }
        let acc_bytes = (nparts * rows * k * d * 4) as u64;
        let stats_bytes = (nparts * rows * k * STAT * 4) as u64;
        let near_bytes = (nparts * rows * 2 * 4) as u64;
        let out_bytes = (rows * k * d * 4) as u64;
        gpu.scoped(
            &format!("pass over {} atoms for {rows} rows", self.n),
            || {
                let xb = work.get(gpu, "x", (rows * d * 4) as u64, STORAGE_RW);
                let gmb = work.get(gpu, "g, m", ((2 * rows * d + rows) * 4) as u64, STORAGE_RW);
                let accb = work.get(gpu, "partial sums", acc_bytes, STORAGE_RW);
                let statb = work.get(gpu, "partial stats", stats_bytes, STORAGE_RW);
                let nearb = work.get(gpu, "partial nearest", near_bytes, STORAGE_RW);
                let outb = work.get(gpu, "outputs", out_bytes, STORAGE_RW);
                let readb = work.get(
                    gpu,
                    "readback",
                    stats_bytes + near_bytes + out_bytes + 16,
                    wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
                );
                gpu.queue.write_buffer(&xb, 0, bytemuck::cast_slice(x));
                if let Some(gm) = gm {
                    gpu.queue.write_buffer(&gmb, 0, bytemuck::cast_slice(gm));
                }
                let mut bias_off = [u32::MAX; 4];
                bias_off[..k].copy_from_slice(offsets);
                let params = Params {
                    rows: rows as u32,
                    dim: d as u32,
                    nsets: k as u32,
                    nparts: nparts as u32,
                    s: noise.s as f32,
                    inv2v: (0.5 / noise.v) as f32,
                    stride: self.stride as u32,
                    row_base: match kept {
                        Kept::Ignore => 0,
                        Kept::Write(_, r) | Kept::Read(_, r) => r,
                    },
                    bias_off,
                };
                gpu.queue
                    .write_buffer(&self.params, 0, bytemuck::bytes_of(&params));
                // One dispatch per (chunk, step); each reads its ChunkParams at an aligned offset.
                let align = (gpu.limits.min_uniform_buffer_offset_alignment as u64)
                    .max(std::mem::size_of::<ChunkParams>() as u64);
                let tiles_per_step = match self.loop_budget {
                    Some(budget) => {
                        let per_tile = loop_iterations_per_tile(d, k, self.tile_dims);
                        // llvmpipe's hard limit is 65535 iterations; the estimate runs up to ~1.7×
                        // low, so one tile must stay under 36000 there.
                        if self.cpu_adapter && per_tile > 36_000 {
                            return Err(backend_error(format!(
                                "D = {d} with {k} sets needs about {per_tile} shader loop \
                             iterations per atom tile, more than this software adapter runs in \
                             one invocation; use the CPU backend"
                            )));
                        }
                        (budget / per_tile).max(1) as usize
                    }
                    None => usize::MAX / TA,
                };
                let mut params_list: Vec<ChunkParams> = Vec::new();
                let mut dispatch_order: Vec<(usize, usize)> = Vec::new();
                for (ci, c) in self.chunks.iter().enumerate() {
                    let step = tiles_per_step.saturating_mul(TA).min(per_split[ci]);
                    for begin in (0..per_split[ci]).step_by(step) {
                        dispatch_order.push((ci, params_list.len()));
                        params_list.push(ChunkParams {
                            n: c.range.len as u32,
                            base: c.range.start as u32,
                            part_base: part_base[ci] as u32,
                            per_split: per_split[ci] as u32,
                            step_begin: begin as u32,
                            step_len: step as u32,
                            first: (begin == 0) as u32,
                            total: self.n as u32,
                        });
                    }
                }
                let chunkb = work.get(
                    gpu,
                    "chunk params",
                    params_list.len() as u64 * align,
                    wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                );
                let mut bytes = vec![0u8; params_list.len() * align as usize];
                for (i, cp) in params_list.iter().enumerate() {
                    let o = i * align as usize;
                    bytes[o..o + std::mem::size_of::<ChunkParams>()]
                        .copy_from_slice(bytemuck::bytes_of(cp));
                }
                gpu.queue.write_buffer(&chunkb, 0, &bytes);
                let (pass, kept_buf) = match (gm.is_some(), kept) {
                    (true, Kept::Read(b, _)) => (&self.pass_cov_kept, Some(b)),
                    (true, _) => (&self.pass_cov, None),
                    (false, Kept::Write(b, _)) => (&self.pass_means_keep, Some(b)),
                    (false, _) => (&self.pass_means, None),
                };
                // Passes that neither write nor read the kept distances bind a stand-in.
                let stand_in = work.get(gpu, "no kept distances", 16, STORAGE_RW);
                let kept_buf = kept_buf.unwrap_or(&stand_in);
                let mut enc = gpu
                    .device
                    .create_command_encoder(&wgpu::CommandEncoderDescriptor { label: None });
                {
                    let mut cp = enc.begin_compute_pass(&wgpu::ComputePassDescriptor {
                        label: None,
                        timestamp_writes: self.timer.as_ref().map(|t| {
                            wgpu::ComputePassTimestampWrites {
                                query_set: &t.queries,
                                beginning_of_pass_write_index: Some(0),
                                end_of_pass_write_index: Some(1),
                            }
                        }),
                    });
                    cp.set_pipeline(pass);
                    for &(ci, pi) in &dispatch_order {
                        let c = &self.chunks[ci];
                        let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                            label: None,
                            layout: &pass.get_bind_group_layout(0),
                            entries: &[
                                entire(0, &self.params),
                                wgpu::BindGroupEntry {
                                    binding: 1,
                                    resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
                                        buffer: &chunkb,
                                        offset: pi as u64 * align,
                                        size: wgpu::BufferSize::new(
                                            std::mem::size_of::<ChunkParams>() as u64,
                                        ),
                                    }),
                                },
                                entire(2, &c.buffer),
                                entire(3, &xb),
                                entire(4, &gmb),
                                entire(5, &self.bias_buf),
                                entire(6, &self.table),
                                entire(7, &accb),
                                entire(8, &statb),
                                entire(9, &nearb),
                                entire(10, kept_buf),
                            ],
                        });
                        cp.set_bind_group(0, &bg, &[]);
                        cp.dispatch_workgroups(
                            c.range.len.div_ceil(per_split[ci]) as u32,
                            rows.div_ceil(TR) as u32,
                            1,
                        );
                    }
                    let bg = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
                        label: None,
                        layout: &self.merge.get_bind_group_layout(0),
                        entries: &[
                            entire(0, &self.params),
                            entire(1, &accb),
                            entire(2, &statb),
                            entire(3, &outb),
                        ],
                    });
                    cp.set_pipeline(&self.merge);
                    cp.set_bind_group(0, &bg, &[]);
                    cp.dispatch_workgroups(rows as u32, k as u32, 1);
                }
                enc.copy_buffer_to_buffer(&statb, 0, &readb, 0, stats_bytes);
                enc.copy_buffer_to_buffer(&nearb, 0, &readb, stats_bytes, near_bytes);
                enc.copy_buffer_to_buffer(&outb, 0, &readb, stats_bytes + near_bytes, out_bytes);
                let results = stats_bytes + near_bytes + out_bytes;
                if let Some(t) = &self.timer {
                    enc.resolve_query_set(&t.queries, 0..2, &t.resolved, 0);
                    enc.copy_buffer_to_buffer(&t.resolved, 0, &readb, results, 16);
                }
                let index = gpu.queue.submit([enc.finish()]);
                let read = results + if self.timer.is_some() { 16 } else { 0 };
                let bytes = gpu.read_back(&readb, read, index, self.timeout)?;
                let (bytes, stamps) = bytes.split_at(results as usize);
                if let Some(t) = &self.timer {
                    let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(stamps);
                    let ns = ticks[1].saturating_sub(ticks[0]) as f64 * t.period;
                    *t.total.lock().unwrap_or_else(|e| e.into_inner()) += ns * 1e-9;
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

/// Loop iterations (back-edges plus loop entries) one invocation of weighted_means.wgsl runs
/// per atom tile, counted from the kernel's loops, for budgeting on adapters with a limit.
fn loop_iterations_per_tile(d: usize, k: usize, dk: usize) -> u64 {
    const WG: usize = 64;
    // Per DK-slice: the two staging loops and the one dd loop of the 2 × 2 register block.
    let phase1 = d.div_ceil(dk) * ((TA * dk).div_ceil(WG) + (TR * dk).div_ceil(WG) + dk + 5);
    let phase2 = 3 * (TA + 1) + 4;
    let phase3 = d.div_ceil(WG) * (2 * TR * (k + 1) + TA * (1 + TR * (k + 1)) + 2);
    (phase1 + phase2 + phase3 + 4) as u64
}

/// Workgroup memory of weighted_means.wgsl with `dk` dimensions per step, bytes: sh_a
/// (TA·(dk+1)), sh_x, sh_g, sh_m (TR·dk each), and the fixed sh_dist, sh_proj (TR·TA each),
/// sh_w (KMAX·TR·TA), sh_alpha (KMAX·TR) and sh_table (256).
fn workgroup_bytes(dk: usize) -> usize {
    4 * (TA * (dk + 1) + 3 * TR * dk + 2 * TR * TA + KMAX * TR * TA + KMAX * TR + 256)
}

fn entire(binding: u32, b: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: b.as_entire_binding(),
    }
}

/// The compute pipelines of one backend: the pass (four override variants) and the merge.
struct Pipelines {
    means: wgpu::ComputePipeline,
    means_keep: wgpu::ComputePipeline,
    cov: wgpu::ComputePipeline,
    cov_kept: wgpu::ComputePipeline,
    merge: wgpu::ComputePipeline,
}

fn build_pipelines(gpu: &Gpu, storage: Storage, trusted: bool, tile_dims: usize) -> Pipelines {
    let module = |label: &str, src: &str| {
        let desc = wgpu::ShaderModuleDescriptor {
            label: Some(label),
            source: wgpu::ShaderSource::Wgsl(src.into()),
        };
        if trusted {
            // SAFETY: every array index in the kernels is guarded against the sizes the host
            // passes (rows, dim, chunk length, partial counts), which match the buffer sizes.
            unsafe {
                gpu.device
                    .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
            }
        } else {
            gpu.device.create_shader_module(desc)
        }
    };
    let pass = module("weighted_means.wgsl", shaders::WEIGHTED_MEANS);
    let merge = module("merge_partials.wgsl", shaders::MERGE_PARTIALS);
    let storage_code = storage.shader_code() as f64;
    let dk = tile_dims as f64;
    let pipeline = |m: &wgpu::ShaderModule, entry: &str, constants: &[(&str, f64)]| {
        gpu.device
            .create_compute_pipeline(&wgpu::ComputePipelineDescriptor {
                label: Some(entry),
                layout: None,
                module: m,
                entry_point: Some(entry),
                compilation_options: wgpu::PipelineCompilationOptions {
                    constants,
                    zero_initialize_workgroup_memory: false,
                },
                cache: None,
            })
    };
    let variant = |covariance: bool, keep: bool, kept: bool| {
        let flag = |b: bool| if b { 1.0 } else { 0.0 };
        pipeline(
            &pass,
            "pass_main",
            &[
                ("STORAGE", storage_code),
                ("COVARIANCE", flag(covariance)),
                ("KEEP", flag(keep)),
                ("KEPT", flag(kept)),
                ("DK", dk),
            ],
        )
    };
    Pipelines {
        means: variant(false, false, false),
        means_keep: variant(false, true, false),
        cov: variant(true, false, false),
        cov_kept: variant(true, false, true),
        merge: pipeline(&merge, "merge_main", &[]),
    }
}

impl Backend for GpuBackend {
    fn describe(&self) -> String {
        format!(
            "gpu: {} ({:?}, {:?}), {} atom storage in {} binding(s)",
            self.gpu.info.name,
            self.gpu.info.backend,
            self.gpu.info.device_type,
            self.storage.name(),
            self.chunks.len()
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
        // A prior pass keeps its distances for the C·g pass that usually follows (σ-DPS family)
        // when B × N floats fit one binding.
        let kept_bytes = (rows * self.n * 4) as u64;
        let keep = sets.contains(&Weights::Prior)
            && kept_bytes <= KEPT_DISTANCES_MAX_BYTES
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
            let (block, _) = self.plan(rows - r0, KMAX.min(offsets.len().max(1)))?;
            let xb = &x[r0 * d..(r0 + block) * d];
            for (gi, &(first, offs)) in groups.iter().enumerate() {
                let k = offs.len();
                let (_, splits) = self.plan(block, k)?;
                let mode = if keep && gi == 0 {
                    Kept::Write(&kept.buffer, r0 as u32)
                } else {
                    Kept::Ignore
                };
                let (means, stats, near, nparts) =
                    self.run_block(xb, noise, offs, &splits, None, mode)?;
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
                        set.means
                            .extend_from_slice(&means[(b * k + kk) * d..(b * k + kk + 1) * d]);
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
            .map(|t| *t.total.lock().unwrap_or_else(|e| e.into_inner()))
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
            let (block, splits) = self.plan(rows - r0, 1)?;
            let range = r0 * d..(r0 + block) * d;
            let mut gm = Vec::with_capacity(2 * block * d + block);
            gm.extend_from_slice(&g[range.clone()]);
            gm.extend_from_slice(&means[range.clone()]);
            // ⟨m_b, g_b⟩ in float64, for the expansion of the kept-distance pass.
            gm.extend(
                means[range.clone()]
                    .chunks(d)
                    .zip(g[range.clone()].chunks(d))
                    .map(|(m, g)| {
                        m.iter()
                            .zip(g)
                            .map(|(&a, &b)| a as f64 * b as f64)
                            .sum::<f64>() as f32
                    }),
            );
            let mode = if use_kept {
                Kept::Read(&kept.buffer, r0 as u32)
            } else {
                Kept::Ignore
            };
            let (cg, stats, _, nparts) =
                self.run_block(&x[range.clone()], noise, &offsets, &splits, Some(&gm), mode)?;
            if use_kept {
                // acc/S0 = Σ c a / S0; C·g = that − m_b · SC/S0 (SC, S0 merged in float64).
                for (b, (row, m)) in cg.chunks(d).zip(means[range].chunks(d)).enumerate() {
                    let ratio = coefficient_ratio((0..nparts).map(|p| {
                        let o = (p * block + b) * STAT;
                        [stats[o], stats[o + 1], stats[o + 4]]
                    }));
                    out.extend(
                        row.iter()
                            .zip(m)
                            .map(|(&c, &mv)| (c as f64 - mv as f64 * ratio) as f32),
                    );
                }
            } else {
                out.extend_from_slice(&cg);
            }
            r0 += block;
        }
        Ok(out)
    }
}

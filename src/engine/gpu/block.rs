//! One block of rows: a single submission over all atoms. The block plans its waves (runs of
//! whole splits of one binding that share the scratch), takes its buffers from the workspace
//! and uploads its inputs, records the dispatches (distances → split weights → weighted sums
//! per wave, then one merge), and reads back the merged outputs and the raw partials.

use std::sync::Mutex;

use super::cache::Kept;
use super::device::Gpu;
use super::kernels::{BlockBuffers, PairOutputs, Params, Step, WaveShape};
use super::timing::TIMED_PASSES;
use super::tuning::SplitPlan;
use super::{GpuBackend, STAT};
use crate::Result;
use crate::engine::Noise;

pub(super) const STORAGE_RW: wgpu::BufferUsages = wgpu::BufferUsages::STORAGE
    .union(wgpu::BufferUsages::COPY_SRC)
    .union(wgpu::BufferUsages::COPY_DST);

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

/// The per-pass memory of a backend: the uniform `Params` every shader reads and the
/// workspace of per-call buffers.
pub(super) struct Scratch {
    params: wgpu::Buffer,
    work: Mutex<Workspace>,
}

impl Scratch {
    pub fn new(gpu: &Gpu) -> Scratch {
        Scratch {
            params: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("params"),
                size: std::mem::size_of::<Params>() as u64,
                usage: wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
            work: Mutex::new(Workspace::default()),
        }
    }
}

/// What one block returns.
pub(super) struct BlockOutput {
    /// Merged outputs, rows × K × dpad (means, or C·g's Σ c a / S0).
    pub merged: Vec<f32>,
    /// Raw partial statistics, P × rows × K × STAT.
    pub stats: Vec<f32>,
    /// Raw partial nearest atoms, P × rows × 2 (distance bits, index).
    pub near: Vec<u32>,
    /// P, the partial slots.
    pub nparts: usize,
}

/// One wave: the binding it reads, its `Step` and its splits.
struct Wave {
    chunk: usize,
    step: Step,
    splits: usize,
}

/// The waves of a block, the partial slots they fill and the row stride of the scratch.
struct Waves {
    list: Vec<Wave>,
    nparts: usize,
    w_ld: usize,
}

/// Byte sizes of a block's outputs (all read back, in this order after one another).
struct BlockSizes {
    acc: u64,
    stats: u64,
    near: u64,
    out: u64,
}

impl BlockSizes {
    fn new(rows: usize, k: usize, dpad: usize, nparts: usize) -> BlockSizes {
        let rk = rows * k;
        BlockSizes {
            acc: (nparts * rk * dpad * 4) as u64,
            stats: (nparts * rk * STAT * 4) as u64,
            near: (nparts * rows * 2 * 4) as u64,
            out: (rk * dpad * 4) as u64,
        }
    }

    /// Bytes read back before the timestamps.
    fn results(&self) -> u64 {
        self.stats + self.near + self.out
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

/// The buffers of one block, owned (the kernels take them by reference).
struct BlockScratch {
    x: wgpu::Buffer,
    gm: wgpu::Buffer,
    dist: wgpu::Buffer,
    proj: wgpu::Buffer,
    weights: wgpu::Buffer,
    acc: wgpu::Buffer,
    stats: wgpu::Buffer,
    near: wgpu::Buffer,
    out: wgpu::Buffer,
    read: wgpu::Buffer,
    steps: wgpu::Buffer,
}

/// What a block computes: the sets at `offsets`, and C·g when `gm` holds g and m.
struct BlockJob<'a> {
    rows: usize,
    k: usize,
    covariance: bool,
    kept: Kept<'a>,
}

/// Appends each row of `v` (D values) padded with zeros to `dpad`.
fn pad_rows(v: &[f32], d: usize, dpad: usize, out: &mut Vec<f32>) {
    for row in v.chunks(d) {
        out.extend_from_slice(row);
        out.resize(out.len() + dpad - d, 0.0);
    }
}

/// Offset alignment of the waves' `Step`s in their uniform buffer.
fn step_align(gpu: &Gpu) -> u64 {
    (std::mem::size_of::<Step>() as u64)
        .next_multiple_of(gpu.limits.min_uniform_buffer_offset_alignment as u64)
}

impl GpuBackend {
    /// One submission over all atoms for `x` (rows × D) and the sets at `offsets` (≤ KMAX);
    /// with `gm` (g rows then m rows, rows × D each) the covariance pass.
    pub(super) fn run_block(
        &self,
        x: &[f32],
        noise: Noise,
        offsets: &[u32],
        gm: Option<&[f32]>,
        kept: Kept,
    ) -> Result<BlockOutput> {
        let (d, dpad) = (self.atoms.d, self.atoms.dpad);
        let job = BlockJob {
            rows: x.len() / d,
            k: offsets.len(),
            covariance: gm.is_some(),
            kept,
        };
        let plan = self
            .tuning
            .split_plan(&self.atoms, &self.pipelines, job.rows, job.k)?;
        let waves = self.plan_waves(plan, kept);
        let sizes = BlockSizes::new(job.rows, job.k, dpad, waves.nparts);
        let mut x_pad = Vec::with_capacity(job.rows * dpad);
        pad_rows(x, d, dpad, &mut x_pad);
        let mut gm_pad = Vec::new();
        if let Some(gm) = gm {
            gm_pad.reserve(2 * job.rows * dpad);
            pad_rows(gm, d, dpad, &mut gm_pad);
        }
        let gpu = &self.gpu;
        let mut work = self.scratch.work.lock().unwrap_or_else(|e| e.into_inner());
        gpu.scoped(
            &format!("pass over {} atoms for {} rows", self.atoms.n, job.rows),
            || {
                let bufs = self.block_buffers(&mut work, &job, &waves, &sizes, gm_pad.len());
                gpu.queue
                    .write_buffer(&bufs.x, 0, bytemuck::cast_slice(&x_pad));
                if !gm_pad.is_empty() {
                    gpu.queue
                        .write_buffer(&bufs.gm, 0, bytemuck::cast_slice(&gm_pad));
                }
                self.write_uniforms(&bufs, &job, &waves, noise, offsets);
                let dispatches = dispatches(&job, &waves);
                // Timed passes: one per dispatch when they fit the query set, else one in all.
                let timed = match &self.timer {
                    Some(_) if dispatches.len() <= TIMED_PASSES => dispatches.len(),
                    Some(_) => 1,
                    None => 0,
                };
                let enc = self.encode(&bufs, &job, &waves, &dispatches, &sizes, timed);
                self.read_block(enc, &bufs, &sizes, &dispatches, timed, waves.nparts)
            },
        )
    }

    /// Waves: runs of whole splits of one binding that share the scratch (or, with kept
    /// distances, that address the B × N kept buffer directly).
    fn plan_waves(&self, plan: SplitPlan, kept: Kept) -> Waves {
        let wave_cap = plan.wave_splits * plan.split_len;
        let chunks = &self.atoms.chunks;
        let w_ld = chunks
            .iter()
            .map(|c| c.range.len.min(wave_cap))
            .max()
            .unwrap_or(1);
        let mut list = Vec::new();
        let mut nparts = 0usize;
        for (ci, c) in chunks.iter().enumerate() {
            let mut off = 0;
            while off < c.range.len {
                let len = (c.range.len - off).min(wave_cap);
                let splits = len.div_ceil(plan.split_len);
                let base = c.range.start + off;
                let (dist_ld, dist_col, dist_row0) = match kept {
                    Kept::Write(_, r) | Kept::Read(_, r) => (self.atoms.n, base, r as usize),
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
                list.push(Wave {
                    chunk: ci,
                    step,
                    splits,
                });
                nparts += splits;
                off += len;
            }
        }
        Waves { list, nparts, w_ld }
    }

    /// The block's buffers from the workspace (the distances from the pass cache when kept).
    fn block_buffers(
        &self,
        work: &mut Workspace,
        job: &BlockJob,
        waves: &Waves,
        sizes: &BlockSizes,
        gm_len: usize,
    ) -> BlockScratch {
        let gpu = &self.gpu;
        let (rows, w_ld) = (job.rows, waves.w_ld);
        let rk = rows * job.k;
        BlockScratch {
            x: work.get(gpu, "x", (rows * self.atoms.dpad * 4) as u64, STORAGE_RW),
            gm: work.get(gpu, "g, m", (gm_len * 4) as u64, STORAGE_RW),
            dist: match job.kept {
                Kept::Write(b, _) | Kept::Read(b, _) => b.clone(),
                Kept::Ignore => work.get(gpu, "distances", (rows * w_ld * 4) as u64, STORAGE_RW),
            },
            proj: if job.covariance {
                work.get(gpu, "projections", (rows * w_ld * 4) as u64, STORAGE_RW)
            } else {
                work.get(gpu, "no projections", 16, STORAGE_RW)
            },
            weights: work.get(gpu, "weights", (rk * w_ld * 4) as u64, STORAGE_RW),
            acc: work.get(gpu, "partial sums", sizes.acc, STORAGE_RW),
            stats: work.get(gpu, "partial stats", sizes.stats, STORAGE_RW),
            near: work.get(gpu, "partial nearest", sizes.near, STORAGE_RW),
            out: work.get(gpu, "outputs", sizes.out, STORAGE_RW),
            read: work.get(
                gpu,
                "readback",
                sizes.results() + 16 * TIMED_PASSES as u64,
                wgpu::BufferUsages::MAP_READ | wgpu::BufferUsages::COPY_DST,
            ),
            // Each wave reads its Step at an aligned offset of one uniform buffer.
            steps: work.get(
                gpu,
                "steps",
                waves.list.len() as u64 * step_align(gpu),
                wgpu::BufferUsages::UNIFORM | wgpu::BufferUsages::COPY_DST,
            ),
        }
    }

    /// Writes the block's `Params` and every wave's `Step`.
    fn write_uniforms(
        &self,
        bufs: &BlockScratch,
        job: &BlockJob,
        waves: &Waves,
        noise: Noise,
        offsets: &[u32],
    ) {
        let gpu = &self.gpu;
        let mut bias_off = [u32::MAX; 4];
        bias_off[..job.k].copy_from_slice(offsets);
        let params = Params {
            rows: job.rows as u32,
            dim: self.atoms.d as u32,
            dpad: self.atoms.dpad as u32,
            nsets: job.k as u32,
            s: noise.s as f32,
            inv2v: (0.5 / noise.v) as f32,
            stride4: self.atoms.stride4 as u32,
            nparts: waves.nparts as u32,
            bias_off,
        };
        gpu.queue
            .write_buffer(&self.scratch.params, 0, bytemuck::bytes_of(&params));
        let align = step_align(gpu) as usize;
        let mut bytes = vec![0u8; waves.list.len() * align];
        for (i, wave) in waves.list.iter().enumerate() {
            let o = i * align;
            bytes[o..o + std::mem::size_of::<Step>()]
                .copy_from_slice(bytemuck::bytes_of(&wave.step));
        }
        gpu.queue.write_buffer(&bufs.steps, 0, &bytes);
    }

    /// Records the dispatches (in `timed` timed compute passes, or one untimed) and the copies
    /// of the outputs (and timestamps) into the readback buffer.
    fn encode(
        &self,
        bufs: &BlockScratch,
        job: &BlockJob,
        waves: &Waves,
        dispatches: &[Dispatch],
        sizes: &BlockSizes,
        timed: usize,
    ) -> wgpu::CommandEncoder {
        let gpu = &self.gpu;
        let buffers = BlockBuffers {
            params: &self.scratch.params,
            steps: &bufs.steps,
            table: &self.atoms.table,
            bias: &self.biases.buffer,
            xs: &bufs.x,
            gm: &bufs.gm,
            dist: &bufs.dist,
            proj: &bufs.proj,
            weights: &bufs.weights,
            part_acc: &bufs.acc,
            part_stats: &bufs.stats,
            part_near: &bufs.near,
            out: &bufs.out,
        };
        let align = step_align(gpu);
        let shapes: Vec<WaveShape> = waves
            .list
            .iter()
            .enumerate()
            .map(|(i, wave)| WaveShape {
                step_offset: i as u64 * align,
                atoms: wave.step.n as usize,
                splits: wave.splits,
                rows: job.rows,
                sets: job.k,
                dpad: self.atoms.dpad,
                tile: self.tuning.tile_rows,
            })
            .collect();
        let record = |cp: &mut wgpu::ComputePass, dispatch: Dispatch| {
            let p = &self.pipelines;
            let atoms = |w: usize| &self.atoms.chunks[waves.list[w].chunk].buffer;
            match dispatch {
                Dispatch::Distances(w, outputs) => {
                    p.distances(gpu, cp, outputs, atoms(w), &buffers, &shapes[w])
                }
                Dispatch::Weights(w) => {
                    p.split_weights(gpu, cp, job.covariance, &buffers, &shapes[w])
                }
                Dispatch::Sums(w) => p.weighted_sums(gpu, cp, atoms(w), &buffers, &shapes[w]),
                Dispatch::Merge => p.merge(gpu, cp, &buffers, job.rows, job.k),
            }
        };
        let timer = self.timer.as_ref().filter(|_| timed > 0);
        let pass = |enc: &mut wgpu::CommandEncoder, i: usize| {
            let desc = wgpu::ComputePassDescriptor {
                label: None,
                timestamp_writes: timer.map(|t| wgpu::ComputePassTimestampWrites {
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
            for &dispatch in dispatches {
                record(&mut cp, dispatch);
            }
        }
        let (stats, near) = (sizes.stats, sizes.near);
        enc.copy_buffer_to_buffer(&bufs.stats, 0, &bufs.read, 0, stats);
        enc.copy_buffer_to_buffer(&bufs.near, 0, &bufs.read, stats, near);
        enc.copy_buffer_to_buffer(&bufs.out, 0, &bufs.read, stats + near, sizes.out);
        if let Some(t) = timer {
            enc.resolve_query_set(&t.queries, 0..2 * timed as u32, &t.resolved, 0);
            let stamp_bytes = 16 * timed as u64;
            enc.copy_buffer_to_buffer(&t.resolved, 0, &bufs.read, sizes.results(), stamp_bytes);
        }
        enc
    }

    /// Submits the block, waits, records its device time and unpacks the readback.
    fn read_block(
        &self,
        enc: wgpu::CommandEncoder,
        bufs: &BlockScratch,
        sizes: &BlockSizes,
        dispatches: &[Dispatch],
        timed: usize,
        nparts: usize,
    ) -> Result<BlockOutput> {
        let gpu = &self.gpu;
        let results = sizes.results();
        let stamp_bytes = 16 * timed as u64;
        let index = gpu.queue.submit([enc.finish()]);
        let bytes = gpu.read_back(
            &bufs.read,
            results + stamp_bytes,
            index,
            self.tuning.timeout,
        )?;
        let (bytes, stamps) = bytes.split_at(results as usize);
        if let Some(t) = self.timer.as_ref().filter(|_| timed > 0) {
            let kernels: Vec<&'static str> = dispatches.iter().map(|d| d.kernel()).collect();
            t.record(stamps, timed, &kernels);
        }
        let (sb, rest) = bytes.split_at(sizes.stats as usize);
        let (nb, ob) = rest.split_at(sizes.near as usize);
        Ok(BlockOutput {
            merged: bytemuck::pod_collect_to_vec(ob),
            stats: bytemuck::pod_collect_to_vec(sb),
            near: bytemuck::pod_collect_to_vec(nb),
            nparts,
        })
    }
}

/// The dispatches of a block: per wave the pair kernel (unless the distances are kept and
/// no projections are needed), the split weights and the weighted sums; then the merge.
fn dispatches(job: &BlockJob, waves: &Waves) -> Vec<Dispatch> {
    let pair_outputs = match (job.covariance, job.kept) {
        (true, Kept::Read(..)) => Some(PairOutputs::Projections),
        (true, _) => Some(PairOutputs::DistancesAndProjections),
        (false, Kept::Read(..)) => None,
        (false, _) => Some(PairOutputs::Distances),
    };
    let mut out = Vec::with_capacity(3 * waves.list.len() + 1);
    for w in 0..waves.list.len() {
        if let Some(outputs) = pair_outputs {
            out.push(Dispatch::Distances(w, outputs));
        }
        out.push(Dispatch::Weights(w));
        out.push(Dispatch::Sums(w));
    }
    out.push(Dispatch::Merge);
    out
}

//! The compute pipelines of the GPU engine and one small function per pipeline that records
//! its dispatch: distances → split weights → weighted sums per wave of atoms, then one merge
//! (see the shaders for the formulas).

use super::device::Gpu;
use super::shaders;

/// Threads of a GEMM-shaped workgroup along its columns (atoms in distances.wgsl, dimensions in
/// weighted_sums.wgsl): tiles are 4·TX = 64 columns wide.
pub(crate) const TX: usize = 16;
/// Threads along rows of the two row-tile variants: 4·TY = 16 rows for small blocks (a tile of
/// 64 rows would idle ¾ of its threads at B = 16) and 64 rows otherwise.
pub(crate) const TY_SMALL: usize = 4;
pub(crate) const TY_LARGE: usize = 16;
/// Atoms per distances tile and dimensions per weighted-sums tile.
pub(crate) const COLS: usize = 4 * TX;
/// Atoms weighted_sums.wgsl stages per step (its TK).
pub(crate) const TK: usize = 16;

/// The uniform `Params` of every shader (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Params {
    pub rows: u32,
    pub dim: u32,
    /// D rounded up to 16: row length of x, g, m, the partial sums and the merged outputs.
    pub dpad: u32,
    pub nsets: u32,
    pub s: f32,
    pub inv2v: f32,
    /// vec4<u32> words per atom row.
    pub stride4: u32,
    pub nparts: u32,
    pub bias_off: [u32; 4],
}

/// The uniform `Step` of one wave of atoms (48 bytes).
#[repr(C)]
#[derive(Clone, Copy, Debug, bytemuck::Pod, bytemuck::Zeroable)]
pub(crate) struct Step {
    /// Atoms in the wave.
    pub n: u32,
    /// Index of the wave's first atom in its binding.
    pub chunk_off: u32,
    /// Global index of the wave's first atom.
    pub base: u32,
    /// Partial slot of the wave's first split.
    pub part_base: u32,
    pub split_len: u32,
    /// Where the wave's distances live: row stride, first column and first row in `dist`.
    pub dist_ld: u32,
    pub dist_col: u32,
    pub dist_row0: u32,
    /// Row stride of the projections and weights scratch.
    pub w_ld: u32,
    pub pad: [u32; 3],
}

/// Which rows tile a pipeline uses.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum RowTile {
    /// 16 rows.
    Small,
    /// 64 rows.
    Large,
}

impl RowTile {
    pub fn rows(self) -> usize {
        4 * self.threads()
    }
    pub(crate) fn threads(self) -> usize {
        match self {
            RowTile::Small => TY_SMALL,
            RowTile::Large => TY_LARGE,
        }
    }
    fn index(self) -> usize {
        self as usize
    }
}

/// What the distances kernel computes.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub(crate) enum PairOutputs {
    /// dist only (means passes).
    Distances,
    /// dist and proj (covariance pass).
    DistancesAndProjections,
    /// proj only (covariance pass over kept distances).
    Projections,
}

/// Every pipeline of one backend.
pub(crate) struct Pipelines {
    /// [outputs][row tile]
    distances: [[wgpu::ComputePipeline; 2]; 3],
    /// [without, with projections]
    weights: [wgpu::ComputePipeline; 2],
    /// [row tile]
    sums: [wgpu::ComputePipeline; 2],
    /// Rows per thread of weighted_sums.wgsl's register block (its RY: 4 or 8).
    sums_block_rows: usize,
    merge: wgpu::ComputePipeline,
}

/// Dimensions per step of the covariance variants of distances.wgsl (they stage g and m as
/// well as x). Tile sizes never change a result, so the means variants may use another.
pub(crate) const COVARIANCE_DK: usize = 16;

/// Workgroup memory of the means variant of distances.wgsl for `dk` dimensions per step and
/// the large row tile, bytes: sh_a (DK·TX vec4), sh_x (DK·TY vec4) and the u8 table. (The
/// covariance variants, with COVARIANCE_DK, need 16·16·(TX + 3·TY) + 1024 = 17408.)
pub(crate) fn distances_workgroup_bytes(dk: usize) -> usize {
    16 * dk * (TX + TY_LARGE) + 1024
}

impl Pipelines {
    pub fn build(
        gpu: &Gpu,
        storage_code: u32,
        trusted: bool,
        tile_dims: usize,
        sums_block_rows: usize,
    ) -> Pipelines {
        let module = |label: &str, src: &str| {
            let desc = wgpu::ShaderModuleDescriptor {
                label: Some(label),
                source: wgpu::ShaderSource::Wgsl(src.into()),
            };
            if trusted {
                // SAFETY: every array index in the kernels is guarded against the sizes the
                // host passes (rows, dim, wave length, slot counts), which match the buffers.
                unsafe {
                    gpu.device
                        .create_shader_module_trusted(desc, wgpu::ShaderRuntimeChecks::unchecked())
                }
            } else {
                gpu.device.create_shader_module(desc)
            }
        };
        let distances = module("distances.wgsl", shaders::DISTANCES);
        let weights = module("split_weights.wgsl", shaders::SPLIT_WEIGHTS);
        let sums = module("weighted_sums.wgsl", shaders::WEIGHTED_SUMS);
        let merge = module("merge_partials.wgsl", shaders::MERGE_PARTIALS);
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
        let pair = |outputs: PairOutputs, tile: RowTile| {
            let constants = distances_constants(storage_code, outputs, tile, tile_dims);
            pipeline(&distances, "distances_main", &constants)
        };
        let both = |outputs| [pair(outputs, RowTile::Small), pair(outputs, RowTile::Large)];
        let sum = |tile: RowTile| {
            let constants = sums_constants(storage_code, tile, sums_block_rows);
            pipeline(&sums, "sums_main", &constants)
        };
        Pipelines {
            distances: [
                both(PairOutputs::Distances),
                both(PairOutputs::DistancesAndProjections),
                both(PairOutputs::Projections),
            ],
            weights: [
                pipeline(&weights, "weights_main", &[("PROJ", 0.0)]),
                pipeline(&weights, "weights_main", &[("PROJ", 1.0)]),
            ],
            sums: [sum(RowTile::Small), sum(RowTile::Large)],
            sums_block_rows,
            merge: pipeline(&merge, "merge_main", &[]),
        }
    }
}

fn flag(b: bool) -> f64 {
    if b { 1.0 } else { 0.0 }
}

/// The override constants of a distances.wgsl pipeline.
pub(crate) fn distances_constants(
    storage_code: u32,
    outputs: PairOutputs,
    tile: RowTile,
    tile_dims: usize,
) -> Vec<(&'static str, f64)> {
    let dk = if outputs == PairOutputs::Distances {
        tile_dims
    } else {
        COVARIANCE_DK
    };
    vec![
        ("STORAGE", storage_code as f64),
        ("WRITE_DIST", flag(outputs != PairOutputs::Projections)),
        ("PROJ", flag(outputs != PairOutputs::Distances)),
        ("TX", TX as f64),
        ("TY", tile.threads() as f64),
        ("DK", dk as f64),
    ]
}

/// The override constants of a weighted_sums.wgsl pipeline; `block_rows` is its RY.
pub(crate) fn sums_constants(
    storage_code: u32,
    tile: RowTile,
    block_rows: usize,
) -> Vec<(&'static str, f64)> {
    vec![
        ("STORAGE", storage_code as f64),
        ("TX", TX as f64),
        ("TY", tile.threads() as f64),
        ("RY", block_rows as f64),
        ("TK", TK as f64),
    ]
}

fn entire(binding: u32, b: &wgpu::Buffer) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding,
        resource: b.as_entire_binding(),
    }
}

/// The `Step` uniform of one wave: `align` bytes into `steps`.
fn step_entry(steps: &wgpu::Buffer, offset: u64) -> wgpu::BindGroupEntry<'_> {
    wgpu::BindGroupEntry {
        binding: 1,
        resource: wgpu::BindingResource::Buffer(wgpu::BufferBinding {
            buffer: steps,
            offset,
            size: wgpu::BufferSize::new(std::mem::size_of::<Step>() as u64),
        }),
    }
}

/// Binds `entries` as group 0 of `pipeline` and dispatches `groups` workgroups.
fn dispatch(
    gpu: &Gpu,
    cp: &mut wgpu::ComputePass,
    pipeline: &wgpu::ComputePipeline,
    entries: &[wgpu::BindGroupEntry],
    groups: [usize; 3],
) {
    let bind_group = gpu.device.create_bind_group(&wgpu::BindGroupDescriptor {
        label: None,
        layout: &pipeline.get_bind_group_layout(0),
        entries,
    });
    cp.set_pipeline(pipeline);
    cp.set_bind_group(0, &bind_group, &[]);
    cp.dispatch_workgroups(groups[0] as u32, groups[1] as u32, groups[2] as u32);
}

/// Buffers the four kernels share within one block of rows.
pub(crate) struct BlockBuffers<'a> {
    pub params: &'a wgpu::Buffer,
    pub steps: &'a wgpu::Buffer,
    pub table: &'a wgpu::Buffer,
    pub bias: &'a wgpu::Buffer,
    /// rows × dpad particles.
    pub xs: &'a wgpu::Buffer,
    /// rows × dpad of g, then of m (covariance pass).
    pub gm: &'a wgpu::Buffer,
    /// Distances: a wave scratch or the kept B × N distances.
    pub dist: &'a wgpu::Buffer,
    /// rows × w_ld projections (covariance pass).
    pub proj: &'a wgpu::Buffer,
    /// rows·K × w_ld weights or coefficients.
    pub weights: &'a wgpu::Buffer,
    pub part_acc: &'a wgpu::Buffer,
    pub part_stats: &'a wgpu::Buffer,
    pub part_near: &'a wgpu::Buffer,
    pub out: &'a wgpu::Buffer,
}

/// One wave's dispatch sizes.
pub(crate) struct WaveShape {
    /// Offset of its `Step` in the steps buffer.
    pub step_offset: u64,
    pub atoms: usize,
    pub splits: usize,
    pub rows: usize,
    pub sets: usize,
    pub dpad: usize,
    /// Row tile forced by the options; otherwise each kernel picks by its own row count.
    pub tile: Option<RowTile>,
}

impl RowTile {
    /// The tile for `rows` rows: small up to its own height, else large.
    pub fn pick(rows: usize, forced: Option<RowTile>) -> RowTile {
        forced.unwrap_or(if rows <= RowTile::Small.rows() {
            RowTile::Small
        } else {
            RowTile::Large
        })
    }
}

impl Pipelines {
    /// distances.wgsl over the wave's atoms × the block's rows.
    pub fn distances(
        &self,
        gpu: &Gpu,
        cp: &mut wgpu::ComputePass,
        outputs: PairOutputs,
        atoms: &wgpu::Buffer,
        buf: &BlockBuffers,
        wave: &WaveShape,
    ) {
        let tile = RowTile::pick(wave.rows, wave.tile);
        let pipeline = &self.distances[outputs as usize][tile.index()];
        dispatch(
            gpu,
            cp,
            pipeline,
            &[
                entire(0, buf.params),
                step_entry(buf.steps, wave.step_offset),
                entire(2, atoms),
                entire(3, buf.xs),
                entire(4, buf.gm),
                entire(5, buf.table),
                entire(6, buf.dist),
                entire(7, buf.proj),
            ],
            [
                wave.atoms.div_ceil(COLS),
                wave.rows.div_ceil(tile.rows()),
                1,
            ],
        );
    }

    /// split_weights.wgsl: one workgroup per (split, row).
    pub fn split_weights(
        &self,
        gpu: &Gpu,
        cp: &mut wgpu::ComputePass,
        projections: bool,
        buf: &BlockBuffers,
        wave: &WaveShape,
    ) {
        let pipeline = &self.weights[projections as usize];
        dispatch(
            gpu,
            cp,
            pipeline,
            &[
                entire(0, buf.params),
                step_entry(buf.steps, wave.step_offset),
                entire(2, buf.dist),
                entire(3, buf.proj),
                entire(4, buf.bias),
                entire(5, buf.weights),
                entire(6, buf.part_stats),
                entire(7, buf.part_near),
            ],
            [wave.splits, wave.rows, 1],
        );
    }

    /// weighted_sums.wgsl's rows per thread (RY).
    pub fn sums_block_rows(&self) -> usize {
        self.sums_block_rows
    }

    /// Rows r = b·K + k per weighted_sums.wgsl workgroup for `rk` of them: its RY rows per
    /// thread times the TY threads of the row tile.
    pub fn sums_tile_rows(&self, rk: usize, forced: Option<RowTile>) -> usize {
        self.sums_block_rows * RowTile::pick(rk, forced).threads()
    }

    /// weighted_sums.wgsl: dimension tiles × row tiles × splits.
    pub fn weighted_sums(
        &self,
        gpu: &Gpu,
        cp: &mut wgpu::ComputePass,
        atoms: &wgpu::Buffer,
        buf: &BlockBuffers,
        wave: &WaveShape,
    ) {
        let tile = RowTile::pick(wave.rows * wave.sets, wave.tile);
        let pipeline = &self.sums[tile.index()];
        let tile_rows = self.sums_tile_rows(wave.rows * wave.sets, wave.tile);
        dispatch(
            gpu,
            cp,
            pipeline,
            &[
                entire(0, buf.params),
                step_entry(buf.steps, wave.step_offset),
                entire(2, atoms),
                entire(3, buf.table),
                entire(4, buf.weights),
                entire(5, buf.part_acc),
            ],
            [
                wave.dpad.div_ceil(COLS),
                (wave.rows * wave.sets).div_ceil(tile_rows),
                wave.splits,
            ],
        );
    }

    /// merge_partials.wgsl: one workgroup per (row, set).
    pub fn merge(
        &self,
        gpu: &Gpu,
        cp: &mut wgpu::ComputePass,
        buf: &BlockBuffers,
        rows: usize,
        sets: usize,
    ) {
        dispatch(
            gpu,
            cp,
            &self.merge,
            &[
                entire(0, buf.params),
                entire(1, buf.part_acc),
                entire(2, buf.part_stats),
                entire(3, buf.out),
            ],
            [rows, sets, 1],
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wgpu::naga;

    /// Every pipeline variant the host builds (storage × outputs × row tile × tile dims)
    /// passes naga's validation after its override constants are applied, as wgpu applies
    /// them: workgroup sizes and override-sized workgroup arrays included.
    #[test]
    fn every_pipeline_variant_validates() {
        let check = |name: &str, src: &str, entry: &str, constants: &[(&str, f64)]| {
            let module = naga::front::wgsl::parse_str(src).unwrap();
            let info = naga::valid::Validator::new(
                naga::valid::ValidationFlags::all(),
                naga::valid::Capabilities::all(),
            )
            .validate(&module)
            .unwrap();
            let map: naga::back::PipelineConstants =
                constants.iter().map(|&(k, v)| (k.to_string(), v)).collect();
            naga::back::pipeline_constants::process_overrides(
                &module,
                &info,
                Some((naga::ShaderStage::Compute, entry)),
                &map,
            )
            .unwrap_or_else(|e| panic!("{name} {constants:?}: {e}"));
        };
        for storage in 0..3 {
            for tile in [RowTile::Small, RowTile::Large] {
                for outputs in [
                    PairOutputs::Distances,
                    PairOutputs::DistancesAndProjections,
                    PairOutputs::Projections,
                ] {
                    for dk in [16, 32, 64] {
                        let c = distances_constants(storage, outputs, tile, dk);
                        check("distances.wgsl", shaders::DISTANCES, "distances_main", &c);
                    }
                }
                for block_rows in [4, 8] {
                    let c = sums_constants(storage, tile, block_rows);
                    check(
                        "weighted_sums.wgsl",
                        shaders::WEIGHTED_SUMS,
                        "sums_main",
                        &c,
                    );
                }
            }
        }
        for proj in [0.0, 1.0] {
            check(
                "split_weights.wgsl",
                shaders::SPLIT_WEIGHTS,
                "weights_main",
                &[("PROJ", proj)],
            );
        }
        check(
            "merge_partials.wgsl",
            shaders::MERGE_PARTIALS,
            "merge_main",
            &[],
        );
    }
}

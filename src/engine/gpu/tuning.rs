//! The GPU backend's tuning: its options checked against the adapter, the memory budgets of a
//! pass, and the plans derived from them (rows per block, splits and waves of atoms).

use std::time::Duration;

use super::device::{Gpu, backend_error};
use super::kernels::{self, COLS, Pipelines, RowTile};
use super::store::AtomStore;
use super::{CPU_ADAPTER_LOOP_LIMIT, GpuOptions, PMAX, SPLIT_MAX};
use crate::{Error, Result};

/// Checked options and budgets of one backend.
pub(super) struct Tuning {
    /// Bytes allowed for one per-call binding (partials, x, outputs).
    pub binding_budget: u64,
    /// Bytes allowed for the scratch of one wave (distances, projections, weights).
    pub scratch_budget: u64,
    /// Workgroups to aim for in the weighted-sums dispatch.
    pub target_workgroups: usize,
    /// Dimensions distances.wgsl stages per step (its DK).
    pub tile_dims: usize,
    /// Rows per tile forced by the options; None picks by batch.
    pub tile_rows: Option<RowTile>,
    /// Rows per thread of weighted_sums.wgsl (its RY).
    pub sums_block_rows: usize,
    /// Longest wait for one submission.
    pub timeout: Duration,
    /// A software (CPU) adapter: loops per invocation are limited.
    pub cpu_adapter: bool,
}

/// How a block of rows walks the atoms: splits of `split_len` atoms (the last of a binding
/// shorter), grouped into waves of at most `wave_splits` splits that share the scratch.
#[derive(Clone, Copy, Debug)]
pub(super) struct SplitPlan {
    pub split_len: usize,
    pub wave_splits: usize,
}

impl Tuning {
    /// The row-tile options, checked before an adapter is opened.
    pub fn row_options(opts: &GpuOptions) -> Result<(Option<RowTile>, usize)> {
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
        Ok((tile_rows, sums_block_rows))
    }

    /// The largest binding the adapter allows (storage binding and buffer limits).
    pub fn adapter_binding(gpu: &Gpu) -> u64 {
        let lim = &gpu.limits;
        lim.max_storage_buffer_binding_size.min(lim.max_buffer_size)
    }

    /// The options against the adapter's limits for atoms of D = `d` values.
    pub fn new(opts: &GpuOptions, gpu: &Gpu, d: usize) -> Result<Tuning> {
        let (tile_rows, sums_block_rows) = Self::row_options(opts)?;
        let lim = &gpu.limits;
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
        let cpu_adapter = gpu.info.device_type == wgpu::DeviceType::Cpu;
        if cpu_adapter {
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
        let adapter_binding = Self::adapter_binding(gpu);
        Ok(Tuning {
            binding_budget: adapter_binding.min(256 << 20),
            scratch_budget: opts
                .scratch_bytes
                .unwrap_or(256 << 20)
                .min(adapter_binding)
                .max(1),
            target_workgroups: opts
                .target_workgroups
                .unwrap_or(if cpu_adapter { 16 } else { 1024 })
                .max(1),
            tile_dims,
            tile_rows,
            sums_block_rows,
            timeout: opts.timeout,
            cpu_adapter,
        })
    }

    /// Largest row block for `rows` rows and `k` sets: x (and g, m), the outputs and the
    /// partial sums of at least one split per binding must fit a binding.
    pub fn row_block(&self, atoms: &AtomStore, rows: usize, k: usize) -> Result<usize> {
        let dpad = atoms.dpad as u64;
        let per_row = (atoms.bindings() as u64 * k as u64 * dpad * 4).max(2 * dpad * 4);
        // Room in the scratch for splits of SPLIT_MAX atoms: (2 + k) floats per row and atom.
        let by_scratch = self.scratch_budget / ((2 + k) as u64 * SPLIT_MAX as u64 * 4);
        let block = ((self.binding_budget / per_row).min(by_scratch.max(1)) as usize).min(8192);
        if block == 0 {
            return Err(backend_error(format!(
                "D = {} with {} atom bindings and {k} sets needs more than the {} bytes one \
                 binding may hold for even one row",
                atoms.d,
                atoms.bindings(),
                self.binding_budget
            )));
        }
        Ok(rows.min(block))
    }

    /// Split length and wave size for a block of `rows` rows and `k` sets: enough splits to
    /// give the weighted-sums dispatch about `target_workgroups` workgroups, no more partial
    /// sums than a binding (and the merge kernel) holds, splits of at most SPLIT_MAX atoms.
    pub fn split_plan(
        &self,
        atoms: &AtomStore,
        pipelines: &Pipelines,
        rows: usize,
        k: usize,
    ) -> Result<SplitPlan> {
        let (n, dpad) = (atoms.n, atoms.dpad);
        let rk = rows * k;
        let tile_rows = pipelines.sums_tile_rows(rk, self.tile_rows);
        let tiles = dpad.div_ceil(COLS) * rk.div_ceil(tile_rows);
        let wanted = self.target_workgroups.div_ceil(tiles).max(1);
        let by_memory = (self.binding_budget / (rk as u64 * dpad as u64 * 4)) as usize;
        let mut most = PMAX.min(by_memory);
        if self.cpu_adapter {
            // merge_partials.wgsl loops over the P slots for each of its ⌈dpad/64⌉ columns.
            most = most.min(CPU_ADAPTER_LOOP_LIMIT / (dpad.div_ceil(64) + 3));
        }
        let slots = |len: usize| {
            atoms
                .chunks
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
        let mut split_len = n
            .div_ceil(wanted)
            .next_multiple_of(COLS)
            .min(SPLIT_MAX)
            .min(fit);
        while slots(split_len) > most && split_len < fit {
            split_len = (2 * split_len).min(fit);
        }
        if slots(split_len) > most {
            return Err(backend_error(format!(
                "{n} atoms in splits of {split_len} need {} partial sums, more than the {most} \
                 that fit; allow more scratch or pass fewer rows",
                slots(split_len)
            )));
        }
        if self.cpu_adapter && split_len > SPLIT_MAX {
            return Err(backend_error(format!(
                "{n} atoms need splits of {split_len} atoms, longer than this software adapter \
                 runs in one shader invocation; use the CPU backend"
            )));
        }
        // distances.wgsl's grid: at most 65535 tiles of COLS atoms along x.
        let wave_splits = (fit / split_len).min(65535 * COLS / split_len).max(1);
        Ok(SplitPlan {
            split_len,
            wave_splits,
        })
    }
}

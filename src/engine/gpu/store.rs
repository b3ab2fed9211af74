//! What the device holds for the life of a backend: the atom store (one or more storage
//! bindings and the u8 decoding table) and the registered biases.

use super::atoms::{ChunkRange, EncodedAtoms, Storage};
use super::device::{Gpu, backend_error};
use crate::Result;
use crate::engine::{BiasId, WeightSet};

/// One storage binding of the atom store: the atoms of `range`, encoded.
pub(super) struct AtomChunk {
    pub range: ChunkRange,
    pub buffer: wgpu::Buffer,
}

/// The N × D atoms on the device, split over as many bindings as the adapter requires.
pub(super) struct AtomStore {
    pub n: usize,
    pub d: usize,
    /// D rounded up to 16 (atoms::padded_dim).
    pub dpad: usize,
    pub storage: Storage,
    /// vec4<u32> words per atom row.
    pub stride4: usize,
    pub chunks: Vec<AtomChunk>,
    /// The 256-entry decoding table of u8 storage (unused by the others).
    pub table: wgpu::Buffer,
}

impl AtomStore {
    /// Writes the encoded atoms, one buffer per range of `ranges`, and the u8 table (in the
    /// caller's error scope; the upload completes with the queue's next poll).
    pub fn upload(
        gpu: &Gpu,
        enc: &EncodedAtoms,
        ranges: &[ChunkRange],
        n: usize,
        d: usize,
        dpad: usize,
        storage: Storage,
    ) -> AtomStore {
        let chunks = ranges
            .iter()
            .map(|&range| {
                let words =
                    &enc.words[range.start * enc.stride..(range.start + range.len) * enc.stride];
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
        AtomStore {
            n,
            d,
            dpad,
            storage,
            stride4: enc.stride / 4,
            chunks,
            table,
        }
    }

    /// Number of storage bindings.
    pub fn bindings(&self) -> usize {
        self.chunks.len()
    }
}

/// The registered biases: each N values shifted by its maximum (float32 keeps the weights
/// that matter exact), concatenated into one storage buffer, and the shifts, which the host
/// adds back to log Z.
pub(super) struct BiasStore {
    host: Vec<f32>,
    shift: Vec<f64>,
    /// The device copy of `host` (a 16-byte placeholder until the first bias).
    pub buffer: wgpu::Buffer,
}

impl BiasStore {
    pub fn new(gpu: &Gpu) -> BiasStore {
        BiasStore {
            host: Vec::new(),
            shift: Vec::new(),
            buffer: gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("biases"),
                size: 16,
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            }),
        }
    }

    /// Appends β − `max` (floored at −1e30 for float32) and uploads all biases again.
    pub fn add(&mut self, gpu: &Gpu, bias: &[f64], max: f64) -> Result<BiasId> {
        let n = bias.len();
        let bytes = (self.host.len() + n) as u64 * 4;
        if bytes > gpu.limits.max_storage_buffer_binding_size {
            return Err(backend_error(format!(
                "{} biases of {n} atoms need {bytes} bytes, more than one binding holds",
                self.shift.len() + 1,
            )));
        }
        self.host
            .extend(bias.iter().map(|&b| (b - max).max(-1e30) as f32));
        let host = &self.host;
        self.buffer = gpu.scoped("uploading a bias vector", || {
            let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("biases"),
                size: bytes.next_multiple_of(16),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            gpu.queue.write_buffer(&buf, 0, bytemuck::cast_slice(host));
            Ok(buf)
        })?;
        self.shift.push(max);
        Ok(BiasId(self.shift.len() - 1))
    }

    /// Registered biases.
    pub fn len(&self) -> usize {
        self.shift.len()
    }

    /// The shaders' offset of each set's bias in the buffer (u32::MAX for the prior), for N
    /// atoms; an error names the first bias never registered.
    pub fn offsets(&self, sets: &[WeightSet], n: usize) -> std::result::Result<Vec<u32>, usize> {
        sets.iter()
            .map(|w| match *w {
                WeightSet::Prior => Ok(u32::MAX),
                WeightSet::Biased(BiasId(i)) if i < self.len() => Ok((i * n) as u32),
                WeightSet::Biased(BiasId(i)) => Err(i),
            })
            .collect()
    }

    /// What was subtracted from the bias of `set` (0 for the prior).
    pub fn shift(&self, set: WeightSet) -> f64 {
        match set {
            WeightSet::Prior => 0.0,
            WeightSet::Biased(BiasId(i)) => self.shift[i],
        }
    }
}

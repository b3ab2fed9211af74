//! What the device holds for the life of a backend: the atom store (one or more storage
//! bindings and the u8 decoding table) and the registered biases.

use super::atoms::{ChunkRange, EncodedAtoms, Storage};
use super::device::{Gpu, backend_error};
use crate::engine::{BiasId, WeightSet};
use crate::{Error, Result};

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
/// that matter exact), the live ones concatenated into one storage buffer, and the shifts,
/// which the host adds back to log Z.
pub(super) struct BiasStore {
    /// N, the values per bias.
    n: usize,
    /// The live biases' values, N each, in the order of their positions.
    host: Vec<f32>,
    /// By id: where the bias sits in `host` and its shift, while it lives; None once removed.
    /// Ids are never reused (a removed id stays refused), so a slot of a few words stays per
    /// bias ever registered while its values leave `host` and the device.
    slots: Vec<Option<Slot>>,
    /// The device copy of `host` (a 16-byte placeholder while no bias lives).
    pub buffer: wgpu::Buffer,
}

#[derive(Clone, Copy)]
struct Slot {
    /// Index of the bias's block of N values in `host` (its shader offset is position · N).
    position: usize,
    shift: f64,
}

fn placeholder(gpu: &Gpu) -> wgpu::Buffer {
    gpu.device.create_buffer(&wgpu::BufferDescriptor {
        label: Some("biases"),
        size: 16,
        usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
        mapped_at_creation: false,
    })
}

impl BiasStore {
    pub fn new(gpu: &Gpu, n: usize) -> BiasStore {
        BiasStore {
            n,
            host: Vec::new(),
            slots: Vec::new(),
            buffer: placeholder(gpu),
        }
    }

    /// Appends β − `max` (floored at −1e30 for float32) and uploads the live biases again.
    pub fn add(&mut self, gpu: &Gpu, bias: &[f64], max: f64) -> Result<BiasId> {
        let n = self.n;
        let bytes = (self.host.len() + n) as u64 * 4;
        if bytes > gpu.limits.max_storage_buffer_binding_size {
            return Err(backend_error(format!(
                "{} live biases of {n} atoms need {bytes} bytes, more than one binding holds \
                 (drop posteriors no longer used)",
                self.len() + 1,
            )));
        }
        let position = self.host.len() / n;
        self.host
            .extend(bias.iter().map(|&b| (b - max).max(-1e30) as f32));
        if let Err(e) = self.upload(gpu, "uploading a bias vector") {
            self.host.truncate(position * n);
            return Err(e);
        }
        self.slots.push(Some(Slot {
            position,
            shift: max,
        }));
        Ok(BiasId(self.slots.len() - 1))
    }

    /// Drops bias `id`: its values leave the host copy and the device buffer (the biases
    /// after it move down one block; their ids stay). An error for an id that is not live.
    pub fn remove(&mut self, gpu: &Gpu, id: BiasId) -> Result<()> {
        let slot = self.slot(id)?;
        let n = self.n;
        self.host.drain(slot.position * n..(slot.position + 1) * n);
        self.host.shrink_to_fit();
        self.slots[id.0] = None;
        for s in self.slots.iter_mut().flatten() {
            if s.position > slot.position {
                s.position -= 1;
            }
        }
        if self.host.is_empty() {
            self.buffer = placeholder(gpu);
            Ok(())
        } else {
            self.upload(gpu, "uploading the biases after a removal")
        }
    }

    /// Replaces the device buffer by one holding `host`.
    fn upload(&mut self, gpu: &Gpu, what: &str) -> Result<()> {
        let host = &self.host;
        let bytes = host.len() as u64 * 4;
        self.buffer = gpu.scoped(what, || {
            let buf = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("biases"),
                size: bytes.next_multiple_of(16),
                usage: wgpu::BufferUsages::STORAGE | wgpu::BufferUsages::COPY_DST,
                mapped_at_creation: false,
            });
            gpu.queue.write_buffer(&buf, 0, bytemuck::cast_slice(host));
            Ok(buf)
        })?;
        Ok(())
    }

    /// The slot of a live bias; an error names an id never issued or removed.
    fn slot(&self, BiasId(i): BiasId) -> Result<Slot> {
        match self.slots.get(i) {
            Some(Some(s)) => Ok(*s),
            Some(None) => Err(Error::input(format!(
                "gpu backend: bias id {i} was removed (its posterior was dropped); register \
                 the bias again for a new id"
            ))),
            None => Err(Error::input(format!(
                "gpu backend: bias id {i} was never registered ({} ids issued)",
                self.slots.len()
            ))),
        }
    }

    /// Live biases (registered, not removed).
    pub fn len(&self) -> usize {
        self.slots.iter().flatten().count()
    }

    /// The shaders' offset of each set's bias in the buffer (u32::MAX for the prior); an
    /// error names the first bias that is not live.
    pub fn offsets(&self, sets: &[WeightSet]) -> Result<Vec<u32>> {
        sets.iter()
            .map(|w| match *w {
                WeightSet::Prior => Ok(u32::MAX),
                WeightSet::Biased(id) => Ok((self.slot(id)?.position * self.n) as u32),
            })
            .collect()
    }

    /// What was subtracted from the bias of `set` (0 for the prior; the set was checked by
    /// [`BiasStore::offsets`]).
    pub fn shift(&self, set: WeightSet) -> f64 {
        match set {
            WeightSet::Prior => 0.0,
            WeightSet::Biased(id) => self.slot(id).map_or(0.0, |s| s.shift),
        }
    }
}

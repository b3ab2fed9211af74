//! The pass cache of the GPU backend: the pair distances of the last pass, kept on the device
//! for the C·g pass that follows on the same particles (the contract is on
//! [`Backend::covariance_products`](crate::engine::Backend::covariance_products)).

use std::sync::{Mutex, MutexGuard};

use super::device::Gpu;

/// Default largest kept-distance buffer (B × N float32) a pass allocates, so that keeping
/// never costs more device memory than the CPU backend's weight cache; larger passes put their
/// distances in the wave scratch and the C·g pass recomputes them.
pub(super) const KEPT_DISTANCES_MAX_BYTES: u64 = 256 << 20;

/// The distances ‖x_b − s a_i‖² of the last pass, kept on the device (B × N float32) for the
/// C·g pass that follows on the same x (and the pass's own further groups of sets).
pub(super) struct KeptDistances {
    pub buffer: wgpu::Buffer,
    /// The rows and s they were computed for; None while the buffer holds nothing usable.
    key: Option<(Vec<f32>, f32)>,
}

impl KeptDistances {
    /// Forgets what the buffer holds and grows it to at least `bytes`: the pass about to run
    /// writes it.
    pub fn reserve(&mut self, gpu: &Gpu, bytes: u64) {
        self.key = None;
        if self.buffer.size() < bytes {
            self.buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
                label: Some("kept distances"),
                size: bytes.next_multiple_of(16),
                usage: wgpu::BufferUsages::STORAGE,
                mapped_at_creation: false,
            });
        }
    }

    /// Marks the buffer as holding the distances of the rows `x` at scale `s`.
    pub fn remember(&mut self, x: &[f32], s: f64) {
        self.key = Some((x.to_vec(), s as f32));
    }

    /// Whether the buffer holds the distances of exactly these rows at this s.
    pub fn holds(&self, x: &[f32], s: f64) -> bool {
        matches!(&self.key, Some((kx, ks)) if *ks == s as f32 && kx == x)
    }
}

/// What a block does with the kept distances.
#[derive(Clone, Copy)]
pub(super) enum Kept<'a> {
    Ignore,
    /// Write this block's distances, its first row being global row `row_base`.
    Write(&'a wgpu::Buffer, u32),
    /// Read them instead of computing them.
    Read(&'a wgpu::Buffer, u32),
}

/// The kept distances and the budget for them.
pub(super) struct PassCache {
    /// Largest kept-distance buffer, bytes.
    budget: u64,
    kept: Mutex<KeptDistances>,
}

impl PassCache {
    /// An empty cache: a 16-byte placeholder, replaced by a B × N buffer at the first pass
    /// that fits one binding.
    pub fn new(gpu: &Gpu, budget: u64) -> PassCache {
        let buffer = gpu.device.create_buffer(&wgpu::BufferDescriptor {
            label: Some("kept distances"),
            size: 16,
            usage: wgpu::BufferUsages::STORAGE,
            mapped_at_creation: false,
        });
        PassCache {
            budget,
            kept: Mutex::new(KeptDistances { buffer, key: None }),
        }
    }

    /// Whether a pass over `rows` rows of N atoms keeps its distances: B × N floats within the
    /// budget and one binding.
    pub fn keeps(&self, gpu: &Gpu, rows: usize, n: usize) -> bool {
        let bytes = Self::bytes(rows, n);
        bytes <= self.budget
            && bytes <= gpu.limits.max_storage_buffer_binding_size
            && bytes <= gpu.limits.max_buffer_size
    }

    /// Bytes of B × N kept distances.
    pub fn bytes(rows: usize, n: usize) -> u64 {
        (rows * n * 4) as u64
    }

    pub fn lock(&self) -> MutexGuard<'_, KeptDistances> {
        self.kept.lock().unwrap_or_else(|e| e.into_inner())
    }
}

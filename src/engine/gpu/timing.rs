//! Device timing of the GPU passes (adapters with timestamp queries).

use std::sync::Mutex;

use super::device::Gpu;

/// Compute passes one block may time separately.
pub(super) const TIMED_PASSES: usize = 128;

/// Timestamp queries around every compute pass (adapters with TIMESTAMP_QUERY). A block
/// records each dispatch in a compute pass of its own, so that the device time splits by
/// kernel, when it has at most TIMED_PASSES dispatches; otherwise one pass times them all.
pub(super) struct PassTimer {
    /// Two timestamps per pass: its beginning and its end.
    pub queries: wgpu::QuerySet,
    pub resolved: wgpu::Buffer,
    /// Nanoseconds per timestamp tick.
    period: f64,
    times: Mutex<DeviceTimes>,
}

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

impl PassTimer {
    /// A timer where the device writes timestamps; None elsewhere.
    pub fn new(gpu: &Gpu) -> Option<PassTimer> {
        gpu.timestamps.then(|| PassTimer {
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
        })
    }

    /// Adds the `timed` passes of one block (their raw timestamps `stamps`): the span from the
    /// first beginning to the last end, and, when every dispatch had its own pass, each one's
    /// duration under its kernel's name.
    pub fn record(&self, stamps: &[u8], timed: usize, kernels: &[&'static str]) {
        let ticks: Vec<u64> = bytemuck::pod_collect_to_vec(stamps);
        let secs = |a: u64, b: u64| b.saturating_sub(a) as f64 * self.period * 1e-9;
        let mut times = self.times.lock().unwrap_or_else(|e| e.into_inner());
        times.total += secs(ticks[0], ticks[2 * timed - 1]);
        if timed > 1 {
            for (i, &kernel) in kernels.iter().enumerate() {
                times.add(kernel, secs(ticks[2 * i], ticks[2 * i + 1]));
            }
        }
    }

    pub fn total(&self) -> f64 {
        self.times.lock().unwrap_or_else(|e| e.into_inner()).total
    }

    pub fn by_kernel(&self) -> Vec<(&'static str, f64)> {
        self.times
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .by_kernel
            .clone()
    }
}

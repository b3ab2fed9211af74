//! Adapter discovery and choice, device creation, and turning wgpu failures into
//! [`Error::Backend`] instead of panics or hangs.
//!
//! Environment: `WGPU_BACKEND` (e.g. `vulkan`, `gl`) limits the backends searched (wgpu reads
//! it through `InstanceDescriptor::new_without_display_handle_from_env`); `FSLENS_ADAPTER`
//! keeps only adapters whose name contains the given text (case-insensitive).

use std::sync::{Arc, Mutex};

use crate::{Error, Result};

/// One adapter as `fslens info` shows it.
#[derive(Clone, Debug, serde::Serialize)]
pub struct AdapterInfoRow {
    /// Its position in [`list_adapters`]: what `devices = "0,1"` and
    /// [`super::GpuOptions::adapter_index`] name.
    pub index: usize,
    pub name: String,
    pub backend: String,
    pub device_type: String,
    pub driver: String,
    pub max_storage_buffer_binding_size: u64,
    pub max_buffer_size: u64,
    pub max_compute_workgroup_storage_size: u32,
    pub max_compute_invocations_per_workgroup: u32,
    pub max_storage_buffers_per_shader_stage: u32,
    pub shader_f16: bool,
    pub timestamp_query: bool,
    pub subgroup: bool,
    /// Whether [`super::GpuBackend::new`] with default options would pick this adapter.
    pub preferred: bool,
}

pub(crate) fn backend_error(problem: impl Into<String>) -> Error {
    Error::Backend {
        backend: "gpu".into(),
        problem: problem.into(),
    }
}

fn instance() -> wgpu::Instance {
    wgpu::Instance::new(wgpu::InstanceDescriptor::new_without_display_handle_from_env())
}

/// Lower is better: hardware first, then the software adapter; Vulkan/Metal/DX12 before GL.
fn rank(info: &wgpu::AdapterInfo) -> (u8, u8) {
    let kind = match info.device_type {
        wgpu::DeviceType::DiscreteGpu => 0,
        wgpu::DeviceType::IntegratedGpu => 1,
        wgpu::DeviceType::VirtualGpu => 2,
        wgpu::DeviceType::Cpu => 3,
        wgpu::DeviceType::Other => 4,
    };
    let api = match info.backend {
        wgpu::Backend::Vulkan | wgpu::Backend::Metal | wgpu::Backend::Dx12 => 0,
        _ => 1,
    };
    (kind, api)
}

/// The adapter filter: an explicit option wins over `FSLENS_ADAPTER`.
fn name_filter(explicit: Option<&str>) -> Option<String> {
    explicit
        .map(str::to_owned)
        .or_else(|| std::env::var("FSLENS_ADAPTER").ok())
        .filter(|s| !s.is_empty())
        .map(|s| s.to_lowercase())
}

fn adapters() -> Vec<wgpu::Adapter> {
    let inst = instance();
    pollster::block_on(inst.enumerate_adapters(wgpu::Backends::all()))
}

/// The index in `list` of the adapter to use, after the name filter.
fn pick(list: &[wgpu::Adapter], filter: Option<&str>) -> Option<usize> {
    let filter = name_filter(filter);
    list.iter()
        .enumerate()
        .filter(|(_, a)| {
            filter
                .as_deref()
                .is_none_or(|f| a.get_info().name.to_lowercase().contains(f))
        })
        .min_by_key(|(_, a)| rank(&a.get_info()))
        .map(|(i, _)| i)
}

/// Every adapter wgpu finds (honouring `WGPU_BACKEND`), with its limits and features.
pub fn list_adapters() -> Vec<AdapterInfoRow> {
    let list = adapters();
    let chosen = pick(&list, None);
    list.iter()
        .enumerate()
        .map(|(i, a)| {
            let info = a.get_info();
            let lim = a.limits();
            let feat = a.features();
            AdapterInfoRow {
                index: i,
                name: info.name,
                backend: format!("{:?}", info.backend),
                device_type: format!("{:?}", info.device_type),
                driver: format!("{} {}", info.driver, info.driver_info)
                    .trim()
                    .to_owned(),
                max_storage_buffer_binding_size: lim.max_storage_buffer_binding_size,
                max_buffer_size: lim.max_buffer_size,
                max_compute_workgroup_storage_size: lim.max_compute_workgroup_storage_size,
                max_compute_invocations_per_workgroup: lim.max_compute_invocations_per_workgroup,
                max_storage_buffers_per_shader_stage: lim.max_storage_buffers_per_shader_stage,
                shader_f16: feat.contains(wgpu::Features::SHADER_F16),
                timestamp_query: feat.contains(wgpu::Features::TIMESTAMP_QUERY),
                subgroup: feat.contains(wgpu::Features::SUBGROUP),
                preferred: Some(i) == chosen,
            }
        })
        .collect()
}

/// A device with the adapter's own limits, and slots where asynchronous failures land.
pub(crate) struct Gpu {
    /// The adapter's index in [`list_adapters`].
    pub index: usize,
    pub device: wgpu::Device,
    pub queue: wgpu::Queue,
    pub info: wgpu::AdapterInfo,
    pub limits: wgpu::Limits,
    /// The device writes timestamps (TIMESTAMP_QUERY), so passes can be timed on the GPU.
    pub timestamps: bool,
    /// Set by the device-lost callback or the uncaptured-error handler.
    pub failure: Arc<Mutex<Option<String>>>,
}

impl Gpu {
    /// Opens the adapter `index` of [`list_adapters`] when given, else the best adapter
    /// whose name passes `filter`.
    pub fn open(filter: Option<&str>, index: Option<usize>) -> Result<Gpu> {
        let list = adapters();
        if let Some(i) = index
            && i >= list.len()
        {
            let names: Vec<String> = list.iter().map(|a| a.get_info().name).collect();
            return Err(backend_error(format!(
                "there is no adapter {i}: adapters found (by index): {names:?}"
            )));
        }
        let Some(i) = index.or_else(|| pick(&list, filter)) else {
            let names: Vec<String> = list.iter().map(|a| a.get_info().name).collect();
            return Err(backend_error(match name_filter(filter) {
                Some(f) => format!(
                    "no adapter name contains {f:?} (FSLENS_ADAPTER or the adapter option); \
                     adapters found: {names:?}"
                ),
                None => "no GPU adapter found (install a Vulkan driver, e.g. Mesa's \
                         mesa-vulkan-drivers for the software adapter, or use the CPU backend)"
                    .into(),
            }));
        };
        let adapter = &list[i];
        let info = adapter.get_info();
        let limits = adapter.limits();
        // Timestamps time the passes on the device (`fslens bench`); nothing else is needed.
        let features = adapter.features() & wgpu::Features::TIMESTAMP_QUERY;
        let (device, queue) = pollster::block_on(adapter.request_device(&wgpu::DeviceDescriptor {
            label: Some("fslens"),
            required_features: features,
            required_limits: limits.clone(),
            experimental_features: wgpu::ExperimentalFeatures::disabled(),
            memory_hints: wgpu::MemoryHints::Performance,
            trace: wgpu::Trace::Off,
        }))
        .map_err(|e| backend_error(format!("{}: requesting a device failed: {e}", info.name)))?;
        let failure = Arc::new(Mutex::new(None::<String>));
        let lost = failure.clone();
        device.set_device_lost_callback(move |reason, msg| {
            lost.lock()
                .unwrap()
                .get_or_insert(format!("device lost ({reason:?}): {msg}"));
        });
        let uncaptured = failure.clone();
        device.on_uncaptured_error(Arc::new(move |e: wgpu::Error| {
            uncaptured
                .lock()
                .unwrap()
                .get_or_insert(format!("uncaptured error: {e}"));
        }));
        Ok(Gpu {
            index: i,
            device,
            queue,
            info,
            limits,
            timestamps: !features.is_empty(),
            failure,
        })
    }

    /// Runs `f` inside validation, out-of-memory and internal error scopes; any error caught
    /// (or a device loss) becomes [`Error::Backend`] naming `what`.
    pub fn scoped<T>(&self, what: &str, f: impl FnOnce() -> Result<T>) -> Result<T> {
        let validation = self.device.push_error_scope(wgpu::ErrorFilter::Validation);
        let oom = self.device.push_error_scope(wgpu::ErrorFilter::OutOfMemory);
        let internal = self.device.push_error_scope(wgpu::ErrorFilter::Internal);
        let out = f();
        let errors = [
            pollster::block_on(internal.pop()),
            pollster::block_on(oom.pop()),
            pollster::block_on(validation.pop()),
        ];
        if let Some(e) = errors.into_iter().flatten().next() {
            let kind = match e {
                wgpu::Error::OutOfMemory { .. } => "out of GPU memory",
                wgpu::Error::Validation { .. } => "validation error",
                wgpu::Error::Internal { .. } => "internal error",
            };
            return Err(backend_error(format!(
                "{} ({:?}): {what}: {kind}: {e}",
                self.info.name, self.info.backend
            )));
        }
        self.check_alive(what)?;
        out
    }

    pub fn check_alive(&self, what: &str) -> Result<()> {
        match self.failure.lock().unwrap().clone() {
            Some(msg) => Err(backend_error(format!("{}: {what}: {msg}", self.info.name))),
            None => Ok(()),
        }
    }

    /// Waits for `index` (at most `timeout`) and reads `size` bytes of the MAP_READ buffer.
    pub fn read_back(
        &self,
        buffer: &wgpu::Buffer,
        size: u64,
        index: wgpu::SubmissionIndex,
        timeout: std::time::Duration,
    ) -> Result<Vec<u8>> {
        let (tx, rx) = std::sync::mpsc::channel();
        buffer.map_async(wgpu::MapMode::Read, 0..size, move |r| {
            let _ = tx.send(r);
        });
        self.device
            .poll(wgpu::PollType::Wait {
                submission_index: Some(index),
                timeout: Some(timeout),
            })
            .map_err(|e| {
                backend_error(format!(
                    "{}: waiting for the GPU failed after at most {timeout:?}: {e}",
                    self.info.name
                ))
            })?;
        self.check_alive("reading results")?;
        match rx.try_recv() {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(backend_error(format!("mapping results failed: {e}"))),
            Err(_) => {
                return Err(backend_error(
                    "the GPU finished but the result buffer was never mapped",
                ));
            }
        }
        let bytes = buffer
            .get_mapped_range(0..size)
            .map_err(|e| backend_error(format!("reading mapped results failed: {e:?}")))?
            .to_vec();
        buffer.unmap();
        Ok(bytes)
    }
}

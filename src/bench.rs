//! `fslens bench`: one fsr step (a posterior weighted-mean pass, 4·B·N·D flops) timed on a
//! backend, reported in GFLOP/s and as a fraction of this machine's single-precision GEMM peak
//! measured in the same process, beside the numpy baseline `benches/fsr_step_numpy.py` run on
//! the same atoms and particles (design §8).
//!
//! The timing functions take any [`Backend`], so the GPU backend is benched by the same code
//! (`backend = "gpu"`). For the GPU, `peak_gflops` is the adapter's nominal fp32 (non-tensor)
//! peak from the vendor's data sheet where [`nominal_gpu_peak_gflops`] knows the device, or the
//! `FSLENS_GPU_PEAK_GFLOPS` environment variable; otherwise null, and `fraction_of_peak` null.
//! GPU times are host wall times of a whole step: upload of x, the passes, the merge, the
//! read-back and the host's float64 merge of the partial statistics.

use crate::diffusion::Schedule;
use crate::engine::cpu::CpuBackend;
use crate::engine::gpu::{GpuOptions, Storage};
use crate::engine::{Backend, BiasId, Noise, WeightSet, WeightedMean};
use crate::{Error, Result};
use rand::{Rng, RngCore, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;
use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Instant;

/// What to measure.
#[derive(Clone, Debug)]
pub struct BenchOptions {
    /// Batch sizes B (default 16 and 256).
    pub batches: Vec<usize>,
    /// N (default 60000).
    pub atoms: usize,
    /// D (default 784; must be 784 when Fashion-MNIST is used).
    pub dim: usize,
    /// A Fashion-MNIST folder (train-images-idx3-ubyte.gz); None: seeded 8-bit-like random
    /// atoms. The default is Debian's folder when it exists.
    pub data: Option<PathBuf>,
    /// Run the numpy baseline when python3 with numpy is importable.
    pub baseline: bool,
    /// Timed repeats per case (best is reported), after one warm-up.
    pub repeats: usize,
    /// Diffusion times; default t = 0.3 (mid) and 1e-3 (the precision path runs).
    pub times: Vec<f64>,
    /// Worker threads (None: all cores).
    pub threads: Option<usize>,
    /// CPU backend atoms per chunk and rows per block (None: the backend's defaults).
    pub blocking: Option<(usize, usize)>,
    /// Side of the square SGEMM that measures the peak.
    pub peak_size: usize,
    /// Also time a σ-DPS step (prior pass + C·g pass) beside each fsr step.
    pub dps: bool,
    /// Seed of particles, bias and random atoms.
    pub seed: u64,
    /// Where the baseline script lives.
    pub script: PathBuf,
    /// "cpu" or "gpu".
    pub backend: String,
    /// Atom storage (GPU and CPU: f32, u8 for 8-bit data, f16).
    pub storage: Storage,
    /// GPU: dimensions staged per step (the kernel's `DK` override; None: its default).
    pub tile_dims: Option<usize>,
    /// GPU: rows per tile (the kernels' `TY` override × 4; None: by batch size).
    pub tile_rows: Option<usize>,
    /// GPU: rows per thread of the weighted-sums register block (None: 4).
    pub sums_block_rows: Option<usize>,
    /// GPU: workgroups to aim for in the weighted-sums dispatch (None: the backend's default).
    pub workgroups: Option<usize>,
    /// Where the atoms are held (`--atom-store`): memory, or a data-cache entry mapped from
    /// `cache_dir` (CPU only; the atoms are 8-bit, so the entry holds u8 intensities).
    pub atom_store: crate::resources::AtomPlacement,
    /// Folder of the mapped entries (None: [`crate::data::mapped::default_cache_dir`]).
    pub cache_dir: Option<PathBuf>,
    /// GPU: the devices the atoms are split across (`--devices`; default one device).
    pub devices: crate::engine::Devices,
    /// CPU: certified pruning (`--prune on`); None: off. Refused with the GPU.
    pub prune: Option<crate::engine::PruneOptions>,
}

impl Default for BenchOptions {
    fn default() -> Self {
        let fm = PathBuf::from("/usr/share/datasets/fashion-mnist");
        BenchOptions {
            batches: vec![16, 256],
            atoms: 60000,
            dim: 784,
            data: fm.join("train-images-idx3-ubyte.gz").exists().then_some(fm),
            baseline: true,
            repeats: 5,
            times: vec![0.3, 1e-3],
            threads: None,
            blocking: None,
            peak_size: 2048,
            dps: false,
            seed: 1,
            script: PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/benches/fsr_step_numpy.py"
            )),
            backend: "cpu".into(),
            storage: Storage::F32,
            tile_dims: None,
            tile_rows: None,
            sums_block_rows: None,
            workgroups: None,
            atom_store: crate::resources::AtomPlacement::Memory,
            cache_dir: None,
            devices: Default::default(),
            prune: None,
        }
    }
}

/// Wall times of the two passes of a DPS-family step (σ-DPS, ζ-DPS, ΠGDM): the prior pass
/// for m(x), then the covariance pass C·g with the same prior weights, for a fixed g.
/// Returns (best and median wall seconds, best device seconds where measured).
pub fn time_dps_step(
    backend: &dyn Backend,
    x: &[f32],
    noise: Noise,
    repeats: usize,
) -> Result<(StepTimes, DeviceStep)> {
    // Any direction works for timing; a deterministic one keeps runs comparable.
    let g: Vec<f32> = (0..x.len())
        .map(|i| ((i * 7919 % 1000) as f32 / 500.0) - 1.0)
        .collect();
    let step = || -> Result<()> {
        let pass = backend.weighted_means(x, noise, &[WeightSet::Prior])?;
        backend.covariance_products(x, noise, WeightSet::Prior, &pass.sets[0].means, &g)?;
        Ok(())
    };
    step()?;
    let mut times = Vec::with_capacity(repeats.max(1));
    let mut device = DeviceTime::new(backend);
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        step()?;
        times.push(t0.elapsed().as_secs_f64());
        device.lap(backend);
    }
    Ok((StepTimes::of(times), device.best))
}

/// The best per-step device time (GPU timestamps) over the timed repeats, where the backend
/// measures it, and that step's time per kernel.
struct DeviceTime {
    last: Option<f64>,
    last_by_kernel: Vec<(&'static str, f64)>,
    best: DeviceStep,
}

/// The device time of the best step.
#[derive(Clone, Debug, Default)]
pub struct DeviceStep {
    pub seconds: Option<f64>,
    /// Per kernel, where the backend times kernels separately.
    pub by_kernel: Option<BTreeMap<String, f64>>,
}

impl DeviceTime {
    fn new(backend: &dyn Backend) -> Self {
        DeviceTime {
            last: backend.device_seconds(),
            last_by_kernel: backend.device_seconds_by_kernel(),
            best: DeviceStep::default(),
        }
    }
    /// Records the device time since the previous reading as one step.
    fn lap(&mut self, backend: &dyn Backend) {
        let by_kernel = backend.device_seconds_by_kernel();
        if let (Some(before), Some(now)) = (self.last, backend.device_seconds()) {
            let step = now - before;
            if self.best.seconds.is_none_or(|b| step < b) {
                let earlier = |k: &str| {
                    self.last_by_kernel
                        .iter()
                        .find(|(n, _)| *n == k)
                        .map_or(0.0, |&(_, s)| s)
                };
                let split: BTreeMap<String, f64> = by_kernel
                    .iter()
                    .map(|&(k, s)| (k.to_string(), s - earlier(k)))
                    .collect();
                self.best = DeviceStep {
                    seconds: Some(step),
                    by_kernel: (!split.is_empty()).then_some(split),
                };
            }
            self.last = Some(now);
        }
        self.last_by_kernel = by_kernel;
    }
}

/// One measured case, one JSON line.
#[derive(Clone, Debug, serde::Serialize)]
pub struct BenchRecord {
    pub backend: String,
    /// MPI ranks the atoms were split over (1 without MPI; README "Several machines (MPI)").
    pub ranks: usize,
    pub kernel: String,
    #[serde(rename = "B")]
    pub b: usize,
    #[serde(rename = "N")]
    pub n: usize,
    #[serde(rename = "D")]
    pub d: usize,
    pub storage: String,
    pub t: f64,
    pub data: String,
    /// The best wall time of the timed repeats.
    pub seconds_per_step: f64,
    /// Their median.
    pub median_seconds_per_step: f64,
    /// 4·B·N·D / seconds_per_step / 1e9.
    pub gflops: f64,
    /// cpu: the SGEMM GFLOP/s measured between this case's steps; gpu: the adapter's nominal
    /// fp32 peak when known, else null.
    pub peak_gflops: Option<f64>,
    pub fraction_of_peak: Option<f64>,
    pub baseline_seconds_per_step: Option<f64>,
    /// What the baseline was (numpy version and BLAS), or why it did not run.
    pub baseline: Option<String>,
    /// max_bd |m_numpy − m_backend| / max_bd |m_backend|.
    pub baseline_max_rel_diff: Option<f64>,
    /// Mean ESS of the step's posterior weights over the rows (near 1: each mean is one atom,
    /// and both implementations then agree exactly).
    pub mean_ess: f64,
    /// sigma-dps-step only: its time over the fsr step's at the same B, t (the target is ≤ 2.2).
    pub ratio_to_fsr: Option<f64>,
    /// GPU only, where the adapter has timestamp queries: the best step's time on the device
    /// (the compute passes, without upload, readback and host work).
    pub device_seconds_per_step: Option<f64>,
    /// GPU only, where kernels are timed separately: that step's device seconds per kernel
    /// (distances, split_weights, weighted_sums, merge_partials).
    pub device_seconds_by_kernel: Option<BTreeMap<String, f64>>,
    /// VmHWM of this process, MB (includes the float32 atoms loaded before the backend
    /// encoded them).
    pub peak_rss_mb: f64,
    /// VmRSS of this process after the step, MB: what stays resident while stepping (for a
    /// mapped store this includes the pages of the file the kernel keeps mapped, which it
    /// can drop under pressure).
    pub rss_mb: f64,
    /// RssAnon after the step, MB: resident memory that is not file pages, what a mapped
    /// store leaves in RAM.
    pub rss_anon_mb: f64,
    /// Bytes of the atom store (N·D·{4, 1, 2} for f32, u8, f16), MB.
    pub atom_store_mb: f64,
    /// GPU: every device with its adapter and its shard of the atoms (one entry: no split).
    /// With several, `device_seconds_per_step` is the sum over the devices, which run at once.
    pub devices: Vec<crate::engine::devices::DeviceShard>,
}

/// Wall times of the timed repeats of a step.
#[derive(Clone, Copy, Debug)]
pub struct StepTimes {
    pub best: f64,
    pub median: f64,
}

impl StepTimes {
    fn of(mut times: Vec<f64>) -> StepTimes {
        times.sort_by(f64::total_cmp);
        let k = times.len();
        let median = if k % 2 == 1 {
            times[k / 2]
        } else {
            0.5 * (times[k / 2 - 1] + times[k / 2])
        };
        StepTimes {
            best: times[0],
            median,
        }
    }
}

/// Wall times (best and median) of one fsr step (a posterior `weighted_means` pass) over
/// `repeats` runs after a warm-up, and its means. With `peak`, one peak GEMM runs after each
/// step and the best peak GFLOP/s is returned too: interleaving keeps both under the same
/// machine load (the project's machines are shared).
pub fn time_fsr_step(
    backend: &dyn Backend,
    x: &[f32],
    noise: Noise,
    bias: BiasId,
    repeats: usize,
    mut peak: Option<&mut GemmPeak>,
) -> Result<(StepTimes, WeightedMean, f64, DeviceStep)> {
    let sets = [WeightSet::Biased(bias)];
    let mut out = backend.weighted_means(x, noise, &sets)?;
    let mut times = Vec::with_capacity(repeats.max(1));
    let mut best_peak = f64::NAN;
    let mut device = DeviceTime::new(backend);
    for _ in 0..repeats.max(1) {
        let t0 = Instant::now();
        out = backend.weighted_means(x, noise, &sets)?;
        times.push(t0.elapsed().as_secs_f64());
        device.lap(backend);
        if let Some(p) = peak.as_deref_mut() {
            best_peak = p
                .measure_once()
                .max(if best_peak.is_nan() { 0.0 } else { best_peak });
        }
    }
    Ok((
        StepTimes::of(times),
        out.sets.swap_remove(0),
        best_peak,
        device.best,
    ))
}

/// A square single-precision GEMM (size³, 2·size³ flops) with the `gemm` crate on a fixed
/// number of threads: the machine's peak as this process can reach it.
pub struct GemmPeak {
    size: usize,
    threads: usize,
    pool: rayon::ThreadPool,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl GemmPeak {
    pub fn new(size: usize, threads: usize) -> Result<GemmPeak> {
        let pool = rayon::ThreadPoolBuilder::new()
            .num_threads(threads)
            .build()
            .map_err(|e| Error::Backend {
                backend: "cpu".into(),
                problem: format!("could not start {threads} threads: {e}"),
            })?;
        Ok(GemmPeak {
            size,
            threads,
            pool,
            a: (0..size * size)
                .map(|i| ((i % 97) as f32) / 97.0 - 0.5)
                .collect(),
            b: (0..size * size)
                .map(|i| ((i % 89) as f32) / 89.0 - 0.5)
                .collect(),
            c: vec![0.0f32; size * size],
        })
    }

    /// GFLOP/s of one product.
    pub fn measure_once(&mut self) -> f64 {
        let (n, threads) = (self.size, self.threads);
        let (a, b, c) = (&self.a, &self.b, &mut self.c);
        let secs = self.pool.install(|| {
            let t0 = Instant::now();
            // SAFETY: a, b, c hold n×n row-major values and outlive the call.
            unsafe {
                gemm::gemm(
                    n,
                    n,
                    n,
                    c.as_mut_ptr(),
                    1,
                    n as isize,
                    false,
                    a.as_ptr(),
                    1,
                    n as isize,
                    b.as_ptr(),
                    1,
                    n as isize,
                    0.0f32,
                    1.0f32,
                    false,
                    false,
                    false,
                    gemm::Parallelism::Rayon(threads),
                );
            }
            t0.elapsed().as_secs_f64()
        });
        2.0 * (n as f64).powi(3) / secs / 1e9
    }
}

/// Peak resident memory of this process (VmHWM), MB; NaN where /proc is missing.
pub fn peak_rss_mb() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmHWM:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Resident memory of this process now (VmRSS), MB; NaN where /proc is missing.
pub fn rss_mb() -> f64 {
    status_mb("VmRSS:")
}

/// Resident anonymous memory now (RssAnon: not file pages), MB; NaN where /proc is missing.
pub fn rss_anon_mb() -> f64 {
    status_mb("RssAnon:")
}

fn status_mb(field: &str) -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1)?.parse::<f64>().ok())
        })
        .map_or(f64::NAN, |kb| kb / 1024.0)
}

/// Runs every case on `opts.backend`, calling `on_record` as each finishes.
pub fn run(
    opts: &BenchOptions,
    on_record: &mut dyn FnMut(&BenchRecord),
) -> Result<Vec<BenchRecord>> {
    let on_gpu = check_options(opts)?;
    let mapped = maps_atoms(opts, on_gpu)?;
    crate::resources::check(&memory_needs(opts, mapped))?;
    let threads = opts
        .threads
        .unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |t| t.get()));
    // Peak-GEMM matrices: 3·size²·4 bytes (48 MB at 2048), counted in the peak RSS.
    let mut peak = if on_gpu {
        None
    } else {
        let mut p = GemmPeak::new(opts.peak_size, threads)?;
        p.measure_once(); // warm-up
        Some(p)
    };
    let mut rng = ChaCha8Rng::seed_from_u64(opts.seed);
    let (atoms, data) = if mapped {
        let m = map_atoms(opts)?;
        let data = format!("{} (mapped from {})", m.source(), m.path().display());
        (BenchAtoms::Mapped(std::sync::Arc::new(m)), data)
    } else {
        let (a, data) = load_atoms(opts)?;
        (BenchAtoms::Memory(a), data)
    };
    let (n, d) = (atoms.rows(opts.dim), opts.dim);
    // Everything that reads the float32 atoms comes first, so that the backend can take the
    // only copy (a u8 or f16 CPU store then drops it: the resident memory is the store's).
    let bias = inpainting_bias(&atoms, d, &mut rng);
    let workdir = std::env::temp_dir().join(format!("fslens-bench-{}", std::process::id()));
    let python = prepare_baseline(opts, &workdir, &atoms, d, &bias)?;
    let schedule = Schedule::default();
    let mut cases = Vec::new();
    for &t in &opts.times {
        let noise = schedule.noise(t);
        for &b in &opts.batches {
            cases.push((t, b, noise, noisy_particles(&atoms, d, b, noise, &mut rng)));
        }
    }
    let storage = if mapped { Storage::U8 } else { opts.storage };
    let mut subject = Subject::new(opts, atoms, d, on_gpu, threads)?;
    let nominal_peak = if on_gpu {
        devices_peak_gflops(subject.devices())
    } else {
        None
    };
    let bias_id = subject.backend_mut().add_bias(&bias)?;
    let atom_store_mb = subject.store_bytes(n * d, storage) as f64 / 1e6;
    let backend = subject.backend();

    let mut records = Vec::new();
    for (t, b, noise, x) in cases {
        let (times, result, p, device_secs) =
            time_fsr_step(backend, &x, noise, bias_id, opts.repeats, peak.as_mut())?;
        let secs = times.best;
        // cpu: the peak of this case only, measured between its own steps under the same
        // load; gpu: the nominal peak.
        let peak_best = if on_gpu {
            nominal_peak
        } else {
            Some(p).filter(|p| p.is_finite())
        };
        let mean_ess = result.stats.iter().map(|s| s.ess).sum::<f64>() / result.stats.len() as f64;
        let (base_secs, base_desc, base_diff) = match &python {
            Ok(()) => match run_numpy(opts, &workdir, &x, b, d, noise, &result.means) {
                Ok((s, desc, diff)) => (Some(s), Some(desc), Some(diff)),
                Err(e) => (None, Some(format!("baseline failed: {e}")), None),
            },
            Err(why) => (None, Some(why.clone()), None),
        };
        let gflops = 4.0 * (b * n * d) as f64 / secs / 1e9;
        let rec = BenchRecord {
            backend: backend.describe(),
            ranks: crate::engine::ranks::world().map_or(1, |w| w.size()),
            kernel: "fsr-step".into(),
            b,
            n,
            d,
            storage: format!("{}{}", storage.name(), if mapped { " mapped" } else { "" }),
            t,
            data: data.clone(),
            seconds_per_step: secs,
            median_seconds_per_step: times.median,
            gflops,
            peak_gflops: peak_best,
            fraction_of_peak: peak_best.map(|p| gflops / p),
            baseline_seconds_per_step: base_secs,
            baseline: base_desc,
            baseline_max_rel_diff: base_diff,
            mean_ess,
            ratio_to_fsr: None,
            device_seconds_per_step: device_secs.seconds,
            device_seconds_by_kernel: device_secs.by_kernel,
            peak_rss_mb: peak_rss_mb(),
            rss_mb: rss_mb(),
            rss_anon_mb: rss_anon_mb(),
            atom_store_mb,
            devices: subject.devices().to_vec(),
        };
        on_record(&rec);
        if opts.dps {
            let dps = dps_record(backend, &x, noise, opts.repeats, &rec)?;
            on_record(&dps);
            records.push(dps);
        }
        records.push(rec);
    }
    let _ = std::fs::remove_dir_all(&workdir);
    Ok(records)
}

/// Rejects impossible options; true when the bench runs on the GPU.
fn check_options(opts: &BenchOptions) -> Result<bool> {
    if opts.batches.is_empty() || opts.batches.contains(&0) || opts.atoms == 0 || opts.dim == 0 {
        return Err(Error::config(
            "bench",
            "batches, atoms and dim must be positive",
        ));
    }
    if opts.backend == "cpu" {
        opts.devices
            .check_backend(crate::engine::BackendKind::Cpu)?;
    }
    let on_gpu = match opts.backend.as_str() {
        "cpu" => false,
        "gpu" => true,
        other => {
            return Err(Error::config(
                "--backend",
                format!("bench runs on cpu or gpu, not {other:?}"),
            ));
        }
    };
    Ok(on_gpu)
}

/// The number of atoms the bench uses: `--atoms`, at most the Fashion-MNIST file's images
/// (None when its header cannot be read: the read reports why).
fn atom_count(opts: &BenchOptions) -> Option<usize> {
    match &opts.data {
        Some(dir) => crate::data::idx::image_header(&dir.join("train-images-idx3-ubyte.gz"))
            .map(|h| opts.atoms.min(h.0)),
        None => Some(opts.atoms),
    }
}

/// Whether the atoms are mapped (`--atom-store`; auto: when their float32 images exceed
/// [`crate::resources::AUTO_MAP_FRACTION`] of the memory). Mapped stores run on the CPU.
fn maps_atoms(opts: &BenchOptions, on_gpu: bool) -> Result<bool> {
    let n = atom_count(opts).unwrap_or(opts.atoms);
    let f32_bytes = n as f64 * opts.dim as f64 * 4.0;
    let memory = crate::resources::memory();
    let mapped = !on_gpu && opts.atom_store.maps(f32_bytes, memory.as_ref());
    if on_gpu && opts.atom_store == crate::resources::AtomPlacement::Mapped {
        return Err(Error::config(
            "--atom-store",
            "a mapped atom store runs on the CPU backend only (the GPU holds its atoms in \
             device memory); use --backend cpu, or --atom-store memory",
        ));
    }
    if mapped && opts.storage == Storage::F16 {
        return Err(Error::config(
            "--storage",
            "a mapped atom store keeps the 8-bit intensities of its entry (u8), not f16; drop \
             --storage or use --atom-store memory",
        ));
    }
    if mapped {
        let dir = cache_dir(opts);
        let entry = dir.join(format!("dataset-{}.bin", entry_key(opts, n)?));
        if !entry.exists() {
            crate::resources::check_disk(
                "--cache-dir",
                &dir,
                n as f64 * opts.dim as f64,
                "free space there, choose another --cache-dir, or lower --atoms",
            )?;
        }
    }
    Ok(mapped)
}

/// What the bench holds in memory: the atoms (N × D × 4 bytes in memory; mapped, only the
/// per-atom arrays: norms, the bias in float64 and the engine's float32/float64 copy,
/// 24 × N bytes, since the entry is disk and page cache) and, at the largest batch B, the
/// particles and their means (2 × B × D × 4 bytes).
fn memory_needs(opts: &BenchOptions, mapped: bool) -> Vec<crate::resources::Need> {
    let d = opts.dim as f64;
    let mut needs = Vec::new();
    if let Some(n) = atom_count(opts) {
        let (what, formula, bytes, fix) = if mapped {
            (
                "the per-atom arrays of a mapped store",
                format!("N × 24 bytes, N = {n}"),
                n as f64 * 24.0,
                "lower --atoms",
            )
        } else {
            (
                "the atoms",
                format!("N × D × 4 bytes, N = {n}, D = {}", opts.dim),
                n as f64 * d * 4.0,
                "lower --atoms, or use --atom-store mapped (the atoms stay on disk)",
            )
        };
        needs.push(crate::resources::Need {
            key: "--atoms".into(),
            value: opts.atoms.to_string(),
            what: what.into(),
            formula,
            bytes,
            fix: fix.into(),
        });
    }
    let b = opts.batches.iter().copied().max().unwrap_or(0);
    needs.push(crate::resources::Need {
        key: "--batch".into(),
        value: b.to_string(),
        what: "the particles and their means".into(),
        formula: format!("2 × B × D × 4 bytes, D = {}", opts.dim),
        bytes: 2.0 * b as f64 * d * 4.0,
        fix: "lower --batch".into(),
    });
    needs
}

fn cache_dir(opts: &BenchOptions) -> PathBuf {
    opts.cache_dir
        .clone()
        .unwrap_or_else(crate::data::mapped::default_cache_dir)
}

/// The cache key of the bench's atoms: the random stream, or the Fashion-MNIST file with its
/// size and modification time (a changed file gets a new entry).
fn entry_key(opts: &BenchOptions, n: usize) -> Result<String> {
    let what = match &opts.data {
        None => format!(
            "bench atoms: random 8-bit, seed {}, chacha8 stream 1 bytes, N = {n}, D = {}",
            opts.seed, opts.dim
        ),
        Some(dir) => {
            let path = std::fs::canonicalize(dir.join("train-images-idx3-ubyte.gz"))
                .map_err(|e| Error::io(dir.join("train-images-idx3-ubyte.gz"), e))?;
            let meta = std::fs::metadata(&path).map_err(|e| Error::io(&path, e))?;
            let mtime = meta
                .modified()
                .ok()
                .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
                .map_or(0, |t| t.as_nanos());
            format!(
                "bench atoms: {} ({} bytes, modified {mtime}), first N = {n}",
                path.display(),
                meta.len()
            )
        }
    };
    Ok(crate::data::cache::key_of(&what))
}

/// The seeded random atoms' intensities, `len` bytes from their own stream (so that the
/// particles and the bias draw the same numbers whether the atoms are generated or mapped).
fn random_intensities(seed: u64) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(1);
    rng
}

/// The first `opts.atoms` images of the Fashion-MNIST folder `opts.data`, or seeded random
/// 8-bit atoms, with a description for the records.
fn load_atoms(opts: &BenchOptions) -> Result<(Vec<f32>, String)> {
    let table = crate::data::u8_pixel_table();
    let (codes, what) = intensities(opts)?;
    Ok((codes.iter().map(|&k| table[k as usize]).collect(), what))
}

/// The atoms' 8-bit intensities (N × D) and their description.
fn intensities(opts: &BenchOptions) -> Result<(Vec<u8>, String)> {
    match &opts.data {
        Some(dir) => {
            let path = dir.join("train-images-idx3-ubyte.gz");
            let (h, w, mut bytes) = crate::data::idx::read_images(&path)?;
            let d = h * w;
            if d != opts.dim {
                return Err(Error::config(
                    "dim",
                    format!("{} has D = {d}, not {}", path.display(), opts.dim),
                ));
            }
            let n = opts.atoms.min(bytes.len() / d);
            bytes.truncate(n * d);
            Ok((bytes, path.display().to_string()))
        }
        None => {
            let mut codes = vec![0u8; opts.atoms * opts.dim];
            random_intensities(opts.seed).fill_bytes(&mut codes);
            Ok((codes, format!("random 8-bit, seed {}", opts.seed)))
        }
    }
}

/// The bench's atoms as a mapped u8 entry in the cache folder, written first when absent:
/// random atoms a block of rows at a time (never all in memory), Fashion-MNIST from its bytes.
fn map_atoms(opts: &BenchOptions) -> Result<crate::data::mapped::MappedAtoms> {
    use crate::data::mapped::{Encoding, EntryWriter, open_or_write};
    let n = atom_count(opts).unwrap_or(opts.atoms);
    let d = opts.dim;
    let key = entry_key(opts, n)?;
    let side = (d as f64).sqrt() as usize;
    let shape = if side * side == d {
        crate::data::ImageShape::new(side, side, 1)
    } else {
        crate::data::ImageShape::new(1, d, 1)
    };
    open_or_write(&cache_dir(opts), &key, |path| {
        let (source, mut w) = match &opts.data {
            None => {
                let source = format!("random 8-bit, seed {}", opts.seed);
                (source.clone(), None)
            }
            Some(_) => {
                let (codes, source) = intensities(opts)?;
                (source, Some(codes))
            }
        };
        let mut writer = EntryWriter::create(path, &key, shape, n, &source, Encoding::U8)?;
        match w.take() {
            Some(codes) => writer.push_u8(&codes)?,
            None => {
                let mut rng = random_intensities(opts.seed);
                let mut block = vec![0u8; 4096 * d];
                for r0 in (0..n).step_by(4096) {
                    let rows = 4096.min(n - r0);
                    // fill_bytes continues one byte stream across calls (whole words per
                    // call: blocks are a multiple of 4 bytes except the last).
                    rng.fill_bytes(&mut block[..rows * d]);
                    writer.push_u8(&block[..rows * d])?;
                }
            }
        }
        writer.finish()
    })
}

/// The atoms the bench reads besides the backend: in memory, or the mapped entry.
enum BenchAtoms {
    Memory(Vec<f32>),
    Mapped(std::sync::Arc<crate::data::mapped::MappedAtoms>),
}

impl BenchAtoms {
    fn rows(&self, d: usize) -> usize {
        match self {
            BenchAtoms::Memory(a) => a.len() / d,
            BenchAtoms::Mapped(m) => m.rows(),
        }
    }
    /// Rows [r0, r1) as float32.
    fn block(&self, d: usize, r0: usize, r1: usize) -> std::borrow::Cow<'_, [f32]> {
        match self {
            BenchAtoms::Memory(a) => std::borrow::Cow::Borrowed(&a[r0 * d..r1 * d]),
            BenchAtoms::Mapped(m) => std::borrow::Cow::Owned(m.rows_f32(r0, r1)),
        }
    }
}

/// The posterior bias of a box-inpainting measurement of the last atom: σ = 0.05, the box
/// hides the middle half of the image; b_i = −‖M(y − a_i)‖²/(2σ²).
fn inpainting_bias(atoms: &BenchAtoms, d: usize, rng: &mut ChaCha8Rng) -> Vec<f64> {
    let sigma = 0.05;
    let n = atoms.rows(d);
    let side = (d as f64).sqrt() as usize;
    let keep: Vec<bool> = (0..d)
        .map(|k| {
            let (r, c) = (k / side.max(1), k % side.max(1));
            !((side / 4..3 * side / 4).contains(&r) && (side / 4..3 * side / 4).contains(&c))
        })
        .collect();
    let truth = atoms.block(d, n - 1, n);
    let y: Vec<f64> = truth
        .iter()
        .map(|&a| a as f64 + sigma * rng.sample::<f64, _>(StandardNormal))
        .collect();
    let mut bias = Vec::with_capacity(n);
    // In blocks of rows: a mapped store is decoded a block at a time.
    for r0 in (0..n).step_by(4096) {
        let block = atoms.block(d, r0, n.min(r0 + 4096));
        bias.extend(block.chunks(d).map(|a| {
            -a.iter()
                .zip(&y)
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|((&a, &y), _)| (y - a as f64).powi(2))
                .sum::<f64>()
                / (2.0 * sigma * sigma)
        }));
    }
    bias
}

/// Writes the atoms and the bias for the numpy baseline into `workdir`: Ok when the baseline
/// can run, else why not (the records say it).
fn prepare_baseline(
    opts: &BenchOptions,
    workdir: &Path,
    atoms: &BenchAtoms,
    d: usize,
    bias: &[f64],
) -> Result<std::result::Result<(), String>> {
    if !opts.baseline {
        return Ok(Err("baseline not requested".to_string()));
    }
    let BenchAtoms::Memory(atoms) = atoms else {
        return Ok(Err(
            "no numpy baseline over a mapped store (numpy would load the float32 atoms)".into(),
        ));
    };
    if let Err(why) = numpy_available() {
        return Ok(Err(why));
    }
    std::fs::create_dir_all(workdir).map_err(|e| Error::io(workdir, e))?;
    write_npy_stream(&workdir.join("atoms.npy"), &[atoms.len() / d, d], atoms)?;
    let b32: Vec<f32> = bias.iter().map(|&b| b as f32).collect();
    write_npy_stream(&workdir.join("bias.npy"), &[bias.len()], &b32)?;
    Ok(Ok(()))
}

/// `b` particles x_t = s·a_j + √v·ε around random atoms a_j, as a noisy cloud at t would be.
fn noisy_particles(
    atoms: &BenchAtoms,
    d: usize,
    b: usize,
    noise: Noise,
    rng: &mut ChaCha8Rng,
) -> Vec<f32> {
    let n = atoms.rows(d);
    let mut x = Vec::with_capacity(b * d);
    for _ in 0..b {
        let j = rng.random_range(0..n);
        x.extend(atoms.block(d, j, j + 1).iter().map(|&a| {
            (noise.s * a as f64 + noise.v.sqrt() * rng.sample::<f64, _>(StandardNormal)) as f32
        }));
    }
    x
}

/// The σ-DPS step's record beside the fsr step's `fsr` at the same B and t.
fn dps_record(
    backend: &dyn Backend,
    x: &[f32],
    noise: Noise,
    repeats: usize,
    fsr: &BenchRecord,
) -> Result<BenchRecord> {
    // 8·B·N·D: prior pass (distances + weighted sum) 4·B·N·D, C·g pass with the prior pass's
    // weights (CPU) or distances (GPU) kept: projections ⟨a_i, g⟩ and the weighted sum,
    // 4·B·N·D.
    let (times, device) = time_dps_step(backend, x, noise, repeats)?;
    let secs = times.best;
    let gflops = 8.0 * (fsr.b * fsr.n * fsr.d) as f64 / secs / 1e9;
    Ok(BenchRecord {
        kernel: "sigma-dps-step".into(),
        seconds_per_step: secs,
        median_seconds_per_step: times.median,
        gflops,
        fraction_of_peak: fsr.peak_gflops.map(|p| gflops / p),
        baseline_seconds_per_step: None,
        baseline: Some("no baseline for this kernel".into()),
        baseline_max_rel_diff: None,
        ratio_to_fsr: Some(secs / fsr.seconds_per_step),
        device_seconds_per_step: device.seconds,
        device_seconds_by_kernel: device.by_kernel,
        peak_rss_mb: peak_rss_mb(),
        rss_mb: rss_mb(),
        rss_anon_mb: rss_anon_mb(),
        ..fsr.clone()
    })
}

fn python_command() -> std::process::Command {
    let mut cmd = std::process::Command::new("python3");
    // Set on some machines for old OpenBLAS builds; they slow a current numpy.
    cmd.env_remove("OPENBLAS_CORETYPE")
        .env_remove("OPENBLAS_L2_SIZE");
    cmd
}

fn numpy_available() -> std::result::Result<(), String> {
    match python_command().args(["-c", "import numpy"]).output() {
        Ok(o) if o.status.success() => Ok(()),
        Ok(_) => Err("numpy is not importable by python3 (pip install numpy)".into()),
        Err(e) => Err(format!("python3 did not start: {e}")),
    }
}

/// Runs the numpy step on the same x; returns (seconds, description, max relative difference
/// of its means from the backend's).
fn run_numpy(
    opts: &BenchOptions,
    dir: &Path,
    x: &[f32],
    b: usize,
    d: usize,
    noise: Noise,
    means: &[f32],
) -> Result<(f64, String, f64)> {
    let x_path = dir.join("x.npy");
    let out_path = dir.join("means.npy");
    write_npy_stream(&x_path, &[b, d], x)?;
    let out = python_command()
        .arg(&opts.script)
        .arg(dir.join("atoms.npy"))
        .arg(&x_path)
        .arg(dir.join("bias.npy"))
        .arg(noise.s.to_string())
        .arg(noise.v.to_string())
        .arg(opts.repeats.max(1).to_string())
        .arg(&out_path)
        .output()
        .map_err(|e| Error::io(&opts.script, e))?;
    if !out.status.success() {
        return Err(Error::data(
            &opts.script,
            format!(
                "exited with {}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr)
            ),
        ));
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout)
        .map_err(|e| Error::data(&opts.script, format!("printed no JSON ({e})")))?;
    let secs = v["seconds_per_step"]
        .as_f64()
        .ok_or_else(|| Error::data(&opts.script, "no seconds_per_step in its JSON"))?;
    let desc = format!(
        "numpy {} ({}), chunk {}",
        v["numpy"].as_str().unwrap_or("?"),
        v["blas"].as_str().unwrap_or("?"),
        v["chunk"]
    );
    let theirs = crate::arrays::read_npy(&out_path)?;
    let scale = means
        .iter()
        .fold(0.0f64, |m, &a| m.max((a as f64).abs()))
        .max(1e-30);
    let diff = theirs
        .data
        .iter()
        .zip(means)
        .fold(0.0f64, |m, (&a, &b)| m.max((a - b as f64).abs()));
    Ok((secs, desc, diff / scale))
}

/// Writes a little-endian float32 `.npy` straight from the slice (no in-memory copy: the atom
/// store is the biggest thing in the process).
fn write_npy_stream(path: &Path, shape: &[usize], data: &[f32]) -> Result<()> {
    let dims: Vec<String> = shape.iter().map(|s| s.to_string()).collect();
    let shape_txt = if dims.len() == 1 {
        format!("({},)", dims[0])
    } else {
        format!("({})", dims.join(", "))
    };
    let mut header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': {shape_txt}, }}");
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(' ');
    }
    header.push('\n');
    let io = |e| Error::io(path, e);
    let mut f = std::io::BufWriter::new(std::fs::File::create(path).map_err(io)?);
    f.write_all(b"\x93NUMPY\x01\x00").map_err(io)?;
    f.write_all(&(header.len() as u16).to_le_bytes())
        .map_err(io)?;
    f.write_all(header.as_bytes()).map_err(io)?;
    for chunk in data.chunks(1 << 16) {
        let bytes: Vec<u8> = chunk.iter().flat_map(|v| v.to_le_bytes()).collect();
        f.write_all(&bytes).map_err(io)?;
    }
    f.flush().map_err(io)
}

/// Nominal single-precision (fp32, non-tensor-core) peak GFLOP/s of an adapter, from its name:
/// the `FSLENS_GPU_PEAK_GFLOPS` environment variable when set, else the vendor data-sheet
/// boost-clock figure for a few common NVIDIA data-centre and desktop parts, else None.
pub fn nominal_gpu_peak_gflops(adapter: &str) -> Option<f64> {
    if let Some(v) = std::env::var("FSLENS_GPU_PEAK_GFLOPS")
        .ok()
        .and_then(|v| v.trim().parse::<f64>().ok())
        .filter(|v| *v > 0.0)
    {
        return Some(v);
    }
    let name = adapter.to_ascii_uppercase();
    // Most specific names first (a PCIe H100 is slower than the SXM part).
    const TABLE: &[(&str, f64)] = &[
        ("H100 PCIE", 51_200.0),
        ("H100 NVL", 60_000.0),
        ("H100", 66_900.0),
        ("H200", 66_900.0),
        ("GH200", 66_900.0),
        ("A100", 19_500.0),
        ("L40S", 91_600.0),
        ("L40", 90_500.0),
        ("L4", 30_300.0),
        ("A10G", 31_200.0),
        ("A10", 31_200.0),
        ("V100", 15_700.0),
        ("T4", 8_100.0),
        ("RTX 4090", 82_600.0),
        ("RTX 3090", 35_600.0),
    ];
    TABLE
        .iter()
        .find(|(key, _)| name.contains(key))
        .map(|&(_, g)| g)
}

/// The nominal peak of the distinct adapters the devices run on (a repeated adapter counts
/// once: two devices on one GPU share its peak); None when one is unknown.
fn devices_peak_gflops(devices: &[crate::engine::devices::DeviceShard]) -> Option<f64> {
    let mut seen = Vec::new();
    let mut total = 0.0;
    for dev in devices {
        if !seen.contains(&dev.adapter) {
            seen.push(dev.adapter);
            total += nominal_gpu_peak_gflops(&dev.name)?;
        }
    }
    Some(total)
}

/// The backend under test and the host atoms the bench reads (particles, the baseline's
/// .npy): the CPU backend's own store, or the copy a GPU backend was built from (one device or
/// several, each with its shard).
enum Subject {
    Cpu(CpuBackend),
    Gpu(Box<dyn Backend>, Vec<crate::engine::devices::DeviceShard>),
    /// Under several MPI ranks: this rank's shard joined to the others', with the bytes of
    /// this rank's atom store.
    Ranks(crate::engine::ranks::RankBackend, usize),
}

impl Subject {
    /// The backend `opts` asks for, holding `atoms` (N×d); under several MPI ranks, this
    /// rank's shard of them (the rest is dropped here).
    fn new(
        opts: &BenchOptions,
        atoms: BenchAtoms,
        d: usize,
        on_gpu: bool,
        threads: usize,
    ) -> Result<Subject> {
        let atoms = match atoms {
            BenchAtoms::Memory(a) => a,
            // A mapped set stays one process's: ranks shard in-memory atoms only.
            BenchAtoms::Mapped(m) => {
                let cpu = CpuBackend::from_mapped(m)?.with_threads(threads)?;
                return Ok(Subject::Cpu(match opts.blocking {
                    Some((chunk, rows)) => cpu.with_blocking(chunk, rows)?,
                    None => cpu,
                }));
            }
        };
        let Some(world) = crate::engine::ranks::world() else {
            return Subject::local(opts, atoms, d, on_gpu, threads);
        };
        let mut store = 0;
        let joined = crate::engine::ranks::build(world.clone(), &atoms, d, |shard| {
            let local = Subject::local(opts, shard.to_vec(), d, on_gpu, threads)?;
            store = local.store_bytes(shard.len(), opts.storage);
            Ok(match local {
                Subject::Cpu(cpu) => Box::new(cpu) as Box<dyn Backend>,
                Subject::Gpu(gpu, _) => gpu,
                Subject::Ranks(r, _) => Box::new(r),
            })
        })?;
        Ok(Subject::Ranks(joined, store))
    }

    /// The backend `opts` asks for over `atoms` in this process.
    fn local(
        opts: &BenchOptions,
        atoms: Vec<f32>,
        d: usize,
        on_gpu: bool,
        threads: usize,
    ) -> Result<Subject> {
        if on_gpu && opts.prune.is_some() {
            return Err(crate::Error::config(
                "prune",
                "certified pruning is built for the CPU backend only; bench it with --backend cpu",
            ));
        }
        if on_gpu {
            let opts_gpu = GpuOptions {
                storage: opts.storage,
                tile_dims: opts.tile_dims,
                tile_rows: opts.tile_rows,
                sums_block_rows: opts.sums_block_rows,
                target_workgroups: opts.workgroups,
                trusted_shaders: true,
                ..Default::default()
            };
            let (gpu, devices) =
                crate::engine::devices::open_gpus(&atoms, d, &opts_gpu, &opts.devices)?;
            return Ok(Subject::Gpu(gpu, devices));
        }
        // from_vec: the backend owns the only host copy, so peak RSS counts the atoms once;
        // a u8 / f16 store encodes them and the float32 copy is dropped here.
        let cpu = match opts.storage {
            Storage::F32 => CpuBackend::from_vec(atoms, d)?,
            other => CpuBackend::with_storage(&atoms, d, other)?,
        };
        let mut cpu = cpu.with_threads(threads)?;
        if let Some((chunk, rows)) = opts.blocking {
            cpu = cpu.with_blocking(chunk, rows)?;
        }
        if let Some(p) = opts.prune {
            cpu = cpu.with_pruning(p)?;
        }
        Ok(Subject::Cpu(cpu))
    }
    /// Bytes of the atom store: the CPU's as held, the GPU's `values` in `storage`.
    fn store_bytes(&self, values: usize, storage: Storage) -> usize {
        match self {
            Subject::Cpu(cpu) => cpu.store_bytes(),
            Subject::Gpu(..) => (values as f64 * storage.bytes_per_value()) as usize,
            Subject::Ranks(_, bytes) => *bytes,
        }
    }
    /// The GPU devices and their shards (none on the CPU, none listed under ranks).
    fn devices(&self) -> &[crate::engine::devices::DeviceShard] {
        match self {
            Subject::Cpu(_) | Subject::Ranks(..) => &[],
            Subject::Gpu(_, devices) => devices,
        }
    }
    fn backend(&self) -> &dyn Backend {
        match self {
            Subject::Cpu(cpu) => cpu,
            Subject::Gpu(gpu, _) => gpu.as_ref(),
            Subject::Ranks(r, _) => r,
        }
    }
    fn backend_mut(&mut self) -> &mut dyn Backend {
        match self {
            Subject::Cpu(cpu) => cpu,
            Subject::Gpu(gpu, _) => gpu.as_mut(),
            Subject::Ranks(r, _) => r,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::nominal_gpu_peak_gflops;

    #[test]
    fn nominal_peak_matches_the_most_specific_name() {
        if std::env::var_os("FSLENS_GPU_PEAK_GFLOPS").is_some() {
            eprintln!("FSLENS_GPU_PEAK_GFLOPS is set: the table is not consulted");
            return;
        }
        let peak = |name: &str| nominal_gpu_peak_gflops(name);
        assert_eq!(
            peak("gpu: NVIDIA H100 80GB HBM3 (Vulkan, DiscreteGpu)"),
            Some(66_900.0)
        );
        assert_eq!(peak("NVIDIA H100 PCIe"), Some(51_200.0));
        assert_eq!(peak("NVIDIA L40S"), Some(91_600.0));
        assert_eq!(peak("NVIDIA L4"), Some(30_300.0));
        assert_eq!(peak("llvmpipe (LLVM 15.0.6, 256 bits)"), None);
    }

    #[test]
    fn a_set_larger_than_ram_is_refused_in_memory_and_accepted_mapped() {
        use crate::resources::{AtomPlacement, Memory, shortfall};
        // A 1 GB machine and N = 1e6 atoms of D = 784: 3.1 GB as float32, 0.78 GB mapped.
        let memory = Memory {
            bytes: 1e9,
            source: "a test's machine".into(),
        };
        let opts = super::BenchOptions {
            atoms: 1_000_000,
            data: None,
            ..Default::default()
        };
        let (key, text) = shortfall(&super::memory_needs(&opts, false), Some(&memory)).unwrap();
        assert_eq!(key, "--atoms");
        assert!(
            text.contains("3.14 GB for the atoms") && text.contains("--atom-store mapped"),
            "{text}"
        );
        // Mapped: 24 bytes an atom in RAM (norms and the bias), the atoms on disk.
        let needs = super::memory_needs(&opts, true);
        assert_eq!(shortfall(&needs, Some(&memory)), None);
        assert_eq!(needs[0].bytes, 24e6);
        // auto maps exactly when the float32 atoms pass half the memory.
        let f32_bytes = 4.0 * 784e6;
        assert!(AtomPlacement::Auto.maps(f32_bytes, Some(&memory)));
        assert!(!AtomPlacement::Auto.maps(0.49e9, Some(&memory)));
        assert!(!AtomPlacement::Auto.maps(f32_bytes, None));
        assert!(!AtomPlacement::Memory.maps(f32_bytes, Some(&memory)));
        assert!(AtomPlacement::Mapped.maps(1.0, Some(&memory)));
        // Still refused mapped: a batch that cannot fit.
        let opts = super::BenchOptions {
            batches: vec![100_000_000],
            ..opts
        };
        let (key, _) = shortfall(&super::memory_needs(&opts, true), Some(&memory)).unwrap();
        assert_eq!(key, "--batch");
    }

    #[test]
    fn the_mapped_bench_matches_the_in_memory_bench() {
        let dir = std::env::temp_dir().join(format!("fslens-bench-map-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let opts = super::BenchOptions {
            atoms: 3000,
            dim: 64,
            data: None,
            batches: vec![8],
            times: vec![0.3],
            repeats: 1,
            baseline: false,
            peak_size: 64,
            threads: Some(2),
            cache_dir: Some(dir.clone()),
            ..Default::default()
        };
        let memory = super::run(&opts, &mut |_| {}).unwrap();
        let mapped_opts = super::BenchOptions {
            atom_store: crate::resources::AtomPlacement::Mapped,
            ..opts.clone()
        };
        // Twice: the entry written (in blocks of rows), then read from the cache.
        for _ in 0..2 {
            let mapped = super::run(&mapped_opts, &mut |_| {}).unwrap();
            assert_eq!(mapped[0].storage, "u8 mapped");
            assert!(mapped[0].backend.contains("u8 mapped"));
            // Same atoms, particles and bias: the same posterior (mean ESS bit for bit).
            assert_eq!(mapped[0].mean_ess.to_bits(), memory[0].mean_ess.to_bits());
            assert_eq!(mapped[0].atom_store_mb, 3000.0 * 64.0 / 1e6);
        }
        let entries = std::fs::read_dir(&dir).unwrap().count();
        assert_eq!(entries, 1);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn sizes_beyond_the_machine_are_refused_before_any_work() {
        if crate::resources::memory().is_none() {
            return;
        }
        let t0 = std::time::Instant::now();
        for (opts, key) in [
            (
                super::BenchOptions {
                    atoms: 1_000_000_000,
                    data: None,
                    ..Default::default()
                },
                "--atoms: 1000000000 needs 3.14 TB for the atoms",
            ),
            (
                super::BenchOptions {
                    batches: vec![16, 10_000_000_000],
                    data: None,
                    ..Default::default()
                },
                "--batch: 10000000000 needs 62.7 TB for the particles",
            ),
        ] {
            let e = super::run(&opts, &mut |_| {}).unwrap_err().to_string();
            assert!(e.starts_with(key), "{e}");
        }
        assert!(t0.elapsed().as_secs_f64() < 1.0);
    }
}

//! `fslens bench`: the fsr step (and optionally the σ-DPS step) timed against this machine's
//! GEMM peak and a numpy baseline, printed as a table or JSON lines.

use std::path::PathBuf;

use clap::Args;

use super::EngineArgs;
use fslens::Result;
use fslens::engine::gpu::Storage;
use fslens::engine::{BackendKind, StorageChoice};
use fslens::resources::AtomPlacement;

fn parse_atom_store(text: &str) -> Result<AtomPlacement> {
    <AtomPlacement as fslens::choices::Choice>::parse_for(text, "--atom-store")
}

#[derive(Args, Debug)]
pub struct BenchArgs {
    /// Batch sizes B, comma-separated.
    #[arg(long, value_delimiter = ',', default_values_t = [16usize, 256])]
    batch: Vec<usize>,
    /// Diffusion times t, comma-separated (1e-3 exercises the precision path).
    #[arg(long, value_delimiter = ',', default_values_t = [0.3f64, 1e-3])]
    t: Vec<f64>,
    /// Number of atoms N (the first N Fashion-MNIST training images, or random 8-bit data).
    #[arg(long, default_value_t = 60000)]
    atoms: usize,
    /// Dimension D of random atoms (Fashion-MNIST has 784).
    #[arg(long, default_value_t = 784)]
    dim: usize,
    /// Fashion-MNIST folder (default: /usr/share/datasets/fashion-mnist when present).
    #[arg(long)]
    data: Option<PathBuf>,
    /// Use seeded random atoms even when Fashion-MNIST is installed.
    #[arg(long)]
    random: bool,
    /// Skip the numpy baseline.
    #[arg(long)]
    no_baseline: bool,
    /// Also time a σ-DPS step (prior pass + covariance pass) and its ratio to the fsr step.
    #[arg(long)]
    dps: bool,
    /// Timed repeats per case (the best is reported).
    #[arg(long, default_value_t = 5)]
    repeats: usize,
    /// The engine benched (auto: the GPU when a hardware adapter exists; storage auto: u8
    /// on the GPU, whose atoms here are 8-bit, f32 on the CPU).
    #[command(flatten)]
    engine: EngineArgs,
    /// Where the atoms are held: memory, mapped (a u8 data-cache entry under --cache-dir,
    /// memory-mapped and streamed chunk by chunk: CPU only, for atom sets larger than RAM) or
    /// auto (mapped when the float32 atoms exceed half the machine's memory).
    #[arg(long, default_value = "auto", value_parser = parse_atom_store)]
    atom_store: AtomPlacement,
    /// Folder of mapped atom entries (default: $XDG_CACHE_HOME/fslens or ~/.cache/fslens).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    /// GPU: dimensions the distances kernel stages through workgroup memory per step, a
    /// multiple of 16 (default 16)
    #[arg(long)]
    tile_dims: Option<usize>,
    /// GPU: rows per tile of the GEMM-shaped kernels, 16 or 64 (default: 16 for at most 16
    /// rows, else 64)
    #[arg(long)]
    tile_rows: Option<usize>,
    /// GPU: rows per thread of the weighted-sums kernel's register block, 4 or 8 (default 4)
    #[arg(long)]
    sums_block_rows: Option<usize>,
    /// GPU: workgroups to aim for in the weighted-sums dispatch, which sets how many splits
    /// the atoms are cut into (default 1024; 16 on a software adapter)
    #[arg(long)]
    workgroups: Option<usize>,
}

/// The engine `bench` times: `backend`/`storage` as the library names them (auto resolved).
fn engine_of(engine: &EngineArgs) -> (String, Storage) {
    let on_gpu = match engine.backend.unwrap_or_default() {
        BackendKind::Cpu => false,
        BackendKind::Gpu => true,
        BackendKind::Auto => engine.devices.unwrap_or_default().auto_uses_gpu(),
    };
    let storage = match engine.storage.unwrap_or_default() {
        StorageChoice::Fixed(s) => s,
        StorageChoice::Auto if on_gpu => Storage::U8,
        StorageChoice::Auto => Storage::F32,
    };
    (if on_gpu { "gpu" } else { "cpu" }.to_string(), storage)
}

pub fn bench(args: &BenchArgs, quiet: bool, json: bool) -> Result<()> {
    let BenchArgs {
        batch,
        t,
        atoms,
        dim,
        data,
        random,
        no_baseline,
        dps,
        repeats,
        engine,
        tile_dims,
        tile_rows,
        sums_block_rows,
        workgroups,
        atom_store,
        cache_dir,
    } = args;
    let (backend, storage) = engine_of(engine);
    let threads = &engine.threads;
    for &ti in t {
        fslens::diffusion::check_time("--t", ti)?;
    }
    let mut opts = fslens::bench::BenchOptions {
        batches: batch.clone(),
        times: t.clone(),
        atoms: *atoms,
        dim: *dim,
        // Under MPI rank 0 alone runs the baseline (and prints).
        baseline: !no_baseline && fslens::engine::ranks::rank() == 0,
        dps: *dps,
        repeats: (*repeats).max(1),
        threads: *threads,
        backend,
        storage,
        tile_dims: *tile_dims,
        tile_rows: *tile_rows,
        sums_block_rows: *sums_block_rows,
        workgroups: *workgroups,
        atom_store: *atom_store,
        cache_dir: cache_dir.clone(),
        devices: engine.devices.unwrap_or_default(),
        prune: (engine.prune == Some(fslens::engine::PruneChoice::On))
            .then(fslens::engine::PruneOptions::default),
        ..Default::default()
    };
    if *random {
        opts.data = None;
    } else if let Some(dir) = data {
        opts.data = Some(dir.clone());
    }
    if !json && !quiet {
        eprintln!(
            "{:<15} {:>5} {:>6} {:>6} {:>6} {:>8} {:>10} {:>10} {:>8} {:>8} {:>7} {:>10} {:>10}",
            "kernel",
            "ranks",
            "t",
            "B",
            "N",
            "D",
            "s/step",
            "device s",
            "GFLOP/s",
            "peak",
            "frac",
            "numpy s",
            "speedup"
        );
    }
    fslens::bench::run(&opts, &mut |r| {
        if json {
            println!(
                "{}",
                serde_json::to_string(r).expect("bench records serialise")
            );
        } else if !quiet {
            let (base, speedup) = match (r.baseline_seconds_per_step, r.ratio_to_fsr) {
                (Some(b), _) => (format!("{b:.4}"), format!("{:.2}x", b / r.seconds_per_step)),
                (None, Some(q)) => ("-".into(), format!("{q:.2}x fsr")),
                (None, None) => ("-".into(), "-".into()),
            };
            // Unknown peaks (a GPU without a data-sheet entry) print as "-".
            let peak = r.peak_gflops.map_or("-".into(), |p| format!("{p:.1}"));
            let frac = r.fraction_of_peak.map_or("-".into(), |f| format!("{f:.2}"));
            // GPU timestamps: the passes' own time on the device.
            let device = r
                .device_seconds_per_step
                .map_or("-".into(), |s| format!("{s:.4}"));
            eprintln!(
                "{:<15} {:>5} {:>6} {:>6} {:>6} {:>8} {:>10.4} {:>10} {:>8.1} {:>8} {:>7} {:>10} {:>10}",
                r.kernel,
                r.ranks,
                r.t,
                r.b,
                r.n,
                r.d,
                r.seconds_per_step,
                device,
                r.gflops,
                peak,
                frac,
                base,
                speedup
            );
            if let (Some(split), Some(total)) =
                (&r.device_seconds_by_kernel, r.device_seconds_per_step)
            {
                let parts: Vec<String> = split
                    .iter()
                    .map(|(k, s)| format!("{k} {:.0} %", 100.0 * s / total))
                    .collect();
                eprintln!("{:<15} device time: {}", "", parts.join(", "));
            }
            if r.devices.len() > 1 {
                let split: Vec<String> = r
                    .devices
                    .iter()
                    .map(|s| {
                        format!(
                            "atoms {}..{} on adapter {} ({})",
                            s.atoms.0, s.atoms.1, s.adapter, s.name
                        )
                    })
                    .collect();
                eprintln!(
                    "{:<15} split over {} devices: {}",
                    "",
                    r.devices.len(),
                    split.join("; ")
                );
            }
            eprintln!(
                "{:<15} memory: {} atom store {:.0} MB, resident {:.0} MB (anonymous {:.0} MB, \
                 peak {:.0} MB)",
                "", r.storage, r.atom_store_mb, r.rss_mb, r.rss_anon_mb, r.peak_rss_mb
            );
        }
    })?;
    Ok(())
}

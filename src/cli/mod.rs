//! The `fslens` command line: clap subcommands over the library. Nothing imports this module.

mod progress;
mod sweep;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::Result;
use crate::config::RunConfig;
use crate::data::ImageShape;
use crate::diffusion::Schedule;
use crate::experiment::score::{Method, ScoreRequest};
use progress::Reporter;

const ABOUT: &str = "Shows when, why and how diffusion posterior samplers fail, against the exact \
finite-sample posterior of an empirical (training-set) prior.";

const AFTER_HELP: &str = "Examples:
  fslens demo --out demo-out                 # the embedded default: synthetic shapes, no files needed
  fslens run assets/configs/fashion-mnist-inpaint.toml --out fm-inpaint
  fslens compare assets/configs/glyphs-blur.toml --out glyphs-compare   # every sampler, one report.html
  fslens score --atoms A.npy --x X.npy --t 0.3 --method fsr --y Y.npy \\
               --operator matrix:M.npy --sigma 0.05 --out S.npy
  fslens diagnose --samples samples.npy --config assets/configs/demo.toml --out diag
                                             # score another program's samples vs the exact posterior
  fslens sweep assets/configs/sweep-demo.toml --out sw   # a grid of runs; rerun to resume
  fslens sweep sw.toml --out sw --shard 0/4  # one of 4 shards (one per Slurm array task)
  fslens merge sw                            # results.csv, results.jsonl, report.html
  fslens info                                # version, backends, GPU adapters
  fslens bench --json                        # one fsr step vs the GEMM peak and a numpy baseline";

#[derive(Parser, Debug)]
#[command(name = "fslens", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    /// Print nothing but errors.
    #[arg(long, global = true)]
    quiet: bool,
    /// Machine-readable output: JSON lines on stdout (progress records and the final result).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded default: a built-in synthetic data set, a x4 super-resolution measurement
    /// of a held-out image, the exact and fsr samplers. No files, no GPU needed; about 15 s on 2 cores.
    Demo {
        /// Output folder (replaced if it exists).
        #[arg(long, default_value = "fslens-demo")]
        out: PathBuf,
        /// auto | cpu | gpu (overrides the embedded config).
        #[arg(long)]
        backend: Option<String>,
        /// GPU atom storage: auto (u8 for 8-bit data, else f32) | f32 | u8 | f16.
        #[arg(long)]
        storage: Option<String>,
    },
    /// Run a TOML run config (see assets/configs/ and the README's config reference).
    #[command(after_help = operator_help())]
    Run {
        /// The run config (TOML). Relative paths inside it are resolved against its folder.
        config: PathBuf,
        /// Output folder (replaced if it exists); default: runs/<config name>.
        #[arg(long)]
        out: Option<PathBuf>,
        /// auto | cpu | gpu (overrides the config's `backend`).
        #[arg(long)]
        backend: Option<String>,
        /// GPU atom storage: auto (u8 for 8-bit data, else f32) | f32 | u8 | f16 (overrides the
        /// config's `storage`).
        #[arg(long)]
        storage: Option<String>,
    },
    /// Run the exact sampler and every approximate sampler that applies (exact, fsr, sigma-dps,
    /// zeta-dps, and pigdm/tmpd when the operator is linear) on the config's measurement, the
    /// same y and seed, whatever its `sampling.samplers` says; write one report.html and
    /// metrics.json. Skipped samplers are named, with the reason, on stderr and in the report.
    #[command(after_help = operator_help())]
    Compare {
        /// The run config (TOML). Relative paths inside it are resolved against its folder.
        config: PathBuf,
        /// Output folder (replaced if it exists); default: runs/<config name>-compare.
        #[arg(long)]
        out: Option<PathBuf>,
        /// auto | cpu | gpu (overrides the config's `backend`).
        #[arg(long)]
        backend: Option<String>,
        /// GPU atom storage: auto | f32 | u8 | f16 (overrides the config's `storage`).
        #[arg(long)]
        storage: Option<String>,
    },
    /// Compute the score of particles x at time t, from .npy files: exact posterior (fsr), prior,
    /// or an approximate sampler's (sigma-dps, zeta-dps, pigdm, tmpd).
    #[command(after_help = operator_help())]
    Score {
        /// Atoms, shape (N, D), float32 or float64 (uint8 is read as its values).
        #[arg(long)]
        atoms: PathBuf,
        /// Particles, shape (B, D) or (D,).
        #[arg(long)]
        x: PathBuf,
        /// Diffusion time t in (0, 1].
        #[arg(long)]
        t: f64,
        /// fsr (exact posterior score), prior, or an approximate sampler's score: sigma-dps,
        /// zeta-dps, pigdm, tmpd (prior score + its likelihood score, design §4).
        #[arg(long, default_value = "fsr")]
        method: String,
        /// ζ of zeta-dps.
        #[arg(long, default_value_t = 1.0)]
        zeta: f64,
        /// Relative residual at which pigdm/tmpd conjugate gradients stop.
        #[arg(long, default_value_t = 1e-6)]
        cg_tolerance: f64,
        /// Iteration cap of pigdm/tmpd conjugate gradients.
        #[arg(long, default_value_t = 100)]
        cg_max_iterations: usize,
        /// Measurement y, shape (m,). Needed by every method but prior.
        #[arg(long)]
        y: Option<PathBuf>,
        /// Operator spec (e.g. matrix:M.npy). Needed by every method but prior.
        #[arg(long)]
        operator: Option<String>,
        /// Measurement noise standard deviation σ > 0. Needed by every method but prior.
        #[arg(long)]
        sigma: Option<f64>,
        /// Where to write the (B, D) float32 score.
        #[arg(long)]
        out: PathBuf,
        /// Image shape HxWxC of a row, for operators that need one (default: square, else 1xD).
        #[arg(long)]
        shape: Option<String>,
        /// auto | cpu | gpu.
        #[arg(long, default_value = "auto")]
        backend: String,
        /// GPU atom storage: auto (u8 when the atoms are 8-bit values, else f32) | f32 | u8 | f16.
        #[arg(long, default_value = "auto")]
        storage: String,
        #[arg(long, default_value_t = 0.01)]
        beta_min: f64,
        #[arg(long, default_value_t = 20.0)]
        beta_max: f64,
    },
    /// Score samples made by another program (e.g. a neural DPS run in PyTorch) against the
    /// exact posterior of a config's measurement (same atoms, truth, operator and y as `fslens
    /// run` of that config), with the metrics of a run at t = 0, beside fresh exact draws.
    #[command(after_help = DIAGNOSE_HELP)]
    Diagnose {
        /// The samples: a .npy of shape (K, D), (K, H, W, C) or (K, H, W) (float32, float64 or
        /// uint8; HWC order), or a folder of PNG/JPEG images of the config's size.
        #[arg(long)]
        samples: PathBuf,
        /// The run config whose posterior the samples target (its [sampling] samplers are not
        /// run).
        #[arg(long)]
        config: PathBuf,
        /// Pixel convention of the samples: minus-one-to-one, zero-to-one or 0-255. Default:
        /// minus-one-to-one for float .npy, 0-255 for uint8 .npy and images.
        #[arg(long)]
        pixels: Option<String>,
        /// Output folder (replaced if it exists); default: runs/diagnose-<config name>.
        #[arg(long)]
        out: Option<PathBuf>,
        /// The name the samples are listed under (samples_<label>.npy, grid_<label>.png).
        #[arg(long, default_value = "external")]
        label: String,
        /// auto | cpu | gpu (overrides the config's `backend`).
        #[arg(long)]
        backend: Option<String>,
    },
    /// Run a sweep: a base run config and axes to vary (README: "Sweeps"). Each job writes
    /// OUT/jobs/<id>/ atomically; a rerun skips complete jobs and retries failed ones. The exit
    /// status is nonzero when a job failed (its error is in OUT/failed/<id>/error.txt).
    Sweep {
        /// The sweep file (TOML): `base = "run.toml"` or a [base] table, and [axes].
        config: PathBuf,
        /// Output folder (shared by all shards); default: runs/<sweep file name>.
        #[arg(long)]
        out: Option<PathBuf>,
        /// Run only shard i of n (0-based), e.g. --shard "$SLURM_ARRAY_TASK_ID/4".
        #[arg(long)]
        shard: Option<String>,
        /// auto | cpu | gpu for every job (part of the job ids).
        #[arg(long)]
        backend: Option<String>,
        /// Print a Slurm batch script that runs the sweep as an array of N tasks (one shard
        /// each, then a merge) and exit: `fslens sweep S.toml --out O --print-sbatch 4 | sbatch`.
        #[arg(long, value_name = "N")]
        print_sbatch: Option<usize>,
        /// Extra #SBATCH lines for --print-sbatch, e.g. --sbatch-arg=--time=02:00:00.
        #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
        sbatch_args: Vec<String>,
        /// Folder of the atom cache (loaded data sets and measured atoms, checksummed) shared
        /// by the jobs; default OUT/cache.
        #[arg(long, value_name = "DIR")]
        cache: Option<PathBuf>,
        /// Load and measure the atoms afresh in every job.
        #[arg(long, conflicts_with = "cache")]
        no_cache: bool,
    },
    /// Merge the finished jobs of sweep output folders (e.g. shards) into results.csv,
    /// results.jsonl and report.html (every metric against every swept axis).
    Merge {
        /// Sweep output folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where to write the merged files; default: the first folder.
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Version, compute backends and GPU adapters, and which one `auto` picks.
    Info,
    /// Time one fsr step (a posterior pass over N atoms) at several batch sizes, as GFLOP/s
    /// (4·B·N·D per step), as a fraction of this machine's SGEMM peak measured in the same run,
    /// and beside the numpy baseline benches/fsr_step_numpy.py when python3 has numpy.
    Bench {
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
        /// Worker threads (default: all cores).
        #[arg(long)]
        threads: Option<usize>,
        /// cpu or gpu (the best adapter; FSLENS_ADAPTER=substring picks one by name).
        #[arg(long, default_value = "cpu")]
        backend: String,
        /// Atom storage on the GPU: f32, u8 (exact for 8-bit data) or f16.
        #[arg(long, default_value = "f32")]
        storage: String,
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
    },
}

const DIAGNOSE_HELP: &str = "Exporting samples from PyTorch (x: a (K, C, H, W) tensor in [-1, 1]):
  np.save(\"samples.npy\", x.permute(0, 2, 3, 1).cpu().numpy())
or as PNGs (one file per sample, 8-bit, in a folder):
  for k, img in enumerate(((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()):
      PIL.Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(f\"out/{k:05d}.png\")
Values may overshoot the declared range by its width (unclipped samplers do, e.g. [-3, 3]
for [-1, 1]); beyond that the samples are taken to be in another convention and rejected.";

fn operator_help() -> String {
    format!("Operator specs:\n{}", crate::operators::SPEC_HELP)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    quiet_vulkan_loader();
    let cli = Cli::parse();
    match dispatch(&cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("fslens: error: {e}");
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

fn dispatch(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Demo {
            out,
            backend,
            storage,
        } => {
            let mut cfg = RunConfig::demo();
            if let Some(st) = storage {
                cfg.storage = st.clone();
            }
            run_config(
                cli,
                &cfg,
                std::path::Path::new("."),
                out,
                backend.as_deref(),
            )
        }
        Command::Run {
            config,
            out,
            backend,
            storage,
        } => {
            let (cfg, base) = load_config(config, storage.as_deref())?;
            let out = out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(config.file_stem().unwrap_or_default())
            });
            run_config(cli, &cfg, &base, &out, backend.as_deref())
        }
        Command::Compare {
            config,
            out,
            backend,
            storage,
        } => {
            let (cfg, base) = load_config(config, storage.as_deref())?;
            let out = out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!(
                    "{}-compare",
                    config.file_stem().unwrap_or_default().to_string_lossy()
                ))
            });
            let mut reporter = Reporter::new(cli.quiet, cli.json);
            let result =
                crate::experiment::compare(&cfg, &base, &out, backend.as_deref(), &mut reporter);
            finish_run(cli, reporter, result)
        }
        Command::Score {
            atoms,
            x,
            t,
            method,
            zeta,
            cg_tolerance,
            cg_max_iterations,
            y,
            operator,
            sigma,
            out,
            shape,
            backend,
            storage,
            beta_min,
            beta_max,
        } => {
            let req = ScoreRequest {
                atoms: atoms.clone(),
                x: x.clone(),
                t: *t,
                method: method.parse::<Method>()?,
                y: y.clone(),
                operator: operator.clone(),
                sigma: *sigma,
                shape: shape.as_deref().map(parse_shape).transpose()?,
                backend: backend.clone(),
                storage: storage.clone(),
                options: crate::samplers::SamplerOptions {
                    zeta: *zeta,
                    cg: crate::samplers::solve::CgOptions {
                        tolerance: *cg_tolerance,
                        max_iterations: *cg_max_iterations,
                    },
                },
                schedule: Schedule::new(*beta_min, *beta_max).map_err(|e| match e {
                    crate::Error::Config { key, problem } => {
                        crate::Error::config(format!("--{}", key.replace('_', "-")), problem)
                    }
                    other => other,
                })?,
            };
            let (b, d, s) = crate::experiment::score::score(&req)?;
            crate::arrays::write_npy_f32(out, &[b, d], &s)?;
            if cli.json {
                println!("{}", serde_json::json!({"out": out, "rows": b, "dim": d}));
            } else if !cli.quiet {
                eprintln!("wrote {} ({b} x {d} float32)", out.display());
            }
            Ok(())
        }
        Command::Diagnose {
            samples,
            config,
            pixels,
            out,
            label,
            backend,
        } => {
            let cfg = RunConfig::load(config)?;
            let base = config.parent().map(|p| p.to_path_buf()).unwrap_or_default();
            let out = out.clone().unwrap_or_else(|| {
                PathBuf::from("runs").join(format!(
                    "diagnose-{}",
                    config.file_stem().unwrap_or_default().to_string_lossy()
                ))
            });
            let req = crate::experiment::diagnose::DiagnoseRequest {
                samples: samples.clone(),
                pixels: pixels
                    .as_deref()
                    .map(str::parse::<crate::experiment::diagnose::PixelConvention>)
                    .transpose()?,
                label: label.clone(),
                out,
                backend: backend.clone(),
            };
            let mut reporter = Reporter::new(cli.quiet, cli.json);
            let (path, summary) =
                crate::experiment::diagnose::diagnose(&cfg, &base, &req, &mut reporter)?;
            reporter.finish();
            report_done(cli, &path, &summary, "at t = 0");
            Ok(())
        }
        Command::Sweep {
            config,
            out,
            shard,
            backend,
            print_sbatch,
            sbatch_args,
            cache,
            no_cache,
        } => sweep::sweep(
            &sweep::SweepArgs {
                file: config,
                out: out.as_deref(),
                shard: shard.as_deref(),
                backend: backend.as_deref(),
                print_sbatch: *print_sbatch,
                sbatch_args,
                cache: cache.as_deref(),
                no_cache: *no_cache,
            },
            cli.quiet,
            cli.json,
        ),
        Command::Merge { dirs, out } => sweep::merge(dirs, out.as_deref(), cli.quiet, cli.json),
        Command::Info => {
            print_info(cli);
            Ok(())
        }
        Command::Bench {
            batch,
            t,
            atoms,
            dim,
            data,
            random,
            no_baseline,
            dps,
            repeats,
            threads,
            backend,
            storage,
            tile_dims,
            tile_rows,
            sums_block_rows,
            workgroups,
        } => {
            for &ti in t {
                crate::diffusion::check_time("--t", ti)?;
            }
            let mut opts = crate::bench::BenchOptions {
                batches: batch.clone(),
                times: t.clone(),
                atoms: *atoms,
                dim: *dim,
                baseline: !no_baseline,
                dps: *dps,
                repeats: (*repeats).max(1),
                threads: *threads,
                backend: backend.clone(),
                storage: storage.parse()?,
                tile_dims: *tile_dims,
                tile_rows: *tile_rows,
                sums_block_rows: *sums_block_rows,
                workgroups: *workgroups,
                ..Default::default()
            };
            if *random {
                opts.data = None;
            } else if let Some(dir) = data {
                opts.data = Some(dir.clone());
            }
            if !cli.json && !cli.quiet {
                eprintln!(
                    "{:<15} {:>6} {:>6} {:>6} {:>8} {:>10} {:>10} {:>8} {:>8} {:>7} {:>10} {:>10}",
                    "kernel",
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
            crate::bench::run(&opts, &mut |r| {
                if cli.json {
                    println!(
                        "{}",
                        serde_json::to_string(r).expect("bench records serialise")
                    );
                } else if !cli.quiet {
                    let (base, speedup) = match (r.baseline_seconds_per_step, r.ratio_to_fsr) {
                        (Some(b), _) => {
                            (format!("{b:.4}"), format!("{:.2}x", b / r.seconds_per_step))
                        }
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
                        "{:<15} {:>6} {:>6} {:>6} {:>8} {:>10.4} {:>10} {:>8.1} {:>8} {:>7} {:>10} {:>10}",
                        r.kernel,
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
                }
            })?;
            Ok(())
        }
    }
}

/// A run config and the folder its relative paths start from, with `--storage` applied.
fn load_config(path: &std::path::Path, storage: Option<&str>) -> Result<(RunConfig, PathBuf)> {
    let mut cfg = RunConfig::load(path)?;
    if let Some(st) = storage {
        cfg.storage = st.to_string();
    }
    let base = path.parent().map(|p| p.to_path_buf()).unwrap_or_default();
    Ok((cfg, base))
}

/// Mesa's Vulkan drivers print "XDG_RUNTIME_DIR is invalid or not set" on every adapter
/// query of a headless server; give them a private runtime folder when there is none.
fn quiet_vulkan_loader() {
    if std::env::var_os("XDG_RUNTIME_DIR").is_some() {
        return;
    }
    use std::os::unix::fs::DirBuilderExt;
    let dir = std::env::temp_dir().join(format!(
        "fslens-runtime-{}",
        std::env::var("USER").unwrap_or_default()
    ));
    if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() || dir.is_dir() {
        // SAFETY: called first thing in main, before any other thread exists.
        unsafe { std::env::set_var("XDG_RUNTIME_DIR", &dir) };
    }
}

fn parse_shape(text: &str) -> Result<ImageShape> {
    let parts: Vec<&str> = text.split(['x', 'X', ',']).collect();
    let bad = || {
        crate::Error::config(
            "--shape",
            format!("expected HxWxC (e.g. 28x28x1), got {text:?}"),
        )
    };
    if parts.len() != 3 {
        return Err(bad());
    }
    let v: Vec<usize> = parts
        .iter()
        .map(|p| p.trim().parse::<usize>())
        .collect::<std::result::Result<_, _>>()
        .map_err(|_| bad())?;
    if v.contains(&0) {
        return Err(bad());
    }
    Ok(ImageShape::new(v[0], v[1], v[2]))
}

fn run_config(
    cli: &Cli,
    cfg: &RunConfig,
    base: &std::path::Path,
    out: &std::path::Path,
    backend: Option<&str>,
) -> Result<()> {
    let mut reporter = Reporter::new(cli.quiet, cli.json);
    let result = crate::experiment::run(cfg, base, out, backend, &mut reporter);
    finish_run(cli, reporter, result)
}

/// Prints a finished run's result: the JSON record, or the table of final metrics.
fn finish_run(
    cli: &Cli,
    mut reporter: Reporter,
    result: Result<(PathBuf, crate::experiment::summary::Summary)>,
) -> Result<()> {
    let (path, summary) = result?;
    reporter.finish();
    report_done(
        cli,
        &path,
        &summary,
        "at the final time; metrics.json has every checkpoint",
    );
    Ok(())
}

/// The last word of `run`, `demo` and `diagnose`: a JSON record, or a table of the metrics.
fn report_done(
    cli: &Cli,
    path: &std::path::Path,
    summary: &crate::experiment::summary::Summary,
    when: &str,
) {
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"event": "done", "out": path, "summary": summary})
        );
    } else if !cli.quiet {
        eprintln!("wrote {}  (backend: {})", path.display(), summary.backend);
        eprintln!(
            "  {:<10} {:>9} {:>8} {:>8} {:>8} {:>8}   ({when})",
            "sampler", "seconds", "mode TV", "halluc.", "off-sup.", "spread"
        );
        for s in &summary.samplers {
            let m = &s.metrics;
            eprintln!(
                "  {:<10} {:>9.2} {:>8.3} {:>8.3} {:>8.3} {:>8.3}",
                s.name,
                s.wall_seconds,
                m.mode_tv,
                m.hallucination_rate,
                m.off_support_rate,
                m.spread_ratio
            );
        }
        for s in &summary.skipped_samplers {
            eprintln!("  skipped {}: {}", s.name, s.reason);
        }
        eprintln!("  report: {}", path.join("report.html").display());
    }
}

fn print_info(cli: &Cli) {
    let threads = rayon::current_num_threads();
    let adapters = crate::engine::gpu::list_adapters();
    let auto = if crate::engine::auto_uses_gpu() {
        "gpu"
    } else {
        "cpu"
    };
    if cli.json {
        let info = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "backends": crate::engine::BACKENDS,
            "cpu_threads": threads,
            "auto_picks": auto,
            "adapters": adapters,
            "atom_storage": ATOM_STORAGE_NOTE,
        });
        println!("{info}");
        return;
    }
    println!("fslens {}", env!("CARGO_PKG_VERSION"));
    println!(
        "backends: {} (auto picks {auto})",
        crate::engine::BACKENDS.join(", ")
    );
    println!("cpu backend: {threads} threads (RAYON_NUM_THREADS changes it)");
    if adapters.is_empty() {
        println!(
            "gpu adapters: none found (install a Vulkan driver, e.g. mesa-vulkan-drivers for the software one)"
        );
    }
    for a in &adapters {
        println!(
            "gpu adapter{}: {} ({}, {}; {})",
            if a.preferred { " [preferred]" } else { "" },
            a.name,
            a.backend,
            a.device_type,
            a.driver
        );
        println!(
            "    max binding {} MiB, max buffer {} MiB, workgroup storage {} KiB, shader-f16 {}, timestamps {}, subgroups {}",
            a.max_storage_buffer_binding_size >> 20,
            a.max_buffer_size >> 20,
            a.max_compute_workgroup_storage_size >> 10,
            a.shader_f16,
            a.timestamp_query,
            a.subgroup
        );
    }
    println!(
        "adapter choice: FSLENS_ADAPTER=<name substring> picks one; WGPU_BACKEND=vulkan|gl|metal|dx12 limits the APIs searched"
    );
    println!("gpu atom storage: {ATOM_STORAGE_NOTE}");
}

/// What each GPU atom storage costs in accuracy (measured by the engine_gpu test
/// `f16_prior_shift_on_8bit_data`; see src/engine/gpu/mod.rs).
const ATOM_STORAGE_NOTE: &str = "f32 exact; u8 exact for 8-bit data (the default there), \
    4x smaller; f16 (any adapter, decoded to f32) moves 8-bit pixels by up to 2.4e-4, which \
    shifts the gap between the two largest logits by up to 26 nats at t = 1e-3, 1.1 at 1e-2, \
    0.05 at 0.1 (Fashion-MNIST): weights changed by up to 5e-3 in total variation at t = 0.1";

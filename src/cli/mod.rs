//! The `fslens` command line: clap subcommands over the library. It lives with the binary;
//! the library never sees clap. Every subcommand that builds an engine takes the same
//! flattened [`EngineArgs`].

mod bench;
mod progress;
mod ranks;
mod results;
mod sweep;

use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};

use fslens::Result;
use fslens::data::ImageShape;
use fslens::diffusion::Schedule;
use fslens::engine::{BackendKind, Devices, PruneChoice, StorageChoice};
use fslens::experiment::diagnose::{DiagnoseRequest, PixelConvention};
use fslens::experiment::diagnose_trajectory::{TrajectoryRequest, diagnose_trajectory};
use fslens::experiment::score::{Method, ScoreRequest};
use fslens::output::Destination;
use fslens::plan::{EngineChoice, Overrides, RunPlan};
use fslens::samplers::SamplerKind;
use progress::Reporter;

const ABOUT: &str = "Shows when, why and how diffusion posterior samplers fail, against the exact \
finite-sample posterior of an empirical (training-set) prior.";

const AFTER_HELP: &str = "An --out folder is replaced only when fslens wrote it (it holds .fslens-output) or \
it is empty; any other is refused unless --force. Results appear under their name complete: \
a killed command leaves the old result or the new one (the next command into the same folder \
restores an interrupted replacement and removes leftovers).

Examples:
  fslens demo --out demo-out                 # the embedded default: synthetic shapes, no files needed
  fslens plan assets/configs/fashion-mnist-inpaint.toml   # sizes, exact posterior, time estimates
  fslens run assets/configs/fashion-mnist-inpaint.toml --out fm-inpaint
  fslens run my.toml --out results --force   # replace results/ even though fslens did not write it
  fslens compare assets/configs/glyphs-blur.toml --out glyphs-compare   # every sampler, one report.html
  fslens compare assets/configs/glyphs-blur.toml --samplers exact,fsr,pigdm
  fslens score --atoms A.npy --x X.npy --t 0.3 --method fsr --y Y.npy \\
               --operator matrix:M.npy --sigma 0.05 --out S.npy
  fslens diagnose --samples samples.npy --config assets/configs/demo.toml --out diag
                                             # score another program's samples vs the exact posterior
  fslens diagnose --trajectory X.npy --times T.npy --config assets/configs/demo.toml --out diag-t
                                             # ... or its clouds at several times, like a run's checkpoints
  fslens sweep assets/configs/sweep-demo.toml --out sw   # a grid of runs; rerun to resume
  fslens sweep sw.toml --out sw --shard 0/4  # one of 4 shards (one per Slurm array task)
  fslens merge sw                            # results.csv, results.jsonl, report.html
  fslens run my.toml --backend gpu --devices all   # the atoms split across every GPU
  mpirun -n 4 fslens run my.toml --out res   # atoms split over 4 MPI ranks (run, compare, score,
                                             # bench; a build with --features mpi)
  fslens info                                # version, backends, GPU adapters (numbered for --devices)
  fslens bench --json                        # one fsr step vs the GEMM peak and a numpy baseline";

#[derive(Parser, Debug)]
#[command(name = "fslens", version, about = ABOUT, after_help = AFTER_HELP)]
struct Cli {
    /// Print nothing but warnings and errors.
    #[arg(long, global = true)]
    quiet: bool,
    /// Machine-readable output: the result as one JSON document on stdout (run, compare,
    /// demo, diagnose: the summary plus `out`; sweep and bench: one record per job event or
    /// case), stages and warnings as JSON lines on stderr, an error as the record
    /// {"error": {"key", "path", "message"}} on stderr. Exit status unchanged.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

/// The engine every subcommand that computes builds: the same flags, the same defaults.
#[derive(Args, Debug, Clone, Copy, Default)]
struct EngineArgs {
    /// auto | cpu | gpu (default: the config's `backend`, else auto: the GPU when a hardware
    /// adapter exists).
    #[arg(long, value_parser = parse_backend)]
    backend: Option<BackendKind>,
    /// Atom storage (GPU and CPU): auto (u8 for 8-bit data, else f32) | f32 | u8 | f16 (default: the
    /// config's `storage`, else auto).
    #[arg(long, value_parser = parse_storage)]
    storage: Option<StorageChoice>,
    /// GPU devices: best (one device on the best adapter) | all (every hardware adapter) |
    /// adapter indices as `fslens info` lists them, e.g. 0,1 (0,0: two devices on adapter 0).
    /// The atoms are split evenly across them and the results merged exactly (equal to one
    /// device within float rounding). Default: the config's `devices`, else best.
    #[arg(long, value_parser = parse_devices)]
    devices: Option<Devices>,
    /// CPU worker threads (default: all cores, or RAYON_NUM_THREADS).
    #[arg(long)]
    threads: Option<usize>,
    /// Certified pruning of the CPU backend: off | on (default: the config's `prune`, else
    /// off; ε and k from `prune_epsilon`, `prune_clusters`). Skips clusters of atoms whose
    /// weight is provably ≤ ε relative to the visited ones; not built for the GPU.
    #[arg(long, value_parser = parse_prune)]
    prune: Option<PruneChoice>,
}

fn parse_prune(text: &str) -> Result<PruneChoice> {
    <PruneChoice as fslens::choices::Choice>::parse_for(text, "--prune")
}

fn parse_backend(text: &str) -> Result<BackendKind> {
    <BackendKind as fslens::choices::Choice>::parse_for(text, "--backend")
}

fn parse_atom_store(text: &str) -> Result<fslens::resources::AtomPlacement> {
    <fslens::resources::AtomPlacement as fslens::choices::Choice>::parse_for(text, "--atom-store")
}

fn parse_storage(text: &str) -> Result<StorageChoice> {
    <StorageChoice as fslens::choices::Choice>::parse_for(text, "--storage")
}

fn parse_devices(text: &str) -> Result<Devices> {
    Devices::parse_for(text, "--devices")
}

impl EngineArgs {
    /// The choices that replace a config's.
    fn overrides(&self) -> Overrides {
        Overrides {
            backend: self.backend,
            storage: self.storage,
            devices: self.devices,
            prune: self.prune,
        }
    }

    /// The engine of a command without a config: the flags, else auto.
    fn choice(&self) -> EngineChoice {
        EngineChoice {
            backend: self.backend.unwrap_or_default(),
            storage: self.storage.unwrap_or_default(),
            devices: self.devices.unwrap_or_default(),
        }
    }

    /// Sizes the CPU thread pool before any work (rayon's global pool is built once).
    fn apply_threads(&self) -> Result<()> {
        let Some(n) = self.threads else {
            return Ok(());
        };
        if n == 0 {
            return Err(fslens::Error::config("--threads", "must be at least 1"));
        }
        rayon::ThreadPoolBuilder::new()
            .num_threads(n)
            .build_global()
            .map_err(|e| fslens::Error::config("--threads", e.to_string()))
    }
}

/// A run config and where the run's folder goes.
#[derive(Args, Debug)]
struct RunArgs {
    /// The run config (TOML). Relative paths inside it are resolved against its folder.
    config: PathBuf,
    /// Output folder; default: runs/<config name> (compare: runs/<config name>-compare). An
    /// existing one is replaced only when fslens wrote it (or it is empty); see --force.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
    #[command(flatten)]
    engine: EngineArgs,
}

/// What a command that writes a folder may replace.
#[derive(Args, Debug, Clone, Copy, Default)]
struct OutputArgs {
    /// Replace the --out folder even when fslens did not write it (it has no .fslens-output
    /// file), when it is a symbolic link, or when it holds one of this command's input files.
    /// Everything in it is deleted.
    #[arg(long)]
    force: bool,
}

impl OutputArgs {
    /// The destination `out` of `command`.
    fn destination(&self, out: &Path, command: &str) -> Destination {
        Destination::new(out, command).force(self.force)
    }
}

/// `fslens compare`: a run config, and optionally which samplers.
#[derive(Args, Debug)]
struct CompareArgs {
    #[command(flatten)]
    run: RunArgs,
    /// The samplers to run, comma-separated (e.g. exact,fsr,pigdm), in place of every one
    /// that applies; each must apply to the operator, none may be listed twice.
    #[arg(long, value_delimiter = ',', value_parser = parse_sampler)]
    samplers: Option<Vec<SamplerKind>>,
}

/// `fslens plan`: a run config, and optionally which samplers.
#[derive(Args, Debug)]
struct PlanArgs {
    /// The run config (TOML).
    config: PathBuf,
    /// Plan these samplers (comma-separated) instead of the config's `sampling.samplers`.
    #[arg(long, value_delimiter = ',', value_parser = parse_sampler)]
    samplers: Option<Vec<SamplerKind>>,
    #[command(flatten)]
    engine: EngineArgs,
}

fn parse_sampler(text: &str) -> Result<SamplerKind> {
    <SamplerKind as fslens::choices::Choice>::parse_for(text, "--samplers")
}

#[derive(Args, Debug)]
struct ScoreArgs {
    /// Atoms, shape (N, D): float32 or float64 values are pixels as they are (the configs'
    /// [-1, 1]); uint8 values k are 8-bit pixels, mapped to 2k/255 − 1 as the data loaders and
    /// `diagnose` map them.
    #[arg(long)]
    atoms: PathBuf,
    /// Particles, shape (B, D) or (D,), in the atoms' scale (uint8: mapped like the atoms).
    #[arg(long)]
    x: PathBuf,
    /// Diffusion time t in (0, 1].
    #[arg(long)]
    t: f64,
    /// fsr (exact posterior score), prior, or an approximate sampler's score: sigma-dps,
    /// zeta-dps, pigdm, tmpd (prior score + its likelihood score, design §4).
    #[arg(long, default_value = "fsr")]
    method: Method,
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
    /// Where to write the (B, D) float32 score (.npy), through a temporary file and a rename;
    /// never one of the input files.
    #[arg(long)]
    out: PathBuf,
    /// Image shape HxWxC of a row, for operators that need one (default: square, else 1xD).
    #[arg(long)]
    shape: Option<String>,
    #[command(flatten)]
    engine: EngineArgs,
    /// Where the atoms are held: memory, mapped (streamed once into a data-cache entry under
    /// --cache-dir, memory-mapped, CPU only: for atom sets larger than RAM) or auto (mapped
    /// when the float32 atoms exceed half the machine's memory).
    #[arg(long, default_value = "auto", value_parser = parse_atom_store)]
    atom_store: fslens::resources::AtomPlacement,
    /// Folder of mapped atom entries (default: $XDG_CACHE_HOME/fslens or ~/.cache/fslens).
    #[arg(long)]
    cache_dir: Option<PathBuf>,
    #[arg(long, default_value_t = 0.01)]
    beta_min: f64,
    #[arg(long, default_value_t = 20.0)]
    beta_max: f64,
}

#[derive(Args, Debug)]
#[command(group(clap::ArgGroup::new("input").required(true).args(["samples", "trajectory"])))]
struct DiagnoseArgs {
    /// Final samples, scored at t = 0: a .npy of shape (K, D), (K, H, W, C) or (K, H, W)
    /// (float32, float64 or uint8; HWC order), or a folder of PNG/JPEG images of the config's
    /// size.
    #[arg(long)]
    samples: Option<PathBuf>,
    /// Clouds recorded at several times, each scored at its time (needs --times): a float .npy
    /// of shape (T, K, D), (T, K, H, W, C) or (T, K, H, W), the sampler's state
    /// x_t = s(t) x_0 + √v(t) ε on the [-1, 1] scale (not clipped; HWC order).
    #[arg(long, requires = "times")]
    trajectory: Option<PathBuf>,
    /// The times of the trajectory's clouds: a float .npy of T distinct VP times in [0, 1]
    /// of the config's schedule (t = 0: clean samples), one per cloud in the order of its
    /// first axis; any order (the report lists them in decreasing t).
    // clap does not enforce `requires` against an argument that conflicts with one given
    // (--samples excludes --trajectory), hence the explicit conflict.
    #[arg(long, requires = "trajectory", conflicts_with = "samples")]
    times: Option<PathBuf>,
    /// The run config whose posterior the samples target (its [sampling] samplers are not
    /// run).
    #[arg(long)]
    config: PathBuf,
    /// Pixel convention of --samples: minus-one-to-one, zero-to-one or 0-255. Default:
    /// minus-one-to-one for float .npy, 0-255 for uint8 .npy and images. A trajectory is
    /// always minus-one-to-one (a noisy x_t cannot be rescaled pixel by pixel).
    #[arg(long)]
    pixels: Option<PixelConvention>,
    /// Output folder; default: runs/diagnose-<config name>. An existing one is replaced only
    /// when fslens wrote it (or it is empty); see --force.
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
    /// The name the samples are listed under (samples_<label>.npy, grid_<label>.png); not a
    /// built-in sampler's name.
    #[arg(long, default_value = "external")]
    label: String,
    #[command(flatten)]
    engine: EngineArgs,
}

#[derive(Args, Debug)]
struct SweepArgs {
    /// The sweep file (TOML): `base = "run.toml"` or a [base] table, and [axes].
    config: PathBuf,
    /// Output folder (shared by all shards); default: runs/<sweep file name>. A sweep folder is
    /// resumed (refused when its base config or data changed: --force starts over); another
    /// folder fslens wrote is replaced; any other is refused (see --force).
    #[arg(long)]
    out: Option<PathBuf>,
    #[command(flatten)]
    output: OutputArgs,
    /// Run only shard i of n (0-based), e.g. --shard "$SLURM_ARRAY_TASK_ID/4".
    #[arg(long)]
    shard: Option<String>,
    /// The engine of every job (backend and storage are part of the job ids).
    #[command(flatten)]
    engine: EngineArgs,
    /// Print a Slurm batch script that runs the sweep as an array of N tasks (one shard
    /// each, then a merge, also after a failed job; plus a final merge job that Slurm starts
    /// after every task ended, `--dependency=afterany`) and exit:
    /// `fslens sweep S.toml --out O --print-sbatch 4 | sbatch`.
    #[arg(long, value_name = "N")]
    print_sbatch: Option<usize>,
    /// Extra #SBATCH lines for --print-sbatch, e.g. --sbatch-arg=--time=02:00:00.
    #[arg(long = "sbatch-arg", value_name = "ARG", allow_hyphen_values = true)]
    sbatch_args: Vec<String>,
    /// With --print-sbatch: N GPUs per array task (#SBATCH --gres=gpu:N), and the jobs run on
    /// the GPU backend.
    #[arg(long, value_name = "N", requires = "print_sbatch")]
    gpus: Option<u32>,
    /// Folder of the atom cache (loaded data sets and measured atoms, checksummed) shared
    /// by the jobs; default OUT/cache.
    #[arg(long, value_name = "DIR")]
    cache: Option<PathBuf>,
    /// Load and measure the atoms afresh in every job.
    #[arg(long, conflicts_with = "cache")]
    no_cache: bool,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the embedded default: a built-in synthetic data set, a x4 super-resolution measurement
    /// of a held-out image, the exact sampler, fsr (exact score) and pigdm, which visibly fails
    /// there (flagged in the table and the report). No files, no GPU needed; about 26 s on 2
    /// cores in a release build.
    Demo {
        /// Output folder. An existing one is replaced only when fslens wrote it (or it is
        /// empty); see --force.
        #[arg(long, default_value = "fslens-demo")]
        out: PathBuf,
        #[command(flatten)]
        output: OutputArgs,
        #[command(flatten)]
        engine: EngineArgs,
    },
    /// Before any sampling: the atom count N and D, the exact posterior's effective atom count
    /// 1/Σω², the mode masses and their entropy, each sampler's estimated time on this machine
    /// (from one timed score evaluation each), and warnings with advice (e.g. for a posterior
    /// on nearly one atom, where mode weights cannot tell samplers apart).
    Plan(PlanArgs),
    /// Run a TOML run config (see assets/configs/ and the README's config reference).
    #[command(after_help = operator_help())]
    Run(RunArgs),
    /// Run the exact sampler and every approximate sampler that applies (exact, fsr, sigma-dps,
    /// zeta-dps, and pigdm/tmpd/daps/diffpir when the operator is linear) on the config's measurement, the
    /// same y and seed, whatever its `sampling.samplers` says (or the samplers of --samplers);
    /// write one report.html and metrics.json. Skipped samplers are named, with the reason, on
    /// stderr and in the report.
    #[command(after_help = operator_help())]
    Compare(CompareArgs),
    /// Compute the score of particles x at time t, from .npy files: exact posterior (fsr), prior,
    /// or an approximate sampler's (sigma-dps, zeta-dps, pigdm, tmpd).
    #[command(after_help = operator_help())]
    Score(ScoreArgs),
    /// Score samples made by another program (e.g. a neural DPS run in PyTorch) against the
    /// exact posterior of a config's measurement (same atoms, truth, operator and y as `fslens
    /// run` of that config), beside fresh exact draws: final samples (--samples) with the
    /// metrics of a run at t = 0, or a trajectory (--trajectory X.npy --times T.npy) with the
    /// metrics, plots and report of a run at each of its times.
    #[command(after_help = DIAGNOSE_HELP)]
    Diagnose(DiagnoseArgs),
    /// Run a sweep: a base run config and axes to vary (README: "Sweeps"). Each job writes
    /// OUT/jobs/<id>/ atomically; a rerun skips complete jobs and retries failed ones. The exit
    /// status is nonzero when a job failed (its error is in OUT/failed/<id>/error.txt).
    Sweep(SweepArgs),
    /// Merge the finished jobs of sweep output folders (e.g. shards) into results.csv,
    /// results.jsonl and report.html (every metric against every swept axis).
    Merge {
        /// Sweep output folders.
        #[arg(required = true)]
        dirs: Vec<PathBuf>,
        /// Where to write the merged files; default: the first folder. A sweep folder gets
        /// them beside its jobs; any other is a folder of its own, replaced only when fslens
        /// wrote it (see --force).
        #[arg(long)]
        out: Option<PathBuf>,
        #[command(flatten)]
        output: OutputArgs,
    },
    /// Convergence in N on an analytic prior (data.kind gaussian, gmm or discrete; a linear
    /// operator): the finite-sample posterior of N draws against the closed-form posterior for
    /// each N of `[converge] sizes` at each time of `times` (mean and covariance error,
    /// component-weight TV, sliced Wasserstein), the fitted log-log slopes, and the samplers of
    /// `[converge] samplers` at N = `sampler_atoms` beside them. Writes summary.json and
    /// report.html; prints the table. See assets/configs/converge-gmm.toml.
    Converge(RunArgs),
    /// Version, compute backends and GPU adapters, and which one `auto` picks.
    Info,
    /// Time one fsr step (a posterior pass over N atoms) at several batch sizes, as GFLOP/s
    /// (4·B·N·D per step), as a fraction of this machine's SGEMM peak measured in the same run,
    /// and beside the numpy baseline benches/fsr_step_numpy.py when python3 has numpy.
    Bench(bench::BenchArgs),
}

const DIAGNOSE_HELP: &str = "Exporting samples from PyTorch (x: a (K, C, H, W) tensor in [-1, 1]):
  np.save(\"samples.npy\", x.permute(0, 2, 3, 1).cpu().numpy())
or as PNGs (one file per sample, 8-bit, in a folder):
  for k, img in enumerate(((x + 1) * 127.5).round().clamp(0, 255).byte().permute(0, 2, 3, 1).cpu().numpy()):
      PIL.Image.fromarray(img.squeeze(-1) if img.shape[-1] == 1 else img).save(f\"out/{k:05d}.png\")
Values may overshoot the declared range by its width (unclipped samplers do, e.g. [-3, 3]
for [-1, 1]); beyond that the samples are taken to be in another convention and rejected.

A trajectory: record the sampler's state x_t (not x0_hat) at the times you want scored, e.g.
  clouds.append(x.permute(0, 2, 3, 1).cpu().numpy()); times.append(t)   # inside the loop
  np.save(\"X.npy\", np.stack(clouds)); np.save(\"T.npy\", np.asarray(times, dtype=np.float64))
  fslens diagnose --trajectory X.npy --times T.npy --config CONFIG.toml --out diag --label my-dps
The times are continuous VP times of the config's schedule (sampling.beta_min, beta_max;
discrete DDPM levels k convert with fslens.DDPM().time(k) in Python). X stays on the [-1, 1]
scale, unclipped; only the cloud at the smallest time is range-checked, against
3 s(t) + 8 √v(t) (3 at t = 0), since a sampler may overshoot on the way.";

fn operator_help() -> String {
    format!("Operator specs:\n{}", fslens::operators::SPEC_HELP)
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    quiet_vulkan_loader();
    // Every refusal exits with status 1, a bad flag value as much as a bad config value.
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => {
            if !e.use_stderr() {
                let _ = e.print(); // --help, --version
                return ExitCode::SUCCESS;
            }
            if std::env::args().any(|a| a == "--json") {
                let key = e
                    .get(clap::error::ContextKind::InvalidArg)
                    .map(|v| v.to_string());
                let message = e.kind().to_string();
                let detail = e.to_string();
                let first = detail.lines().next().unwrap_or(&message);
                let text = first.trim_start_matches("error: ");
                results::print_error_record(key.as_deref(), None, text);
            } else {
                let _ = e.print();
            }
            return ExitCode::FAILURE;
        }
    };
    remove_outputs_on_signals();
    let ranks = match ranks::Ranks::start() {
        Ok(ranks) => ranks,
        Err(e) => {
            results::print_error(cli.json, &e);
            return ExitCode::FAILURE;
        }
    };
    let mut cli = cli;
    if let Some((rank, _)) = ranks.world()
        && rank != 0
    {
        // Rank 0 alone prints and writes (README "Several machines (MPI)").
        cli.quiet = true;
        cli.json = false;
    }
    let result = refuse_under_ranks(&cli, &ranks)
        .and_then(|()| ranks.check_command())
        .and_then(|()| dispatch(&cli));
    match result {
        Ok(()) => {
            drop(ranks); // MPI_Finalize, on every rank
            ExitCode::SUCCESS
        }
        Err(e) => {
            if let Some((rank, size)) = ranks.world() {
                eprintln!("fslens: rank {rank} of {size} stopped the job:");
            }
            results::print_error(cli.json, &e);
            ranks.abort_on_error();
            ExitCode::FAILURE
        }
    }
}

/// Under several MPI ranks only run, compare, score, bench and info run (the others would
/// write from every rank, or do not use the engine enough to gain).
fn refuse_under_ranks(cli: &Cli, ranks: &ranks::Ranks) -> Result<()> {
    let Some((_, size)) = ranks.world() else {
        return Ok(());
    };
    let name = match &cli.command {
        Command::Run(_)
        | Command::Compare(_)
        | Command::Score(_)
        | Command::Bench(_)
        | Command::Info => return Ok(()),
        Command::Demo { .. } => "demo",
        Command::Plan(_) => "plan",
        Command::Converge(_) => "converge",
        Command::Diagnose(_) => "diagnose",
        Command::Sweep(_) => "sweep",
        Command::Merge { .. } => "merge",
    };
    Err(fslens::Error::input(format!(
        "fslens {name} does not run as {size} MPI ranks: under mpirun/srun only run, compare, \
         score and bench do; start {name} as one process (a sweep spreads over machines with \
         --shard and a Slurm array instead)"
    )))
}

fn dispatch(cli: &Cli) -> Result<()> {
    match &cli.command {
        Command::Demo {
            out,
            output,
            engine,
        } => {
            engine.apply_threads()?;
            let plan = RunPlan::demo(engine.overrides())?;
            run_plan(cli, &plan, &output.destination(out, "demo"))
        }
        Command::Run(args) => {
            args.engine.apply_threads()?;
            let plan = RunPlan::load(&args.config, args.engine.overrides())?;
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| default_out(&args.config, "", ""));
            run_plan(cli, &plan, &args.output.destination(&out, "run"))
        }
        Command::Compare(CompareArgs {
            run: args,
            samplers,
        }) => {
            args.engine.apply_threads()?;
            let plan = RunPlan::load(&args.config, args.engine.overrides())?;
            let plan = match samplers {
                Some(kinds) => plan.with_samplers(kinds.clone(), "--samplers")?,
                None => plan.every_applicable_sampler(),
            };
            let out = args
                .out
                .clone()
                .unwrap_or_else(|| default_out(&args.config, "", "-compare"));
            run_plan(cli, &plan, &args.output.destination(&out, "compare"))
        }
        Command::Plan(args) => {
            args.engine.apply_threads()?;
            let mut plan = RunPlan::load(&args.config, args.engine.overrides())?;
            if let Some(kinds) = &args.samplers {
                plan = plan.with_samplers(kinds.clone(), "--samplers")?;
            }
            let mut reporter = Reporter::new(cli.quiet, cli.json);
            let report = fslens::experiment::plan_report::plan_report(&plan, &mut reporter)?;
            reporter.finish();
            results::print_plan(cli.json, &args.config.display().to_string(), &report);
            Ok(())
        }
        Command::Score(args) => score(cli, args),
        Command::Converge(args) => converge(cli, args),
        Command::Diagnose(args) => diagnose(cli, args),
        Command::Sweep(args) => {
            args.engine.apply_threads()?;
            sweep::sweep(args, cli.quiet, cli.json)
        }
        Command::Merge { dirs, out, output } => {
            sweep::merge(dirs, out.as_deref(), output.force, cli.quiet, cli.json)
        }
        Command::Info => {
            if fslens::engine::ranks::rank() == 0 {
                print_info(cli);
            }
            Ok(())
        }
        Command::Bench(args) => bench::bench(args, cli.quiet, cli.json),
    }
}

/// runs/<prefix><config stem><suffix>.
fn default_out(config: &Path, prefix: &str, suffix: &str) -> PathBuf {
    PathBuf::from("runs").join(format!(
        "{prefix}{}{suffix}",
        config.file_stem().unwrap_or_default().to_string_lossy()
    ))
}

/// `fslens score`: the score of particles from .npy files, written as float32 .npy.
fn score(cli: &Cli, args: &ScoreArgs) -> Result<()> {
    args.engine.apply_threads()?;
    let req = ScoreRequest {
        atoms: args.atoms.clone(),
        x: args.x.clone(),
        t: args.t,
        method: args.method,
        y: args.y.clone(),
        operator: args.operator.clone(),
        sigma: args.sigma,
        shape: args.shape.as_deref().map(parse_shape).transpose()?,
        engine: args.engine.choice(),
        options: fslens::samplers::SamplerOptions {
            zeta: args.zeta,
            cg: fslens::samplers::solve::CgOptions {
                tolerance: args.cg_tolerance,
                max_iterations: args.cg_max_iterations,
            },
            ..Default::default()
        },
        schedule: Schedule::new(args.beta_min, args.beta_max, ["--beta-min", "--beta-max"])?,
    };
    let mut inputs = vec![("--atoms", args.atoms.as_path()), ("--x", args.x.as_path())];
    inputs.extend(args.y.as_deref().map(|y| ("--y", y)));
    let operator_files = args
        .operator
        .as_deref()
        .map(|spec| fslens::operators::files_named(spec, Path::new(".")))
        .unwrap_or_default();
    inputs.extend(operator_files.iter().map(|p| ("--operator", p.as_path())));
    fslens::output::file::refuse_overwriting_inputs(&args.out, "--out", &inputs)?;
    let (b, d, scored) =
        fslens::experiment::score::score_with(&req, args.atom_store, args.cache_dir.as_deref())?;
    if fslens::engine::ranks::rank() != 0 {
        return Ok(()); // rank 0 writes --out
    }
    for w in &scored.warnings {
        eprintln!("fslens score: warning: {w}");
    }
    fslens::arrays::write_npy_f32(&args.out, &[b, d], &scored.values)?;
    if cli.json {
        println!(
            "{}",
            serde_json::json!({"out": args.out, "rows": b, "dim": d, "warnings": scored.warnings})
        );
    } else if !cli.quiet {
        eprintln!("wrote {} ({b} x {d} float32)", args.out.display());
    }
    Ok(())
}

/// `fslens diagnose`: external samples against the exact posterior of a config.
fn diagnose(cli: &Cli, args: &DiagnoseArgs) -> Result<()> {
    args.engine.apply_threads()?;
    let plan = RunPlan::load(&args.config, args.engine.overrides())?;
    let out = args.output.destination(
        &args
            .out
            .clone()
            .unwrap_or_else(|| default_out(&args.config, "diagnose-", "")),
        "diagnose",
    );
    let mut reporter = Reporter::new(cli.quiet, cli.json);
    // clap lets exactly one of --samples and --trajectory (with --times) through (the
    // `input` group).
    let (path, summary, when) = match (&args.samples, &args.trajectory, &args.times) {
        (_, Some(clouds), Some(times)) => {
            let req = TrajectoryRequest {
                clouds: clouds.clone(),
                times: times.clone(),
                pixels: args.pixels,
                label: args.label.clone(),
                out,
            };
            let (path, summary) = diagnose_trajectory(&plan, &req, &mut reporter)?;
            (
                path,
                summary,
                "at the smallest time; metrics.json has every time",
            )
        }
        (samples, _, _) => {
            let req = DiagnoseRequest {
                samples: samples
                    .clone()
                    .expect("clap requires --samples or --trajectory"),
                pixels: args.pixels,
                label: args.label.clone(),
                out,
            };
            let (path, summary) =
                fslens::experiment::diagnose::diagnose(&plan, &req, &mut reporter)?;
            (path, summary, "at t = 0")
        }
    };
    reporter.finish();
    results::print_summary(cli.json, cli.quiet, &path, &summary, when);
    Ok(())
}

/// On SIGINT, SIGTERM or SIGHUP: remove this process's staging folders and temporary files
/// (fslens::output), then end by the same signal, as an unhandled one would have. Started
/// after [`quiet_vulkan_loader`], which must run while this is the only thread.
fn remove_outputs_on_signals() {
    use signal_hook::consts::{SIGHUP, SIGINT, SIGTERM};
    let Ok(mut signals) = signal_hook::iterator::Signals::new([SIGINT, SIGTERM, SIGHUP]) else {
        return; // the signals keep their default action: staging folders go at the next run
    };
    std::thread::spawn(move || {
        if let Some(signal) = signals.forever().next() {
            let _held = fslens::output::remove_live_outputs();
            let _ = signal_hook::low_level::emulate_default_handler(signal);
            std::process::exit(128 + signal);
        }
    });
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
        fslens::Error::config(
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

/// Runs a plan into `out` and prints the table of final metrics (or the JSON document).
/// `fslens converge`: the measurement, its folder and its table.
fn converge(cli: &Cli, args: &RunArgs) -> Result<()> {
    args.engine.apply_threads()?;
    let plan = RunPlan::load(&args.config, args.engine.overrides())?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.config, "", "-converge"));
    let dest = args.output.destination(&out, "converge");
    let mut reporter = Reporter::new(cli.quiet, cli.json);
    let summary = fslens::experiment::converge::converge(&plan, &mut reporter)?;
    let path = fslens::experiment::converge::write(&summary, &plan, &dest)?;
    reporter.finish();
    if cli.json {
        println!("{}", serde_json::to_string(&summary).unwrap_or_default());
    } else if !cli.quiet {
        print!("{}", fslens::experiment::converge::table(&summary));
        println!("wrote {} ({:.1} s)", path.display(), summary.wall_seconds);
    }
    Ok(())
}

fn run_plan(cli: &Cli, plan: &RunPlan, out: &Destination) -> Result<()> {
    if fslens::engine::ranks::rank() != 0 {
        // The same work as rank 0 (its share of every engine pass), no folder: rank 0 writes.
        fslens::experiment::execute(plan, &mut fslens::experiment::Silent, None)?;
        return Ok(());
    }
    let mut reporter = Reporter::new(cli.quiet, cli.json);
    let (path, summary) = fslens::experiment::run(plan, out, &mut reporter)?;
    reporter.finish();
    results::print_summary(
        cli.json,
        cli.quiet,
        &path,
        &summary,
        "at the final time; metrics.json has every checkpoint",
    );
    Ok(())
}

fn print_info(cli: &Cli) {
    let threads = rayon::current_num_threads();
    let adapters = fslens::engine::gpu::list_adapters();
    let auto = if fslens::engine::auto_uses_gpu() {
        "gpu"
    } else {
        "cpu"
    };
    if cli.json {
        let info = serde_json::json!({
            "version": env!("CARGO_PKG_VERSION"),
            "backends": <BackendKind as fslens::choices::Choice>::spellings(),
            "cpu_threads": threads,
            "auto_picks": auto,
            "adapters": adapters,
            "atom_storage": ATOM_STORAGE_NOTE,
            "mpi": MPI_NOTE,
        });
        println!("{info}");
        return;
    }
    println!("fslens {}", env!("CARGO_PKG_VERSION"));
    println!(
        "backends: {} (auto picks {auto})",
        <BackendKind as fslens::choices::Choice>::spellings()
    );
    println!("cpu backend: {threads} threads (RAYON_NUM_THREADS changes it)");
    if adapters.is_empty() {
        println!(
            "gpu adapters: none found (install a Vulkan driver, e.g. mesa-vulkan-drivers for the software one)"
        );
    }
    for a in &adapters {
        println!(
            "gpu adapter {}{}: {} ({}, {}; {})",
            a.index,
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
    println!(
        "several devices: --devices all | 0,1 (the adapter numbers above; 0,0 = two devices on adapter 0) splits the atoms across them"
    );
    println!("gpu atom storage: {ATOM_STORAGE_NOTE}");
    println!("mpi: {MPI_NOTE}");
}

/// Whether this binary can run as MPI ranks (README "Several machines (MPI)").
const MPI_NOTE: &str = if cfg!(feature = "mpi") {
    "built in: under mpirun/srun with more than one rank, run, compare, score and bench split the atoms over the ranks"
} else {
    "not built (cargo build --features mpi); under mpirun/srun with more than one rank this binary refuses to run"
};

/// What each GPU atom storage costs in accuracy (measured by the engine_gpu test
/// `f16_prior_shift_on_8bit_data`; see src/engine/gpu/mod.rs).
const ATOM_STORAGE_NOTE: &str = "f32 exact; u8 exact for 8-bit data (the default there), \
    4x smaller; f16 (any adapter, decoded to f32) moves 8-bit pixels by up to 2.4e-4, which \
    shifts the gap between the two largest logits by up to 26 nats at t = 1e-3, 1.1 at 1e-2, \
    0.05 at 0.1 (Fashion-MNIST): weights changed by up to 5e-3 in total variation at t = 0.1";

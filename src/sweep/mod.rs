//! Headless sweeps: a base run config plus axes to vary, expanded into jobs with stable ids,
//! each written to its own folder atomically so that a sweep can be killed and rerun, split
//! into shards (one per Slurm array task) and merged afterwards (README: "Sweeps").
//!
//! A sweep file:
//! ```toml
//! base = "demo.toml"            # a run config, relative to this file (or an inline [base] table)
//! [axes]                        # dotted keys of the run config → the values to try
//! "measurement.sigma" = [0.05, 0.1]
//! "sampling.samplers" = [["fsr"], ["sigma-dps"]]
//! seed = [0, 1, 2]
//! ```
//! Expansion is the cartesian product of the axes, axes in sorted key order, the last key
//! varying fastest. A job's id is the first 12 hex digits of SHA-256 over the canonical JSON of
//! its resolved run config (serde defaults filled in, object keys sorted), so an id names a
//! configuration, not a position: reordering or extending the axes keeps the ids of the jobs
//! that remain.
//!
//! Folder layout of a sweep output `OUT`, an fslens folder (`OUT/.fslens-output`, command
//! `sweep`; see [`crate::output`]) that is resumed, never replaced ([`open_folder`]):
//! - `OUT/jobs/<id>/`: a complete job: `job.json` (id, index, axis values) and the run's
//!   outputs (config.toml, summary.json, metrics.json, samples_*.npy, …). It is written as
//!   `OUT/jobs/.<id>.partial-<pid>` and renamed when complete, so a folder under its final name
//!   is always complete; a rerun skips it.
//! - `OUT/cache/`: loaded atom sets and measured atoms shared by the jobs (data::cache), unless
//!   the CLI is told `--no-cache` or another `--cache DIR`.
//! - `OUT/failed/<id>/error.txt`: the error of the last failed attempt (replaced atomically;
//!   removed when the job later succeeds). Failed jobs are retried by the next run.

pub mod check;
pub mod identity;
pub mod merge;
pub mod page;
pub mod results;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Instant;

use sha2::{Digest, Sha256};

use crate::choices::Choice;
use crate::config::RunConfig;
use crate::data::cache::AtomCache;
use crate::experiment::Observer;
use crate::output::{Destination, Marker, OutputDir};
use crate::plan::{Overrides, RunPlan};
use crate::{Error, Result};

/// A parsed sweep file: the base config as a TOML table, the axes, and where relative paths
/// of the base config are resolved.
#[derive(Clone, Debug)]
pub struct Sweep {
    /// The base run config before any axis is applied.
    pub base: toml::Table,
    /// Axis key (a dotted path into the run config) → its values, in sorted key order.
    pub axes: Vec<(String, Vec<toml::Value>)>,
    /// Folder against which relative paths in the run config are resolved.
    pub base_dir: PathBuf,
    /// Where the sweep file came from (for errors and the sbatch script).
    pub origin: PathBuf,
}

/// One point of the sweep: a complete run config and the axis values that made it.
#[derive(Clone, Debug)]
pub struct Job {
    /// Position in the expansion order (0-based).
    pub index: usize,
    /// Short hex of SHA-256 of the canonical config (see [`job_id`]).
    pub id: String,
    /// Axis key → the value of this job, in the sweep's axis order.
    pub axes: Vec<(String, toml::Value)>,
    pub config: RunConfig,
    /// Fingerprints of the data files the job reads ([`identity::data_fingerprint`]).
    pub data: BTreeMap<String, String>,
}

/// Length of a job id in hex digits (48 bits: collisions are negligible below ~10⁶ jobs).
pub const ID_HEX_DIGITS: usize = 12;

impl Sweep {
    /// Reads a sweep file.
    pub fn load(path: &Path) -> Result<Sweep> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io(path, e))?;
        Self::from_toml(&text, path)
    }

    /// Parses a sweep file's text; `origin` names it in errors and anchors relative paths.
    pub fn from_toml(text: &str, origin: &Path) -> Result<Sweep> {
        let mut table: toml::Table = toml::from_str(text).map_err(|e| {
            Error::data(
                origin,
                format!("invalid sweep file: {}", e.to_string().trim_end()),
            )
        })?;
        let here = origin.parent().map(Path::to_path_buf).unwrap_or_default();
        let (base, base_dir) = match table.remove("base") {
            Some(toml::Value::String(file)) => {
                let path = here.join(&file);
                let text = std::fs::read_to_string(&path).map_err(|e| Error::io(&path, e))?;
                let base: toml::Table = toml::from_str(&text).map_err(|e| {
                    Error::data(
                        &path,
                        format!("invalid run config: {}", e.to_string().trim_end()),
                    )
                })?;
                (
                    base,
                    path.parent().map(Path::to_path_buf).unwrap_or_default(),
                )
            }
            Some(toml::Value::Table(t)) => (t, here.clone()),
            Some(other) => {
                return Err(Error::config(
                    "base",
                    format!(
                        "must be a run config file name (\"demo.toml\") or a [base] table, got a {}",
                        other.type_str()
                    ),
                ));
            }
            None => {
                return Err(Error::config(
                    "base",
                    "missing: name the run config to vary (base = \"demo.toml\") or give an inline [base] table",
                ));
            }
        };
        let axes_table = match table.remove("axes") {
            Some(toml::Value::Table(t)) => t,
            Some(other) => {
                return Err(Error::config(
                    "axes",
                    format!(
                        "must be a table of dotted keys to value lists, got a {}",
                        other.type_str()
                    ),
                ));
            }
            None => toml::Table::new(),
        };
        if let Some(key) = table.keys().next() {
            return Err(Error::config(
                key.clone(),
                "unknown sweep key; a sweep file has `base` and `[axes]` (run settings go in the base)",
            ));
        }
        let mut axes = Vec::new();
        for (key, values) in axes_table {
            let list = match values {
                toml::Value::Array(list) if !list.is_empty() => list,
                toml::Value::Array(_) => {
                    return Err(Error::config(
                        format!("axes.\"{key}\""),
                        "is an empty list; give at least one value",
                    ));
                }
                other => {
                    return Err(Error::config(
                        format!("axes.\"{key}\""),
                        format!(
                            "must be a list of values, e.g. [0.05, 0.1], got a {}",
                            other.type_str()
                        ),
                    ));
                }
            };
            if key.split('.').any(str::is_empty) {
                return Err(Error::config(
                    format!("axes.\"{key}\""),
                    "is not a dotted key like \"measurement.sigma\"",
                ));
            }
            axes.push((key, list));
        }
        axes.sort_by(|a, b| a.0.cmp(&b.0));
        let sweep = Sweep {
            base,
            axes,
            base_dir,
            origin: origin.to_path_buf(),
        };
        // Every job must be a valid run config: find a bad axis value now, not mid-sweep.
        let jobs = sweep.jobs(Overrides::default())?;
        // Two jobs with one config would share a folder (and two shards could race on it).
        let mut first_with = std::collections::HashMap::new();
        for job in &jobs {
            if let Some(&earlier) = first_with.get(&job.id) {
                let other: &Job = &jobs[earlier];
                return Err(Error::data(
                    origin,
                    format!(
                        "jobs {} ({}) and {} ({}) are the same run config; remove the repeated axis value",
                        other.index,
                        describe_axes(&other.axes),
                        job.index,
                        describe_axes(&job.axes)
                    ),
                ));
            }
            first_with.insert(job.id.clone(), job.index);
        }
        Ok(sweep)
    }

    /// Number of jobs: the product of the axis lengths.
    pub fn len(&self) -> usize {
        self.axes.iter().map(|(_, v)| v.len()).product()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Expands the cartesian product in order (last axis fastest). `overrides` replace every
    /// job's backend, storage and devices (they are part of the id: results differ by engine,
    /// devices by float rounding).
    pub fn jobs(&self, overrides: Overrides) -> Result<Vec<Job>> {
        let total = self.len();
        let mut jobs = Vec::with_capacity(total);
        let mut fingerprints = identity::Fingerprints::default();
        for index in 0..total {
            // Mixed-radix digits of index, last axis least significant.
            let mut rest = index;
            let mut picks = vec![0usize; self.axes.len()];
            for (k, (_, values)) in self.axes.iter().enumerate().rev() {
                picks[k] = rest % values.len();
                rest /= values.len();
            }
            let mut table = self.base.clone();
            let mut axes = Vec::with_capacity(self.axes.len());
            for (k, (key, values)) in self.axes.iter().enumerate() {
                let value = values[picks[k]].clone();
                set_dotted(&mut table, key, value.clone())?;
                axes.push((key.clone(), value));
            }
            if let Some(b) = overrides.backend {
                table.insert("backend".into(), toml::Value::String(b.name().into()));
            }
            if let Some(st) = overrides.storage {
                table.insert("storage".into(), toml::Value::String(st.name().into()));
            }
            if let Some(dev) = overrides.devices {
                table.insert("devices".into(), toml::Value::String(dev.to_string()));
            }
            let config: RunConfig = toml::Value::Table(table).try_into().map_err(|e| {
                Error::data(
                    &self.origin,
                    format!(
                        "job {index} ({}) is not a valid run config: {}",
                        describe_axes(&axes),
                        e.to_string().trim_end()
                    ),
                )
            })?;
            RunPlan::new(config.clone(), &self.base_dir, Overrides::default()).map_err(|e| {
                Error::data(
                    &self.origin,
                    format!("job {index} ({}): {e}", describe_axes(&axes)),
                )
            })?;
            let data = identity::data_fingerprint(&config, &self.base_dir, &mut fingerprints);
            jobs.push(Job {
                index,
                id: job_id(&config, &data),
                axes,
                config,
                data,
            });
        }
        Ok(jobs)
    }
}

/// `key=value, …` of a job's axes, for messages.
pub fn describe_axes(axes: &[(String, toml::Value)]) -> String {
    axes.iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Sets `a.b.c = value` in a TOML table, creating the intermediate tables.
fn set_dotted(table: &mut toml::Table, key: &str, value: toml::Value) -> Result<()> {
    let parts: Vec<&str> = key.split('.').collect();
    let mut here = table;
    for (depth, part) in parts.iter().enumerate() {
        if depth + 1 == parts.len() {
            here.insert(part.to_string(), value);
            return Ok(());
        }
        let next = here
            .entry(part.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        here = match next {
            toml::Value::Table(t) => t,
            _ => {
                return Err(Error::config(
                    format!("axes.\"{key}\""),
                    format!(
                        "`{}` is a value in the base config, not a table",
                        parts[..=depth].join(".")
                    ),
                ));
            }
        };
    }
    Ok(())
}

/// The canonical text of a run config: JSON of the config with serde's defaults filled in and
/// object keys sorted (serde_json's map is ordered), floats in shortest round-trip form.
pub fn canonical_json(cfg: &RunConfig) -> String {
    let value = serde_json::to_value(cfg).expect("a run config always serialises");
    serde_json::to_string(&value).expect("a JSON value always serialises")
}

/// id = hex(SHA-256("fslens-job-v2\n" ‖ canonical_json(cfg) ‖ "\n" ‖ the data fingerprint,
/// a line `file fingerprint` per data file))[..12]: the same config over other data is another
/// job.
pub fn job_id(cfg: &RunConfig, data: &BTreeMap<String, String>) -> String {
    let mut h = Sha256::new();
    h.update(b"fslens-job-v2\n");
    h.update(canonical_json(cfg).as_bytes());
    h.update(b"\n");
    for (file, fp) in data {
        h.update(format!("{file} {fp}\n").as_bytes());
    }
    let digest = h.finalize();
    digest
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect::<String>()[..ID_HEX_DIGITS]
        .to_string()
}

/// Shard `index` of `count`: job k belongs to shard k mod count (expansion order), so every
/// shard gets an even mix of the axes and shards are disjoint and cover the sweep.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Shard {
    pub index: usize,
    pub count: usize,
}

impl Shard {
    pub const ALL: Shard = Shard { index: 0, count: 1 };

    /// Parses `i/n` (0 ≤ i < n), e.g. `--shard $SLURM_ARRAY_TASK_ID/4`.
    pub fn parse(text: &str) -> Result<Shard> {
        let bad = |why: &str| {
            Error::config(
                "--shard",
                format!("expected i/n with 0 <= i < n (e.g. 0/4), got {text:?}: {why}"),
            )
        };
        let (i, n) = text.split_once('/').ok_or_else(|| bad("no `/`"))?;
        let index: usize = i.trim().parse().map_err(|_| bad("i is not a number"))?;
        let count: usize = n.trim().parse().map_err(|_| bad("n is not a number"))?;
        if count == 0 || index >= count {
            return Err(bad("out of range"));
        }
        Ok(Shard { index, count })
    }

    pub fn contains(&self, job: &Job) -> bool {
        job.index % self.count == self.index
    }
}

/// What the sweep runner tells its watcher (the CLI: a bar, or JSON lines).
pub trait SweepObserver {
    /// Called once with the shard's job count and how many are already complete.
    fn begin(&mut self, _jobs: usize, _already_complete: usize) {}
    fn job_started(&mut self, _job: &Job) {}
    /// `error` is None on success.
    fn job_finished(&mut self, _job: &Job, _seconds: f64, _error: Option<&str>) {}
    /// A warning from inside a job's run.
    fn warning(&mut self, _job: &Job, _message: &str) {}
    /// A finished job's folder failed [`check::job_folder`] (`why`); it is discarded and rerun.
    fn damaged(&mut self, _job: &Job, _why: &str) {}
}

/// A sweep observer that ignores everything.
pub struct Quiet;
impl SweepObserver for Quiet {}

/// What a sweep run did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Outcome {
    /// Jobs in this shard.
    pub jobs: usize,
    /// Complete before this run started (skipped).
    pub skipped: usize,
    /// Completed by this run.
    pub completed: usize,
    /// Ids of jobs that failed in this run.
    pub failed: Vec<String>,
}

/// job.json of a job folder.
#[derive(Clone, Debug, serde::Serialize, serde::Deserialize)]
pub struct JobRecord {
    pub id: String,
    pub index: usize,
    /// Axis key → value (JSON form of the TOML value).
    pub axes: BTreeMap<String, serde_json::Value>,
    /// Axis keys in the sweep's order.
    pub axis_order: Vec<String>,
    pub fslens_version: String,
}

impl JobRecord {
    pub fn of(job: &Job) -> Self {
        JobRecord {
            id: job.id.clone(),
            index: job.index,
            axes: job
                .axes
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::to_value(v).expect("TOML values convert to JSON"),
                    )
                })
                .collect(),
            axis_order: job.axes.iter().map(|(k, _)| k.clone()).collect(),
            fslens_version: env!("CARGO_PKG_VERSION").into(),
        }
    }
}

/// Opens the sweep folder `out` to run (or resume) a sweep in it: created with its marker when
/// absent; kept as it is when it is a sweep folder (or an empty folder, or one a sweep wrote
/// before folders had markers); another fslens folder is replaced by an empty sweep folder, and
/// a folder fslens did not write is refused unless `force`, which replaces it.
pub fn open_folder(out: &Path, force: bool) -> Result<PathBuf> {
    crate::output::open_resumable(
        &Destination::new(out, "sweep").force(force),
        &looks_like_a_sweep_folder,
    )
}

/// Replaces the sweep folder `out` by an empty one (atomically, through [`OutputDir`]): for
/// `--force` when its recorded identity no longer matches the sweep.
pub fn start_over(out: &Path) -> Result<()> {
    OutputDir::create(&Destination::new(out, "sweep").force(true))?.finish()?;
    Ok(())
}

/// Whether `dir` holds a sweep's output (as fslens wrote it): written by `fslens sweep`
/// (its marker says so), or, from before markers, holding `jobs/` and nothing but the layout's
/// own entries (`jobs`, `failed`, `cache`, the merged files, Slurm logs, the merge lock,
/// temporary files).
pub fn is_sweep_folder(dir: &Path) -> bool {
    match Marker::read(dir) {
        Some(m) => m.command == "sweep",
        None => looks_like_a_sweep_folder(dir),
    }
}

fn looks_like_a_sweep_folder(dir: &Path) -> bool {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return false;
    };
    let mut has_jobs = false;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        has_jobs |= name == "jobs" && entry.path().is_dir();
        let known = matches!(
            name.as_str(),
            "jobs"
                | "failed"
                | "cache"
                | "results.csv"
                | "results.jsonl"
                | "sweep.json"
                | "merge.json"
                | "report.html"
                | ".merge.lock"
        ) || (name.starts_with("slurm-") && name.ends_with(".out"))
            || (name.starts_with('.') && name.contains(".partial-"));
        if !known {
            return false;
        }
    }
    has_jobs
}

/// Runs the jobs of `shard` that are not complete under `out`, one after another; a job that
/// fails records its error and the sweep goes on. With `cache`, jobs share loaded and measured
/// atoms through it (conventionally `OUT/cache`). `out` is opened with [`open_folder`] (without
/// `force`: the command line opens it first when the user gave `--force`).
pub fn run(
    sweep: &Sweep,
    out: &Path,
    shard: Shard,
    overrides: Overrides,
    cache: Option<&AtomCache>,
    observer: &mut dyn SweepObserver,
) -> Result<Outcome> {
    let all = sweep.jobs(overrides)?;
    open_folder(out, false)?;
    // Refuse to resume a sweep folder whose jobs were computed from another base or data.
    let identity = identity_of(sweep, overrides, &all);
    identity.check(out)?;
    identity.record(out)?;
    let jobs: Vec<Job> = all.into_iter().filter(|j| shard.contains(j)).collect();
    let jobs_dir = out.join("jobs");
    std::fs::create_dir_all(&jobs_dir).map_err(|e| Error::io(&jobs_dir, e))?;
    // A job counts as done when its folder exists and is intact; a damaged one is moved out
    // of the way (and rerun below).
    let mut done = Vec::with_capacity(jobs.len());
    for job in &jobs {
        let dir = jobs_dir.join(&job.id);
        let ok = dir.is_dir()
            && match check::job_folder(&dir, &job.id) {
                Ok(()) => true,
                Err(why) => {
                    observer.damaged(job, &why);
                    discard(&jobs_dir, &job.id)?;
                    false
                }
            };
        done.push(ok);
    }
    let mut outcome = Outcome {
        jobs: jobs.len(),
        skipped: done.iter().filter(|&&d| d).count(),
        ..Default::default()
    };
    observer.begin(outcome.jobs, outcome.skipped);
    for (job, _) in jobs.iter().zip(&done).filter(|(_, d)| !**d) {
        observer.job_started(job);
        let t0 = Instant::now();
        let result = run_job(sweep, job, &jobs_dir, cache, observer);
        let seconds = t0.elapsed().as_secs_f64();
        let failed_dir = out.join("failed").join(&job.id);
        match result {
            Ok(()) => {
                outcome.completed += 1;
                if failed_dir.exists() {
                    std::fs::remove_dir_all(&failed_dir).map_err(|e| Error::io(&failed_dir, e))?;
                }
                observer.job_finished(job, seconds, None);
            }
            Err(message) => {
                outcome.failed.push(job.id.clone());
                record_failure(&failed_dir, job, &message)?;
                observer.job_finished(job, seconds, Some(&message));
            }
        }
    }
    Ok(outcome)
}

/// The identity of `sweep` run with `overrides` whose jobs are `jobs` (all of them, every
/// shard's: shards must agree on it).
pub fn identity_of(sweep: &Sweep, overrides: Overrides, jobs: &[Job]) -> identity::Identity {
    let data = jobs.iter().flat_map(|j| j.data.clone()).collect();
    identity::Identity::of(sweep, overrides, data)
}

/// Runs one job into `jobs_dir/<id>` (staged); the error text on failure, panics included.
fn run_job(
    sweep: &Sweep,
    job: &Job,
    jobs_dir: &Path,
    cache: Option<&AtomCache>,
    observer: &mut dyn SweepObserver,
) -> std::result::Result<(), String> {
    remove_stale_staging(jobs_dir, &job.id);
    let target = jobs_dir.join(&job.id);
    let attempt = || -> Result<()> {
        let staging = OutputDir::create(&Destination::new(&target, "sweep"))?;
        let record = serde_json::to_string_pretty(&JobRecord::of(job)).expect("job serialises");
        crate::output::write_atomic(&staging.path().join("job.json"), record.as_bytes())?;
        let mut forward = JobObserver { job, observer };
        let plan = RunPlan::new(job.config.clone(), &sweep.base_dir, Overrides::default())?;
        crate::experiment::run_into(&plan, staging.path(), &mut forward, cache)?;
        staging.finish()?;
        Ok(())
    };
    match std::panic::catch_unwind(std::panic::AssertUnwindSafe(attempt)) {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let mut text = e.to_string();
            let mut source = std::error::Error::source(&e);
            while let Some(s) = source {
                text.push_str(&format!("\n  caused by: {s}"));
                source = s.source();
            }
            Err(text)
        }
        Err(panic) => Err(format!(
            "panicked: {}",
            panic
                .downcast_ref::<String>()
                .cloned()
                .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                .unwrap_or_else(|| "(no message)".into())
        )),
    }
}

/// Removes a damaged job folder: renamed to a hidden name first (so no reader sees it as
/// complete while it is deleted), then deleted.
fn discard(jobs_dir: &Path, id: &str) -> Result<()> {
    let from = jobs_dir.join(id);
    let to = jobs_dir.join(format!(".{id}.damaged-{}", std::process::id()));
    std::fs::rename(&from, &to).map_err(|e| Error::io(&from, e))?;
    std::fs::remove_dir_all(&to).map_err(|e| Error::io(&to, e))
}

/// A killed run leaves `.<id>.partial-<pid>` (or `.<id>.damaged-<pid>` when killed while
/// discarding a damaged job); the job is rerun from scratch, so its leftovers go. (Shards own disjoint jobs, so this never touches another live shard's staging.)
fn remove_stale_staging(jobs_dir: &Path, id: &str) {
    let prefix = format!(".{id}.");
    if let Ok(entries) = std::fs::read_dir(jobs_dir) {
        for entry in entries.flatten() {
            if entry.file_name().to_string_lossy().starts_with(&prefix) {
                let _ = std::fs::remove_dir_all(entry.path());
            }
        }
    }
}

/// Writes `failed/<id>/{error.txt, job.json}` atomically, replacing an older failure.
fn record_failure(failed_dir: &Path, job: &Job, message: &str) -> Result<()> {
    let staging = OutputDir::create(&Destination::new(failed_dir, "sweep"))?;
    let text = format!(
        "job {} ({}) failed:\n{message}\n",
        job.id,
        describe_axes(&job.axes)
    );
    std::fs::write(staging.path().join("error.txt"), text)
        .map_err(|e| Error::io(staging.path().join("error.txt"), e))?;
    let record = serde_json::to_string_pretty(&JobRecord::of(job)).expect("job serialises");
    std::fs::write(staging.path().join("job.json"), record)
        .map_err(|e| Error::io(staging.path().join("job.json"), e))?;
    staging.finish()?;
    Ok(())
}

/// Forwards a job's warnings to the sweep observer; stages and progress stay quiet (the sweep
/// shows one bar for the jobs).
struct JobObserver<'a> {
    job: &'a Job,
    observer: &'a mut dyn SweepObserver,
}

impl Observer for JobObserver<'_> {
    fn warning(&mut self, message: &str) {
        self.observer.warning(self.job, message);
    }
}

/// What `--print-sbatch` asks of Slurm beyond the sweep itself.
#[derive(Clone, Debug, Default)]
pub struct SlurmRequest {
    /// Array tasks (shards).
    pub shards: usize,
    /// GPUs per task: `#SBATCH --gres=gpu:N` (the caller also passes `--backend gpu`).
    pub gpus: Option<u32>,
    /// Extra `#SBATCH` lines, as given (`--time=02:00:00`).
    pub extra_sbatch: Vec<String>,
}

/// A Slurm batch script that runs `sweep_file` as an array of `shards` tasks, one shard each.
///
/// The merge must happen whatever became of the tasks, so there are two:
/// - each task merges what is complete after its shard, also when a job of it failed (the
///   sweep's exit status is kept and returned after the merge, so Slurm still marks the task
///   failed). The merges hold `OUT/.merge.lock` (flock), so they never interleave.
/// - task 0 submits a final merge job with `--dependency=afterany:<array job>`: Slurm starts it
///   after every task has ended in any state (completed, failed, timed out, cancelled, node
///   failure), which an in-task merge cannot promise (a task killed at its time limit never
///   reaches its merge line). `afterok` would never start after a failed task; `afterany` is
///   the dependency Slurm defines for "after, however it ended". If the submission is refused
///   (a cluster that forbids sbatch inside jobs), the task says so and the in-task merges
///   remain.
///
/// `RAYON_NUM_THREADS` follows `SLURM_CPUS_PER_TASK` (the CPU backend and the rest of fslens
/// use rayon, whose default is every core of the node, not the task's share).
pub fn sbatch_script(
    sweep_file: &Path,
    out: &Path,
    binary: &Path,
    request: &SlurmRequest,
    sweep_args: &[String],
) -> String {
    let q = |p: &Path| shell_quote(&p.display().to_string());
    let shards = request.shards.max(1);
    let mut s = String::new();
    s.push_str("#!/bin/bash\n");
    s.push_str("#SBATCH --job-name=fslens-sweep\n");
    s.push_str(&format!("#SBATCH --array=0-{}\n", shards - 1));
    s.push_str("#SBATCH --ntasks=1\n");
    s.push_str(&format!(
        "#SBATCH --output={}/slurm-%A_%a.out\n",
        out.display()
    ));
    if let Some(n) = request.gpus {
        s.push_str(&format!("#SBATCH --gres=gpu:{n}\n"));
    }
    for line in &request.extra_sbatch {
        s.push_str(&format!("#SBATCH {line}\n"));
    }
    s.push_str("set -uo pipefail\n");
    s.push_str("# One thread per CPU of this task (rayon's default is every core of the node).\n");
    s.push_str("if [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then export RAYON_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\"; fi\n");
    let merge = format!(
        "flock {} {} --quiet merge {}",
        q(&out.join(".merge.lock")),
        q(binary),
        q(out)
    );
    s.push_str("# The final merge: Slurm starts it after every task ended, however (afterany).\n");
    s.push_str(
        "if [ \"${SLURM_ARRAY_TASK_ID:-}\" = 0 ] && [ -n \"${SLURM_ARRAY_JOB_ID:-}\" ]; then\n",
    );
    s.push_str(&format!(
        "  sbatch --job-name=fslens-merge --dependency=afterany:\"$SLURM_ARRAY_JOB_ID\" --ntasks=1 --output={}/slurm-merge-%j.out --wrap {} \\\n    || echo \"warning: could not submit the final merge job; run {} merge {} when the tasks end\" >&2\n",
        out.display(),
        shell_quote(&merge),
        binary.display(),
        out.display()
    ));
    s.push_str("fi\n");
    s.push_str(&format!(
        "# One shard of {shards} per array task; a rerun of the array skips completed jobs.\n"
    ));
    let extra: String = sweep_args
        .iter()
        .map(|a| format!(" {}", shell_quote(a)))
        .collect();
    s.push_str("status=0\n");
    s.push_str(&format!(
        "{} --quiet sweep {} --out {}{extra} --shard \"${{SLURM_ARRAY_TASK_ID}}/{shards}\" || status=$?\n",
        q(binary),
        q(sweep_file),
        q(out)
    ));
    s.push_str("# Merge what is complete now, after a failed job too; the task keeps the sweep's status.\n");
    s.push_str(&format!("{merge} || status=$?\n"));
    s.push_str("exit $status\n");
    s
}

/// Single-quotes a word for sh unless it is plainly safe.
fn shell_quote(word: &str) -> String {
    if !word.is_empty()
        && word
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "/._-+=:,@".contains(c))
    {
        word.to_string()
    } else {
        format!("'{}'", word.replace('\'', "'\\''"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
seed = 0
backend = "cpu"
[data]
kind = "synthetic"
count = 100
size = 8
[measurement]
operator = "downsample:2"
sigma = 0.1
[sampling]
samplers = ["exact", "fsr"]
particles = 8
steps = 10
"#;

    fn sweep(axes: &str) -> Result<Sweep> {
        let text = format!(
            "[base]\n{}\n[axes]\n{axes}",
            BASE.replace("\n[", "\n[base.")
        );
        Sweep::from_toml(&text, Path::new("/nonexistent/sweep.toml"))
    }

    #[test]
    fn expansion_is_the_cartesian_product_in_key_order() {
        let s = sweep(
            "seed = [0, 1, 2]\n\"measurement.sigma\" = [0.05, 0.1]\n\"sampling.samplers\" = [[\"fsr\"], [\"sigma-dps\"]]\n",
        )
        .unwrap();
        let jobs = s.jobs(Overrides::default()).unwrap();
        assert_eq!(jobs.len(), 12);
        // Sorted keys: measurement.sigma, sampling.samplers, seed (fastest).
        let keys: Vec<&str> = s.axes.iter().map(|(k, _)| k.as_str()).collect();
        assert_eq!(keys, ["measurement.sigma", "sampling.samplers", "seed"]);
        for (i, job) in jobs.iter().enumerate() {
            assert_eq!(job.index, i);
            assert_eq!(job.config.seed, (i % 3) as u64);
            let samplers = if (i / 3) % 2 == 0 { "fsr" } else { "sigma-dps" };
            assert_eq!(
                job.config.sampling.samplers,
                vec![crate::samplers::SamplerKind::parse(samplers).unwrap()]
            );
            let sigma = if i / 6 == 0 { 0.05 } else { 0.1 };
            assert_eq!(job.config.measurement.sigma, sigma);
            // Untouched base values survive.
            assert_eq!(job.config.sampling.particles, 8);
        }
        let mut ids: Vec<&str> = jobs.iter().map(|j| j.id.as_str()).collect();
        ids.sort();
        ids.dedup();
        assert_eq!(ids.len(), 12, "ids are distinct");
    }

    #[test]
    fn ids_name_the_config_not_its_position() {
        let a = sweep("seed = [0, 1]\n")
            .unwrap()
            .jobs(Overrides::default())
            .unwrap();
        let b = sweep("seed = [5, 1, 0]\n")
            .unwrap()
            .jobs(Overrides::default())
            .unwrap();
        assert_eq!(a[0].id, b[2].id);
        assert_eq!(a[1].id, b[1].id);
        // Same as hashing the config directly, and a different config gives another id.
        assert_eq!(a[0].id, job_id(&a[0].config, &a[0].data));
        assert_eq!(a[0].id.len(), ID_HEX_DIGITS);
        // Writing a default explicitly does not change the id: it hashes the resolved config.
        let explicit = sweep("\"sampling.t_min\" = [1e-3]\nseed = [0]\n")
            .unwrap()
            .jobs(Overrides::default())
            .unwrap();
        assert_eq!(explicit[0].id, a[0].id);
        // The backend override is part of the id.
        let gpu = sweep("seed = [0]\n")
            .unwrap()
            .jobs(Overrides {
                backend: Some(crate::engine::BackendKind::Gpu),
                ..Default::default()
            })
            .unwrap();
        assert_ne!(gpu[0].id, a[0].id);
    }

    #[test]
    fn job_id_matches_an_independent_sha256() {
        // SHA-256("abc") from FIPS 180-2, through the same digest path as job ids.
        let mut h = Sha256::new();
        h.update(b"abc");
        let hex: String = h.finalize().iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(
            hex,
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[test]
    fn shards_partition_the_jobs() {
        let s = sweep("seed = [0, 1, 2, 3, 4, 5, 6]\n").unwrap();
        let jobs = s.jobs(Overrides::default()).unwrap();
        for n in 1..5 {
            let mut seen = vec![0; jobs.len()];
            for i in 0..n {
                let shard = Shard::parse(&format!("{i}/{n}")).unwrap();
                for j in jobs.iter().filter(|j| shard.contains(j)) {
                    seen[j.index] += 1;
                }
            }
            assert!(seen.iter().all(|&c| c == 1), "{n} shards: {seen:?}");
        }
        for bad in ["2/2", "1", "a/2", "0/0", "-1/2"] {
            let e = Shard::parse(bad).unwrap_err().to_string();
            assert!(e.contains("--shard"), "{bad}: {e}");
        }
    }

    #[test]
    fn bad_sweeps_name_the_key() {
        let e = sweep("\"measurement.sigm\" = [0.1]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("sigm") && e.contains("job 0"), "{e}");
        let e = sweep("\"measurement.sigma\" = [-1.0]\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("measurement.sigma"), "{e}");
        let e = sweep("seed = [0, 1, 0]\n").unwrap_err().to_string();
        assert!(e.contains("jobs 0 (seed=0) and 2 (seed=0)"), "{e}");
        let e = sweep("seed = []\n").unwrap_err().to_string();
        assert!(e.contains("axes.\"seed\"") && e.contains("empty"), "{e}");
        let e = sweep("seed = 3\n").unwrap_err().to_string();
        assert!(e.contains("list"), "{e}");
        let e = sweep("\"seed.x\" = [1]\n").unwrap_err().to_string();
        assert!(e.contains("not a table"), "{e}");
        let e = Sweep::from_toml("[axes]\nseed = [1]\n", Path::new("s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("base"), "{e}");
        let e = Sweep::from_toml("base = \"nope.toml\"\n", Path::new("/nonexistent/s.toml"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("nope.toml"), "{e}");
        let e = sweep("seed = [1]\n[extra]\nx = 1\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("extra"), "{e}");
    }

    #[test]
    fn sbatch_script_runs_one_shard_per_task_and_always_merges() {
        let request = SlurmRequest {
            shards: 4,
            gpus: Some(2),
            extra_sbatch: vec!["--time=01:00:00".to_string()],
        };
        let s = sbatch_script(
            Path::new("sweeps/my sweep.toml"),
            Path::new("/scratch/out"),
            Path::new("/opt/fslens"),
            &request,
            &["--backend".to_string(), "gpu".to_string()],
        );
        assert!(s.starts_with("#!/bin/bash\n"));
        assert!(s.contains("#SBATCH --array=0-3\n"));
        assert!(s.contains("#SBATCH --time=01:00:00\n"));
        assert!(s.contains("#SBATCH --gres=gpu:2\n"));
        // Every #SBATCH line comes before the first command (sbatch stops reading them there).
        let first_command = s.find("\nset ").unwrap();
        assert!(s.rfind("#SBATCH").unwrap() < first_command);
        assert!(s.contains(
            "if [ -n \"${SLURM_CPUS_PER_TASK:-}\" ]; then export RAYON_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\"; fi\n"
        ));
        // The final merge depends on the whole array with afterany, never afterok.
        assert!(s.contains("--dependency=afterany:\"$SLURM_ARRAY_JOB_ID\""));
        assert!(!s.contains("afterok"));
        assert!(s.contains(
            "--wrap 'flock /scratch/out/.merge.lock /opt/fslens --quiet merge /scratch/out'"
        ));
        // A failed sweep does not stop the in-task merge (no `set -e`; its status is kept).
        assert!(!s.contains("set -e"));
        assert!(s.contains(
            "/opt/fslens --quiet sweep 'sweeps/my sweep.toml' --out /scratch/out --backend gpu --shard \"${SLURM_ARRAY_TASK_ID}/4\" || status=$?\n"
        ));
        assert!(s.contains(
            "\nflock /scratch/out/.merge.lock /opt/fslens --quiet merge /scratch/out || status=$?\nexit $status\n"
        ));
        // Without GPUs, no gres line.
        let cpu = sbatch_script(
            Path::new("s.toml"),
            Path::new("/o"),
            Path::new("/b"),
            &SlurmRequest {
                shards: 1,
                ..Default::default()
            },
            &[],
        );
        assert!(!cpu.contains("--gres") && cpu.contains("#SBATCH --array=0-0\n"));
        // The shard expression the script passes parses for every task id.
        for i in 0..4 {
            assert!(Shard::parse(&format!("{i}/4")).is_ok());
        }
    }
}

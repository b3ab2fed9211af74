//! `fslens sweep` and `fslens merge`: one progress bar over the jobs (hidden when stderr is
//! not a terminal, where plain lines go instead), or with `--json` one record per job start
//! and finish on stdout.

use std::io::IsTerminal;
use std::path::{Path, PathBuf};

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

use super::SweepArgs;
use fslens::choices::Choice;
use fslens::sweep::{self, Job, Shard, Sweep, SweepObserver, describe_axes};
use fslens::{Error, Result};

/// The default output folder of a sweep file: runs/<file stem>.
fn default_out(file: &Path) -> PathBuf {
    PathBuf::from("runs").join(file.file_stem().unwrap_or_default())
}

pub fn sweep(args: &SweepArgs, quiet: bool, json: bool) -> Result<()> {
    let spec = Sweep::load(&args.config)?;
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| default_out(&args.config));
    if args.print_sbatch == Some(0) {
        return Err(Error::config(
            "--print-sbatch",
            "needs at least 1 array task",
        ));
    }
    // Before anything is written there (the cache lives in OUT/cache); Slurm opens the
    // --output log under OUT before the script runs, so --print-sbatch needs OUT too.
    sweep::open_folder(&out, args.output.force)?;
    // A folder holding this sweep computed from another base config or data is refused (the
    // error names what changed), or with --force discarded: before the cache under it opens.
    let overrides = args.engine.overrides();
    let all = spec.jobs(overrides)?;
    if let Err(e) = sweep::identity_of(&spec, overrides, &all).check(&out) {
        if !args.output.force {
            return Err(e);
        }
        eprintln!("--force: starting over in {}: {e}", out.display());
        sweep::start_over(&out)?;
    }
    if let Some(shards) = args.print_sbatch {
        // Absolute paths: the batch job may start in another folder.
        let abs = |p: &Path| std::path::absolute(p).unwrap_or_else(|_| p.to_path_buf());
        let binary = std::env::current_exe().map_err(|e| Error::io("fslens executable", e))?;
        // The options of this command line that every task must repeat.
        let mut sweep_args = Vec::new();
        let backend = match (args.engine.backend, args.gpus) {
            (Some(fslens::engine::BackendKind::Cpu), Some(_)) => {
                return Err(Error::config(
                    "--gpus",
                    "requests GPUs for jobs told --backend cpu; drop one of the two",
                ));
            }
            (None, Some(_)) => Some(fslens::engine::BackendKind::Gpu),
            (b, _) => b,
        };
        if let Some(b) = backend {
            sweep_args.extend(["--backend".to_string(), b.name().to_string()]);
        }
        if let Some(st) = args.engine.storage {
            sweep_args.extend(["--storage".to_string(), st.name().to_string()]);
        }
        if let Some(dev) = args.engine.devices {
            sweep_args.extend(["--devices".to_string(), dev.to_string()]);
        }
        if let Some(n) = args.engine.threads {
            sweep_args.extend(["--threads".to_string(), n.to_string()]);
        }
        if let Some(c) = &args.cache {
            sweep_args.extend(["--cache".to_string(), abs(c).display().to_string()]);
        }
        if args.no_cache {
            sweep_args.push("--no-cache".to_string());
        }
        print!(
            "{}",
            sweep::sbatch_script(
                &abs(&args.config),
                &abs(&out),
                &binary,
                &sweep::SlurmRequest {
                    shards,
                    gpus: args.gpus,
                    extra_sbatch: args.sbatch_args.clone(),
                },
                &sweep_args
            )
        );
        return Ok(());
    }
    let shard = args
        .shard
        .as_deref()
        .map(Shard::parse)
        .transpose()?
        .unwrap_or(Shard::ALL);
    let cache = if args.no_cache {
        None
    } else {
        let dir = args.cache.clone().unwrap_or_else(|| out.join("cache"));
        // A cache is an optimisation: one that cannot be created is warned about, not fatal.
        match fslens::data::cache::AtomCache::open(&dir) {
            Ok(c) => Some(c),
            Err(e) => {
                eprintln!("warning: cannot use the cache ({e}); running without it");
                None
            }
        }
    };
    let mut reporter = SweepReporter::new(quiet, json);
    let outcome = sweep::run(
        &spec,
        &out,
        shard,
        args.engine.overrides(),
        cache.as_ref(),
        &mut reporter,
    )?;
    reporter.finish();
    let failed = outcome.failed.len();
    if json {
        println!(
            "{}",
            serde_json::json!({
                "event": "sweep_done", "out": out, "shard": format!("{}/{}", shard.index, shard.count),
                "jobs": outcome.jobs, "skipped": outcome.skipped,
                "completed": outcome.completed, "failed": outcome.failed,
            })
        );
    }
    if !quiet || failed > 0 {
        eprintln!(
            "sweep {}: {} job(s) in shard {}/{}: {} already complete, {} completed now, {} failed",
            out.display(),
            outcome.jobs,
            shard.index,
            shard.count,
            outcome.skipped,
            outcome.completed,
            failed
        );
    }
    if failed > 0 {
        return Err(Error::input(format!(
            "{failed} job(s) failed; their errors are in {}/failed/<id>/error.txt; run the sweep again to retry them",
            out.display()
        )));
    }
    Ok(())
}

pub fn merge(
    dirs: &[PathBuf],
    out: Option<&Path>,
    force: bool,
    quiet: bool,
    json: bool,
) -> Result<()> {
    let out = match out {
        Some(o) => o.to_path_buf(),
        None => dirs
            .first()
            .cloned()
            .ok_or_else(|| Error::input("merge needs at least one sweep output folder"))?,
    };
    let done = sweep::merge::merge(dirs, &out, force)?;
    // Damaged jobs are named whatever the output mode: the merge is missing them.
    for d in &done.damaged {
        eprintln!(
            "merge: left out damaged job {} in {}: {}",
            d.id,
            d.source.display(),
            d.reason
        );
    }
    if json {
        println!(
            "{}",
            serde_json::json!({"event": "merge_done", "result": done})
        );
    } else if !quiet {
        eprintln!(
            "merged {} job(s) ({} failed, {} damaged{}) into {}/results.csv, results.jsonl, merge.json, report.html",
            done.jobs,
            done.failed,
            done.damaged.len(),
            if done.duplicates > 0 {
                format!(", {} duplicate(s) ignored", done.duplicates)
            } else {
                String::new()
            },
            out.display()
        );
    }
    Ok(())
}

struct SweepReporter {
    quiet: bool,
    json: bool,
    terminal: bool,
    bar: Option<ProgressBar>,
    total: usize,
    done: usize,
}

impl SweepReporter {
    fn new(quiet: bool, json: bool) -> Self {
        SweepReporter {
            quiet,
            json,
            terminal: std::io::stderr().is_terminal(),
            bar: None,
            total: 0,
            done: 0,
        }
    }

    fn finish(&mut self) {
        if let Some(bar) = self.bar.take() {
            bar.finish_and_clear();
        }
    }
}

impl SweepObserver for SweepReporter {
    fn begin(&mut self, jobs: usize, already_complete: usize) {
        self.total = jobs;
        self.done = already_complete;
        if self.json {
            println!(
                "{}",
                serde_json::json!({"event": "sweep_start", "jobs": jobs, "already_complete": already_complete})
            );
        } else if !self.quiet && self.terminal {
            let bar =
                ProgressBar::with_draw_target(Some(jobs as u64), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "  sweep [{bar:30}] {pos}/{len} jobs  {elapsed} (eta {eta})  {msg}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            // ETA from the jobs run now, not the skipped ones.
            bar.set_position(already_complete as u64);
            bar.reset_eta();
            self.bar = Some(bar);
        }
    }

    fn job_started(&mut self, job: &Job) {
        if self.json {
            println!(
                "{}",
                serde_json::json!({"event": "job_start", "id": job.id, "index": job.index,
                                   "axes": fslens::sweep::JobRecord::of(job).axes})
            );
        } else if let Some(bar) = &self.bar {
            bar.set_message(format!("{} ({})", job.id, describe_axes(&job.axes)));
        }
    }

    fn job_finished(&mut self, job: &Job, seconds: f64, error: Option<&str>) {
        self.done += 1;
        if self.json {
            println!(
                "{}",
                serde_json::json!({"event": "job_finish", "id": job.id, "index": job.index,
                                   "status": if error.is_some() { "failed" } else { "ok" },
                                   "seconds": seconds, "error": error})
            );
            return;
        }
        if let Some(bar) = &self.bar {
            bar.inc(1);
            if let Some(e) = error {
                bar.println(format!(
                    "job {} ({}) failed: {e}",
                    job.id,
                    describe_axes(&job.axes)
                ));
            }
        } else if let Some(e) = error {
            // A failure is never silent, --quiet or not.
            eprintln!("job {} ({}) failed: {e}", job.id, describe_axes(&job.axes));
        } else if !self.quiet {
            eprintln!(
                "job {}/{} {} ({}) done in {seconds:.1} s",
                self.done,
                self.total,
                job.id,
                describe_axes(&job.axes)
            );
        }
    }

    fn damaged(&mut self, job: &Job, why: &str) {
        // Never silent, --quiet or not: a finished job is being thrown away.
        let line = format!(
            "job {} ({}) was complete but is damaged ({why}); rerunning it",
            job.id,
            describe_axes(&job.axes)
        );
        if self.json {
            println!(
                "{}",
                serde_json::json!({"event": "damaged", "id": job.id, "reason": why})
            );
        }
        eprintln!("{line}");
    }

    fn warning(&mut self, job: &Job, message: &str) {
        if self.json {
            println!(
                "{}",
                serde_json::json!({"event": "warning", "id": job.id, "message": message})
            );
        }
        match &self.bar {
            Some(bar) => bar.println(format!("warning: job {}: {message}", job.id)),
            None => eprintln!("warning: job {}: {message}", job.id),
        }
    }
}

//! Headless sweeps: a 12-job sweep killed with SIGKILL and rerun completes every job
//! exactly once with the outputs of an uninterrupted sweep; two shards merged equal one
//! unsharded run; a failing job is recorded and the sweep goes on; --print-sbatch.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use common::{fslens, fslens_command, json_lines, read_json, s, scratch_dir};

/// The base run config of every sweep here (samplers come from the axes).
fn base() -> String {
    common::small_run_config(
        0,
        r#"
[sampling]
particles = 32
steps = 60
checkpoints = [0.5, 0.1]
[diagnostics]
clusters = 4
"#,
    )
}

/// 2 × 2 × 3 = 12 jobs.
const SWEEP: &str = r#"
base = "base.toml"
[axes]
"measurement.sigma" = [0.05, 0.2]
"sampling.samplers" = [["exact", "fsr"], ["exact", "sigma-dps"]]
seed = [0, 1, 2]
"#;

/// Fields of summary.json / results that measure time: they differ between identical runs.
const TIMING: [&str; 3] = ["wall_seconds", "seconds_per_step", "total_seconds"];

fn scratch(name: &str) -> PathBuf {
    let dir = scratch_dir(&format!("sweep-{name}"));
    std::fs::write(dir.join("base.toml"), base()).unwrap();
    std::fs::write(dir.join("sweep.toml"), SWEEP).unwrap();
    dir
}

/// `fslens <mode> sweep <dir>/<file> --out <out> <extra>…` (`mode`: --quiet or --json).
fn sweep_args(mode: &str, dir: &Path, file: &str, out: &Path, extra: &[&str]) -> Vec<String> {
    let mut args = vec![mode, "sweep", s(&dir.join(file)), "--out", s(out)]
        .into_iter()
        .map(String::from)
        .collect::<Vec<_>>();
    args.extend(extra.iter().map(|a| a.to_string()));
    args
}

/// The uninterrupted sweep every other test compares with (run once per test binary).
fn reference() -> &'static Path {
    static REF: OnceLock<PathBuf> = OnceLock::new();
    REF.get_or_init(|| {
        let dir = scratch("reference");
        let out = dir.join("out");
        fslens(&sweep_args("--quiet", &dir, "sweep.toml", &out, &[]));
        out
    })
}

/// Names of the complete job folders (hidden stagings excluded).
fn complete_jobs(out: &Path) -> BTreeSet<String> {
    match std::fs::read_dir(out.join("jobs")) {
        Ok(entries) => entries
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| !n.starts_with('.'))
            .collect(),
        Err(_) => BTreeSet::new(),
    }
}

fn strip_timing(v: &mut serde_json::Value) {
    match v {
        serde_json::Value::Object(map) => {
            for key in TIMING {
                map.remove(key);
            }
            map.values_mut().for_each(strip_timing);
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(strip_timing),
        _ => {}
    }
}

/// report.html without the run's timings: the subtitle (total seconds) and the rows of the
/// sampler table (seconds, s/step; their metrics are compared through metrics.json).
fn untimed_html(path: &Path) -> String {
    let text = std::fs::read_to_string(path).unwrap();
    let mut out = String::with_capacity(text.len());
    for line in text.lines() {
        let timed = line.starts_with("<p class=\"subtitle\">")
            || line.starts_with("<tr><td class=\"name\">");
        out.push_str(if timed { "<timed/>" } else { line });
        out.push('\n');
    }
    out
}

/// Every file of job folder `a` equals the same file of `b`: bytes, except the timings of
/// summary.json (and the job's position in job.json when the sweeps differ) and the writer of
/// the folder's marker (time, host, process); report.html shows those timings too, so it is
/// compared with every number of seconds blanked.
fn assert_same_job(a: &Path, b: &Path) {
    assert_same_job_of(a, b, true)
}

fn assert_same_job_of(a: &Path, b: &Path, same_sweep: bool) {
    let names = |d: &Path| -> BTreeSet<String> {
        std::fs::read_dir(d)
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect()
    };
    let files = names(a);
    assert_eq!(files, names(b), "{} vs {}", a.display(), b.display());
    for f in ["job.json", "config.toml", "metrics.json", "summary.json"] {
        assert!(files.contains(f), "{} lacks {f}", a.display());
    }
    assert!(files.iter().any(|f| f.starts_with("samples_")));
    for f in &files {
        if f == "job.json" && !same_sweep {
            let (mut x, mut y) = (read_json(&a.join(f)), read_json(&b.join(f)));
            x.as_object_mut().unwrap().remove("index");
            y.as_object_mut().unwrap().remove("index");
            assert_eq!(x, y, "{}", a.join(f).display());
        } else if f == fslens::output::MARKER {
            // Who wrote the folder, when, and with which process: the same command.
            let (x, y) = (read_json(&a.join(f)), read_json(&b.join(f)));
            assert_eq!(
                (&x["command"], &x["version"]),
                (&y["command"], &y["version"])
            );
        } else if f == "report.html" {
            let (x, y) = (untimed_html(&a.join(f)), untimed_html(&b.join(f)));
            assert!(x == y, "{} differs beyond its timings", a.join(f).display());
        } else if f == "summary.json" {
            let (mut x, mut y) = (read_json(&a.join(f)), read_json(&b.join(f)));
            strip_timing(&mut x);
            strip_timing(&mut y);
            assert_eq!(x, y, "{}", a.join(f).display());
        } else {
            assert!(
                std::fs::read(a.join(f)).unwrap() == std::fs::read(b.join(f)).unwrap(),
                "{} differs from {}",
                a.join(f).display(),
                b.join(f).display()
            );
        }
    }
}

#[test]
fn killed_sweep_resumes_and_matches_an_uninterrupted_one() {
    let reference = reference();
    let all = complete_jobs(reference);
    assert_eq!(all.len(), 12);

    let dir = scratch("killed");
    let out = dir.join("out");
    let mut child = fslens_command(&sweep_args("--quiet", &dir, "sweep.toml", &out, &[]))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let t0 = Instant::now();
    loop {
        let done = complete_jobs(&out).len();
        if done >= 3 {
            break;
        }
        assert!(
            child.try_wait().unwrap().is_none(),
            "the sweep ended before it could be killed"
        );
        assert!(t0.elapsed() < Duration::from_secs(120), "no job completed");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL on Unix
    child.wait().unwrap();
    let before = complete_jobs(&out);
    assert!(
        before.len() >= 3 && before.len() < 12,
        "killed midway: {} complete",
        before.len()
    );
    // Nothing partial looks complete: every folder under its final name is a finished job
    // equal to the uninterrupted one; anything else is a hidden staging folder.
    let mut identity = BTreeMap::new();
    for id in &before {
        assert!(all.contains(id));
        assert_same_job(&out.join("jobs").join(id), &reference.join("jobs").join(id));
        let meta = std::fs::metadata(out.join("jobs").join(id)).unwrap();
        identity.insert(id.clone(), (meta.ino(), meta.mtime_nsec(), meta.mtime()));
    }
    for entry in std::fs::read_dir(out.join("jobs")).unwrap().flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            before.contains(&name) || (name.starts_with('.') && name.contains(".partial-")),
            "unexpected {name}"
        );
    }

    // The rerun starts exactly the jobs that were not complete.
    let rerun = fslens(&sweep_args("--json", &dir, "sweep.toml", &out, &[]));
    let records = json_lines(&rerun.stdout);
    let started: BTreeSet<String> = records
        .iter()
        .filter(|r| r["event"] == "job_start")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    let finished_ok = records
        .iter()
        .filter(|r| r["event"] == "job_finish" && r["status"] == "ok")
        .count();
    let expected: BTreeSet<String> = all.difference(&before).cloned().collect();
    assert_eq!(started, expected);
    assert_eq!(finished_ok, expected.len());
    let last = records.last().unwrap();
    assert_eq!(last["event"], "sweep_done");
    assert_eq!(last["skipped"], before.len());
    assert_eq!(last["completed"], 12 - before.len());

    // Every job completed exactly once: the folders of the first run are untouched, and the
    // killed run's staging is gone.
    assert_eq!(complete_jobs(&out), all);
    for (id, ident) in &identity {
        let meta = std::fs::metadata(out.join("jobs").join(id)).unwrap();
        assert_eq!(
            (meta.ino(), meta.mtime_nsec(), meta.mtime()),
            *ident,
            "job {id} was redone"
        );
    }
    let leftovers: Vec<_> = std::fs::read_dir(out.join("jobs"))
        .unwrap()
        .flatten()
        .filter(|e| e.file_name().to_string_lossy().starts_with('.'))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    for id in &all {
        assert_same_job(&out.join("jobs").join(id), &reference.join("jobs").join(id));
    }
    // A third run does nothing.
    let again = fslens(&sweep_args("--json", &dir, "sweep.toml", &out, &[]));
    assert!(!String::from_utf8_lossy(&again.stdout).contains("job_start"));
    let _ = std::fs::remove_dir_all(&dir);
}

/// results.jsonl rows without their timings.
fn results(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("results.jsonl"))
        .unwrap()
        .lines()
        .map(|l| {
            let mut v: serde_json::Value = serde_json::from_str(l).unwrap();
            strip_timing(&mut v);
            v
        })
        .collect()
}

/// results.csv without the timing columns.
fn csv_without_timing(dir: &Path) -> Vec<Vec<String>> {
    let text = std::fs::read_to_string(dir.join("results.csv")).unwrap();
    let rows: Vec<Vec<String>> = text.lines().map(split_csv).collect();
    let keep: Vec<bool> = rows[0]
        .iter()
        .map(|h| !TIMING.iter().any(|t| h.ends_with(t)))
        .collect();
    rows.iter()
        .map(|r| {
            r.iter()
                .zip(&keep)
                .filter(|(_, k)| **k)
                .map(|(c, _)| c.clone())
                .collect()
        })
        .collect()
}

fn split_csv(line: &str) -> Vec<String> {
    let mut cells = vec![String::new()];
    let mut quoted = false;
    let mut chars = line.chars().peekable();
    while let Some(c) = chars.next() {
        match (c, quoted) {
            ('"', true) if chars.peek() == Some(&'"') => {
                chars.next();
                cells.last_mut().unwrap().push('"');
            }
            ('"', _) => quoted = !quoted,
            (',', false) => cells.push(String::new()),
            (c, _) => cells.last_mut().unwrap().push(c),
        }
    }
    cells
}

#[test]
fn two_shards_merged_equal_one_unsharded_run() {
    let reference = reference();
    let dir = scratch("shards");
    let (a, b) = (dir.join("shard0"), dir.join("shard1"));
    for (out, shard) in [(&a, "0/2"), (&b, "1/2")] {
        fslens(&sweep_args(
            "--quiet",
            &dir,
            "sweep.toml",
            out,
            &["--shard", shard],
        ));
    }
    let (ja, jb) = (complete_jobs(&a), complete_jobs(&b));
    assert_eq!((ja.len(), jb.len()), (6, 6));
    assert!(ja.is_disjoint(&jb));
    let union: BTreeSet<String> = ja.union(&jb).cloned().collect();
    assert_eq!(union, complete_jobs(reference));

    let merged = dir.join("merged");
    let single = dir.join("single");
    fslens(&["--quiet", "merge", s(&a), s(&b), "--out", s(&merged)]);
    fslens(&["--quiet", "merge", s(reference), "--out", s(&single)]);
    let rows = results(&merged);
    assert_eq!(rows.len(), 12);
    assert_eq!(rows, results(&single));
    assert_eq!(csv_without_timing(&merged), csv_without_timing(&single));
    // Rows in sweep order, with the axes and every sampler's metrics.
    for (i, row) in rows.iter().enumerate() {
        assert_eq!(row["index"], i);
        assert_eq!(row["axes"]["seed"], (i % 3) as u64);
        let other = if (i / 3) % 2 == 0 { "fsr" } else { "sigma-dps" };
        for name in ["exact", other] {
            let tv = row["samplers"][name]["mode_tv"].as_f64().unwrap();
            assert!((0.0..=1.0).contains(&tv), "{row}");
        }
    }
    // The csv's metric cells are the numbers of each job's metrics.json.
    let csv = csv_without_timing(&merged);
    let col = csv[0].iter().position(|h| h == "fsr.mode_tv").unwrap();
    let id0 = &csv[1][0];
    let metrics = read_json(&reference.join("jobs").join(id0).join("metrics.json"));
    let tv: f64 = csv[1][col].parse().unwrap();
    assert_eq!(
        tv,
        metrics["samplers"]["fsr"]["metrics"]["mode_tv"]
            .as_f64()
            .unwrap()
    );
    // One plot per metric and varied axis, inline in a self-contained page.
    let html = std::fs::read_to_string(merged.join("report.html")).unwrap();
    assert!(html.contains("mode_tv vs measurement.sigma"));
    assert!(html.contains("mode_tv vs sampling.samplers"));
    assert!(html.contains("psnr_denoised vs seed"));
    assert!(!html.contains("src=\"http"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_failing_job_is_recorded_and_the_sweep_goes_on() {
    let dir = scratch("failing");
    // Holding out 5000 of 300 images passes validation but fails when the data are loaded.
    std::fs::write(
        dir.join("fail.toml"),
        "base = \"base.toml\"\n[axes]\n\"truth.held_out\" = [5000, 1]\n",
    )
    .unwrap();
    let out = dir.join("out");
    let run = || {
        fslens_command(&sweep_args("--json", &dir, "fail.toml", &out, &[]))
            .output()
            .unwrap()
    };
    let first = run();
    assert!(!first.status.success());
    let stderr = String::from_utf8_lossy(&first.stderr);
    assert!(stderr.contains("1 completed now, 1 failed"), "{stderr}");
    let failed: Vec<PathBuf> = std::fs::read_dir(out.join("failed"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .collect();
    assert_eq!(failed.len(), 1);
    let error = std::fs::read_to_string(failed[0].join("error.txt")).unwrap();
    assert!(error.contains("truth.held_out"), "{error}");
    assert_eq!(complete_jobs(&out).len(), 1);
    // The failed job is retried (and fails again); the complete one is skipped.
    let second = run();
    assert!(!second.status.success());
    let stdout = String::from_utf8_lossy(&second.stdout);
    let started: Vec<&str> = stdout
        .lines()
        .filter(|l| l.contains("\"job_start\""))
        .collect();
    assert_eq!(started.len(), 1);
    assert!(started[0].contains(failed[0].file_name().unwrap().to_str().unwrap()));
    // merge reports it.
    fslens(&["--quiet", "merge", s(&out)]);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(html.contains("1 complete job(s), 1 failed"), "{html}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn print_sbatch_emits_an_array_script() {
    let dir = scratch("sbatch");
    let out = fslens(&[
        "sweep",
        s(&dir.join("sweep.toml")),
        "--out",
        s(&dir.join("o")),
        "--print-sbatch",
        "3",
        "--sbatch-arg=--time=00:10:00",
    ]);
    let script = String::from_utf8(out.stdout).unwrap();
    assert!(script.starts_with("#!/bin/bash\n"), "{script}");
    assert!(script.contains("#SBATCH --array=0-2\n"));
    assert!(script.contains("#SBATCH --time=00:10:00\n"));
    assert!(script.contains("--shard \"${SLURM_ARRAY_TASK_ID}/3\""));
    assert!(script.contains(&format!("merge {}", s(&dir.join("o")))));
    // The script is valid bash, and run by hand as array task 1 it does shard 1/3.
    let check = Command::new("bash")
        .args(["-n", "-c", &script])
        .status()
        .unwrap();
    assert!(check.success());
    common::succeeds(
        Command::new("bash")
            .args(["-c", &script])
            .env("SLURM_ARRAY_TASK_ID", "1"),
    );
    let jobs = complete_jobs(&dir.join("o"));
    assert_eq!(jobs.len(), 4);
    assert!(dir.join("o/results.csv").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_cache_holds_each_set_once_and_rebuilds_corrupt_entries() {
    let reference = reference();
    // 12 jobs, one data set, three atom selections (the seed picks the held-out image; σ and
    // the samplers do not change the measured atoms): 1 + 3 entries.
    let entries = |dir: &Path, kind: &str| -> Vec<PathBuf> {
        let mut v: Vec<PathBuf> = std::fs::read_dir(dir)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                p.file_name()
                    .unwrap()
                    .to_string_lossy()
                    .starts_with(&format!("{kind}-"))
            })
            .collect();
        v.sort();
        v
    };
    let cache = reference.join("cache");
    assert_eq!(entries(&cache, "dataset").len(), 1);
    assert_eq!(entries(&cache, "measured").len(), 3);

    // Damage one byte of every entry in a copy of the cache, then run two of the reference's
    // jobs against it: each damaged entry that is read is reported once, rebuilt, and the
    // outputs equal the reference's.
    let dir = scratch("cache");
    let copy = dir.join("cache");
    std::fs::create_dir_all(&copy).unwrap();
    for p in entries(&cache, "dataset")
        .into_iter()
        .chain(entries(&cache, "measured"))
    {
        let mut bytes = std::fs::read(&p).unwrap();
        let i = bytes.len() / 2;
        bytes[i] ^= 0x01;
        std::fs::write(copy.join(p.file_name().unwrap()), bytes).unwrap();
    }
    std::fs::write(
        dir.join("two.toml"),
        "base = \"base.toml\"\n[axes]\n\"measurement.sigma\" = [0.05, 0.2]\n\
         \"sampling.samplers\" = [[\"exact\", \"fsr\"]]\nseed = [0]\n",
    )
    .unwrap();
    let out = dir.join("out");
    let run = fslens(&sweep_args(
        "--json",
        &dir,
        "two.toml",
        &out,
        &["--cache", s(&copy)],
    ));
    // (The jobs' one-atom posteriors are warned about too; only the cache's warnings count.)
    let warnings: Vec<String> = String::from_utf8_lossy(&run.stdout)
        .lines()
        .filter(|l| l.contains("\"warning\"") && l.contains("cache entry"))
        .map(str::to_string)
        .collect();
    assert_eq!(warnings.len(), 2, "{warnings:?}");
    assert!(
        warnings
            .iter()
            .all(|w| w.contains("checksum mismatch") && w.contains("rebuilt"))
    );
    assert!(warnings.iter().any(|w| w.contains("dataset-")));
    assert!(warnings.iter().any(|w| w.contains("measured-")));
    let jobs = complete_jobs(&out);
    assert_eq!(jobs.len(), 2);
    for id in &jobs {
        assert_same_job_of(
            &out.join("jobs").join(id),
            &reference.join("jobs").join(id),
            false,
        );
    }
    assert!(!out.join("cache").exists(), "--cache replaces OUT/cache");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `n` images of 8×8 as a float32 .npy (values in [-1, 1], a fixed pattern shifted by `shift`).
fn write_images(path: &Path, n: usize, shift: f32) {
    let d = 64;
    let header = format!("{{'descr': '<f4', 'fortran_order': False, 'shape': ({n}, {d}), }}");
    let mut header = header.into_bytes();
    while (10 + header.len() + 1) % 64 != 0 {
        header.push(b' ');
    }
    header.push(b'\n');
    let mut bytes = b"\x93NUMPY\x01\x00".to_vec();
    bytes.extend((header.len() as u16).to_le_bytes());
    bytes.extend(header);
    for i in 0..n * d {
        let v = (((i * 37 + i / d * 11) % 97) as f32 / 48.0 - 1.0 + shift).clamp(-1.0, 1.0);
        bytes.extend(v.to_le_bytes());
    }
    std::fs::write(path, bytes).unwrap();
}

/// A tiny sweep over file data: 60 images of data.npy, `seeds` jobs.
fn npy_scratch(name: &str, seeds: &str, particles: usize) -> PathBuf {
    let dir = scratch_dir(&format!("sweep-{name}"));
    write_images(&dir.join("data.npy"), 60, 0.0);
    std::fs::write(dir.join("base.toml"), npy_base(particles)).unwrap();
    std::fs::write(
        dir.join("sweep.toml"),
        format!("base = \"base.toml\"\n[axes]\nseed = {seeds}\n"),
    )
    .unwrap();
    dir
}

fn npy_base(particles: usize) -> String {
    format!(
        "seed = 0\nbackend = \"cpu\"\n[data]\nkind = \"npy\"\npath = \"data.npy\"\n\
         [measurement]\noperator = \"downsample:2\"\nsigma = 0.1\n\
         [sampling]\nsamplers = [\"exact\", \"fsr\"]\nparticles = {particles}\nsteps = 12\n\
         checkpoints = [0.5]\n[diagnostics]\nclusters = 3\n"
    )
}

#[test]
fn a_resume_after_the_data_or_base_config_changed_is_refused() {
    let dir = npy_scratch("identity", "[0]", 8);
    let out = dir.join("out");
    let args = |extra: &[&str]| sweep_args("--json", &dir, "sweep.toml", &out, extra);
    fslens(&args(&[]));
    let first = complete_jobs(&out);
    assert_eq!(first.len(), 1);
    let identity = read_json(&out.join("sweep.json"));
    assert!(
        identity["data"]["data.path=data.npy"]
            .as_str()
            .unwrap()
            .starts_with(&format!(
                "{} ",
                std::fs::metadata(dir.join("data.npy")).unwrap().len()
            )),
        "{identity}"
    );

    // The data file changed (same size, other values): refused, naming the file and the fixes.
    write_images(&dir.join("data.npy"), 60, 0.25);
    let e = common::fslens_fails(
        &args(&[]),
        &["data.path=data.npy", "contents changed", "--force", "--out"],
    );
    assert!(!String::from_utf8_lossy(&e.stdout).contains("job_start"));
    write_images(&dir.join("data.npy"), 60, 0.0);

    // The base config changed: refused, naming the key and both values.
    std::fs::write(dir.join("base.toml"), npy_base(16)).unwrap();
    common::fslens_fails(&args(&[]), &["`sampling.particles`: 8 -> 16", "--force"]);
    std::fs::write(dir.join("base.toml"), npy_base(8)).unwrap();

    // Restored: the resume is accepted and has nothing to do.
    let again = json_lines(&fslens(&args(&[])).stdout);
    assert_eq!(again.last().unwrap()["skipped"], 1);
    assert!(again.iter().all(|r| r["event"] != "job_start"));

    // Changed data with --force starts over; the job of other data has another id.
    write_images(&dir.join("data.npy"), 60, 0.25);
    fslens(&args(&["--force"]));
    let second = complete_jobs(&out);
    assert_eq!(second.len(), 1);
    assert!(second.is_disjoint(&first), "{first:?} {second:?}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn damaged_jobs_are_named_by_merge_and_rerun_by_the_next_sweep() {
    let dir = npy_scratch("damaged", "[0, 1, 2]", 8);
    let out = dir.join("out");
    fslens(&sweep_args("--quiet", &dir, "sweep.toml", &out, &[]));
    let ids: Vec<String> = complete_jobs(&out).into_iter().collect();
    assert_eq!(ids.len(), 3);
    let job = |id: &str| out.join("jobs").join(id);
    let metrics_before: Vec<Vec<u8>> = ids
        .iter()
        .map(|id| std::fs::read(job(id).join("metrics.json")).unwrap())
        .collect();
    // Damage: a truncated summary.json, and an npy cut short (its header intact).
    let summary = std::fs::read(job(&ids[0]).join("summary.json")).unwrap();
    std::fs::write(
        job(&ids[0]).join("summary.json"),
        &summary[..summary.len() / 2],
    )
    .unwrap();
    let npy = std::fs::read(job(&ids[1]).join("samples_fsr.npy")).unwrap();
    std::fs::write(job(&ids[1]).join("samples_fsr.npy"), &npy[..npy.len() - 8]).unwrap();

    // merge writes the intact job and names the damaged ones, with the reason.
    let merged = fslens(&["merge", s(&out)]);
    let stderr = String::from_utf8_lossy(&merged.stderr);
    assert!(
        stderr.contains(&format!("damaged job {}", ids[0])) && stderr.contains("summary.json"),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("damaged job {}", ids[1]))
            && stderr.contains("samples_fsr.npy")
            && stderr.contains("truncated"),
        "{stderr}"
    );
    assert!(
        stderr.contains("merged 1 job(s) (0 failed, 2 damaged"),
        "{stderr}"
    );
    let rows = results(&out);
    assert_eq!(rows.len(), 1);
    assert_eq!(rows[0]["id"], ids[2].as_str());
    let summary_json = read_json(&out.join("merge.json"));
    let damaged: BTreeSet<&str> = summary_json["damaged"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_str().unwrap())
        .collect();
    assert_eq!(damaged, BTreeSet::from([ids[0].as_str(), ids[1].as_str()]));
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    assert!(
        html.contains("1 complete job(s), 0 failed, 2 damaged"),
        "{html}"
    );
    assert!(html.contains("Damaged jobs"));

    // The next sweep reruns exactly the damaged jobs, saying so on stderr.
    let rerun = fslens(&sweep_args("--json", &dir, "sweep.toml", &out, &[]));
    let stderr = String::from_utf8_lossy(&rerun.stderr);
    for id in &ids[..2] {
        assert!(
            stderr.contains(&format!("job {id} (seed=")) && stderr.contains("damaged"),
            "{stderr}"
        );
    }
    let started: BTreeSet<String> = json_lines(&rerun.stdout)
        .iter()
        .filter(|r| r["event"] == "job_start")
        .map(|r| r["id"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(started, BTreeSet::from([ids[0].clone(), ids[1].clone()]));
    assert_eq!(complete_jobs(&out).len(), 3);
    // Rerun from scratch, the jobs give what they gave before (the runs are seeded).
    for (id, before) in ids.iter().zip(&metrics_before) {
        assert!(std::fs::read(job(id).join("metrics.json")).unwrap() == *before);
    }
    // Merged again: every job, each linked to its own report.
    fslens(&["--quiet", "merge", s(&out)]);
    assert_eq!(results(&out).len(), 3);
    let html = std::fs::read_to_string(out.join("report.html")).unwrap();
    for id in &ids {
        let href = format!("href=\"jobs/{id}/report.html\"");
        assert!(html.contains(&href), "{href}");
        assert!(job(id).join("report.html").is_file());
    }
    assert!(html.contains("mode_tv over t"));
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_sbatch_script_merges_after_a_failed_job() {
    let dir = scratch("sbatch-fail");
    // One job fails when its data are loaded (5000 held out of 300), one succeeds.
    std::fs::write(
        dir.join("fail.toml"),
        "base = \"base.toml\"\n[axes]\n\"truth.held_out\" = [5000, 1]\n",
    )
    .unwrap();
    let out = dir.join("o");
    let printed = fslens(&[
        "sweep",
        s(&dir.join("fail.toml")),
        "--out",
        s(&out),
        "--print-sbatch",
        "1",
        "--gpus",
        "1",
    ]);
    let script = String::from_utf8(printed.stdout).unwrap();
    assert!(script.contains("#SBATCH --gres=gpu:1\n"), "{script}");
    assert!(script.contains("--backend gpu"), "{script}");
    assert!(script.contains("--dependency=afterany:"), "{script}");
    assert!(script.contains("export RAYON_NUM_THREADS=\"$SLURM_CPUS_PER_TASK\""));
    // --gpus contradicts --backend cpu.
    common::fslens_fails(
        &[
            "sweep",
            s(&dir.join("fail.toml")),
            "--out",
            s(&out),
            "--print-sbatch",
            "1",
            "--gpus",
            "1",
            "--backend",
            "cpu",
        ],
        &["--gpus", "--backend cpu"],
    );
    // Run by hand as the only array task (CPU jobs: the base config says so and no GPU is
    // needed here): the sweep fails, the merge still runs, and the task reports the failure.
    let cpu_script = script.replace(" --backend gpu", "");
    let task = Command::new("bash")
        .args(["-c", &cpu_script])
        .env("SLURM_ARRAY_TASK_ID", "0")
        .env("SLURM_CPUS_PER_TASK", "1")
        .output()
        .unwrap();
    assert!(!task.status.success(), "the task reports its failed job");
    let merged = read_json(&out.join("merge.json"));
    assert_eq!(merged["jobs"], 1, "{merged}");
    assert_eq!(merged["failed"].as_array().unwrap().len(), 1, "{merged}");
    assert!(out.join("results.csv").is_file() && out.join("report.html").is_file());
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_cache_that_cannot_be_used_falls_back_to_no_cache() {
    let dir = npy_scratch("nocache", "[0]", 8);
    // The cache path is a file: the cache cannot be created; the sweep runs without it.
    std::fs::write(dir.join("cache-file"), b"not a folder").unwrap();
    let out = dir.join("out");
    let run = fslens(&sweep_args(
        "--quiet",
        &dir,
        "sweep.toml",
        &out,
        &["--cache", s(&dir.join("cache-file"))],
    ));
    let stderr = String::from_utf8_lossy(&run.stderr);
    assert!(
        stderr.contains("cannot use the cache") && stderr.contains("without it"),
        "{stderr}"
    );
    assert_eq!(complete_jobs(&out).len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

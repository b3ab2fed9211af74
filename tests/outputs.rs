//! Output folders never destroy what fslens did not write, and a kill at any moment leaves the
//! old result or the new one (fslens::output): refusals and --force through every command
//! that writes a folder, the replacement protocol stopped at every step and recovered, real
//! SIGKILLs of running commands, leftovers of dead and live processes, SIGTERM, `score --out`
//! over its own input; and sizes that cannot fit refused within a second (fslens::resources).

mod common;

use std::os::unix::process::ExitStatusExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{fslens, fslens_command, fslens_fails, read_json, s, scratch_dir};
use fslens::output::replace::{Step, place, recover_with};
use fslens::output::{MARKER, Marker};

/// A run of about a quarter of a second.
fn small_config(dir: &Path) -> PathBuf {
    let cfg = dir.join("small.toml");
    let text = common::small_run_config(
        0,
        "[sampling]\nparticles = 8\nsteps = 20\ncheckpoints = [0.5]\n",
    );
    std::fs::write(&cfg, text).unwrap();
    cfg
}

/// Every file under `dir` (relative path → bytes), for byte comparisons.
fn contents(dir: &Path) -> Vec<(PathBuf, Vec<u8>)> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap().flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.push((
                    p.strip_prefix(dir).unwrap().into(),
                    std::fs::read(&p).unwrap(),
                ));
            }
        }
    }
    out.sort();
    out
}

/// Names in `dir`, sorted.
fn names(dir: &Path) -> Vec<String> {
    let mut n: Vec<String> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    n.sort();
    n
}

/// A complete run folder: its summary.json parses and its marker is there.
fn assert_complete(out: &Path) {
    let summary = read_json(&out.join("summary.json"));
    assert!(summary["samplers"].is_array(), "{}", out.display());
    assert!(
        Marker::read(out).is_some(),
        "{} has no marker",
        out.display()
    );
}

#[test]
fn foreign_folders_are_refused_by_every_command_and_replaced_with_force() {
    let dir = scratch_dir("outputs-refuse");
    let cfg = small_config(&dir);
    // `fslens run my/config.toml --out my`: the folder holds the run's own config.
    let my = dir.join("my");
    std::fs::create_dir(&my).unwrap();
    std::fs::copy(&cfg, my.join("config.toml")).unwrap();
    std::fs::write(my.join("notes.txt"), "my notes").unwrap();
    let before = contents(&my);
    let my_cfg = my.join("config.toml");
    let sweep = dir.join("sweep.toml");
    std::fs::write(&sweep, "base = \"small.toml\"\n[axes]\nseed = [0]\n").unwrap();
    let samples = dir.join("samples.npy");
    fslens::arrays::write_npy_f32(&samples, &[2, 256], &[0.0; 512]).unwrap();
    let commands: [Vec<&str>; 5] = [
        vec!["run", s(&my_cfg)],
        vec!["compare", s(&cfg)],
        vec!["demo"],
        vec!["diagnose", "--samples", s(&samples), "--config", s(&cfg)],
        vec!["sweep", s(&sweep)],
    ];
    for args in &commands {
        let t0 = Instant::now();
        let mut all = args.clone();
        all.extend(["--out", s(&my), "--quiet"]);
        let out = fslens_fails(
            &all,
            &[
                &my.display().to_string(),
                "--force",
                "another --out",
                "config.toml",
            ],
        );
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            t0.elapsed() < Duration::from_secs(5),
            "{args:?} refused late"
        );
        assert_eq!(contents(&my), before, "{args:?} touched the folder");
        assert_eq!(names(&dir).iter().filter(|n| n.starts_with('.')).count(), 0);
    }
    // merge --out into a foreign folder: refused the same way (the sweep it merges is real).
    let sw = dir.join("sw");
    fslens(&["sweep", s(&sweep), "--out", s(&sw), "--quiet"]);
    assert_eq!(Marker::read(&sw).unwrap().command, "sweep");
    fslens_fails(
        &["merge", s(&sw), "--out", s(&my), "--quiet"],
        &[&my.display().to_string(), "--force"],
    );
    assert_eq!(contents(&my), before);
    // With --force the folder is replaced by the run's output.
    fslens(&["run", s(&my_cfg), "--out", s(&my), "--force", "--quiet"]);
    assert_complete(&my);
    assert!(!my.join("notes.txt").exists());
    // An fslens folder is replaced without --force (a new marker: another process).
    let first = Marker::read(&my).unwrap();
    fslens(&["run", s(&cfg), "--out", s(&my), "--quiet"]);
    assert_complete(&my);
    assert_ne!(Marker::read(&my).unwrap().pid, first.pid);
    // ... unless it holds an input of the command: a config edited inside a run folder.
    std::fs::write(my.join("config.toml"), std::fs::read(&cfg).unwrap()).unwrap();
    let kept = contents(&my);
    fslens_fails(
        &[
            "run",
            s(&my.join("config.toml")),
            "--out",
            s(&my),
            "--quiet",
        ],
        &["config.toml", "an input of this command", "--force"],
    );
    assert_eq!(contents(&my), kept);
    // A sweep folder is resumed, not replaced, and merge writes beside its jobs.
    fslens(&["sweep", s(&sweep), "--out", s(&sw), "--quiet"]);
    fslens(&["merge", s(&sw), "--quiet"]);
    assert!(sw.join("jobs").is_dir() && sw.join("results.csv").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Where a replacement is stopped, as a kill would stop it.
#[derive(Clone, Copy, Debug, PartialEq)]
enum Crash {
    /// Before the staging folder exists.
    BeforeStaging,
    /// The staging folder exists, its marker not yet.
    NoMarker,
    /// The marker half written to its temporary file.
    MarkerBeingWritten,
    /// Some of the new files written.
    HalfWritten,
    /// Before a step of the protocol.
    Before(Step),
    /// The old copy partly deleted.
    PartlyDeleted,
    /// Not at all.
    Never,
}

const CRASHES: [Crash; 9] = [
    Crash::BeforeStaging,
    Crash::NoMarker,
    Crash::MarkerBeingWritten,
    Crash::HalfWritten,
    Crash::Before(Step::SetOldAside),
    Crash::Before(Step::PlaceNew),
    Crash::Before(Step::DeleteOld),
    Crash::PartlyDeleted,
    Crash::Never,
];

/// A complete result folder: marker, `a.npy` and `summary.json` holding `tag`.
fn write_result(dir: &Path, tag: &str) {
    std::fs::create_dir_all(dir).unwrap();
    Marker::new("run").write(dir).unwrap();
    std::fs::write(dir.join("a.npy"), format!("{tag}-a")).unwrap();
    std::fs::write(dir.join("summary.json"), tag).unwrap();
}

/// Writes a new result for `target` by the protocol, stopping at `crash`.
fn replace_until(target: &Path, crash: Crash) {
    let staging = target.with_file_name(format!(".out.partial-{}", std::process::id()));
    if crash == Crash::BeforeStaging {
        return;
    }
    std::fs::create_dir(&staging).unwrap();
    if crash == Crash::NoMarker {
        return;
    }
    if crash == Crash::MarkerBeingWritten {
        let tmp = format!("..fslens-output.partial-{}", std::process::id());
        std::fs::write(staging.join(tmp), "{\"fslens_out").unwrap();
        return;
    }
    Marker::new("run").write(&staging).unwrap();
    std::fs::write(staging.join("a.npy"), "new-a").unwrap();
    if crash == Crash::HalfWritten {
        return;
    }
    std::fs::write(staging.join("summary.json"), "new").unwrap();
    let stop_at = match crash {
        Crash::Before(step) => Some(step),
        Crash::PartlyDeleted => Some(Step::DeleteOld),
        _ => None,
    };
    let had_old = target.exists();
    let result = place(&staging, target, &mut |step| Some(step) == stop_at);
    let stopped = stop_at.is_some() && (had_old || stop_at == Some(Step::PlaceNew));
    assert_eq!(result.is_err(), stopped, "{crash:?}: {result:?}");
    if crash == Crash::PartlyDeleted && had_old {
        let aside = target.with_file_name(format!(".out.old-{}", std::process::id()));
        std::fs::remove_file(aside.join("summary.json")).unwrap();
    }
}

#[test]
fn a_replacement_stopped_at_any_step_recovers_to_the_old_or_the_new_result() {
    for with_old in [true, false] {
        for crash in CRASHES {
            let dir = scratch_dir("outputs-crash");
            let target = dir.join("out");
            if with_old {
                write_result(&target, "old");
            }
            replace_until(&target, crash);
            // The process that stopped is gone: recovery treats every leftover as dead.
            let recovered = recover_with(&dir, &|_, _| false);
            // The new result is in place once the staging folder was renamed to "out"
            // (without an old result there is nothing to set aside: that step never comes).
            let new_expected = match crash {
                Crash::Before(Step::DeleteOld) | Crash::PartlyDeleted | Crash::Never => true,
                Crash::Before(Step::SetOldAside) => !with_old,
                _ => false,
            };
            let tag = if new_expected { "new" } else { "old" };
            if with_old || new_expected {
                assert_eq!(
                    names(&dir),
                    ["out"],
                    "{crash:?}, old {with_old}: {recovered:?}"
                );
                assert_eq!(
                    std::fs::read_to_string(target.join("summary.json")).unwrap(),
                    tag
                );
                assert_eq!(
                    std::fs::read_to_string(target.join("a.npy")).unwrap(),
                    format!("{tag}-a"),
                    "{crash:?}"
                );
                assert!(Marker::read(&target).is_some());
            } else {
                // Nothing was there before and the new result never arrived: still nothing.
                assert!(names(&dir).is_empty(), "{crash:?}: {:?}", names(&dir));
            }
            assert_eq!(
                recovered.restored.len(),
                usize::from(with_old && crash == Crash::Before(Step::PlaceNew)),
                "{crash:?}"
            );
            std::fs::remove_dir_all(&dir).unwrap();
        }
    }
}

/// Kills `cmd` (SIGKILL) after `delay`; returns whether it had already finished.
fn kill_after(mut cmd: Command, delay: Duration) -> bool {
    let mut child = cmd
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    std::thread::sleep(delay);
    let finished = child.try_wait().unwrap().is_some();
    let _ = child.kill();
    child.wait().unwrap();
    finished
}

#[test]
fn sigkill_at_any_moment_leaves_a_complete_folder() {
    let dir = scratch_dir("outputs-kill");
    let cfg = small_config(&dir);
    let out = dir.join("x");
    fslens(&["run", s(&cfg), "--out", s(&out), "--quiet"]);
    // Kills spread over a whole run of about 0.25 s: before, during and after the renames.
    let mut finished = 0;
    for step in 0..14 {
        let cmd = fslens_command(&["run", s(&cfg), "--out", s(&out), "--quiet"]);
        finished += usize::from(kill_after(cmd, Duration::from_millis(25 * step)));
        // What the kill left: the old or the new folder, or (killed between the two renames)
        // the old one aside, which recovery — the next command into `dir` — puts back.
        if !out.exists() {
            let aside = names(&dir).into_iter().find(|n| n.starts_with(".x.old-"));
            assert!(aside.is_some(), "killed at step {step}: {:?}", names(&dir));
        }
        fslens::output::recover(&dir);
        assert_complete(&out);
        assert_eq!(names(&dir), ["small.toml", "x"], "killed at step {step}");
    }
    assert!(finished < 14, "no kill landed while the run was running");
    // The demo over an existing fslens folder, killed while it works.
    for delay in [300, 1500] {
        let cmd = fslens_command(&["demo", "--out", s(&out), "--backend", "cpu", "--quiet"]);
        assert!(!kill_after(cmd, Duration::from_millis(delay)));
        assert_complete(&out);
        fslens::output::recover(&dir);
        assert_eq!(names(&dir), ["small.toml", "x"]);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A process id that is not running (a reaped child's).
fn dead_pid() -> u32 {
    let mut child = Command::new("true").spawn().unwrap();
    let pid = child.id();
    child.wait().unwrap();
    pid
}

#[test]
fn leftovers_of_dead_processes_go_and_live_ones_stay() {
    let dir = scratch_dir("outputs-leftovers");
    let cfg = small_config(&dir);
    let dead = dead_pid();
    let mut sleeper = Command::new("sleep").arg("30").spawn().unwrap();
    let live = sleeper.id();
    let staged = |name: &str, pid: u32, marker: Option<Marker>| {
        let p = dir.join(format!(".{name}.partial-{pid}"));
        std::fs::create_dir(&p).unwrap();
        if let Some(m) = marker {
            Marker { pid, ..m }.write(&p).unwrap();
            std::fs::write(p.join("samples_fsr.npy"), "partial").unwrap();
        }
        p
    };
    let dead_one = staged("a", dead, Some(Marker::new("run")));
    let dead_empty = staged("b", dead, None);
    let live_one = staged("c", live, Some(Marker::new("run")));
    let elsewhere = Marker {
        host: "another-machine".into(),
        ..Marker::new("run")
    };
    let remote = staged("d", dead, Some(elsewhere));
    // A replacement killed between its renames: the old result aside, nothing under "e".
    let aside = dir.join(format!(".e.old-{dead}"));
    write_result(&aside, "old");
    // A file of the same pattern is not a folder fslens stages: left alone.
    let file = dir.join(format!(".f.partial-{dead}"));
    std::fs::write(&file, "not a folder").unwrap();
    // The user's own backups that happen to look like aside copies: left alone, whether or not
    // the name they copy exists.
    std::fs::create_dir(dir.join("notes")).unwrap();
    let backups = [
        dir.join(format!(".notes.old-{dead}")),
        dir.join(format!(".gone.old-{dead}")),
    ];
    for b in &backups {
        std::fs::create_dir(b).unwrap();
        std::fs::write(b.join("mine.txt"), "mine").unwrap();
    }
    let backup_file = dir.join(format!(".bashrc.old-{dead}"));
    std::fs::write(&backup_file, "mine").unwrap();
    std::fs::write(dir.join(".bashrc"), "current").unwrap();

    fslens(&["run", s(&cfg), "--out", s(&dir.join("out")), "--quiet"]);
    assert!(
        !dead_one.exists() && !dead_empty.exists(),
        "{:?}",
        names(&dir)
    );
    assert!(
        live_one.join("samples_fsr.npy").exists(),
        "a live staging was removed"
    );
    assert!(
        remote.join("samples_fsr.npy").exists(),
        "another machine's staging was removed"
    );
    assert!(file.exists());
    for b in &backups {
        assert_eq!(std::fs::read_to_string(b.join("mine.txt")).unwrap(), "mine");
    }
    assert!(backup_file.exists() && !dir.join("gone").exists());
    assert_eq!(
        std::fs::read_to_string(dir.join("e/summary.json")).unwrap(),
        "old"
    );
    assert!(!aside.exists());
    sleeper.kill().unwrap();
    sleeper.wait().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_removes_the_staging_folder() {
    let dir = scratch_dir("outputs-sigterm");
    let out = dir.join("demo");
    let mut child = fslens_command(&["demo", "--out", s(&out), "--backend", "cpu", "--quiet"])
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let staging = dir.join(format!(".demo.partial-{}", child.id()));
    let t0 = Instant::now();
    while !staging.join(MARKER).exists() {
        assert!(
            t0.elapsed() < Duration::from_secs(30),
            "no staging folder appeared"
        );
        assert!(
            child.try_wait().unwrap().is_none(),
            "the demo ended before the signal"
        );
        std::thread::sleep(Duration::from_millis(5));
    }
    std::thread::sleep(Duration::from_millis(200)); // let it write into the staging folder
    let killed = Command::new("kill")
        .args(["-TERM", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(killed.success());
    let status = child.wait().unwrap();
    // It ends by the signal itself, as an unhandled SIGTERM would (a shell shows 143).
    assert_eq!(status.signal(), Some(15), "{status:?}");
    assert!(names(&dir).is_empty(), "left behind: {:?}", names(&dir));
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn score_refuses_to_write_over_its_input() {
    let dir = scratch_dir("outputs-score");
    let atoms = dir.join("atoms.npy");
    let x = dir.join("x.npy");
    let values: Vec<f32> = (0..40).map(|i| (i as f32 * 0.37).sin()).collect();
    fslens::arrays::write_npy_f32(&atoms, &[10, 4], &values).unwrap();
    fslens::arrays::write_npy_f32(&x, &[2, 4], &values[..8]).unwrap();
    let kept = (std::fs::read(&atoms).unwrap(), std::fs::read(&x).unwrap());
    let hard = dir.join("hard.npy");
    std::fs::hard_link(&x, &hard).unwrap();
    for (out, flag) in [(&x, "--x"), (&atoms, "--atoms"), (&hard, "--x")] {
        let args = [
            "score",
            "--atoms",
            s(&atoms),
            "--x",
            s(&x),
            "--t",
            "0.3",
            "--method",
            "prior",
            "--out",
            s(out),
            "--quiet",
        ];
        let res = fslens_fails(
            &args,
            &["--out", &format!("the {flag} input"), "another --out"],
        );
        assert_eq!(res.status.code(), Some(1));
    }
    assert_eq!(
        (std::fs::read(&atoms).unwrap(), std::fs::read(&x).unwrap()),
        kept
    );
    // Elsewhere it writes, through a temporary file that does not stay.
    let out = dir.join("score.npy");
    fslens(&[
        "score",
        "--atoms",
        s(&atoms),
        "--x",
        s(&x),
        "--t",
        "0.3",
        "--method",
        "prior",
        "--out",
        s(&out),
        "--quiet",
    ]);
    assert_eq!(fslens::arrays::read_npy(&out).unwrap().shape, vec![2, 4]);
    assert_eq!(names(&dir), ["atoms.npy", "hard.npy", "score.npy", "x.npy"]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sizes_that_cannot_fit_are_refused_within_a_second() {
    if fslens::resources::memory().is_none() {
        eprintln!("skipping: no /proc/meminfo to compare with");
        return;
    }
    let dir = scratch_dir("outputs-sizes");
    let base = std::fs::read_to_string(small_config(&dir)).unwrap();
    // (what to change, the key the error names, what else it must say)
    let cases: [(&str, &str, &str, &[&str]); 5] = [
        (
            "particles = 8",
            "particles = 1000000000",
            "sampling.particles: 1000000000 needs",
            &[
                "TB",
                "particle clouds",
                "K × D × 4 bytes, D = 256",
                "of memory",
                "lower sampling.particles",
            ],
        ),
        (
            "steps = 20",
            "steps = 1000000000",
            "sampling.steps: 1000000000",
            &["1000000 steps", "lower sampling.steps"],
        ),
        (
            "size = 16",
            "size = 16\nresize = [100000, 100000]",
            "data.resize: [100000, 100000] needs",
            &["TB", "resizing", "of memory"],
        ),
        (
            "count = 300",
            "count = 10000000000",
            "data.count: 10000000000 needs",
            &["TB", "reading the data set", "of memory"],
        ),
        (
            "count = 300",
            "count = 300000000",
            "data.count: 300000000 needs",
            &["GB", "of memory"],
        ),
    ];
    for (from, to, key, more) in cases {
        assert!(base.contains(from));
        let cfg = dir.join("big.toml");
        std::fs::write(&cfg, base.replace(from, to)).unwrap();
        let out = dir.join("out");
        let t0 = Instant::now();
        let mut needles = vec![key];
        needles.extend_from_slice(more);
        let res = fslens_fails(&["run", s(&cfg), "--out", s(&out), "--quiet"], &needles);
        let seconds = t0.elapsed().as_secs_f64();
        assert_eq!(res.status.code(), Some(1), "{to}");
        assert!(seconds < 1.0, "{to}: refused after {seconds} s");
        assert!(!out.exists());
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! A 2-task Slurm array (and its final afterany merge job) through a real single-node cluster (scripts/slurm-localhost.sh starts
//! one; CI sets FSLENS_SLURM=1 after starting it). Without FSLENS_SLURM=1 the test prints why
//! it does nothing; the sbatch generator itself is tested in tests/sweep.rs either way.

mod common;

use std::process::Command;

use common::{fslens, s, scratch_dir};

#[test]
fn sbatch_array_runs_the_sweep_and_merges() {
    if std::env::var("FSLENS_SLURM").as_deref() != Ok("1") {
        eprintln!(
            "skipped: set FSLENS_SLURM=1 with a running Slurm cluster (scripts/slurm-localhost.sh starts one on localhost)"
        );
        return;
    }
    let dir = scratch_dir("slurm");
    let base = common::small_run_config(
        0,
        r#"
[sampling]
samplers = ["exact", "fsr"]
particles = 16
steps = 30
checkpoints = [0.5]
[diagnostics]
clusters = 4
"#,
    );
    std::fs::write(dir.join("base.toml"), base).unwrap();
    std::fs::write(
        dir.join("sweep.toml"),
        "base = \"base.toml\"\n[axes]\nseed = [0, 1, 2]\n\"measurement.sigma\" = [0.05, 0.2]\n",
    )
    .unwrap();
    let out = dir.join("out");
    let script = fslens(&[
        "sweep",
        s(&dir.join("sweep.toml")),
        "--out",
        s(&out),
        "--print-sbatch",
        "2",
        "--sbatch-arg=--time=00:10:00",
    ]);
    std::fs::write(dir.join("sweep.sbatch"), &script.stdout).unwrap();
    // --wait: sbatch returns when every array task has ended, nonzero if one failed.
    let submitted = Command::new("timeout")
        .args(["300", "sbatch", "--wait", s(&dir.join("sweep.sbatch"))])
        .current_dir(&dir)
        .output()
        .expect("sbatch is installed");
    // The array tasks' logs (the final merge job logs to slurm-merge-<id>.out).
    let log_files = |prefix: &str| -> Vec<std::path::PathBuf> {
        std::fs::read_dir(&out)
            .unwrap()
            .flatten()
            .map(|e| e.path())
            .filter(|p| {
                let name = p.file_name().unwrap().to_string_lossy().into_owned();
                name.starts_with(prefix)
                    && !(prefix == "slurm-" && name.starts_with("slurm-merge-"))
            })
            .collect()
    };
    let logs: Vec<String> = log_files("slurm-")
        .iter()
        .map(|p| std::fs::read_to_string(p).unwrap_or_default())
        .collect();
    assert!(
        submitted.status.success(),
        "sbatch: {}{}\ntask logs: {logs:?}",
        String::from_utf8_lossy(&submitted.stdout),
        String::from_utf8_lossy(&submitted.stderr)
    );
    // One log per array task, all six jobs complete, and the last merge saw them all.
    assert_eq!(logs.len(), 2, "{logs:?}");
    let jobs = std::fs::read_dir(out.join("jobs"))
        .unwrap()
        .flatten()
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .count();
    assert_eq!(jobs, 6);
    let rows = std::fs::read_to_string(out.join("results.jsonl")).unwrap();
    assert_eq!(rows.lines().count(), 6, "{rows}");
    assert!(out.join("report.html").is_file());
    // Task 0 submitted the final merge (afterany on the array): it runs once the array ended.
    let t0 = std::time::Instant::now();
    loop {
        let queued = Command::new("squeue")
            .args(["-h", "-n", "fslens-merge", "-o", "%i"])
            .output()
            .expect("squeue is installed");
        let pending = !String::from_utf8_lossy(&queued.stdout).trim().is_empty();
        if !pending && !log_files("slurm-merge-").is_empty() {
            break;
        }
        assert!(
            t0.elapsed() < std::time::Duration::from_secs(120),
            "the final merge job did not run; task logs: {logs:?}"
        );
        std::thread::sleep(std::time::Duration::from_millis(500));
    }
    let merge_log = std::fs::read_to_string(&log_files("slurm-merge-")[0]).unwrap();
    assert!(!merge_log.contains("error"), "{merge_log}");
    let merged = std::fs::read_to_string(out.join("merge.json")).unwrap();
    assert!(merged.contains("\"jobs\": 6"), "{merged}");
    let _ = std::fs::remove_dir_all(&dir);
}

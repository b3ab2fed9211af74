//! What is bit-reproducible and what is not (README "Determinism"): the same config on the same
//! backend and thread count gives byte-identical outputs; across thread counts and between the
//! CPU and the GPU the sums are rounded differently, which the exact sampler never sees and fsr
//! keeps at float32 rounding.

mod common;

use std::path::Path;

use common::gpu::have_gpu;
use common::{fslens, s, scratch_dir};

/// 3000 synthetic 16×16 atoms and 64 particles: 24 CPU chunks of 128 atoms, which one thread
/// splits into 4 tasks and two threads into 8, so the two thread counts merge the partial sums
/// differently.
const CONFIG: &str = r#"
seed = 3
[data]
kind = "synthetic"
count = 3000
size = 16
[measurement]
operator = "downsample:4"
sigma = 0.1
[sampling]
samplers = ["exact", "fsr", "sigma-dps"]
particles = 64
steps = 20
checkpoints = [0.5, 0.1]
"#;

const OUTPUTS: [&str; 7] = [
    "samples_exact.npy",
    "samples_fsr.npy",
    "samples_sigma-dps.npy",
    "checkpoints_fsr.npy",
    "checkpoints_sigma-dps.npy",
    "denoised_fsr.npy",
    "metrics.json",
];

fn run(dir: &Path, name: &str, args: &[&str]) -> std::path::PathBuf {
    let out = dir.join(name);
    let config = dir.join("repro.toml");
    let mut all = vec!["run", s(&config), "--out", s(&out), "--quiet"];
    all.extend_from_slice(args);
    fslens(&all);
    out
}

fn read(dir: &Path, file: &str) -> Vec<u8> {
    std::fs::read(dir.join(file)).unwrap_or_else(|e| panic!("{}: {e}", dir.join(file).display()))
}

/// The float32 payload of a float32 .npy file (header skipped).
fn floats(dir: &Path, file: &str) -> Vec<f32> {
    let bytes = read(dir, file);
    let header = u16::from_le_bytes([bytes[8], bytes[9]]) as usize + 10;
    bytes[header..]
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn assert_identical(a: &Path, b: &Path, what: &str) {
    for file in OUTPUTS {
        assert!(
            read(a, file) == read(b, file),
            "{what}: {file} differs between {} and {}",
            a.display(),
            b.display()
        );
    }
}

fn max_abs_difference(a: &Path, b: &Path, file: &str) -> f64 {
    let (x, y) = (floats(a, file), floats(b, file));
    assert_eq!(x.len(), y.len(), "{file}");
    x.iter()
        .zip(&y)
        .map(|(p, q)| (*p as f64 - *q as f64).abs())
        .fold(0.0, f64::max)
}

#[test]
fn cpu_runs_repeat_bit_for_bit_at_one_thread_count() {
    let dir = scratch_dir("repro-cpu");
    std::fs::write(dir.join("repro.toml"), CONFIG).unwrap();
    let first = run(&dir, "a", &["--backend", "cpu", "--threads", "2"]);
    let second = run(&dir, "b", &["--backend", "cpu", "--threads", "2"]);
    assert_identical(&first, &second, "two CPU runs at 2 threads");

    // One thread merges the task sums in other groups: the exact sampler draws atoms by
    // weights that the pass does not round, fsr moves by float32 rounding only.
    let one = run(&dir, "one", &["--backend", "cpu", "--threads", "1"]);
    let backend = common::read_json(&one.join("summary.json"))["backend"].to_string();
    assert!(backend.contains("1 thread"), "--threads 1 ran on {backend}");
    assert!(read(&one, "samples_exact.npy") == read(&first, "samples_exact.npy"));
    let fsr = max_abs_difference(&one, &first, "samples_fsr.npy");
    assert!(fsr < 1e-4, "fsr moved by {fsr} between 1 and 2 threads");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn gpu_runs_repeat_bit_for_bit_and_stay_near_the_cpu() {
    if !have_gpu("gpu_runs_repeat_bit_for_bit_and_stay_near_the_cpu") {
        return;
    }
    let dir = scratch_dir("repro-gpu");
    std::fs::write(dir.join("repro.toml"), CONFIG).unwrap();
    let first = run(&dir, "a", &["--backend", "gpu", "--storage", "f32"]);
    let second = run(&dir, "b", &["--backend", "gpu", "--storage", "f32"]);
    assert_identical(&first, &second, "two GPU runs");

    let cpu = run(&dir, "cpu", &["--backend", "cpu", "--threads", "2"]);
    let fsr = max_abs_difference(&cpu, &first, "samples_fsr.npy");
    assert!(fsr < 1e-4, "fsr moved by {fsr} between the CPU and the GPU");
    let _ = std::fs::remove_dir_all(&dir);
}

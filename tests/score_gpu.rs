//! `fslens score --backend gpu` equals `--backend cpu` on all 60000
//! Fashion-MNIST training images as atoms, read from a float32 .npy (so the GPU stores them as
//! f32: 188 MB, more than one storage binding on an adapter with a 128 MiB binding limit),
//! at t ∈ {1e-3, 0.5}, for `fsr` (a box-inpainting measurement, σ = 0.05) and `prior`:
//! ‖s_gpu − s_cpu‖ / ‖s_cpu‖ ≤ 1e-4 over all rows. Three particle rows (noisy test and training
//! images) keep it within seconds on the Mesa software adapter.
//!
//! Skips (with a reason) without a GPU adapter or without Fashion-MNIST, unless
//! FSLENS_REQUIRE_GPU=1 or FSLENS_REQUIRE_DATA=1 makes that a failure.

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::gpu::{gpu_and_fashion, have_gpu};
use fslens::engine::gpu::list_adapters;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

#[test]
fn score_gpu_equals_cpu_on_all_fashion_mnist_f32() {
    let Some((atoms, tests, d)) = gpu_and_fashion("score gpu vs cpu") else {
        return;
    };
    let n = atoms.len() / d;
    let dir = std::env::temp_dir().join(format!("fslens-score-gpu-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    fslens::arrays::write_npy_f32(&dir.join("A.npy"), &[n, d], &atoms).unwrap();
    drop(atoms);
    if let Some(a) = list_adapters().into_iter().find(|a| a.preferred) {
        eprintln!(
            "{}: binding limit {} MiB, so {} binding(s) for the f32 atoms",
            a.name,
            a.max_storage_buffer_binding_size >> 20,
            (n * d * 4).div_ceil(a.max_storage_buffer_binding_size as usize)
        );
    }

    let spec = "box:x=7,y=7,w=14,h=14";
    let op = fslens::operators::parse(
        spec,
        fslens::data::ImageShape::new(28, 28, 1),
        std::path::Path::new("."),
    )
    .unwrap();
    let sigma = 0.05;
    let mut rng = ChaCha8Rng::seed_from_u64(31);
    let mut y = vec![0.0f32; op.output_len()];
    op.forward(&tests[3 * d..4 * d], &mut y);
    for v in &mut y {
        let e: f64 = StandardNormal.sample(&mut rng);
        *v += (sigma * e) as f32;
    }
    fslens::arrays::write_npy_f32(&dir.join("y.npy"), &[y.len()], &y).unwrap();

    let exe = env!("CARGO_BIN_EXE_fslens");
    for t in [1e-3f64, 0.5] {
        // ᾱ(t) of the default schedule (β ∈ [0.01, 20]).
        let ab: f64 = (-0.01 * t - 0.5 * (20.0 - 0.01) * t * t).exp();
        let (s, v) = (ab.sqrt(), 1.0 - ab);
        let mut x = Vec::new();
        for (src, i) in [(&tests, 3usize), (&tests, 1000), (&tests, 42)] {
            for &a in &src[i * d..(i + 1) * d] {
                let e: f64 = StandardNormal.sample(&mut rng);
                x.push((s * a as f64 + v.sqrt() * e) as f32);
            }
        }
        fslens::arrays::write_npy_f32(&dir.join("x.npy"), &[x.len() / d, d], &x).unwrap();
        for method in ["fsr", "prior"] {
            let run = |backend: &str| {
                let out = dir.join(format!("s_{method}_{backend}.npy"));
                let mut cmd = Command::new(exe);
                cmd.args(["score", "--quiet", "--backend", backend, "--method", method])
                    .arg("--atoms")
                    .arg(dir.join("A.npy"))
                    .arg("--x")
                    .arg(dir.join("x.npy"))
                    .arg("--t")
                    .arg(t.to_string())
                    .arg("--out")
                    .arg(&out);
                if method == "fsr" {
                    cmd.arg("--y")
                        .arg(dir.join("y.npy"))
                        .arg("--operator")
                        .arg(spec)
                        .arg("--sigma")
                        .arg(sigma.to_string());
                }
                let timer = std::time::Instant::now();
                let status = cmd.output().unwrap();
                assert!(
                    status.status.success(),
                    "{backend} {method} t={t}: {}",
                    String::from_utf8_lossy(&status.stderr)
                );
                eprintln!("{backend} {method} t={t}: {:?}", timer.elapsed());
                fslens::arrays::read_npy(&out).unwrap().data
            };
            let cpu = run("cpu");
            let gpu = run("gpu");
            assert_eq!(cpu.len(), x.len());
            assert_eq!(gpu.len(), x.len());
            let err = gpu
                .iter()
                .zip(&cpu)
                .map(|(g, c)| (g - c).powi(2))
                .sum::<f64>()
                .sqrt();
            let norm = cpu.iter().map(|c| c * c).sum::<f64>().sqrt();
            eprintln!("{method} t={t}: relative error {:.3e}", err / norm);
            assert!(
                err / norm <= 1e-4,
                "{method} t={t}: gpu vs cpu relative error {}",
                err / norm
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `--storage` picks the GPU atom storage: u8 of 8-bit data equals f32 bit for bit, f16 is
/// close (it rounds the atoms to 11 significant bits), and u8 of data with more than 256
/// distinct values is refused with an error that names the storage.
#[test]
fn score_gpu_storage_flag() {
    if !have_gpu("score gpu storage flag") {
        return;
    }
    let exe = env!("CARGO_BIN_EXE_fslens");
    let dir = std::env::temp_dir().join(format!("fslens-storage-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let (n, d, b) = (500usize, 64usize, 4usize);
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let eight_bit: Vec<f32> = (0..n * d)
        .map(|i| ((i * 2654435761) % 256) as f32 / 127.5 - 1.0)
        .collect();
    let smooth: Vec<f32> = (0..n * d).map(|i| (i as f32 * 0.37).sin()).collect();
    let x: Vec<f32> = (0..b * d)
        .map(|_| {
            let e: f64 = StandardNormal.sample(&mut rng);
            (0.6 * e) as f32
        })
        .collect();
    fslens::arrays::write_npy_f32(&dir.join("A8.npy"), &[n, d], &eight_bit).unwrap();
    fslens::arrays::write_npy_f32(&dir.join("As.npy"), &[n, d], &smooth).unwrap();
    fslens::arrays::write_npy_f32(&dir.join("x.npy"), &[b, d], &x).unwrap();
    let score = |atoms: &str, storage: &str| {
        let out = dir.join(format!("s_{atoms}_{storage}.npy"));
        let result = Command::new(exe)
            .args(["score", "--quiet", "--backend", "gpu", "--method", "prior"])
            .args(["--t", "0.5", "--storage", storage])
            .arg("--atoms")
            .arg(dir.join(atoms))
            .arg("--x")
            .arg(dir.join("x.npy"))
            .arg("--out")
            .arg(&out)
            .output()
            .unwrap();
        (result, out)
    };
    let read = |(r, out): (std::process::Output, PathBuf)| {
        assert!(r.status.success(), "{}", String::from_utf8_lossy(&r.stderr));
        fslens::arrays::read_npy(&out).unwrap().data
    };
    let f32s = read(score("A8.npy", "f32"));
    let u8s = read(score("A8.npy", "u8"));
    let f16s = read(score("A8.npy", "f16"));
    assert_eq!(f32s, u8s, "u8 storage of 8-bit data must equal f32 storage");
    let norm = f32s.iter().map(|v| v * v).sum::<f64>().sqrt();
    let diff = f32s
        .iter()
        .zip(&f16s)
        .map(|(a, b)| (a - b) * (a - b))
        .sum::<f64>()
        .sqrt();
    assert!(
        diff / norm < 1e-2,
        "f16 storage: relative difference {}",
        diff / norm
    );
    let (refused, out) = score("As.npy", "u8");
    assert!(
        !refused.status.success(),
        "u8 storage of smooth data was accepted"
    );
    let msg = String::from_utf8_lossy(&refused.stderr);
    assert!(msg.contains("u8"), "error does not name the storage: {msg}");
    assert!(!msg.contains("panicked"), "{msg}");
    assert!(!out.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

//! `fslens score` against an independent float64 implementation of design §3, through the
//! binary and .npy files, as other tools will use it.

mod common;

use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn write_f64(path: &Path, shape: &[u64], data: &[f64]) {
    let shape: Vec<usize> = shape.iter().map(|&s| s as usize).collect();
    fslens::arrays::write_npy(path, &shape, data).unwrap();
}

fn write_f32(path: &Path, shape: &[usize], data: &[f64]) {
    let v: Vec<f32> = data.iter().map(|&x| x as f32).collect();
    fslens::arrays::write_npy_f32(path, shape, &v).unwrap();
}

fn read(path: &Path) -> Vec<f64> {
    fslens::arrays::read_npy(path).unwrap().data
}

/// ᾱ(t) of the default linear schedule.
fn alpha_bar(t: f64) -> f64 {
    (-0.01 * t - 0.5 * (20.0 - 0.01) * t * t).exp()
}

/// The float64 score (s m − x)/v with weights softmax(−‖x − s a_i‖²/(2v) + b_i).
fn score_f64(atoms: &[Vec<f64>], b: &[f64], x: &[f64], t: f64) -> Vec<f64> {
    let ab = alpha_bar(t);
    let (s, v) = (ab.sqrt(), 1.0 - ab);
    let logits: Vec<f64> = atoms
        .iter()
        .zip(b)
        .map(|(a, bi)| {
            -a.iter()
                .zip(x)
                .map(|(ai, xi)| (xi - s * ai).powi(2))
                .sum::<f64>()
                / (2.0 * v)
                + bi
        })
        .collect();
    let max = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
    let w: Vec<f64> = logits.iter().map(|l| (l - max).exp()).collect();
    let z: f64 = w.iter().sum();
    let d = x.len();
    (0..d)
        .map(|j| {
            let m: f64 = atoms.iter().zip(&w).map(|(a, wi)| wi * a[j]).sum::<f64>() / z;
            (s * m - x[j]) / v
        })
        .collect()
}

#[test]
fn score_matches_float64_on_random_inputs() {
    let (n, d, b, m) = (500, 64, 8, 16);
    let dir = common::scratch_dir("score-random");
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let atoms: Vec<Vec<f64>> = (0..n)
        .map(|_| (0..d).map(|_| rng.random_range(-1.0..1.0)).collect())
        .collect();
    let mat: Vec<Vec<f64>> = (0..m)
        .map(|_| {
            (0..d)
                .map(|_| rng.random_range(-1.0..1.0) / (d as f64).sqrt())
                .collect()
        })
        .collect();
    let flat_atoms: Vec<f64> = atoms.iter().flatten().copied().collect();
    // Atoms as float64 (the command accepts both), M as float64, x and y as float32.
    write_f64(&dir.join("A.npy"), &[n as u64, d as u64], &flat_atoms);
    write_f64(
        &dir.join("M.npy"),
        &[m as u64, d as u64],
        &mat.iter().flatten().copied().collect::<Vec<_>>(),
    );
    // The measurement of a random atom plus noise; y is stored as float32, so b uses the f32 values.
    let truth = &atoms[17];
    for &t in &[0.05, 0.3, 0.9] {
        for &sigma in &[0.05, 0.5] {
            let ab = alpha_bar(t);
            let (s, v) = (ab.sqrt(), 1.0 - ab);
            let y: Vec<f64> = mat
                .iter()
                .map(|row| {
                    row.iter().zip(truth).map(|(r, a)| r * a).sum::<f64>()
                        + sigma * rng.random_range(-1.0..1.0)
                })
                .map(|v: f64| v as f32 as f64)
                .collect();
            write_f32(&dir.join("y.npy"), &[m], &y);
            // Particles near the posterior's support (x = s a_j + √v ε) and from the prior.
            let x: Vec<f64> = (0..b)
                .flat_map(|k| {
                    let j = if k % 2 == 0 {
                        17
                    } else {
                        rng.random_range(0..n)
                    };
                    let aj = atoms[j].clone();
                    let noise: Vec<f64> = (0..d).map(|_| rng.random_range(-1.7..1.7)).collect();
                    aj.into_iter()
                        .zip(noise)
                        .map(move |(a, e)| s * a + v.sqrt() * e)
                        .collect::<Vec<_>>()
                })
                .map(|v| v as f32 as f64)
                .collect();
            write_f32(&dir.join("x.npy"), &[b, d], &x);
            // b_i = −‖y − M a_i‖²/(2σ²).
            let bvec: Vec<f64> = atoms
                .iter()
                .map(|a| {
                    let r2: f64 = mat
                        .iter()
                        .zip(&y)
                        .map(|(row, yk)| {
                            (yk - row.iter().zip(a).map(|(r, ai)| r * ai).sum::<f64>()).powi(2)
                        })
                        .sum();
                    -r2 / (2.0 * sigma * sigma)
                })
                .collect();
            for method in ["fsr", "prior"] {
                let out = dir.join(format!("s_{method}.npy"));
                let operator = format!("matrix:{}", dir.join("M.npy").display());
                let (t_arg, sigma_arg) = (t.to_string(), sigma.to_string());
                common::fslens(&[
                    "score",
                    "--quiet",
                    "--backend",
                    "cpu",
                    "--method",
                    method,
                    "--atoms",
                    common::s(&dir.join("A.npy")),
                    "--x",
                    common::s(&dir.join("x.npy")),
                    "--t",
                    &t_arg,
                    "--y",
                    common::s(&dir.join("y.npy")),
                    "--operator",
                    &operator,
                    "--sigma",
                    &sigma_arg,
                    "--out",
                    common::s(&out),
                ]);
                let got = read(&out);
                let zeros = vec![0.0; n];
                let bias = if method == "fsr" { &bvec } else { &zeros };
                let want: Vec<f64> = x
                    .chunks(d)
                    .flat_map(|row| score_f64(&atoms, bias, row, t))
                    .collect();
                let err = got
                    .iter()
                    .zip(&want)
                    .map(|(g, w)| (g - w).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let norm = want.iter().map(|w| w * w).sum::<f64>().sqrt();
                assert!(
                    err / norm <= 1e-4,
                    "{method} t={t} σ={sigma}: relative error {}",
                    err / norm
                );
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

/// uint8 atoms are 8-bit pixels, mapped to 2k/255 − 1 as the configs and `diagnose` map them:
/// the prior score of uint8 atoms equals the float64 score of the mapped atoms.
#[test]
fn uint8_atoms_are_pixels_in_minus_one_to_one() {
    let dir = common::scratch_dir("score-u8");
    let (n, d, b, t) = (200usize, 16usize, 3usize, 0.2);
    let mut rng = ChaCha8Rng::seed_from_u64(9);
    let bytes: Vec<u8> = (0..n * d).map(|_| rng.random()).collect();
    fslens::arrays::write_npy(&dir.join("A.npy"), &[n, d], &bytes).unwrap();
    let x: Vec<f64> = (0..b * d).map(|_| rng.random_range(-1.0..1.0)).collect();
    write_f32(&dir.join("x.npy"), &[b, d], &x);
    let out = dir.join("s.npy");
    common::fslens(&[
        "score",
        "--quiet",
        "--backend",
        "cpu",
        "--method",
        "prior",
        "--t",
        "0.2",
        "--atoms",
        common::s(&dir.join("A.npy")),
        "--x",
        common::s(&dir.join("x.npy")),
        "--out",
        common::s(&out),
    ]);
    let atoms: Vec<Vec<f64>> = bytes
        .chunks(d)
        .map(|a| {
            a.iter()
                .map(|&k| 2.0 * f64::from(k) / 255.0 - 1.0)
                .collect()
        })
        .collect();
    let got = read(&out);
    let x32: Vec<f64> = x.iter().map(|&v| f64::from(v as f32)).collect();
    for (row, g) in x32.chunks(d).zip(got.chunks(d)) {
        let want = score_f64(&atoms, &vec![0.0; n], row, t);
        let scale = want.iter().map(|v| v * v).sum::<f64>().sqrt();
        let err = want
            .iter()
            .zip(g)
            .map(|(w, g)| (w - g).powi(2))
            .sum::<f64>()
            .sqrt();
        assert!(err <= 1e-4 * scale, "relative error {}", err / scale);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

//! Operator tests against independent references: inner products in float64 for adjoints,
//! central finite differences for the nonlinear Jacobians, naive direct sums for the blur and
//! the DFT, closed forms for Gram structure and Parseval.

use std::path::{Path, PathBuf};

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

use super::*;

fn uniform(seed: u64, n: usize) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    (0..n).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn dot64(a: &[f32], b: &[f32]) -> f64 {
    a.iter()
        .zip(b)
        .map(|(&x, &y)| f64::from(x) * f64::from(y))
        .sum()
}

fn norm64(a: &[f32]) -> f64 {
    dot64(a, a).sqrt()
}

fn tmpdir(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fslens-ops-{tag}-{}", std::process::id()));
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A black/white PNG mask (white where `observed`), written with the image crate.
fn write_mask(path: &Path, h: usize, w: usize, observed: impl Fn(usize, usize) -> bool) {
    let img = image::GrayImage::from_fn(w as u32, h as u32, |col, row| {
        image::Luma([if observed(row as usize, col as usize) {
            255
        } else {
            0
        }])
    });
    img.save(path).unwrap();
}

/// Writes a float64 (m, D) matrix as .npy.
fn write_npy_f64(path: &Path, shape: &[u64], data: &[f64]) {
    let shape: Vec<usize> = shape.iter().map(|&s| s as usize).collect();
    crate::arrays::write_npy(path, &shape, data).unwrap();
}

/// Every operator, built through `parse`, for `shape` (H and W divisible by 4, H ≥ 12,
/// W ≥ 16). The mask PNG and the matrix .npy are written to `dir` and named relatively.
fn all_operators(shape: ImageShape, dir: &Path) -> Vec<Box<dyn Operator>> {
    write_mask(&dir.join("mask.png"), shape.height, shape.width, |r, c| {
        (r * 7 + c * 3) % 5 != 0
    });
    let m = 10;
    let d = shape.dim();
    let mat: Vec<f64> = uniform(77, m * d).iter().map(|&v| f64::from(v)).collect();
    write_npy_f64(&dir.join("m.npy"), &[m as u64, d as u64], &mat);
    let specs = [
        "identity",
        "box:x=3,y=2,w=5,h=4",
        "random-pixels:keep=0.3,seed=5",
        "mask:mask.png",
        "downsample:2",
        "downsample:4",
        "blur:sigma=1.5,size=7",
        "matrix:m.npy",
        "projection:m=24,seed=3",
        "phase-retrieval:oversample=2",
        "saturation:gain=2",
    ];
    specs
        .iter()
        .map(|s| parse(s, shape, dir).unwrap_or_else(|e| panic!("{s}: {e}")))
        .collect()
}

const SHAPES: [ImageShape; 2] = [
    ImageShape {
        height: 12,
        width: 16,
        channels: 3,
    },
    ImageShape {
        height: 16,
        width: 16,
        channels: 1,
    },
];

#[test]
fn linear_operators_are_adjoint() {
    let dir = tmpdir("adjoint");
    let mut worst = 0.0f64;
    for shape in SHAPES {
        for (k, op) in all_operators(shape, &dir).iter().enumerate() {
            if !op.is_linear() {
                continue;
            }
            let (d, m) = (shape.dim(), op.output_len());
            for trial in 0..3u64 {
                let x = uniform(100 + 10 * k as u64 + trial, d);
                let mut ax = vec![0.0; m];
                op.forward(&x, &mut ax);
                // r = u + ½(‖u‖/‖Ax‖)·Ax with u random: keeps ⟨Ax, r⟩ away from an
                // accidental zero that would make the relative error meaningless.
                let u = uniform(200 + 10 * k as u64 + trial, m);
                let lift = (0.5 * norm64(&u) / norm64(&ax)) as f32;
                let r: Vec<f32> = u.iter().zip(&ax).map(|(u, a)| u + lift * a).collect();
                let mut atr = vec![0.0; d];
                op.adjoint(&x, &r, &mut atr);
                let lhs = dot64(&ax, &r);
                let rhs = dot64(&x, &atr);
                let rel = (lhs - rhs).abs() / lhs.abs();
                worst = worst.max(rel);
                assert!(
                    rel <= 1e-5,
                    "{} on {shape}: <Ax,r> = {lhs}, <x,A^T r> = {rhs}, rel {rel:e}",
                    op.spec()
                );
                // The inner product must not be a cancellation artefact near zero.
                assert!(lhs.abs() > 0.1 * norm64(&ax) * norm64(&r), "{}", op.spec());
            }
        }
    }
    eprintln!("worst adjoint relative error: {worst:e}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn scaled_identity_grams_hold() {
    let dir = tmpdir("gram");
    let mut checked = 0;
    for shape in SHAPES {
        for op in all_operators(shape, &dir) {
            let Gram::ScaledIdentity(c) = op.gram() else {
                continue;
            };
            assert!(op.is_linear());
            let m = op.output_len();
            let r = uniform(9, m);
            let mut atr = vec![0.0; shape.dim()];
            let mut aatr = vec![0.0; m];
            op.adjoint(&[], &r, &mut atr);
            op.forward(&atr, &mut aatr);
            for (j, (&got, &rj)) in aatr.iter().zip(&r).enumerate() {
                let want = c * f64::from(rj);
                assert!(
                    (f64::from(got) - want).abs() <= 1e-6,
                    "{}: (A A^T r)[{j}] = {got}, c r = {want}",
                    op.spec()
                );
            }
            checked += 1;
        }
    }
    assert_eq!(
        checked,
        2 * 6,
        "identity, box, random, mask, 2 downsamples per shape"
    );
    // The known constants.
    let s = SHAPES[0];
    assert_eq!(
        Downsample::new(s, 4).unwrap().gram(),
        Gram::ScaledIdentity(1.0 / 16.0)
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn forward_batch_matches_forward_and_measure_atoms() {
    let dir = tmpdir("batch");
    for shape in SHAPES {
        for op in all_operators(shape, &dir) {
            let (d, m, n) = (shape.dim(), op.output_len(), 7);
            let xs = uniform(31, n * d);
            let batch = measure_atoms(op.as_ref(), &xs);
            assert_eq!(batch.len(), n * m);
            for i in 0..n {
                let mut one = vec![0.0; m];
                op.forward(&xs[i * d..(i + 1) * d], &mut one);
                let row = &batch[i * m..(i + 1) * m];
                let scale = norm64(&one).max(1.0);
                for (j, (&a, &b)) in row.iter().zip(&one).enumerate() {
                    // The dense GEMM sums in f32, the single forward in f64.
                    assert!(
                        (f64::from(a) - f64::from(b)).abs() <= 1e-5 * scale,
                        "{} image {i} entry {j}: batch {a} vs forward {b}",
                        op.spec()
                    );
                }
            }
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn dense_gemm_batch_on_many_rows_matches_f64_reference() {
    // Enough rows and columns that the GEMM takes its blocked, multithreaded path.
    let shape = ImageShape::new(16, 16, 1);
    let op = gaussian_projection(shape, 48, 11).unwrap();
    let (n, d, m) = (300, shape.dim(), 48);
    let xs = uniform(5, n * d);
    let got = measure_atoms(&op, &xs);
    let a = op.matrix();
    let mut worst = 0.0f64;
    for i in 0..n {
        for j in 0..m {
            let r: f64 = (0..d)
                .map(|k| f64::from(xs[i * d + k]) * f64::from(a[j * d + k]))
                .sum();
            worst = worst.max((f64::from(got[i * m + j]) - r).abs());
        }
    }
    assert!(worst < 1e-5, "max |GEMM - f64 reference| = {worst:e}");
}

#[test]
fn specs_round_trip_through_parse() {
    let dir = tmpdir("roundtrip");
    for shape in SHAPES {
        let x = uniform(3, shape.dim());
        for op in all_operators(shape, &dir) {
            let again = parse(&op.spec(), shape, &dir).unwrap();
            assert_eq!(again.spec(), op.spec());
            assert_eq!(again.output_len(), op.output_len());
            assert_eq!(again.is_linear(), op.is_linear());
            assert_eq!(again.gram(), op.gram());
            let mut y1 = vec![0.0; op.output_len()];
            let mut y2 = vec![0.0; op.output_len()];
            op.forward(&x, &mut y1);
            again.forward(&x, &mut y2);
            assert_eq!(y1, y2, "{}", op.spec());
            // Every operator can be rendered, with the shape it claims.
            if let Some(v) = op.view(&y1) {
                assert_eq!(v.pixels.len(), v.shape.dim(), "{}", op.spec());
            }
        }
    }
    // Defaults are written out in the canonical spec.
    let s = SHAPES[1];
    assert_eq!(
        parse("phase-retrieval", s, &dir).unwrap().spec(),
        "phase-retrieval:oversample=2"
    );
    assert_eq!(
        parse(" blur : sigma=1 ", s, &dir).unwrap().spec(),
        "blur:sigma=1,size=7"
    );
    assert_eq!(
        parse("random-pixels:keep=0.5", s, &dir).unwrap().spec(),
        "random-pixels:keep=0.5,seed=0"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

/// ⟨r, A(x)⟩ in float64 for the nonlinear operators' float64 paths.
fn probe(f: &dyn Fn(&[f64]) -> Vec<f64>, x: &[f64], r: &[f64]) -> f64 {
    f(x).iter().zip(r).map(|(a, b)| a * b).sum()
}

/// Central differences of x ↦ ⟨r, A(x)⟩ along random directions δ, in float64 with h = 1e-5
/// (truncation error O(h²) ≈ 1e-10, rounding ≈ 1e-16/h ≈ 1e-11), against ⟨J_Aᵀ r, δ⟩ from
/// the f32 `adjoint` (whose only error is the final rounding to f32, ≈ 1e-7 relative).
fn check_jacobian(op: &dyn Operator, f: &dyn Fn(&[f64]) -> Vec<f64>, seed: u64) {
    let shape = op.input_shape();
    let (d, m) = (shape.dim(), op.output_len());
    let x32 = uniform(seed, d);
    let r32 = uniform(seed + 1, m);
    let x: Vec<f64> = x32.iter().map(|&v| f64::from(v)).collect();
    let r: Vec<f64> = r32.iter().map(|&v| f64::from(v)).collect();
    let mut jtr = vec![0.0f32; d];
    op.adjoint(&x32, &r32, &mut jtr);
    let h = 1e-5;
    for k in 0..4 {
        let delta: Vec<f64> = uniform(seed + 10 + k, d)
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let plus: Vec<f64> = x.iter().zip(&delta).map(|(a, b)| a + h * b).collect();
        let minus: Vec<f64> = x.iter().zip(&delta).map(|(a, b)| a - h * b).collect();
        let fd = (probe(f, &plus, &r) - probe(f, &minus, &r)) / (2.0 * h);
        let analytic: f64 = jtr.iter().zip(&delta).map(|(&a, b)| f64::from(a) * b).sum();
        let scale = (jtr.iter().map(|&a| f64::from(a).powi(2)).sum::<f64>()
            * delta.iter().map(|b| b * b).sum::<f64>())
        .sqrt();
        eprintln!(
            "{} direction {k}: |fd - J^T r . delta| / scale = {:e}",
            op.spec(),
            (fd - analytic).abs() / scale
        );
        assert!(
            (fd - analytic).abs() <= 1e-6 * scale,
            "{} direction {k}: finite difference {fd} vs J^T r . delta {analytic} (scale {scale})",
            op.spec()
        );
    }
    // Single coordinates too, which catches a wrong support or channel order.
    for &i in &[0, d / 3, d - 1] {
        let mut plus = x.clone();
        let mut minus = x.clone();
        plus[i] += h;
        minus[i] -= h;
        let fd = (probe(f, &plus, &r) - probe(f, &minus, &r)) / (2.0 * h);
        let got = f64::from(jtr[i]);
        assert!(
            (fd - got).abs() <= 1e-6 * (1.0 + fd.abs()),
            "{} coordinate {i}: finite difference {fd} vs (J^T r)[{i}] {got}",
            op.spec()
        );
    }
}

#[test]
fn phase_retrieval_jacobian_matches_finite_differences() {
    for (shape, o) in [(ImageShape::new(6, 5, 2), 2), (ImageShape::new(8, 8, 1), 3)] {
        let op = PhaseRetrieval::new(shape, o).unwrap();
        // |Fx| has no derivative at 0; random x keeps every |Fx| well away from it.
        let x: Vec<f64> = uniform(40, shape.dim())
            .iter()
            .map(|&v| f64::from(v))
            .collect();
        let min = op.magnitudes(&x).into_iter().fold(f64::INFINITY, f64::min);
        assert!(min > 1e-4, "test point too close to a zero of Fx: {min}");
        check_jacobian(&op, &|x| op.magnitudes(x), 40);
        // The f32 forward is the float64 path rounded.
        let x32 = uniform(40, shape.dim());
        let mut y = vec![0.0f32; op.output_len()];
        op.forward(&x32, &mut y);
        for (a, b) in y.iter().zip(op.magnitudes(&x)) {
            assert_eq!(*a, b as f32);
        }
    }
}

#[test]
fn saturation_jacobian_matches_finite_differences() {
    for gain in [0.5, 2.0, 5.0] {
        let op = Saturation::new(ImageShape::new(5, 4, 3), gain).unwrap();
        check_jacobian(&op, &|x| op.apply(x), 70);
    }
}

#[test]
fn phase_retrieval_matches_naive_dft_and_parseval() {
    let shape = ImageShape::new(5, 6, 2);
    let o = 2;
    let op = PhaseRetrieval::new(shape, o).unwrap();
    let (h, w, c) = (5, 6, 2);
    let (p, q) = (o * h, o * w);
    let x32 = uniform(8, shape.dim());
    let mut y = vec![0.0f32; op.output_len()];
    op.forward(&x32, &mut y);
    assert_eq!(y.len(), c * p * q);
    let norm = 1.0 / ((p * q) as f64).sqrt();
    let tau = std::f64::consts::TAU;
    for u in 0..p {
        for v in 0..q {
            for ch in 0..c {
                let (mut re, mut im) = (0.0f64, 0.0f64);
                for i in 0..h {
                    for j in 0..w {
                        let a = -tau * ((u * i) as f64 / p as f64 + (v * j) as f64 / q as f64);
                        let xv = f64::from(x32[(i * w + j) * c + ch]);
                        re += xv * a.cos();
                        im += xv * a.sin();
                    }
                }
                let want = norm * re.hypot(im);
                let got = f64::from(y[(u * q + v) * c + ch]);
                assert!(
                    (got - want).abs() <= 1e-6,
                    "|F x|[{u},{v},{ch}] = {got}, naive DFT {want}"
                );
            }
        }
    }
    // Parseval with the unitary normalisation: Σ y² = ‖x‖², per channel as well.
    for ch in 0..c {
        let sy: f64 = y
            .iter()
            .skip(ch)
            .step_by(c)
            .map(|&v| f64::from(v).powi(2))
            .sum();
        let sx: f64 = x32
            .iter()
            .skip(ch)
            .step_by(c)
            .map(|&v| f64::from(v).powi(2))
            .sum();
        assert!(
            (sy - sx).abs() <= 1e-5 * sx,
            "channel {ch}: Σy² {sy} vs ‖x‖² {sx}"
        );
    }
    // J^T r at r = A(x) is x itself (Re F^H(|Fx| φ) = F^H F x = x on the support).
    let mut back = vec![0.0f32; shape.dim()];
    op.adjoint(&x32, &y, &mut back);
    for (a, b) in back.iter().zip(&x32) {
        assert!((a - b).abs() <= 1e-5, "J^T A(x) = {a}, x = {b}");
    }
    // The view centres the zero frequency and lies in [-1, 1].
    let v = op.view(&y).unwrap();
    assert_eq!(v.shape, ImageShape::new(p, q, c));
    assert!(v.pixels.iter().all(|p| (-1.0..=1.0).contains(p)));
}

#[test]
fn blur_matches_direct_convolution_and_keeps_constants() {
    let shape = ImageShape::new(11, 13, 2);
    let (sigma, size) = (1.3, 7);
    let op = GaussianBlur::new(shape, sigma, size).unwrap();
    let (h, w, c) = (11usize, 13usize, 2usize);
    let rho = (size / 2) as isize;
    let g: Vec<f64> = (-rho..=rho)
        .map(|u| (-(u * u) as f64 / (2.0 * sigma * sigma)).exp())
        .collect();
    let gs: f64 = g.iter().sum();
    let x = uniform(12, shape.dim());
    let mut y = vec![0.0; shape.dim()];
    op.forward(&x, &mut y);
    for i in 0..h as isize {
        for j in 0..w as isize {
            for ch in 0..c {
                let mut s = 0.0f64;
                for u in -rho..=rho {
                    for v in -rho..=rho {
                        let (ii, jj) = (i + u, j + v);
                        if ii < 0 || jj < 0 || ii >= h as isize || jj >= w as isize {
                            continue;
                        }
                        let k = (ii as usize * w + jj as usize) * c + ch;
                        s += g[(u + rho) as usize] * g[(v + rho) as usize] / (gs * gs)
                            * f64::from(x[k]);
                    }
                }
                let got = f64::from(y[(i as usize * w + j as usize) * c + ch]);
                assert!(
                    (got - s).abs() < 1e-6,
                    "blur at ({i},{j},{ch}): {got} vs {s}"
                );
            }
        }
    }
    // A constant image stays constant at least ρ pixels from every edge, and darkens at the
    // border (zero padding).
    let konst = vec![0.6f32; shape.dim()];
    op.forward(&konst, &mut y);
    let r = rho as usize;
    for i in r..h - r {
        for j in r..w - r {
            for ch in 0..c {
                let v = y[(i * w + j) * c + ch];
                assert!((v - 0.6).abs() < 1e-6, "interior ({i},{j}) = {v}");
            }
        }
    }
    assert!(y[0] < 0.5, "corner with zero padding = {}", y[0]);
}

#[test]
fn downsample_of_block_constant_image_is_exact() {
    let shape = ImageShape::new(12, 16, 3);
    let k = 4;
    let op = Downsample::new(shape, k).unwrap();
    let lo = op.output_shape();
    assert_eq!(lo, ImageShape::new(3, 4, 3));
    // Block values that are exactly representable: multiples of 1/8.
    let blocks: Vec<f32> = (0..lo.dim())
        .map(|i| (i as f32 % 15.0) / 8.0 - 0.875)
        .collect();
    let mut x = vec![0.0f32; shape.dim()];
    for i in 0..12 {
        for j in 0..16 {
            for ch in 0..3 {
                x[(i * 16 + j) * 3 + ch] = blocks[((i / k) * 4 + j / k) * 3 + ch];
            }
        }
    }
    let mut y = vec![0.0f32; lo.dim()];
    op.forward(&x, &mut y);
    assert_eq!(y, blocks);
    let v = op.view(&y).unwrap();
    assert_eq!(v.shape, lo);
    assert_eq!(v.pixels, blocks);
}

#[test]
fn inpainting_masks_observe_the_right_pixels() {
    let dir = tmpdir("masks");
    let shape = ImageShape::new(12, 16, 3);
    let x = uniform(4, shape.dim());

    let b = box_inpainting(shape, 3, 2, 5, 4).unwrap();
    assert_eq!(b.output_len(), (12 * 16 - 5 * 4) * 3);
    for &p in b.observed_pixels() {
        let (row, col) = (p / 16, p % 16);
        assert!(
            !((2..6).contains(&row) && (3..8).contains(&col)),
            "box pixel {p} kept"
        );
    }
    // The view is zero-filled inside the box and equals x outside.
    let mut y = vec![0.0; b.output_len()];
    b.forward(&x, &mut y);
    let v = b.view(&y).unwrap();
    for p in 0..12 * 16 {
        let inside = (2..6).contains(&(p / 16)) && (3..8).contains(&(p % 16));
        for ch in 0..3 {
            let want = if inside { 0.0 } else { x[p * 3 + ch] };
            assert_eq!(v.pixels[p * 3 + ch], want);
        }
    }

    let r1 = random_pixels(shape, 0.3, 1).unwrap();
    let r2 = random_pixels(shape, 0.3, 1).unwrap();
    let r3 = random_pixels(shape, 0.3, 2).unwrap();
    let kept = (0.3f64 * 192.0).round() as usize;
    assert_eq!(r1.observed_pixels().len(), kept);
    assert_eq!(r1.observed_pixels(), r2.observed_pixels());
    assert_ne!(r1.observed_pixels(), r3.observed_pixels());

    let path = dir.join("m.png");
    write_mask(&path, 12, 16, |r, c| r < 6 && c % 2 == 0);
    let m = mask_from_png(shape, "m.png", &dir).unwrap();
    let want: Vec<usize> = (0..192)
        .filter(|p| p / 16 < 6 && (p % 16) % 2 == 0)
        .collect();
    assert_eq!(m.observed_pixels(), &want[..]);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn projection_is_seeded_with_variance_one_over_m() {
    let shape = ImageShape::new(16, 16, 1);
    let a = gaussian_projection(shape, 64, 0).unwrap();
    let b = gaussian_projection(shape, 64, 0).unwrap();
    let c = gaussian_projection(shape, 64, 1).unwrap();
    assert_eq!(a.matrix(), b.matrix());
    assert_ne!(a.matrix(), c.matrix());
    let n = a.matrix().len() as f64;
    let mean: f64 = a.matrix().iter().map(|&v| f64::from(v)).sum::<f64>() / n;
    let var: f64 = a
        .matrix()
        .iter()
        .map(|&v| f64::from(v).powi(2))
        .sum::<f64>()
        / n;
    // 16384 N(0, 1/64) draws: mean sd 0.125/128 ≈ 1e-3, variance relative sd √(2/n) ≈ 1.1%.
    assert!(mean.abs() < 5e-3, "mean {mean}");
    assert!(
        (var * 64.0 - 1.0).abs() < 0.06,
        "variance × m = {}",
        var * 64.0
    );
}

#[test]
fn log_likelihoods_match_direct_sum() {
    let (n, m) = (9, 13);
    let measured = uniform(1, n * m);
    let y = uniform(2, m);
    let sigma = 0.3;
    let b = log_likelihoods(&measured, &y, sigma).unwrap();
    assert_eq!(b.len(), n);
    for i in 0..n {
        let ss: f64 = (0..m)
            .map(|j| (f64::from(y[j]) - f64::from(measured[i * m + j])).powi(2))
            .sum();
        let want = -ss / (2.0 * sigma * sigma);
        assert!((b[i] - want).abs() <= 1e-12 * want.abs());
    }
    for bad in [0.0, -1.0, f64::NAN, f64::INFINITY] {
        let e = log_likelihoods(&measured, &y, bad).unwrap_err().to_string();
        assert!(e.contains("sigma"), "{e}");
    }
    let e = log_likelihoods(&measured, &y[..5], sigma)
        .unwrap_err()
        .to_string();
    assert!(e.contains("5 values"), "{e}");
}

#[test]
fn bad_specs_name_the_offending_part() {
    let dir = tmpdir("bad");
    let shape = ImageShape::new(12, 16, 1);
    write_mask(&dir.join("small.png"), 10, 16, |_, _| true);
    write_mask(&dir.join("none.png"), 12, 16, |_, _| false);
    image::GrayImage::from_pixel(16, 12, image::Luma([128]))
        .save(dir.join("grey.png"))
        .unwrap();
    crate::arrays::write_npy_f32(&dir.join("wide.npy"), &[4, 100], &[0.0; 400]).unwrap();
    crate::arrays::write_npy_f32(&dir.join("flat.npy"), &[192], &[0.0; 192]).unwrap();
    let cases: &[(&str, &[&str])] = &[
        (
            "nonsense",
            &["unknown operator `nonsense`", "identity", "phase-retrieval"],
        ),
        ("", &["unknown operator", "known operators"]),
        ("identity:x=1", &["unknown parameter `x`"]),
        (
            "box:x=8,y=8,w=12",
            &["missing parameter `h`", "box:x=8,y=8,w=12,h=12"],
        ),
        ("box:x=8,y=8,w=12,h=12,z=1", &["unknown parameter `z`"]),
        ("box:x=-1,y=8,w=2,h=2", &["`x`", "-1"]),
        ("box:x=8,y=8,w=12,h=2", &["x + w", "12×16"]),
        ("box:x=0,y=10,w=2,h=3", &["y + h"]),
        ("box:x=0,y=0,w=0,h=3", &["empty"]),
        ("box:x=1,x=2,y=0,w=1,h=1", &["`x` is given twice"]),
        ("box:x=1,,y=0,w=1,h=1", &["stray comma"]),
        ("box:x1,y=0,w=1,h=1", &["`x1`", "key=value"]),
        ("random-pixels:seed=1", &["missing parameter `keep`"]),
        ("random-pixels:keep=1.5", &["`keep`", "1.5", "(0, 1]"]),
        ("random-pixels:keep=0.001", &["keeps no pixel"]),
        ("random-pixels:keep=abc", &["`keep`", "abc"]),
        ("random-pixels:keep=0.5,seed=-3", &["`seed`", "-3"]),
        ("mask:", &["missing the file path"]),
        ("mask:absent.png", &["absent.png"]),
        ("mask:small.png", &["10×16", "12×16"]),
        ("mask:grey.png", &["grey.png", "128", "black", "white"]),
        ("mask:none.png", &["no pixel is observed"]),
        ("downsample", &["missing the factor", "downsample:4"]),
        ("downsample:x", &["`x`", "positive integer"]),
        ("downsample:0", &["positive integer"]),
        ("downsample:5", &["12×16", "factor 5"]),
        ("blur:size=5", &["missing parameter `sigma`"]),
        ("blur:sigma=1,size=4", &["`size`", "odd"]),
        ("blur:sigma=0,size=5", &["`sigma`", "positive"]),
        ("blur:sigma=nan,size=5", &["`sigma`"]),
        ("matrix:", &["missing the file path"]),
        ("matrix:absent.npy", &["absent.npy"]),
        ("matrix:wide.npy", &["wide.npy", "[4, 100]", "192"]),
        ("matrix:flat.npy", &["flat.npy", "[192]", "192"]),
        ("projection:seed=1", &["missing parameter `m`"]),
        ("projection:m=0", &["`m`", "positive"]),
        ("phase-retrieval:oversample=0", &["`oversample`"]),
        (
            "phase-retrieval:oversampling=2",
            &["unknown parameter `oversampling`", "oversample"],
        ),
        ("saturation", &["missing parameter `gain`"]),
        ("saturation:gain=-2", &["`gain`", "-2"]),
    ];
    for (spec, needles) in cases {
        let e = match parse(spec, shape, &dir) {
            Ok(op) => panic!("`{spec}` was accepted as {}", op.spec()),
            Err(e) => e.to_string(),
        };
        for n in *needles {
            assert!(e.contains(n), "error for `{spec}` lacks `{n}`: {e}");
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn help_lists_every_operator() {
    for name in KNOWN_OPERATORS {
        assert!(
            SPEC_HELP.lines().any(|l| l.starts_with(name)),
            "SPEC_HELP lacks {name}"
        );
    }
}

//! Image quality against a ground truth: PSNR and SSIM, pixels in [-1, 1] (data range L = 2).
//!
//! SSIM follows Wang et al. (2004) as `skimage.metrics.structural_similarity` computes it by
//! default: a 7×7 uniform window, sample (N − 1) covariances, C1 = (K1 L)², C2 = (K2 L)² with
//! K1 = 0.01, K2 = 0.03, evaluated at every window position that lies fully inside the image,
//! per channel, and averaged over positions and channels. Images smaller than 7 pixels on a
//! side use the largest odd window that fits.

use crate::data::ImageShape;

/// The data range of fslens pixels, 1 − (−1).
pub const DATA_RANGE: f64 = 2.0;
/// Side of the uniform SSIM window.
pub const SSIM_WINDOW: usize = 7;
const K1: f64 = 0.01;
const K2: f64 = 0.03;

/// PSNR = 10 log10(L² / MSE) in dB with L = 2; +∞ when the images are identical.
pub fn psnr(x: &[f32], truth: &[f32]) -> f64 {
    let mse = x
        .iter()
        .zip(truth)
        .map(|(&a, &b)| (a as f64 - b as f64).powi(2))
        .sum::<f64>()
        / x.len().max(1) as f64;
    if mse == 0.0 {
        f64::INFINITY
    } else {
        10.0 * (DATA_RANGE * DATA_RANGE / mse).log10()
    }
}

/// The window side used for an image of `shape`: 7, or the largest odd side that fits.
pub fn ssim_window(shape: ImageShape) -> usize {
    let fit = SSIM_WINDOW.min(shape.height).min(shape.width).max(1);
    if fit.is_multiple_of(2) { fit - 1 } else { fit }
}

/// Mean SSIM of `x` against `truth` (HWC, same shape):
///   SSIM = (2 μx μy + C1)(2 σxy + C2) / ((μx² + μy² + C1)(σx² + σy² + C2))
/// per window, with window moments from summed-area tables of x, y, x², y², xy in float64.
pub fn ssim(x: &[f32], truth: &[f32], shape: ImageShape) -> f64 {
    let (h, w, c) = (shape.height, shape.width, shape.channels);
    let win = ssim_window(shape);
    let n = (win * win) as f64;
    let cov_norm = if n > 1.0 { n / (n - 1.0) } else { 1.0 };
    let c1 = (K1 * DATA_RANGE).powi(2);
    let c2 = (K2 * DATA_RANGE).powi(2);
    // Summed-area tables with a zero first row and column: (h + 1) × (w + 1).
    let stride = w + 1;
    let mut total = 0.0;
    let mut count = 0usize;
    let mut tables = vec![[0.0f64; 5]; (h + 1) * stride];
    for ch in 0..c {
        for r in 0..h {
            for col in 0..w {
                let a = x[(r * w + col) * c + ch] as f64;
                let b = truth[(r * w + col) * c + ch] as f64;
                let here = [a, b, a * a, b * b, a * b];
                let up = tables[r * stride + col + 1];
                let left = tables[(r + 1) * stride + col];
                let diag = tables[r * stride + col];
                let cell = &mut tables[(r + 1) * stride + col + 1];
                for q in 0..5 {
                    cell[q] = here[q] + up[q] + left[q] - diag[q];
                }
            }
        }
        for r in 0..=h - win {
            for col in 0..=w - win {
                let (r1, c1i) = (r + win, col + win);
                let mut s = [0.0; 5];
                for (q, sq) in s.iter_mut().enumerate() {
                    *sq = tables[r1 * stride + c1i][q]
                        - tables[r * stride + c1i][q]
                        - tables[r1 * stride + col][q]
                        + tables[r * stride + col][q];
                }
                let (mx, my) = (s[0] / n, s[1] / n);
                let vx = cov_norm * (s[2] / n - mx * mx);
                let vy = cov_norm * (s[3] / n - my * my);
                let vxy = cov_norm * (s[4] / n - mx * my);
                total += (2.0 * mx * my + c1) * (2.0 * vxy + c2)
                    / ((mx * mx + my * my + c1) * (vx + vy + c2));
                count += 1;
            }
        }
    }
    total / count.max(1) as f64
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// SSIM by its definition: every window's moments summed directly, two-pass variance.
    fn ssim_direct(x: &[f32], y: &[f32], shape: ImageShape) -> f64 {
        let (h, w, c) = (shape.height, shape.width, shape.channels);
        let win = 7;
        let n = 49.0;
        let c1 = (0.01f64 * 2.0).powi(2);
        let c2 = (0.03f64 * 2.0).powi(2);
        let mut vals = Vec::new();
        for ch in 0..c {
            for r in 0..=h - win {
                for col in 0..=w - win {
                    let px = |img: &[f32], i: usize, j: usize| {
                        img[((r + i) * w + col + j) * c + ch] as f64
                    };
                    let (mut mx, mut my) = (0.0, 0.0);
                    for i in 0..win {
                        for j in 0..win {
                            mx += px(x, i, j) / n;
                            my += px(y, i, j) / n;
                        }
                    }
                    let (mut vx, mut vy, mut vxy) = (0.0, 0.0, 0.0);
                    for i in 0..win {
                        for j in 0..win {
                            let (a, b) = (px(x, i, j) - mx, px(y, i, j) - my);
                            vx += a * a / (n - 1.0);
                            vy += b * b / (n - 1.0);
                            vxy += a * b / (n - 1.0);
                        }
                    }
                    vals.push(
                        (2.0 * mx * my + c1) * (2.0 * vxy + c2)
                            / ((mx * mx + my * my + c1) * (vx + vy + c2)),
                    );
                }
            }
        }
        vals.iter().sum::<f64>() / vals.len() as f64
    }

    #[test]
    fn identical_images_have_ssim_one_and_infinite_psnr() {
        let shape = ImageShape::new(9, 11, 3);
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(1);
        let x: Vec<f32> = (0..shape.dim())
            .map(|_| rng.random_range(-1.0..1.0))
            .collect();
        assert!((ssim(&x, &x, shape) - 1.0).abs() < 1e-12);
        assert_eq!(psnr(&x, &x), f64::INFINITY);
    }

    #[test]
    fn constant_offset_gives_the_closed_form_psnr() {
        // MSE = δ², so PSNR = 10 log10(4 / δ²) = 20 log10(2/δ); δ = 0.2 → 20 dB.
        let x = vec![0.1f32; 64];
        let y: Vec<f32> = x.iter().map(|v| v - 0.2).collect();
        assert!((psnr(&x, &y) - 20.0).abs() < 1e-5, "{}", psnr(&x, &y));
        // And SSIM of a constant offset on flat images: only the luminance term differs:
        // (2 μx μy + C1)/(μx² + μy² + C1) with μx = 0.1, μy = −0.1.
        let shape = ImageShape::new(8, 8, 1);
        let c1 = 0.02f64 * 0.02;
        let (mx, my) = (0.1f32 as f64, (0.1f32 - 0.2f32) as f64);
        let want = (2.0 * mx * my + c1) / (mx * mx + my * my + c1);
        assert!((ssim(&x, &y, shape) - want).abs() < 1e-9);
    }

    #[test]
    fn ssim_matches_a_direct_float64_window_sum() {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(7);
        for shape in [ImageShape::new(12, 10, 1), ImageShape::new(9, 13, 3)] {
            let x: Vec<f32> = (0..shape.dim())
                .map(|_| rng.random_range(-1.0..1.0))
                .collect();
            // A correlated pair: y = 0.7 x + noise, so SSIM sits well inside (0, 1).
            let y: Vec<f32> = x
                .iter()
                .map(|&v| (0.7 * v + 0.3 * rng.random_range(-1.0f32..1.0)).clamp(-1.0, 1.0))
                .collect();
            let got = ssim(&x, &y, shape);
            let want = ssim_direct(&x, &y, shape);
            assert!((got - want).abs() < 1e-10, "{got} vs {want}");
            assert!(got > 0.2 && got < 0.99, "{got}");
        }
    }
}

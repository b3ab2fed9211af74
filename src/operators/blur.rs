//! Deblurring: a separable Gaussian blur with zero padding outside the image.

use super::{Gram, MeasurementView, Operator, spec_error};
use crate::data::ImageShape;

/// y[i, j, c] = Σ_{|u|,|v|≤ρ} g_u g_v x[i + u, j + v, c], with x = 0 outside the image (zero
/// padding), ρ = (size − 1)/2 and g_u = exp(−u²/(2σ²)) / Σ_{|u'|≤ρ} exp(−u'²/(2σ²)), so the
/// 2-D kernel g_u g_v sums to 1 and an interior pixel (≥ ρ from every edge) of a constant
/// image stays constant. The kernel is symmetric and the padding is zero, so A is a symmetric
/// matrix and Aᵀ = A exactly. m = D. Spec `blur:sigma=1.5,size=9`.
#[derive(Clone, Debug)]
pub struct GaussianBlur {
    shape: ImageShape,
    sigma: f64,
    size: usize,
    /// g_{−ρ} … g_ρ.
    kernel: Vec<f64>,
}

impl GaussianBlur {
    /// The kernel size used when the spec gives none: 2·⌈3σ⌉ + 1 (±3σ).
    pub fn default_size(sigma: f64) -> usize {
        if sigma.is_finite() && sigma > 0.0 && sigma < 1e4 {
            2 * (3.0 * sigma).ceil() as usize + 1
        } else {
            1
        }
    }

    /// Fails unless σ is a positive finite number and size an odd integer in 1..=1001.
    pub fn new(shape: ImageShape, sigma: f64, size: usize) -> crate::Result<Self> {
        let spec = format!("blur:sigma={sigma},size={size}");
        if !(sigma.is_finite() && sigma > 0.0) {
            return Err(spec_error(
                &spec,
                format!("parameter `sigma` = {sigma} must be a positive number"),
            ));
        }
        if size.is_multiple_of(2) || size > 1001 {
            return Err(spec_error(
                &spec,
                format!("parameter `size` = {size} must be an odd integer from 1 to 1001"),
            ));
        }
        let rho = (size / 2) as f64;
        let raw: Vec<f64> = (0..size)
            .map(|i| {
                let u = i as f64 - rho;
                (-u * u / (2.0 * sigma * sigma)).exp()
            })
            .collect();
        let total: f64 = raw.iter().sum();
        let kernel = raw.into_iter().map(|g| g / total).collect();
        Ok(GaussianBlur {
            shape,
            sigma,
            size,
            kernel,
        })
    }

    /// Applies the (symmetric) blur matrix, in f64.
    fn apply(&self, x: &[f32], out: &mut [f32]) {
        let (h, w, c) = (self.shape.height, self.shape.width, self.shape.channels);
        let rho = self.size / 2;
        // Horizontal pass into f64, then vertical pass; zero padding = skipping taps outside.
        let mut tmp = vec![0.0f64; h * w * c];
        for i in 0..h {
            for j in 0..w {
                let lo = j.saturating_sub(rho);
                let hi = (j + rho).min(w - 1);
                let t = &mut tmp[(i * w + j) * c..(i * w + j + 1) * c];
                for jj in lo..=hi {
                    let g = self.kernel[jj + rho - j];
                    let src = &x[(i * w + jj) * c..(i * w + jj + 1) * c];
                    for (a, &v) in t.iter_mut().zip(src) {
                        *a += g * f64::from(v);
                    }
                }
            }
        }
        let mut acc = vec![0.0f64; c];
        for i in 0..h {
            let lo = i.saturating_sub(rho);
            let hi = (i + rho).min(h - 1);
            for j in 0..w {
                acc.fill(0.0);
                for ii in lo..=hi {
                    let g = self.kernel[ii + rho - i];
                    let src = &tmp[(ii * w + j) * c..(ii * w + j + 1) * c];
                    for (a, &v) in acc.iter_mut().zip(src) {
                        *a += g * v;
                    }
                }
                for (o, &a) in out[(i * w + j) * c..(i * w + j + 1) * c]
                    .iter_mut()
                    .zip(&acc)
                {
                    *o = a as f32;
                }
            }
        }
    }
}

impl Operator for GaussianBlur {
    fn spec(&self) -> String {
        format!("blur:sigma={},size={}", self.sigma, self.size)
    }
    fn input_shape(&self) -> ImageShape {
        self.shape
    }
    fn output_len(&self) -> usize {
        self.shape.dim()
    }
    fn is_linear(&self) -> bool {
        true
    }
    fn gram(&self) -> Gram {
        Gram::General
    }
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        self.apply(x, out);
    }
    /// Aᵀ = A: symmetric kernel, zero padding.
    fn adjoint(&self, _x: &[f32], r: &[f32], out: &mut [f32]) {
        self.apply(r, out);
    }
    /// The blurred image y itself.
    fn view(&self, y: &[f32]) -> Option<MeasurementView> {
        Some(MeasurementView {
            shape: self.shape,
            pixels: y.to_vec(),
        })
    }
}

//! Fourier phase retrieval: only the magnitudes of an oversampled 2-D DFT are measured.

use std::sync::Arc;

use rustfft::num_complex::Complex64;
use rustfft::{Fft, FftPlanner};

use super::{Gram, MeasurementView, Operator, spec_error};
use crate::data::ImageShape;

/// y = |F x| per channel. Each channel x_c (H×W) is zero-padded at the bottom and right to
/// P×Q = (oH)×(oW) and transformed by the unitary 2-D DFT
///   (F x_c)[u, v] = (1/√(PQ)) Σ_{p<H, q<W} x_c[p, q] e^{−2πi(up/P + vq/Q)},
/// so Σ_k y_k² = ‖x‖² (Parseval). All P·Q frequencies are kept: m = C·P·Q, stored in HWC
/// order, y[(u·Q + v)·C + c] = |(F x_c)[u, v]|.
///
/// A is nonlinear; its transposed Jacobian at x is
///   J_A(x)ᵀ r = Re(F^H(r ⊙ φ)) restricted to the unpadded support, φ = Fx / |Fx|,
/// with φ := 0 where |Fx| = 0 exactly (|·| has no derivative there; 0 is the minimum-norm
/// subgradient). Everything is computed in float64 and rounded to f32 at the end.
/// Spec `phase-retrieval:oversample=2`.
pub struct PhaseRetrieval {
    shape: ImageShape,
    oversample: usize,
    p: usize,
    q: usize,
    row_fwd: Arc<dyn Fft<f64>>,
    col_fwd: Arc<dyn Fft<f64>>,
    row_inv: Arc<dyn Fft<f64>>,
    col_inv: Arc<dyn Fft<f64>>,
}

impl PhaseRetrieval {
    /// Fails unless 1 ≤ oversample ≤ 8.
    pub fn new(shape: ImageShape, oversample: usize) -> crate::Result<Self> {
        if !(1..=8).contains(&oversample) {
            return Err(spec_error(
                &format!("phase-retrieval:oversample={oversample}"),
                "parameter `oversample` must be an integer from 1 to 8 (2 is the usual choice)",
            ));
        }
        let (p, q) = (oversample * shape.height, oversample * shape.width);
        let mut planner = FftPlanner::<f64>::new();
        Ok(PhaseRetrieval {
            shape,
            oversample,
            p,
            q,
            row_fwd: planner.plan_fft_forward(q),
            col_fwd: planner.plan_fft_forward(p),
            row_inv: planner.plan_fft_inverse(q),
            col_inv: planner.plan_fft_inverse(p),
        })
    }

    /// Shape of the magnitude image, (oH)×(oW)×C.
    pub fn output_shape(&self) -> ImageShape {
        ImageShape::new(self.p, self.q, self.shape.channels)
    }

    /// F x_c for every channel, each stored transposed (Q×P: index v·P + u), in float64.
    fn spectrum(&self, x: &[f64]) -> Vec<Vec<Complex64>> {
        let (h, w, c) = (self.shape.height, self.shape.width, self.shape.channels);
        let (p, q) = (self.p, self.q);
        let norm = 1.0 / ((p * q) as f64).sqrt();
        (0..c)
            .map(|ch| {
                // Rows p ≥ H are all zero, so only the first H rows need a row transform.
                let mut rows = vec![Complex64::new(0.0, 0.0); h * q];
                for i in 0..h {
                    for j in 0..w {
                        rows[i * q + j] = Complex64::new(x[(i * w + j) * c + ch] * norm, 0.0);
                    }
                }
                self.row_fwd.process(&mut rows);
                let mut cols = vec![Complex64::new(0.0, 0.0); q * p];
                for i in 0..h {
                    for v in 0..q {
                        cols[v * p + i] = rows[i * q + v];
                    }
                }
                self.col_fwd.process(&mut cols);
                cols
            })
            .collect()
    }

    /// A(x) in float64.
    pub(crate) fn magnitudes(&self, x: &[f64]) -> Vec<f64> {
        let c = self.shape.channels;
        let (p, q) = (self.p, self.q);
        let mut y = vec![0.0; c * p * q];
        for (ch, spec) in self.spectrum(x).iter().enumerate() {
            for u in 0..p {
                for v in 0..q {
                    y[(u * q + v) * c + ch] = spec[v * p + u].norm();
                }
            }
        }
        y
    }

    /// J_A(x)ᵀ r in float64.
    pub(crate) fn jacobian_transpose(&self, x: &[f64], r: &[f64]) -> Vec<f64> {
        let (h, w, c) = (self.shape.height, self.shape.width, self.shape.channels);
        let (p, q) = (self.p, self.q);
        let norm = 1.0 / ((p * q) as f64).sqrt();
        let mut out = vec![0.0; h * w * c];
        for (ch, mut z) in self.spectrum(x).into_iter().enumerate() {
            // z ← r ⊙ Fx/|Fx| (0 where Fx = 0), still transposed.
            for v in 0..q {
                for u in 0..p {
                    let f = z[v * p + u];
                    let a = f.norm();
                    z[v * p + u] = if a > 0.0 {
                        f * (r[(u * q + v) * c + ch] / a)
                    } else {
                        Complex64::new(0.0, 0.0)
                    };
                }
            }
            // F^H = (1/√(PQ)) · unnormalised inverse DFT along u, then along v; only the
            // rows p < H and columns q < W of the result are kept.
            self.col_inv.process(&mut z);
            let mut rows = vec![Complex64::new(0.0, 0.0); h * q];
            for i in 0..h {
                for v in 0..q {
                    rows[i * q + v] = z[v * p + i];
                }
            }
            self.row_inv.process(&mut rows);
            for i in 0..h {
                for j in 0..w {
                    out[(i * w + j) * c + ch] = rows[i * q + j].re * norm;
                }
            }
        }
        out
    }
}

impl Operator for PhaseRetrieval {
    fn spec(&self) -> String {
        format!("phase-retrieval:oversample={}", self.oversample)
    }
    fn input_shape(&self) -> ImageShape {
        self.shape
    }
    fn output_len(&self) -> usize {
        self.shape.channels * self.p * self.q
    }
    fn is_linear(&self) -> bool {
        false
    }
    fn gram(&self) -> Gram {
        Gram::General
    }
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        for (o, v) in out.iter_mut().zip(self.magnitudes(&xd)) {
            *o = v as f32;
        }
    }
    fn adjoint(&self, x: &[f32], r: &[f32], out: &mut [f32]) {
        let xd: Vec<f64> = x.iter().map(|&v| f64::from(v)).collect();
        let rd: Vec<f64> = r.iter().map(|&v| f64::from(v)).collect();
        for (o, v) in out.iter_mut().zip(self.jacobian_transpose(&xd, &rd)) {
            *o = v as f32;
        }
    }
    /// The magnitude image (oH)×(oW)×C with the zero frequency moved to the centre, shown as
    /// log(1 + |y|) stretched to [-1, 1].
    fn view(&self, y: &[f32]) -> Option<MeasurementView> {
        let (p, q, c) = (self.p, self.q, self.shape.channels);
        let mut pixels = vec![0.0f32; c * p * q];
        for a in 0..p {
            for b in 0..q {
                let (u, v) = ((a + p / 2) % p, (b + q / 2) % q);
                for ch in 0..c {
                    pixels[(a * q + b) * c + ch] = y[(u * q + v) * c + ch].max(0.0).ln_1p();
                }
            }
        }
        super::dense::stretch_to_unit_range(&mut pixels);
        Some(MeasurementView {
            shape: self.output_shape(),
            pixels,
        })
    }
}

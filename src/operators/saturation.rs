//! Sensor saturation: a smooth elementwise clipping y = tanh(g·x).

use super::{Gram, MeasurementView, Operator, spec_error};
use crate::data::ImageShape;

/// y_k = tanh(g·x_k) for gain g > 0 (m = D); nonlinear, with
///   J_A(x)ᵀ r = g (1 − tanh²(g x)) ⊙ r.
/// Computed in float64 and rounded to f32. Spec `saturation:gain=2`.
#[derive(Clone, Debug)]
pub struct Saturation {
    shape: ImageShape,
    gain: f64,
}

impl Saturation {
    /// Fails unless the gain is a positive finite number.
    pub fn new(shape: ImageShape, gain: f64) -> crate::Result<Self> {
        if !(gain.is_finite() && gain > 0.0) {
            return Err(spec_error(
                &format!("saturation:gain={gain}"),
                format!("parameter `gain` = {gain} must be a positive number"),
            ));
        }
        Ok(Saturation { shape, gain })
    }

    /// tanh(g v).
    fn value(&self, v: f64) -> f64 {
        (self.gain * v).tanh()
    }

    /// d tanh(g v)/dv = g (1 − tanh²(g v)).
    fn slope(&self, v: f64) -> f64 {
        let t = (self.gain * v).tanh();
        self.gain * (1.0 - t * t)
    }

    /// A(x) in float64 (the f32 [`Operator::forward`] rounds exactly these values).
    #[cfg(test)]
    pub(crate) fn apply(&self, x: &[f64]) -> Vec<f64> {
        x.iter().map(|&v| self.value(v)).collect()
    }
}

impl Operator for Saturation {
    fn spec(&self) -> String {
        format!("saturation:gain={}", self.gain)
    }
    fn input_shape(&self) -> ImageShape {
        self.shape
    }
    fn output_len(&self) -> usize {
        self.shape.dim()
    }
    fn is_linear(&self) -> bool {
        false
    }
    fn gram(&self) -> Gram {
        Gram::General
    }
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        for (o, &v) in out.iter_mut().zip(x) {
            *o = self.value(f64::from(v)) as f32;
        }
    }
    fn adjoint(&self, x: &[f32], r: &[f32], out: &mut [f32]) {
        for ((o, &v), &rk) in out.iter_mut().zip(x).zip(r) {
            *o = (self.slope(f64::from(v)) * f64::from(rk)) as f32;
        }
    }
    /// The saturated image y itself (already in [-1, 1]).
    fn view(&self, y: &[f32]) -> Option<MeasurementView> {
        Some(MeasurementView {
            shape: self.shape,
            pixels: y.to_vec(),
        })
    }
}

//! The VP-SDE forward process with a linear β schedule, and reverse-time integration.
//!
//! β(t) = β_min + t(β_max − β_min),  ᾱ(t) = exp(−β_min t − ½(β_max − β_min) t²),
//! s(t) = √ᾱ(t), v(t) = 1 − ᾱ(t);  x_t | x_0 ~ N(s x_0, v I)   (design §2).

pub mod discrete;
pub mod integrate;

use crate::engine::Noise;
use crate::{Error, Result};

/// Linear-β VP schedule.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Schedule {
    pub beta_min: f64,
    pub beta_max: f64,
}

impl Default for Schedule {
    /// β_min = 0.01, β_max = 20: the seed paper's code defaults.
    fn default() -> Self {
        Schedule {
            beta_min: 0.01,
            beta_max: 20.0,
        }
    }
}

impl Schedule {
    /// The schedule β_min, β_max, checked (β_min > 0, β_max ≥ β_min); `keys` are the names of
    /// the two values in errors (config keys or flags).
    pub fn new(beta_min: f64, beta_max: f64, keys: [&str; 2]) -> Result<Self> {
        if !(beta_min.is_finite() && beta_min > 0.0) {
            return Err(Error::config(
                keys[0],
                format!("must be > 0, got {beta_min}"),
            ));
        }
        if !(beta_max.is_finite() && beta_max >= beta_min) {
            return Err(Error::config(
                keys[1],
                format!("must be finite and ≥ beta_min = {beta_min}, got {beta_max}"),
            ));
        }
        Ok(Schedule { beta_min, beta_max })
    }

    /// β(t).
    pub fn beta(&self, t: f64) -> f64 {
        self.beta_min + t * (self.beta_max - self.beta_min)
    }

    /// log ᾱ(t) = −β_min t − ½(β_max − β_min) t².
    pub fn log_alpha_bar(&self, t: f64) -> f64 {
        -self.beta_min * t - 0.5 * (self.beta_max - self.beta_min) * t * t
    }

    /// The time whose log ᾱ(t) equals `log_alpha_bar` (≤ 0): the positive root of
    /// ½(β_max − β_min) t² + β_min t + log ᾱ = 0, written 2c/(b + √(b² + 4ac)) so that it
    /// stays exact when β_max = β_min. Maps a discrete level to the continuous time with the
    /// same noise (it can exceed 1 when ᾱ is below ᾱ(1)).
    pub fn time_of_log_alpha_bar(&self, log_alpha_bar: f64) -> f64 {
        let c = -log_alpha_bar;
        let b = self.beta_min;
        let two_a = self.beta_max - self.beta_min;
        2.0 * c / (b + (b * b + 2.0 * two_a * c).sqrt())
    }

    /// s(t) = √ᾱ(t) and v(t) = 1 − ᾱ(t); v by expm1 so that it keeps full precision near t = 0
    /// (v ≈ β_min t ≈ 1e-5 at t = 1e-3, where 1 − ᾱ would lose four digits).
    pub fn noise(&self, t: f64) -> Noise {
        let la = self.log_alpha_bar(t);
        Noise {
            s: (0.5 * la).exp(),
            v: -la.exp_m1(),
        }
    }
}

/// Checks that t lies in (0, 1], naming the flag or key it came from.
pub fn check_time(key: &str, t: f64) -> Result<()> {
    if t.is_finite() && t > 0.0 && t <= 1.0 {
        Ok(())
    } else {
        Err(Error::config(
            key,
            format!("time must lie in (0, 1], got {t}"),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEYS: [&str; 2] = ["beta_min", "beta_max"];

    #[test]
    fn noise_matches_closed_form_and_derivative() {
        let s = Schedule::default();
        for &t in &[1e-3, 0.05, 0.3, 0.9, 1.0] {
            let n = s.noise(t);
            let ab = (-0.01 * t - 0.5 * 19.99 * t * t).exp();
            assert!((n.s * n.s - ab).abs() < 1e-15);
            assert!((n.v - (1.0 - ab)).abs() <= 1e-15 + 1e-12 * n.v);
            // d log ᾱ / dt = −β(t), checked by central differences.
            let h = 1e-6;
            let fd = (s.log_alpha_bar(t + h) - s.log_alpha_bar(t - h)) / (2.0 * h);
            assert!((fd + s.beta(t)).abs() < 1e-6 * s.beta(t));
        }
        for &t in &[1e-3, 0.3, 1.0] {
            let back = s.time_of_log_alpha_bar(s.log_alpha_bar(t));
            assert!((back - t).abs() < 1e-12 * t.max(1e-3), "{t} → {back}");
        }
        let flat = Schedule::new(0.5, 0.5, KEYS).unwrap();
        assert!((flat.time_of_log_alpha_bar(-0.25) - 0.5).abs() < 1e-15);
        // Near t = 0, v ≈ β_min t to first order.
        let n = s.noise(1e-3);
        assert!((n.v / (0.01e-3 + 0.5 * 19.99e-6) - 1.0).abs() < 1e-3);
    }

    #[test]
    fn bad_schedule_and_times_are_errors() {
        assert!(Schedule::new(0.0, 20.0, KEYS).is_err());
        assert!(Schedule::new(1.0, 0.5, KEYS).is_err());
        assert!(check_time("t", 0.0).is_err());
        assert!(check_time("t", 1.5).is_err());
        assert!(check_time("t", f64::NAN).is_err());
        assert!(check_time("t", 1.0).is_ok());
    }
}

//! A diagonal measurement noise Σ = diag(σ_j²) by whitening (design §2): the likelihood
//! −½ Σ_j (y_j − A(x)_j)²/σ_j² is the σ = 1 likelihood of y_j/σ_j under the operator
//! A(x)_j/σ_j, so every sampler, the exact posterior and the data fit run unchanged on the
//! whitened problem. This holds for a nonlinear A too: its Jacobian row j scales by 1/σ_j.

use std::path::Path;
use std::sync::Arc;

use super::{Gram, MeasurementView, Operator, check_sigma};
use crate::{Error, Result};

/// A(x)_j / σ_j; the adjoint J_A(x)ᵀ (r_j / σ_j).
pub struct Whitened {
    inner: Arc<dyn Operator>,
    sigma: Vec<f64>,
}

impl Whitened {
    /// Wraps `inner` with the per-entry noise `sigma` (m values, each checked by
    /// [`read_sigma`] or the caller).
    pub fn new(inner: Arc<dyn Operator>, sigma: Vec<f64>) -> Result<Self> {
        if sigma.len() != inner.output_len() {
            return Err(Error::input(format!(
                "{} per-entry σ values for operator `{}` with m = {} outputs",
                sigma.len(),
                inner.spec(),
                inner.output_len()
            )));
        }
        Ok(Whitened { inner, sigma })
    }

    pub fn sigma(&self) -> &[f64] {
        &self.sigma
    }
}

/// Divides each row (m values) of `rows` by σ_j entry-wise, in float64.
pub fn whiten_rows(rows: &mut [f32], sigma: &[f64]) {
    for row in rows.chunks_mut(sigma.len().max(1)) {
        for (v, s) in row.iter_mut().zip(sigma) {
            *v = (*v as f64 / s) as f32;
        }
    }
}

/// Reads the per-entry noise σ_j (m positive values, float32 or float64, any shape with m
/// entries) from `path` for `operator`, naming `key` in every refusal: a wrong length (with the
/// expected m and the operator) or a σ_j that is not a positive number float32 can square
/// ([`check_sigma`], with its index).
pub fn read_sigma(path: &Path, operator: &dyn Operator, key: &str) -> Result<Vec<f64>> {
    let a = crate::arrays::read_npy(path).map_err(|e| e.for_file_key(key))?;
    let m = operator.output_len();
    if a.len() != m {
        return Err(Error::config(
            key,
            format!(
                "{} holds {} values (shape {:?}) but operator `{}` measures m = {m} values; \
                 save one σ_j per entry of y (numpy.save(path, sigma) with sigma.size == {m})",
                path.display(),
                a.len(),
                a.shape,
                operator.spec()
            ),
        ));
    }
    for (j, &s) in a.data.iter().enumerate() {
        check_sigma(s, key).map_err(|e| match e {
            Error::Config { problem, .. } => {
                Error::config(key, format!("entry {j} of {}: {problem}", path.display()))
            }
            other => other,
        })?;
    }
    Ok(a.data)
}

impl Operator for Whitened {
    fn spec(&self) -> String {
        self.inner.spec()
    }
    fn input_shape(&self) -> crate::data::ImageShape {
        self.inner.input_shape()
    }
    fn output_len(&self) -> usize {
        self.inner.output_len()
    }
    fn is_linear(&self) -> bool {
        self.inner.is_linear()
    }
    /// Row scaling destroys A Aᵀ = c I unless every σ_j is equal (then c/σ²).
    fn gram(&self) -> Gram {
        match self.inner.gram() {
            Gram::ScaledIdentity(c) if self.sigma.iter().all(|&s| s == self.sigma[0]) => {
                Gram::ScaledIdentity(c / (self.sigma[0] * self.sigma[0]))
            }
            _ => Gram::General,
        }
    }
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        self.inner.forward(x, out);
        whiten_rows(out, &self.sigma);
    }
    fn adjoint(&self, x: &[f32], r: &[f32], out: &mut [f32]) {
        let mut scaled = r.to_vec();
        whiten_rows(&mut scaled, &self.sigma);
        self.inner.adjoint(x, &scaled, out);
    }
    /// The measurement on its own scale: y_j σ_j.
    fn view(&self, y: &[f32]) -> Option<MeasurementView> {
        let raw: Vec<f32> = y
            .iter()
            .zip(&self.sigma)
            .map(|(&v, &s)| (v as f64 * s) as f32)
            .collect();
        self.inner.view(&raw)
    }
    fn forward_batch(&self, xs: &[f32], out: &mut [f32]) {
        self.inner.forward_batch(xs, out);
        whiten_rows(out, &self.sigma);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::ImageShape;
    use crate::operators::{Identity, Saturation, box_inpainting};

    #[test]
    fn forward_and_adjoint_scale_by_one_over_sigma_and_stay_adjoint() {
        let shape = ImageShape::new(3, 3, 1);
        let sigma: Vec<f64> = (0..9).map(|j| 0.1 + 0.05 * j as f64).collect();
        let x: Vec<f32> = (0..9).map(|j| (j as f32 * 0.37).sin()).collect();
        let r: Vec<f32> = (0..9).map(|j| (j as f32 * 0.91).cos()).collect();
        for inner in [
            Box::new(Identity::new(shape)) as Box<dyn Operator>,
            Box::new(Saturation::new(shape, 2.0).unwrap()),
        ] {
            let mut raw = vec![0.0f32; 9];
            inner.forward(&x, &mut raw);
            let w = Whitened::new(Arc::from(inner), sigma.clone()).unwrap();
            let mut fx = vec![0.0f32; 9];
            w.forward(&x, &mut fx);
            for j in 0..9 {
                assert!((fx[j] as f64 - raw[j] as f64 / sigma[j]).abs() < 1e-6);
            }
            // ⟨J x', r⟩ = ⟨x', Jᵀ r⟩ by finite differences of the whitened forward map.
            let mut jt_r = vec![0.0f32; 9];
            w.adjoint(&x, &r, &mut jt_r);
            let h = 1e-3f32;
            for i in 0..9 {
                let (mut up, mut down) = (x.clone(), x.clone());
                up[i] += h;
                down[i] -= h;
                let (mut fu, mut fd) = (vec![0.0f32; 9], vec![0.0f32; 9]);
                w.forward(&up, &mut fu);
                w.forward(&down, &mut fd);
                let fdiff: f64 = (0..9)
                    .map(|j| (fu[j] - fd[j]) as f64 / (2.0 * h as f64) * r[j] as f64)
                    .sum();
                assert!(
                    (fdiff - jt_r[i] as f64).abs() < 2e-2,
                    "{i}: {fdiff} {}",
                    jt_r[i]
                );
            }
        }
        // The Gram structure survives only equal σ_j.
        let mask = box_inpainting(shape, 0, 0, 1, 1).unwrap();
        let m = mask.output_len();
        assert_eq!(
            Whitened::new(Arc::new(mask), vec![0.5; m]).unwrap().gram(),
            Gram::ScaledIdentity(4.0)
        );
        let mask = box_inpainting(shape, 0, 0, 1, 1).unwrap();
        let uneven: Vec<f64> = (0..m).map(|j| 0.5 + j as f64).collect();
        assert_eq!(
            Whitened::new(Arc::new(mask), uneven).unwrap().gram(),
            Gram::General
        );
    }

    #[test]
    fn sigma_files_are_checked_naming_the_key() {
        let dir = std::env::temp_dir().join(format!("fslens-whitened-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let shape = ImageShape::new(2, 2, 1);
        let op = Identity::new(shape);
        let write = |name: &str, v: &[f64]| {
            let p = dir.join(name);
            crate::arrays::write_npy(&p, &[v.len()], v).unwrap();
            p
        };
        let good = write("good.npy", &[0.1, 0.2, 0.3, 0.4]);
        assert_eq!(read_sigma(&good, &op, "measurement.sigma").unwrap()[2], 0.3);
        for (name, v, says) in [
            ("short.npy", vec![0.1, 0.2, 0.3], "m = 4"),
            ("zero.npy", vec![0.1, 0.0, 0.3, 0.4], "entry 1"),
            (
                "tiny.npy",
                vec![0.1, 0.2, 1e-30, 0.4],
                "too small for float32",
            ),
        ] {
            let e = read_sigma(&write(name, &v), &op, "measurement.sigma").unwrap_err();
            assert_eq!(e.key(), Some("measurement.sigma"), "{e}");
            assert!(e.to_string().contains(says), "{name}: {e}");
        }
        let e = read_sigma(&dir.join("missing.npy"), &op, "measurement.sigma").unwrap_err();
        assert!(e.to_string().contains("missing.npy"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

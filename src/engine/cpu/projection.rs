//! A per-atom distance lower bound for certified pruning, from a few principal directions.
//!
//! For an orthonormal basis U (p × D, p ≪ D) and the residual projector R = I − UᵀU,
//!
//!   ‖x − s a‖² = ‖U x − s U a‖² + ‖R x − s R a‖² ≥ ‖U x − s U a‖² + (‖R x‖ − s‖R a‖)²
//!
//! (Pythagoras, then the reverse triangle inequality in the residual space). With U a and
//! ‖R a‖ kept per atom (float64) this costs p multiply-adds per (row, atom) instead of D, and
//! in 784 dimensions it is far tighter than the cluster ball bound of module `prune`, whose
//! radii are set by the clusters' outliers. U spans the top principal directions of (a
//! sample of) the atoms, found by subspace iteration; any orthonormal U gives a valid bound,
//! a good one a tight bound. Everything is float64 (U orthonormalised by modified
//! Gram–Schmidt in float64, residuals by direct differences), and the bound is lowered by
//! 1e-9 relative to cover its rounding.

use rand::{Rng, SeedableRng};
use rand_distr::StandardNormal;
use rayon::prelude::*;

use super::gemm::gemm_rm;

/// Principal directions kept.
pub(super) const DIRECTIONS: usize = 16;
/// Atoms sampled for the covariance.
const SAMPLE: usize = 8192;
/// Subspace iterations.
const ITERATIONS: usize = 12;
/// Relative lowering of the bound for float64 rounding.
const MARGIN: f64 = 1e-9;

/// The basis and every atom's coordinates in it.
pub(super) struct Projection {
    p: usize,
    d: usize,
    /// p × D, orthonormal rows.
    basis: Vec<f64>,
    /// N × p: U a_i (storage order).
    coords: Vec<f64>,
    /// ‖R a_i‖ (storage order).
    resid: Vec<f64>,
}

/// One row's coordinates: U x and ‖R x‖.
pub(super) struct RowCoords {
    ux: Vec<f64>,
    rx: f64,
}

impl Projection {
    /// The basis of the top principal directions of the N × `d` `atoms` (storage order) and
    /// their coordinates; runs on `pool`.
    pub(super) fn new(atoms: &[f32], d: usize, seed: u64, pool: &rayon::ThreadPool) -> Self {
        let n = atoms.len() / d;
        let p = DIRECTIONS.min(d);
        let basis = principal_basis(atoms, d, p, seed);
        let per: Vec<(Vec<f64>, f64)> = pool.install(|| {
            atoms
                .par_chunks(d)
                .map(|a| {
                    let (ua, ra) = project(&basis, a, d, p);
                    (ua, ra)
                })
                .collect()
        });
        let mut coords = Vec::with_capacity(n * p);
        let mut resid = Vec::with_capacity(n);
        for (ua, ra) in per {
            coords.extend(ua);
            resid.push(ra);
        }
        Projection {
            p,
            d,
            basis,
            coords,
            resid,
        }
    }

    pub(super) fn row(&self, x: &[f32]) -> RowCoords {
        let (ux, rx) = project(&self.basis, x, self.d, self.p);
        RowCoords { ux, rx }
    }

    /// A lower bound on ‖x − s a_i‖² (module docs), i in storage order.
    pub(super) fn lower_d2(&self, row: &RowCoords, s: f64, i: usize) -> f64 {
        let ua = &self.coords[i * self.p..(i + 1) * self.p];
        let mut proj = 0.0;
        for (&x, &a) in row.ux.iter().zip(ua) {
            let e = x - s * a;
            proj += e * e;
        }
        let r = row.rx - s * self.resid[i];
        (proj + r * r) * (1.0 - MARGIN)
    }
}

/// U v and ‖v − Uᵀ U v‖ by direct differences, in float64.
fn project(basis: &[f64], v: &[f32], d: usize, p: usize) -> (Vec<f64>, f64) {
    let uv: Vec<f64> = basis
        .chunks(d)
        .map(|u| u.iter().zip(v).map(|(&u, &x)| u * x as f64).sum())
        .collect();
    let mut r2 = 0.0;
    for j in 0..d {
        let back: f64 = (0..p).map(|k| basis[k * d + j] * uv[k]).sum();
        let e = v[j] as f64 - back;
        r2 += e * e;
    }
    (uv, r2.sqrt())
}

/// p orthonormal rows spanning (approximately) the top principal directions: the covariance
/// of up to [`SAMPLE`] atoms (one float32 GEMM), then subspace iteration in float64.
fn principal_basis(atoms: &[f32], d: usize, p: usize, seed: u64) -> Vec<f64> {
    let n = atoms.len() / d;
    let step = n.div_ceil(SAMPLE).max(1);
    let rows: Vec<usize> = (0..n).step_by(step).collect();
    let m = rows.len();
    let mut mean = vec![0.0f64; d];
    for &i in &rows {
        for (s, &v) in mean.iter_mut().zip(&atoms[i * d..(i + 1) * d]) {
            *s += v as f64;
        }
    }
    mean.iter_mut().for_each(|v| *v /= m as f64);
    let centred: Vec<f32> = rows
        .iter()
        .flat_map(|&i| {
            atoms[i * d..(i + 1) * d]
                .iter()
                .zip(&mean)
                .map(|(&v, &mu)| (v as f64 - mu) as f32)
        })
        .collect();
    let mut cov = vec![0.0f32; d * d];
    // SAFETY: cov d × d; lhs = centredᵀ (d × m: row stride 1, column stride d); rhs =
    // centred (m × d, row stride d).
    unsafe {
        gemm_rm(
            d,
            d,
            m,
            cov.as_mut_ptr(),
            d,
            false,
            centred.as_ptr(),
            1,
            d,
            centred.as_ptr(),
            d,
            1,
        );
    }
    let cov: Vec<f64> = cov.iter().map(|&v| v as f64).collect();
    let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
    let mut v: Vec<f64> = (0..p * d).map(|_| rng.sample(StandardNormal)).collect();
    orthonormalise(&mut v, d);
    for _ in 0..ITERATIONS {
        let mut w = vec![0.0f64; p * d];
        for (wk, vk) in w.chunks_mut(d).zip(v.chunks(d)) {
            for (i, o) in wk.iter_mut().enumerate() {
                *o = cov[i * d..(i + 1) * d]
                    .iter()
                    .zip(vk)
                    .map(|(c, x)| c * x)
                    .sum();
            }
        }
        orthonormalise(&mut w, d);
        v = w;
    }
    v
}

/// Modified Gram–Schmidt on the rows (length `d`) of `v`, in place; a row that vanishes is
/// replaced by the first coordinate vector orthogonal enough to the others.
fn orthonormalise(v: &mut [f64], d: usize) {
    let p = v.len() / d;
    for k in 0..p {
        for j in 0..k {
            let (done, rest) = v.split_at_mut(k * d);
            let uj = &done[j * d..(j + 1) * d];
            let vk = &mut rest[..d];
            let dot: f64 = uj.iter().zip(vk.iter()).map(|(a, b)| a * b).sum();
            vk.iter_mut().zip(uj).for_each(|(x, &u)| *x -= dot * u);
        }
        let nrm = v[k * d..(k + 1) * d]
            .iter()
            .map(|x| x * x)
            .sum::<f64>()
            .sqrt();
        if nrm > 1e-12 {
            v[k * d..(k + 1) * d].iter_mut().for_each(|x| *x /= nrm);
        } else {
            // Degenerate (rank below p): a coordinate vector, orthogonalised next round.
            v[k * d..(k + 1) * d].fill(0.0);
            v[k * d + k % d] = 1.0;
            let (done, rest) = v.split_at_mut(k * d);
            let vk = &mut rest[..d];
            for j in 0..k {
                let uj = &done[j * d..(j + 1) * d];
                let dot: f64 = uj.iter().zip(vk.iter()).map(|(a, b)| a * b).sum();
                vk.iter_mut().zip(uj).for_each(|(x, &u)| *x -= dot * u);
            }
            let n2 = vk.iter().map(|x| x * x).sum::<f64>().sqrt();
            if n2 > 1e-12 {
                vk.iter_mut().for_each(|x| *x /= n2);
            } else {
                vk.fill(0.0); // a zero row adds nothing to U x and keeps the bound valid
            }
        }
    }
}

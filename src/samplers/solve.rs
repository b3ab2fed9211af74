//! Linear solves of the two-moment samplers (design §4): one m × m SPD system per particle,
//!
//!   ΠGDM: Σ_y u = r,  Σ_y = σ² I + (v/ᾱ) A Aᵀ,      TMPD: Σ_f u = r,  Σ_f = σ² I + A C Aᵀ,
//!
//! solved matrix-free by conjugate gradients run in lockstep over the rows (each row has its
//! own system; rows that have converged drop out of the matvec, so an expensive matvec — one
//! engine pass for TMPD — only sees the rows still iterating), or densely by Cholesky when the
//! caller has the matrices.

use rayon::prelude::*;

use crate::operators::Operator;
use crate::{Error, Result};

/// Conjugate-gradient settings: stop a row when ‖r_k‖ ≤ tolerance · ‖b‖ (the recursively
/// updated residual), or after `max_iterations`.
#[derive(Clone, Copy, Debug, PartialEq, serde::Serialize)]
pub struct CgOptions {
    pub tolerance: f64,
    pub max_iterations: usize,
}

impl Default for CgOptions {
    fn default() -> Self {
        CgOptions {
            tolerance: 1e-6,
            max_iterations: 100,
        }
    }
}

impl CgOptions {
    /// Checks the ranges; `key` spells a field's name as the user wrote it (config key or
    /// flag) in errors.
    pub fn validate(&self, key: &dyn Fn(&str) -> String) -> Result<()> {
        if !(self.tolerance.is_finite() && self.tolerance > 0.0 && self.tolerance < 1.0) {
            return Err(Error::config(
                key("cg_tolerance"),
                format!(
                    "must lie in (0, 1) (a relative residual, e.g. 1e-6), got {}",
                    self.tolerance
                ),
            ));
        }
        if self.max_iterations == 0 {
            return Err(Error::config(
                key("cg_max_iterations"),
                "must be at least 1 (default 100)",
            ));
        }
        Ok(())
    }
}

/// How one row's solve ended.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct RowSolve {
    pub iterations: usize,
    /// Final ‖r‖/‖b‖ (0 for a zero right-hand side).
    pub residual: f64,
    pub converged: bool,
}

/// Totals over every solve of a run (or of one score call).
#[derive(Clone, Debug, Default, PartialEq)]
pub struct SolveStats {
    pub solves: usize,
    pub iterations: usize,
    pub max_iterations: usize,
    pub max_residual: f64,
    pub not_converged: usize,
    /// Worst final relative residual among the rows that did not converge.
    pub worst_unconverged_residual: f64,
}

impl SolveStats {
    pub fn record(&mut self, rows: &[RowSolve]) {
        for r in rows {
            self.solves += 1;
            self.iterations += r.iterations;
            self.max_iterations = self.max_iterations.max(r.iterations);
            self.max_residual = self.max_residual.max(r.residual);
            if !r.converged {
                self.not_converged += 1;
                self.worst_unconverged_residual = self.worst_unconverged_residual.max(r.residual);
            }
        }
    }

    /// `cg_solves`, `cg_iterations_mean`, `cg_iterations_max`, `cg_residual_max`,
    /// `cg_not_converged` (for summary.json).
    pub fn diagnostics(&self) -> Vec<(String, f64)> {
        let mean = if self.solves == 0 {
            0.0
        } else {
            self.iterations as f64 / self.solves as f64
        };
        vec![
            ("cg_solves".into(), self.solves as f64),
            ("cg_iterations_mean".into(), mean),
            ("cg_iterations_max".into(), self.max_iterations as f64),
            ("cg_residual_max".into(), self.max_residual),
            ("cg_not_converged".into(), self.not_converged as f64),
        ]
    }

    /// A sentence for stderr and summary.json when some solves did not converge.
    pub fn warning(&self, sampler: &str, options: &CgOptions) -> Option<String> {
        (self.not_converged > 0).then(|| {
            format!(
                "{sampler}: {} of {} conjugate-gradient solves stopped at {} iterations above the tolerance {:e} (worst relative residual {:.2e}); raise sampling.cg_max_iterations or loosen sampling.cg_tolerance",
                self.not_converged,
                self.solves,
                options.max_iterations,
                options.tolerance,
                self.worst_unconverged_residual
            )
        })
    }
}

/// A matvec over a subset of rows: `(active rows, their vectors) → S_b p_b` for each.
pub type RowsMatvec<'a> = dyn FnMut(&[usize], &[f64]) -> Result<Vec<f64>> + 'a;

/// Solves S_b u_b = b_b for `rows` independent SPD systems of size m by conjugate gradients
/// in lockstep. `rhs` and the optional starting `guess` are rows × m. `matvec(active, p)`
/// returns S_b p_b for the listed rows only (p holds active.len() × m values, in that order).
///
/// Per row: r₀ = b − S u₀, p₀ = r₀; α = rᵀr / pᵀSp, u += α p, r −= α Sp,
/// p = r + (r_newᵀ r_new / rᵀr) p. A non-positive curvature pᵀSp (rounding in a nearly
/// singular system) stops the row where it is, reported as not converged unless its residual
/// already meets the tolerance.
pub fn conjugate_gradients(
    rows: usize,
    m: usize,
    rhs: &[f64],
    guess: Option<&[f64]>,
    options: &CgOptions,
    matvec: &mut RowsMatvec,
) -> Result<(Vec<f64>, Vec<RowSolve>)> {
    debug_assert_eq!(rhs.len(), rows * m);
    let mut u = match guess {
        Some(g) => g.to_vec(),
        None => vec![0.0; rows * m],
    };
    let mut r = rhs.to_vec();
    if let Some(g) = guess {
        let all: Vec<usize> = (0..rows).collect();
        let su = matvec(&all, g)?;
        for (ri, si) in r.iter_mut().zip(&su) {
            *ri -= si;
        }
    }
    let norm = |v: &[f64]| v.iter().map(|x| x * x).sum::<f64>();
    let target: Vec<f64> = rhs
        .chunks(m)
        .map(|b| options.tolerance * norm(b).sqrt())
        .collect();
    let mut rr: Vec<f64> = r.chunks(m).map(norm).collect();
    let mut p = r.clone();
    let mut done: Vec<Option<RowSolve>> = (0..rows)
        .map(|b| {
            let bn = norm(&rhs[b * m..(b + 1) * m]).sqrt();
            if bn == 0.0 {
                // u = 0 solves it exactly whatever the guess was.
                u[b * m..(b + 1) * m].fill(0.0);
                Some(RowSolve {
                    iterations: 0,
                    residual: 0.0,
                    converged: true,
                })
            } else if rr[b].sqrt() <= target[b] {
                Some(RowSolve {
                    iterations: 0,
                    residual: rr[b].sqrt() / bn,
                    converged: true,
                })
            } else {
                None
            }
        })
        .collect();
    let bnorm: Vec<f64> = rhs.chunks(m).map(|b| norm(b).sqrt()).collect();
    for it in 1..=options.max_iterations {
        let active: Vec<usize> = (0..rows).filter(|&b| done[b].is_none()).collect();
        if active.is_empty() {
            break;
        }
        let pa: Vec<f64> = active
            .iter()
            .flat_map(|&b| p[b * m..(b + 1) * m].iter().copied())
            .collect();
        let q = matvec(&active, &pa)?;
        for (k, &b) in active.iter().enumerate() {
            let range = b * m..(b + 1) * m;
            let qb = &q[k * m..(k + 1) * m];
            let pq: f64 = p[range.clone()].iter().zip(qb).map(|(a, c)| a * c).sum();
            if pq <= 0.0 || !pq.is_finite() {
                let res = rr[b].sqrt() / bnorm[b];
                done[b] = Some(RowSolve {
                    iterations: it - 1,
                    residual: res,
                    converged: rr[b].sqrt() <= target[b],
                });
                continue;
            }
            let alpha = rr[b] / pq;
            for ((ui, pi), (ri, qi)) in u[range.clone()]
                .iter_mut()
                .zip(&p[range.clone()])
                .zip(r[range.clone()].iter_mut().zip(qb))
            {
                *ui += alpha * pi;
                *ri -= alpha * qi;
            }
            let rr_new = norm(&r[range.clone()]);
            if rr_new.sqrt() <= target[b] {
                done[b] = Some(RowSolve {
                    iterations: it,
                    residual: rr_new.sqrt() / bnorm[b],
                    converged: true,
                });
                continue;
            }
            let beta = rr_new / rr[b];
            rr[b] = rr_new;
            for (pi, ri) in p[range.clone()].iter_mut().zip(&r[range]) {
                *pi = ri + beta * *pi;
            }
        }
    }
    let stats = done
        .into_iter()
        .enumerate()
        .map(|(b, d)| {
            d.unwrap_or(RowSolve {
                iterations: options.max_iterations,
                residual: rr[b].sqrt() / bnorm[b],
                converged: false,
            })
        })
        .collect();
    Ok((u, stats))
}

/// shift·p + gram·(A Aᵀ p) for the rows `act` of a conjugate-gradients solve (p holds those
/// rows, m values each; `means` the rows' points, which a linear A's adjoint ignores): ΠGDM's
/// (σ² I + r² A Aᵀ) and DiffPIR's (A Aᵀ + ρ I).
pub fn shifted_gram(
    op: &dyn Operator,
    act: &[usize],
    p: &[f64],
    means: &[f32],
    gram: f64,
    shift: f64,
) -> Vec<f64> {
    let d = op.input_shape().dim();
    let m = op.output_len();
    let mut out = vec![0.0f64; p.len()];
    out.par_chunks_mut(m)
        .zip(p.par_chunks(m))
        .zip(act.par_iter())
        .for_each(|((o, pb), &b)| {
            let pf: Vec<f32> = pb.iter().map(|&v| v as f32).collect();
            let mut at = vec![0.0f32; d];
            op.adjoint(&means[b * d..(b + 1) * d], &pf, &mut at);
            let mut aat = vec![0.0f32; m];
            op.forward(&at, &mut aat);
            for ((oi, &pi), &qi) in o.iter_mut().zip(pb).zip(&aat) {
                *oi = shift * pi + gram * f64::from(qi);
            }
        });
    out
}

/// Solves S u = b in place (b becomes u) for one SPD m × m matrix S (row-major, overwritten
/// by its Cholesky factor L, S = L Lᵀ). Returns false when S is not numerically positive
/// definite (a non-positive pivot).
pub fn cholesky_solve(s: &mut [f64], m: usize, b: &mut [f64]) -> bool {
    for j in 0..m {
        let mut d = s[j * m + j];
        for k in 0..j {
            d -= s[j * m + k] * s[j * m + k];
        }
        if d <= 0.0 || !d.is_finite() {
            return false;
        }
        let d = d.sqrt();
        s[j * m + j] = d;
        for i in j + 1..m {
            let mut v = s[i * m + j];
            for k in 0..j {
                v -= s[i * m + k] * s[j * m + k];
            }
            s[i * m + j] = v / d;
        }
    }
    for i in 0..m {
        let mut v = b[i];
        for k in 0..i {
            v -= s[i * m + k] * b[k];
        }
        b[i] = v / s[i * m + i];
    }
    for i in (0..m).rev() {
        let mut v = b[i];
        for k in i + 1..m {
            v -= s[k * m + i] * b[k];
        }
        b[i] = v / s[i * m + i];
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    /// Random SPD matrices S = σ² I + G Gᵀ (G m × k), row-major, one per row.
    fn spd(rows: usize, m: usize, k: usize, sigma2: f64, seed: u64) -> Vec<Vec<f64>> {
        let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed);
        (0..rows)
            .map(|_| {
                let g: Vec<f64> = (0..m * k).map(|_| rng.random_range(-1.0..1.0)).collect();
                let mut s = vec![0.0; m * m];
                for i in 0..m {
                    for j in 0..m {
                        s[i * m + j] = (0..k).map(|l| g[i * k + l] * g[j * k + l]).sum::<f64>()
                            + if i == j { sigma2 } else { 0.0 };
                    }
                }
                s
            })
            .collect()
    }

    /// Gaussian elimination with partial pivoting (independent of the Cholesky code).
    fn gauss(mut a: Vec<f64>, mut b: Vec<f64>, m: usize) -> Vec<f64> {
        for c in 0..m {
            let piv = (c..m)
                .max_by(|&i, &j| a[i * m + c].abs().total_cmp(&a[j * m + c].abs()))
                .unwrap();
            for k in 0..m {
                a.swap(c * m + k, piv * m + k);
            }
            b.swap(c, piv);
            for i in c + 1..m {
                let f = a[i * m + c] / a[c * m + c];
                for k in c..m {
                    a[i * m + k] -= f * a[c * m + k];
                }
                b[i] -= f * b[c];
            }
        }
        let mut x = vec![0.0; m];
        for i in (0..m).rev() {
            let s: f64 = (i + 1..m).map(|k| a[i * m + k] * x[k]).sum();
            x[i] = (b[i] - s) / a[i * m + i];
        }
        x
    }

    fn rel(a: &[f64], b: &[f64]) -> f64 {
        let d: f64 = a.iter().zip(b).map(|(x, y)| (x - y).powi(2)).sum();
        let n: f64 = b.iter().map(|y| y * y).sum();
        (d / n).sqrt()
    }

    #[test]
    fn cg_and_cholesky_equal_dense_solves() {
        let (rows, m) = (5, 12);
        for (k, sigma2, seed) in [(3, 0.01, 1), (12, 0.5, 2), (30, 0.0025, 3)] {
            let mats = spd(rows, m, k, sigma2, seed);
            let mut rng = rand_chacha::ChaCha8Rng::seed_from_u64(seed + 10);
            let rhs: Vec<f64> = (0..rows * m).map(|_| rng.random_range(-1.0..1.0)).collect();
            let options = CgOptions {
                tolerance: 1e-12,
                max_iterations: 200,
            };
            let mut calls = 0;
            let (u, stats) = conjugate_gradients(rows, m, &rhs, None, &options, &mut |act, p| {
                calls += 1;
                Ok(act
                    .iter()
                    .enumerate()
                    .flat_map(|(j, &b)| {
                        let s = &mats[b];
                        let pj = &p[j * m..(j + 1) * m];
                        (0..m)
                            .map(move |i| (0..m).map(|c| s[i * m + c] * pj[c]).sum::<f64>())
                            .collect::<Vec<_>>()
                    })
                    .collect())
            })
            .unwrap();
            for b in 0..rows {
                let want = gauss(mats[b].clone(), rhs[b * m..(b + 1) * m].to_vec(), m);
                let e = rel(&u[b * m..(b + 1) * m], &want);
                assert!(e < 1e-8, "cg row {b} (k={k}): relative error {e}");
                assert!(stats[b].converged && stats[b].residual <= 1e-12);
                // A rank-k update of σ²I: CG converges in at most k + 1 steps (exact arithmetic).
                assert!(
                    stats[b].iterations <= (k + 1).min(m) + 3,
                    "{:?} for rank {k}",
                    stats[b]
                );
                let mut s = mats[b].clone();
                let mut x = rhs[b * m..(b + 1) * m].to_vec();
                assert!(cholesky_solve(&mut s, m, &mut x));
                let e = rel(&x, &want);
                assert!(e < 1e-10, "cholesky row {b}: relative error {e}");
            }
            assert!(calls <= options.max_iterations);
        }
    }

    #[test]
    fn cg_reports_non_convergence_and_warm_starts() {
        let (rows, m) = (3, 20);
        let mats = spd(rows, m, 20, 1e-4, 7);
        let rhs: Vec<f64> = (0..rows * m).map(|i| ((i * 7) % 5) as f64 - 2.0).collect();
        let apply = |act: &[usize], p: &[f64]| -> Result<Vec<f64>> {
            Ok(act
                .iter()
                .enumerate()
                .flat_map(|(j, &b)| {
                    let s = &mats[b];
                    let pj = &p[j * m..(j + 1) * m];
                    (0..m)
                        .map(move |i| (0..m).map(|c| s[i * m + c] * pj[c]).sum::<f64>())
                        .collect::<Vec<_>>()
                })
                .collect())
        };
        let few = CgOptions {
            tolerance: 1e-10,
            max_iterations: 2,
        };
        let (_, stats) =
            conjugate_gradients(rows, m, &rhs, None, &few, &mut |a, p| apply(a, p)).unwrap();
        assert!(stats.iter().all(|s| !s.converged && s.iterations == 2));
        let mut total = SolveStats::default();
        total.record(&stats);
        assert_eq!(total.not_converged, 3);
        let w = total.warning("tmpd", &few).unwrap();
        assert!(w.contains("tmpd") && w.contains("cg_max_iterations"), "{w}");
        // Starting from the exact answer needs no iteration.
        let exact: Vec<f64> = (0..rows)
            .flat_map(|b| gauss(mats[b].clone(), rhs[b * m..(b + 1) * m].to_vec(), m))
            .collect();
        let loose = CgOptions {
            tolerance: 1e-6,
            max_iterations: 100,
        };
        let (u, stats) =
            conjugate_gradients(rows, m, &rhs, Some(&exact), &loose, &mut |a, p| apply(a, p))
                .unwrap();
        assert!(stats.iter().all(|s| s.converged && s.iterations == 0));
        assert!(rel(&u, &exact) < 1e-12);
    }
}

//! Engine tests shared by the CPU and GPU files: the error measure of C·g and the bodies that
//! run once per backend, each compared with the float64 reference.
//!
//! C·g tolerance: ‖Cg − Cg_ref‖ ≤ 1e-4 ‖Cg_ref‖ + 1e-5 ‖g‖, i.e. relative 1e-4 with an absolute
//! floor for rows whose C is ~0 (one atom holds all the weight): float32 ⟨a, g⟩ is good to
//! ~1e-6·‖a‖‖g‖, and on the GPU C·g = Σ c a / S0 − m SC/S0 with the float32 sum Σ c a good to
//! ~1e-6 ‖a‖ Σ|c|.

use fslens::engine::reference::ReferenceBackend;
use fslens::engine::{Backend, Noise, Weights};

/// ‖a − b‖ / (‖b‖ + 0.1‖g‖) over whole arrays, in float64: the C·g error measure of the module
/// docs (≤ 1e-4 is the tolerance).
pub fn relative_error(a: &[f32], b: &[f32], g: &[f32]) -> f64 {
    let diff: f64 = a
        .iter()
        .zip(b)
        .map(|(&x, &y)| (x as f64 - y as f64).powi(2))
        .sum();
    let norm: f64 = b.iter().map(|&y| (y as f64).powi(2)).sum();
    let gnorm: f64 = g.iter().map(|&y| (y as f64).powi(2)).sum();
    diff.sqrt() / (norm.sqrt() + 0.1 * gnorm.sqrt())
}

/// The bits of float32 values, to compare results exactly.
pub fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

/// Tolerance of [`relative_error`] for C·g.
pub const CG_TOL: f64 = 1e-4;

/// One case of the pass-cache contract: particles `x` and others of the same size at noise
/// `noise`, a second noise level `other_noise`, and the direction `g`.
pub struct CacheCase<'a> {
    pub label: String,
    pub x: &'a [f32],
    pub other: &'a [f32],
    pub noise: Noise,
    pub other_noise: Noise,
    pub g: &'a [f32],
}

/// The pass-cache contract of `Backend::covariance_products`, for one backend (`cached`, with
/// the biases of `sets` registered in the same order as on `reference`) and the same backend
/// with its cache turned off (`uncached`). For each set, against the float64 reference:
/// - C·g after a pass on other particles (nothing to reuse),
/// - C·g right after a pass on x (reuse), and the uncached backend's C·g,
/// - C·g of a gathered subset of the rows with a repeat (TMPD's CG and dense solves call it
///   that way) right after that pass,
/// - C·g at another noise level, and on the other particles, right after the pass on x: the
///   kept data must not be used;
///
/// all within [`CG_TOL`]; and where nothing may be reused (fresh, other noise, other
/// particles) bit for bit equal to the uncached backend, which runs the same full pass.
pub fn check_pass_cache(
    cached: &dyn Backend,
    uncached: &dyn Backend,
    reference: &ReferenceBackend,
    sets: &[Weights],
    case: &CacheCase,
) {
    let d = reference.dim();
    let (x, g, nz) = (case.x, case.g, case.noise);
    for &set in sets {
        let ctx = format!("{} {set:?}", case.label);
        // The reference uses its own float64 means: one call per (x, noise).
        let reference_cg = |x: &[f32], nz: Noise, m: &[f32], g: &[f32]| {
            reference.covariance_products(x, nz, set, m, g).unwrap()
        };
        let close = |what: &str, got: &[f32], want: &[f32], g: &[f32]| {
            let e = relative_error(got, want, g);
            assert!(e <= CG_TOL, "{ctx}: {what} C·g error {e:.3e}");
        };
        // Fresh: the last pass was over other particles.
        cached
            .weighted_means(case.other, nz, &[Weights::Prior])
            .unwrap();
        let m = uncached.weighted_means(x, nz, &[set]).unwrap().sets[0]
            .means
            .clone();
        let want = reference_cg(x, nz, &m, g);
        let fresh = cached.covariance_products(x, nz, set, &m, g).unwrap();
        close("fresh", &fresh, &want, g);
        let full = uncached.covariance_products(x, nz, set, &m, g).unwrap();
        close("uncached", &full, &want, g);
        assert_eq!(bits(&fresh), bits(&full), "{ctx}: fresh vs uncached");
        // Kept: a pass over x (prior and this set) first.
        let pass = cached
            .weighted_means(x, nz, &[Weights::Prior, set])
            .unwrap();
        let m = &pass.sets[1].means;
        let kept = cached.covariance_products(x, nz, set, m, g).unwrap();
        close("kept", &kept, &want, g);
        // Rows 3, 1, 1, 5 (a subset with a repeat), in that order.
        let pick = [3usize, 1, 1, 5];
        let gather = |v: &[f32]| -> Vec<f32> {
            pick.iter()
                .flat_map(|&r| v[r * d..(r + 1) * d].iter().copied())
                .collect()
        };
        let (xs, ms, gs) = (gather(x), gather(m), gather(g));
        let sub = cached.covariance_products(&xs, nz, set, &ms, &gs).unwrap();
        close("gathered rows", &sub, &reference_cg(&xs, nz, &ms, &gs), &gs);
        // Another noise level: the kept data do not apply.
        let on = case.other_noise;
        let om = uncached.weighted_means(x, on, &[set]).unwrap().sets[0]
            .means
            .clone();
        let o = cached.covariance_products(x, on, set, &om, g).unwrap();
        close("other noise", &o, &reference_cg(x, on, &om, g), g);
        let o_full = uncached.covariance_products(x, on, set, &om, g).unwrap();
        assert_eq!(bits(&o), bits(&o_full), "{ctx}: other noise vs uncached");
        // Other particles right after a pass on x: no stale data either.
        cached
            .weighted_means(x, nz, &[Weights::Prior, set])
            .unwrap();
        let pm = uncached
            .weighted_means(case.other, nz, &[set])
            .unwrap()
            .sets[0]
            .means
            .clone();
        let p = cached
            .covariance_products(case.other, nz, set, &pm, g)
            .unwrap();
        close(
            "other particles",
            &p,
            &reference_cg(case.other, nz, &pm, g),
            g,
        );
        let p_full = uncached
            .covariance_products(case.other, nz, set, &pm, g)
            .unwrap();
        assert_eq!(
            bits(&p),
            bits(&p_full),
            "{ctx}: other particles vs uncached"
        );
    }
}

//! Engine tests shared by the CPU and GPU files: the tolerance model, the error measure of C·g,
//! and the bodies that run once per backend, each compared with the float64 reference.
//!
//! Tolerance model of one pass (direct f32 differences, design §7). The reference runs in
//! float64 on the same f32 atoms and particles. On the GPU, s, 1/(2v) and every difference
//! e = x − s·a are rounded to f32: |δe| ≲ 2ε(|x| + |s a|) with ε = 2⁻²³, and for the atoms that carry weight
//! |e| ≈ √v per coordinate, so the logit error is |δℓ| ≲ Σ_d 2|e||δe| / (2v) ≲ 2εD·A/√v
//! (A bounds |x| + |s a|), plus f32 summation (≈ Dε relative on ℓ, ℓ = O(D) for those atoms).
//! We allow
//!   δℓ = 8 ε D (A/√v + 1)  nats,
//! which bounds the relative error of every significant weight by 2δℓ. Then
//!   means:      |Δm_d| ≤ 2δℓ · max|a| + 1e-5,
//!   log Z:      |Δ| ≤ δℓ + 1e-6 (1 + |log Z|),
//!   ESS, max w: relative ≤ 4δℓ + 1e-5,   entropy: |Δ| ≤ (4δℓ + 1e-5)(1 + H),
//!   C·g:        |Δ(Cg)_d| ≤ (4δℓ + 1e-5) Σ_i w_i |a_id − m_d| |⟨a_i − m, g⟩| + 1e-6,
//!   nearest:    the GPU's atom is within 1e-5 (1 + d²_min) of the reference minimum.
//! The CPU backend computes its bulk logits by the float32 expansion, but recomputes every
//! logit that matters by direct differences (module `cpu::window`), so the same model bounds
//! it ([`random_case`] runs it on both backends).
//!
//! The pass-cache tolerance of C·g (norm-wise, [`relative_error`]): ‖Cg − Cg_ref‖ ≤ 1e-4 ‖Cg_ref‖ + 1e-5 ‖g‖, i.e. relative 1e-4 with an absolute
//! floor for rows whose C is ~0 (one atom holds all the weight): float32 ⟨a, g⟩ is good to
//! ~1e-6·‖a‖‖g‖, and on the GPU C·g = Σ c a / S0 − m SC/S0 with the float32 sum Σ c a good to
//! ~1e-6 ‖a‖ Σ|c|.

use fslens::engine::reference::ReferenceBackend;
use fslens::engine::{Backend, Noise, WeightSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

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

/// Builds a backend over N × D atoms and returns it with the atoms as it stores them (the
/// reference runs on those).
pub type MakeBackend<'a> = dyn Fn(&[f32], usize) -> (Box<dyn Backend>, Vec<f32>) + 'a;

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
/// particles) bit for bit equal to the uncached backend, which runs the same full pass. With
/// `reuse_is_exact` the reuse itself is bit-identical too (the GPU keeps the distances its
/// C·g pass would recompute: the same ordered fma chain); the CPU's kept weights replace a
/// recomputation in another order, so its reuse agrees only within the tolerance.
pub fn check_pass_cache(
    cached: &dyn Backend,
    uncached: &dyn Backend,
    reference: &ReferenceBackend,
    sets: &[WeightSet],
    case: &CacheCase,
    reuse_is_exact: bool,
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
            .weighted_means(case.other, nz, &[WeightSet::Prior])
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
            .weighted_means(x, nz, &[WeightSet::Prior, set])
            .unwrap();
        let m = &pass.sets[1].means;
        let kept = cached.covariance_products(x, nz, set, m, g).unwrap();
        close("kept", &kept, &want, g);
        if reuse_is_exact {
            let full = uncached.covariance_products(x, nz, set, m, g).unwrap();
            assert_eq!(bits(&kept), bits(&full), "{ctx}: kept vs uncached");
        }
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
            .weighted_means(x, nz, &[WeightSet::Prior, set])
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

/// VP schedule with β ∈ [0.1, 20]: s = √ᾱ, v = 1 − ᾱ.
pub fn noise(t: f64) -> Noise {
    let log_ab = -(0.1 * t + 0.5 * (20.0 - 0.1) * t * t);
    Noise {
        s: (0.5 * log_ab).exp(),
        v: -log_ab.exp_m1(),
    }
}

/// 8-bit-quantised atoms in [-1, 1], with a few near-duplicates (one grey level apart).
pub fn atoms8(rng: &mut ChaCha8Rng, n: usize, d: usize) -> Vec<f32> {
    let mut codes: Vec<u32> = (0..n * d).map(|_| rng.random_range(0..256)).collect();
    for i in 1..4.min(n) {
        let (head, tail) = codes.split_at_mut(i * d);
        tail[..d].copy_from_slice(&head[..d]);
        tail[i % d] = (tail[i % d] + 1).min(255);
    }
    codes.iter().map(|&c| c as f32 / 127.5 - 1.0).collect()
}

/// Particles x = s a_j + √v ε around random atoms (the regime where weights concentrate).
pub fn particles(rng: &mut ChaCha8Rng, atoms: &[f32], d: usize, b: usize, nz: Noise) -> Vec<f32> {
    let n = atoms.len() / d;
    let mut x = Vec::with_capacity(b * d);
    for _ in 0..b {
        let j = rng.random_range(0..n);
        for k in 0..d {
            let e: f64 = StandardNormal.sample(rng);
            x.push((nz.s * atoms[j * d + k] as f64 + nz.v.sqrt() * e) as f32);
        }
    }
    x
}

/// b_i = −‖y − P a_i‖²/(2σ²) with P = the first D/2 coordinates and y = P a_k + σ ε.
pub fn bias(rng: &mut ChaCha8Rng, atoms: &[f32], d: usize, sigma: f64) -> Vec<f64> {
    let n = atoms.len() / d;
    let m = d / 2;
    let k = rng.random_range(0..n);
    let y: Vec<f64> = (0..m)
        .map(|c| atoms[k * d + c] as f64 + sigma * rng.sample::<f64, _>(StandardNormal))
        .collect();
    (0..n)
        .map(|i| {
            -(0..m)
                .map(|c| (y[c] - atoms[i * d + c] as f64).powi(2))
                .sum::<f64>()
                / (2.0 * sigma * sigma)
        })
        .collect()
}

pub fn logit_tol(d: usize, x: &[f32], atoms: &[f32], nz: Noise) -> f64 {
    let xmax = x.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let amax = atoms.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    8.0 * f32::EPSILON as f64 * d as f64 * ((xmax + nz.s.abs() * amax) / nz.v.sqrt() + 1.0)
}

/// Checks one pass (all `sets`), the nearest atoms and C·g of every set against the reference.
/// `cg_sets` picks the sets whose C·g is checked (its reference is O(N·D) per row and set).
#[allow(clippy::too_many_arguments)]
pub fn compare(
    label: &str,
    backend: &dyn Backend,
    reference: &ReferenceBackend,
    atoms: &[f32],
    x: &[f32],
    nz: Noise,
    sets: &[WeightSet],
    cg_sets: &[usize],
    rng: &mut ChaCha8Rng,
) {
    let d = backend.dim();
    let dl = logit_tol(d, x, atoms, nz);
    let amax = atoms.iter().fold(0.0f64, |m, &v| m.max(v.abs() as f64));
    let timer = std::time::Instant::now();
    let got = backend.weighted_means(x, nz, sets).unwrap();
    eprintln!(
        "{label}: pass B = {}, N = {}, D = {d}, {} sets: {:?}",
        x.len() / d,
        backend.atoms(),
        sets.len(),
        timer.elapsed()
    );
    let want = reference.weighted_means(x, nz, sets).unwrap();
    for (k, (g, w)) in got.sets.iter().zip(&want.sets).enumerate() {
        assert_eq!(g.means.len(), w.means.len());
        for (i, (a, b)) in g.means.iter().zip(&w.means).enumerate() {
            let tol = 2.0 * dl * amax + 1e-5;
            assert!(
                (*a as f64 - *b as f64).abs() <= tol,
                "{label} set {k} mean[{i}]: got {a} ref {b} (tol {tol:.2e})"
            );
        }
        for (r, (g, w)) in g.stats.iter().zip(&w.stats).enumerate() {
            let ctx = format!("{label} set {k} row {r}: got {g:?} ref {w:?}");
            let lz = dl + 1e-6 * (1.0 + w.log_norm.abs());
            assert!((g.log_norm - w.log_norm).abs() <= lz, "{ctx} (log Z)");
            let rel = 4.0 * dl + 1e-5;
            assert!((g.ess - w.ess).abs() <= rel * w.ess, "{ctx} (ess)");
            assert!(
                (g.max_weight - w.max_weight).abs() <= rel * w.max_weight,
                "{ctx}"
            );
            assert!(
                (g.entropy - w.entropy).abs() <= rel * (1.0 + w.entropy),
                "{ctx}"
            );
        }
    }
    assert_eq!(got.nearest.len(), x.len() / d);
    for (r, (g, w)) in got.nearest.iter().zip(&want.nearest).enumerate() {
        let xr = &x[r * d..(r + 1) * d];
        let at = reference.dist2(xr, nz.s, g.index);
        let ctx = format!("{label} nearest row {r}: got {g:?} ref {w:?}");
        assert!(at <= w.dist2 + 1e-5 * (1.0 + w.dist2), "{ctx}");
        assert!((g.dist2 - at).abs() <= 1e-5 * (1.0 + at), "{ctx}");
    }
    // C·g with the reference's own means (C·g is first-order insensitive to m: Σ w (a − m) = 0).
    let gvec: Vec<f32> = (0..x.len())
        .map(|_| rng.sample::<f32, _>(StandardNormal))
        .collect();
    for &k in cg_sets {
        let set = sets[k];
        let m = &want.sets[k].means;
        let got = backend.covariance_products(x, nz, set, m, &gvec).unwrap();
        let want_cg = reference.covariance_products(x, nz, set, m, &gvec).unwrap();
        assert_eq!(got.len(), want_cg.len());
        for r in 0..x.len() / d {
            let xr = &x[r * d..(r + 1) * d];
            let gr = &gvec[r * d..(r + 1) * d];
            let w = reference.weights(xr, nz, set);
            let mr: Vec<f64> = m[r * d..(r + 1) * d].iter().map(|&v| v as f64).collect();
            let mut scale = vec![0.0f64; d];
            for (i, &wi) in w.iter().enumerate() {
                let a = &atoms[i * d..(i + 1) * d];
                let proj: f64 = (0..d).map(|c| (a[c] as f64 - mr[c]) * gr[c] as f64).sum();
                for c in 0..d {
                    scale[c] += wi * (a[c] as f64 - mr[c]).abs() * proj.abs();
                }
            }
            for c in 0..d {
                let (a, b) = (got[r * d + c] as f64, want_cg[r * d + c] as f64);
                let tol = (4.0 * dl + 1e-5) * scale[c] + 1e-6;
                assert!(
                    (a - b).abs() <= tol,
                    "{label} set {k} Cg row {r} [{c}]: got {a} ref {b} (tol {tol:.2e})"
                );
            }
        }
    }
}

/// Seeded 8-bit atoms (N = `n`, D = 19), a prior and two posterior sets (σ = 0.01, 0.5) and
/// ten particles at t ∈ {1e-3, 0.1, 0.5, 1}: one [`compare`] per time, C·g of every set. `make`
/// builds the backend over the atoms and returns it with the atoms as it stores them (the
/// reference runs on those).
pub fn random_case(label: &str, n: usize, seed: u64, make: &MakeBackend<'_>) {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let (d, b) = (19, 10);
    let atoms = atoms8(&mut rng, n, d);
    let (mut backend, stored) = make(&atoms, d);
    let mut reference = ReferenceBackend::new(&stored, d).unwrap();
    let mut sets = vec![WeightSet::Prior];
    for sigma in [0.01, 0.5] {
        let bvec = bias(&mut rng, &atoms, d, sigma);
        let id = backend.add_bias(&bvec).unwrap();
        assert_eq!(reference.add_bias(&bvec).unwrap(), id);
        sets.push(WeightSet::Biased(id));
    }
    for t in [1e-3, 0.1, 0.5, 1.0] {
        let nz = noise(t);
        let x = particles(&mut rng, &atoms, d, b, nz);
        let label = format!("{label} t={t}");
        let all: Vec<usize> = (0..sets.len()).collect();
        compare(
            &label,
            backend.as_ref(),
            &reference,
            &stored,
            &x,
            nz,
            &sets,
            &all,
            &mut rng,
        );
    }
}

/// Everything one pass and the C·g that follows it return, as bits: means and row statistics
/// of each set, nearest atoms, and C·g of each biased set.
fn pass_bits(
    backend: &dyn Backend,
    x: &[f32],
    nz: Noise,
    sets: &[WeightSet],
    g: &[f32],
) -> Vec<u64> {
    let mut out = Vec::new();
    for &set in sets {
        // A pass right before each C·g, so a backend's pass cache is in the same state on
        // every call sequence this is compared across.
        let pass = backend.weighted_means(x, nz, sets).unwrap();
        for s in &pass.sets {
            out.extend(s.means.iter().map(|v| u64::from(v.to_bits())));
            for r in &s.stats {
                out.extend([r.log_norm, r.ess, r.max_weight, r.entropy].map(f64::to_bits));
            }
        }
        out.extend(pass.nearest.iter().map(|n| n.index as u64));
        let k = sets.iter().position(|&s| s == set).unwrap();
        let cg = backend
            .covariance_products(x, nz, set, &pass.sets[k].means, g)
            .unwrap();
        out.extend(cg.iter().map(|v| u64::from(v.to_bits())));
    }
    out
}

/// The life of a bias, for one backend (`make` builds it over the atoms and returns it with
/// the atoms as it stores them; the float64 reference runs on those): three biases
/// registered, the middle one removed. Then
/// - the live count drops from 3 to 2, and to 0 when all are removed;
/// - a pass or a C·g naming the removed id, and a second removal, are errors that say so;
/// - the other biases (and the prior) give the same results bit for bit as before the
///   removal, and still match the reference (the GPU moves the later bias down in its
///   buffer: this catches a wrong offset);
/// - a bias registered after the removal gets a new id, never the removed one, and matches
///   the reference.
pub fn check_bias_removal(label: &str, make: &MakeBackend<'_>) {
    let mut rng = ChaCha8Rng::seed_from_u64(2024);
    let (n, d, b) = (120, 19, 6);
    let atoms = atoms8(&mut rng, n, d);
    let (mut backend, stored) = make(&atoms, d);
    let mut reference = ReferenceBackend::new(&stored, d).unwrap();
    assert_eq!(backend.live_biases(), 0, "{label}");
    let mut ids = Vec::new();
    for sigma in [0.05, 0.3, 1.0] {
        let bvec = bias(&mut rng, &atoms, d, sigma);
        let id = backend.add_bias(&bvec).unwrap();
        assert_eq!(reference.add_bias(&bvec).unwrap(), id, "{label}");
        ids.push(id);
    }
    assert_eq!(backend.live_biases(), 3, "{label}");
    let nz = noise(0.2);
    let x = particles(&mut rng, &atoms, d, b, nz);
    let g: Vec<f32> = (0..b * d).map(|_| rng.sample(StandardNormal)).collect();
    let kept = [
        WeightSet::Prior,
        WeightSet::Biased(ids[0]),
        WeightSet::Biased(ids[2]),
    ];
    let before = pass_bits(backend.as_ref(), &x, nz, &kept, &g);

    backend.remove_bias(ids[1]).unwrap();
    reference.remove_bias(ids[1]).unwrap();
    assert_eq!(backend.live_biases(), 2, "{label}");
    let gone = WeightSet::Biased(ids[1]);
    let refused = |e: fslens::Error, what: &str| {
        let msg = e.to_string();
        assert!(
            msg.contains(&format!("bias id {}", ids[1].0)) && msg.contains("removed"),
            "{label} {what}: {msg}"
        );
    };
    refused(
        backend
            .weighted_means(&x, nz, &[WeightSet::Prior, gone])
            .unwrap_err(),
        "pass",
    );
    let m = backend
        .weighted_means(&x, nz, &[WeightSet::Prior])
        .unwrap()
        .sets[0]
        .means
        .clone();
    refused(
        backend
            .covariance_products(&x, nz, gone, &m, &g)
            .unwrap_err(),
        "C·g",
    );
    refused(backend.remove_bias(ids[1]).unwrap_err(), "second removal");
    assert_eq!(backend.live_biases(), 2, "{label}");

    let after = pass_bits(backend.as_ref(), &x, nz, &kept, &g);
    assert!(
        before == after,
        "{label}: the remaining biases changed after a removal"
    );
    compare(
        &format!("{label} after removal"),
        backend.as_ref(),
        &reference,
        &stored,
        &x,
        nz,
        &kept,
        &[1, 2],
        &mut rng,
    );

    // A new bias: a fresh id (never the removed one), and correct weights.
    let bvec = bias(&mut rng, &atoms, d, 0.5);
    let id = backend.add_bias(&bvec).unwrap();
    assert_eq!(reference.add_bias(&bvec).unwrap(), id, "{label}");
    assert!(!ids.contains(&id), "{label}: id {id:?} reused");
    assert_eq!(backend.live_biases(), 3, "{label}");
    let sets = [
        WeightSet::Prior,
        WeightSet::Biased(ids[2]),
        WeightSet::Biased(id),
    ];
    compare(
        &format!("{label} new bias"),
        backend.as_ref(),
        &reference,
        &stored,
        &x,
        nz,
        &sets,
        &[1, 2],
        &mut rng,
    );
    refused(
        backend.weighted_means(&x, nz, &[gone]).unwrap_err(),
        "pass after a new bias",
    );

    // All removed: the memory is returned and the prior still works as before.
    for id in [ids[0], ids[2], id] {
        backend.remove_bias(id).unwrap();
    }
    assert_eq!(backend.live_biases(), 0, "{label}");
    let prior_only = [WeightSet::Prior];
    let want = pass_bits(backend.as_ref(), &x, nz, &prior_only, &g);
    let (mut fresh, _) = make(&atoms, d);
    assert!(
        want == pass_bits(fresh.as_ref(), &x, nz, &prior_only, &g),
        "{label}: prior after removing every bias"
    );
    assert!(
        fresh.remove_bias(fslens::engine::BiasId(0)).is_err(),
        "{label}: removing an id never issued"
    );
}

/// Every output of a pass and of the C·g passes (cached prior weights and a biased set, which
/// recomputes) of `a` and `b`, compared bit for bit.
pub fn assert_same_outputs(
    label: &str,
    a: &mut fslens::engine::cpu::CpuBackend,
    b: &mut fslens::engine::cpu::CpuBackend,
    x: &[f32],
    nz: Noise,
    bias: &[f64],
) {
    let (ia, ib) = (a.add_bias(bias).unwrap(), b.add_bias(bias).unwrap());
    let (sa, sb) = (
        [WeightSet::Prior, WeightSet::Biased(ia)],
        [WeightSet::Prior, WeightSet::Biased(ib)],
    );
    let pa = a.weighted_means(x, nz, &sa).unwrap();
    let pb = b.weighted_means(x, nz, &sb).unwrap();
    for k in 0..2 {
        assert_eq!(
            bits(&pa.sets[k].means),
            bits(&pb.sets[k].means),
            "{label}: means of set {k}"
        );
        assert_eq!(
            pa.sets[k].stats, pb.sets[k].stats,
            "{label}: stats of set {k}"
        );
    }
    assert_eq!(pa.nearest, pb.nearest, "{label}: nearest");
    let g: Vec<f32> = {
        use rand::Rng;
        let mut rng = ChaCha8Rng::seed_from_u64(5);
        (0..x.len())
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect()
    };
    for k in 0..2 {
        let m = &pa.sets[k].means;
        let ca = a.covariance_products(x, nz, sa[k], m, &g).unwrap();
        let cb = b.covariance_products(x, nz, sb[k], m, &g).unwrap();
        assert_eq!(bits(&ca), bits(&cb), "{label}: C·g of set {k}");
    }
    let wa = a.weights(&x[..a.dim()], nz, sa[1]).unwrap();
    let wb = b.weights(&x[..b.dim()], nz, sb[1]).unwrap();
    assert_eq!(wa, wb, "{label}: weights");
}

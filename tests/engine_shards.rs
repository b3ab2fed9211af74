//! Atoms split across several backends ([`ShardedBackend`]): the exact merge of the shards'
//! results gives the whole set's pass, C·g and nearest atom, by the same test bodies and float64
//! reference as one backend; split shards agree with one backend over all atoms; a shard split
//! that cannot work is an error.

mod common;

use common::engine::{check_bias_removal, random_case};
use fslens::engine::cpu::CpuBackend;
use fslens::engine::shards::{ShardedBackend, even_split};
use fslens::engine::{Backend, WeightSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

/// CPU backends over the shards of `atoms` given by `offsets`, joined.
fn sharded_cpu(atoms: &[f32], d: usize, offsets: &[usize]) -> ShardedBackend {
    let shards: Vec<Box<dyn Backend>> = offsets
        .windows(2)
        .map(|w| {
            Box::new(CpuBackend::new(&atoms[w[0] * d..w[1] * d], d).unwrap()) as Box<dyn Backend>
        })
        .collect();
    ShardedBackend::new(shards).unwrap()
}

/// The shared random cases (prior and two posteriors at t ∈ {1e-3, 0.1, 0.5, 1}) on three
/// uneven shards and on one shard: every statistic, mean, nearest atom and C·g within the
/// one-backend tolerance of the float64 reference.
#[test]
fn sharded_passes_meet_the_shared_tolerance_model() {
    for (seed, n, k) in [(11, 150, 3), (12, 151, 2), (13, 150, 1)] {
        random_case(&format!("{k} shards N={n}"), n, seed, &|atoms, d| {
            let n = atoms.len() / d;
            let mut offsets = even_split(n, k).unwrap();
            if k == 3 {
                // Uneven on purpose: 10, 100 and the rest.
                offsets = vec![0, 10, 110, n];
            }
            (Box::new(sharded_cpu(atoms, d, &offsets)), atoms.to_vec())
        });
    }
}

/// Removing a bias removes it from every shard; the others keep their results bit for bit.
#[test]
fn sharded_bias_removal_follows_the_backend_contract() {
    check_bias_removal("sharded cpu", &|atoms, d| {
        let offsets = even_split(atoms.len() / d, 3).unwrap();
        (Box::new(sharded_cpu(atoms, d, &offsets)), atoms.to_vec())
    });
}

/// The merge is exact: sharded vs one CPU backend over the same atoms agree to float32 rounding
/// of the means and float64 rounding of the statistics, for peaked (t = 1e-3) and flat weights,
/// and the covariance products agree after a pass and without one.
#[test]
fn sharded_equals_one_backend() {
    let mut rng = ChaCha8Rng::seed_from_u64(99);
    let (n, d, b) = (1000, 32, 8);
    let atoms: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
    let mut one = CpuBackend::new(&atoms, d).unwrap();
    let mut split = sharded_cpu(&atoms, d, &even_split(n, 4).unwrap());
    let bias: Vec<f64> = (0..n).map(|i| -((i % 7) as f64) * 0.3).collect();
    let (i1, i2) = (one.add_bias(&bias).unwrap(), split.add_bias(&bias).unwrap());
    for t in [1e-3, 0.05, 0.5] {
        let nz = common::engine::noise(t);
        let x: Vec<f32> = (0..b * d)
            .map(|j| {
                (nz.s * f64::from(atoms[(j * 37) % (n * d)])) as f32
                    + rng.random_range(-0.1f32..0.1)
            })
            .collect();
        let a = one
            .weighted_means(&x, nz, &[WeightSet::Prior, WeightSet::Biased(i1)])
            .unwrap();
        let s = split
            .weighted_means(&x, nz, &[WeightSet::Prior, WeightSet::Biased(i2)])
            .unwrap();
        for k in 0..2 {
            for (u, v) in a.sets[k].means.iter().zip(&s.sets[k].means) {
                assert!((u - v).abs() <= 2e-6, "t={t} set {k}: mean {u} vs {v}");
            }
            for (u, v) in a.sets[k].stats.iter().zip(&s.sets[k].stats) {
                assert!(
                    (u.log_norm - v.log_norm).abs() <= 1e-6 * (1.0 + u.log_norm.abs()),
                    "t={t}: {u:?} vs {v:?}"
                );
                for (p, q) in [
                    (u.ess, v.ess),
                    (u.max_weight, v.max_weight),
                    (u.entropy, v.entropy),
                ] {
                    assert!(
                        (p - q).abs() <= 1e-5 * (1.0 + p.abs()),
                        "t={t}: {u:?} vs {v:?}"
                    );
                }
            }
        }
        for (u, v) in a.nearest.iter().zip(&s.nearest) {
            assert_eq!(u.index, v.index, "t={t}: nearest");
        }
        let g: Vec<f32> = (0..b * d).map(|_| rng.random_range(-1.0f32..1.0)).collect();
        let m = &a.sets[1].means;
        let ca = one
            .covariance_products(&x, nz, WeightSet::Biased(i1), m, &g)
            .unwrap();
        // Right after the pass (kept shard means) and on a fresh backend state (a new pass).
        let cs = split
            .covariance_products(&x, nz, WeightSet::Biased(i2), m, &g)
            .unwrap();
        split
            .weighted_means(&x[..d], nz, &[WeightSet::Prior])
            .unwrap();
        let cf = split
            .covariance_products(&x, nz, WeightSet::Biased(i2), m, &g)
            .unwrap();
        let scale = ca.iter().fold(0.0f32, |a, &v| a.max(v.abs()));
        for ((u, v), w) in ca.iter().zip(&cs).zip(&cf) {
            assert!(
                (u - v).abs() <= 1e-5 * (1.0 + scale),
                "t={t}: C·g {u} vs {v}"
            );
            assert_eq!(v.to_bits(), w.to_bits(), "t={t}: kept vs fresh shard means");
        }
    }
}

#[test]
fn impossible_splits_are_errors() {
    assert_eq!(even_split(10, 3).unwrap(), vec![0, 4, 7, 10]);
    let err = even_split(2, 3).unwrap_err().to_string();
    assert!(err.contains("at least one atom"), "{err}");
    assert!(even_split(5, 0).is_err());
    assert!(ShardedBackend::new(Vec::new()).is_err());
    let a = CpuBackend::new(&[0.0; 6], 3).unwrap();
    let b = CpuBackend::new(&[0.0; 6], 2).unwrap();
    let err = ShardedBackend::new(vec![Box::new(a), Box::new(b)])
        .err()
        .unwrap()
        .to_string();
    assert!(err.contains("disagree on D"), "{err}");
}

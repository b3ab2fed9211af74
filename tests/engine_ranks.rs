//! The rank layer without MPI: [`RankBackend`]s joined by [`LocalGroup`] (threads of one process)
//! give, on every rank, bit for bit what [`ShardedBackend`] gives over the same shards (same
//! gathered parts, same merge), agree with a float64 softmax mean written here, and refuse ranks
//! that hold different atoms. The same code runs over MPI (tests/mpi.rs, `--features mpi`).

use std::sync::Arc;

use fslens::engine::cpu::CpuBackend;
use fslens::engine::ranks::{LocalGroup, RankBackend, Transport, build};
use fslens::engine::shards::{ShardedBackend, even_split};
use fslens::engine::{Backend, Noise, PassOutput, WeightSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const N: usize = 301;
const D: usize = 24;
const B: usize = 5;

fn atoms() -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(7);
    (0..N * D).map(|_| rng.random_range(-1.0f32..1.0)).collect()
}

fn bias() -> Vec<f64> {
    (0..N).map(|i| -((i % 5) as f64) * 0.7).collect()
}

fn noise(t: f64) -> Noise {
    let s = (-0.5 * t * t * 9.9 - 0.1 * t).exp();
    Noise { s, v: 1.0 - s * s }
}

fn particles(t: f64, seed: u64) -> Vec<f32> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let a = atoms();
    let nz = noise(t);
    (0..B * D)
        .map(|j| (nz.s * f64::from(a[(j * 31) % (N * D)])) as f32 + rng.random_range(-0.2..0.2))
        .collect()
}

/// What one backend answers on the fixed cases: passes at three noise levels (prior and
/// posterior), C·g after each pass, and C·g on particles no pass saw.
fn answers(engine: &mut dyn Backend) -> (Vec<PassOutput>, Vec<Vec<f32>>) {
    let post = engine.add_bias(&bias()).unwrap();
    let mut passes = Vec::new();
    let mut products = Vec::new();
    for (k, t) in [1e-3, 0.1, 0.7].into_iter().enumerate() {
        let (x, nz) = (particles(t, k as u64), noise(t));
        let pass = engine
            .weighted_means(&x, nz, &[WeightSet::Prior, WeightSet::Biased(post)])
            .unwrap();
        let g: Vec<f32> = (0..B * D).map(|j| ((j % 7) as f32 - 3.0) * 0.1).collect();
        for (j, set) in [WeightSet::Prior, WeightSet::Biased(post)]
            .into_iter()
            .enumerate()
        {
            products.push(
                engine
                    .covariance_products(&x, nz, set, &pass.sets[j].means, &g)
                    .unwrap(),
            );
        }
        passes.push(pass);
        // Unseen particles: the rank layer runs a fresh gathered pass for the shard means.
        let y = particles(t, 100 + k as u64);
        let m = engine.weighted_means(&y, nz, &[WeightSet::Prior]).unwrap();
        let other = particles(t, 200 + k as u64);
        products.push(
            engine
                .covariance_products(&other, nz, WeightSet::Prior, &m.sets[0].means, &g)
                .unwrap(),
        );
    }
    (passes, products)
}

fn bits(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn same(a: &PassOutput, b: &PassOutput) -> bool {
    a.nearest == b.nearest
        && a.sets.len() == b.sets.len()
        && a.sets.iter().zip(&b.sets).all(|(u, v)| {
            bits(&u.means) == bits(&v.means)
                && u.stats.iter().zip(&v.stats).all(|(p, q)| {
                    [p.log_norm, p.ess, p.max_weight, p.entropy]
                        .iter()
                        .zip([q.log_norm, q.ess, q.max_weight, q.entropy])
                        .all(|(x, y)| x.to_bits() == y.to_bits())
                })
        })
}

/// Runs `size` ranks as threads, each building its rank backend over CPU shards of `atoms_of`
/// (rank → the atoms that rank holds) and answering [`answers`].
fn on_ranks(
    size: usize,
    atoms_of: impl Fn(usize) -> Vec<f32> + Sync,
) -> Vec<fslens::Result<(Vec<PassOutput>, Vec<Vec<f32>>)>> {
    let worlds = LocalGroup::ranks(size);
    std::thread::scope(|scope| {
        let handles: Vec<_> = worlds
            .into_iter()
            .map(|world| {
                let atoms_of = &atoms_of;
                scope.spawn(move || {
                    let atoms = atoms_of(world.rank());
                    let mut engine: RankBackend = build(world, &atoms, D, |shard| {
                        Ok(Box::new(CpuBackend::new(shard, D)?) as Box<dyn Backend>)
                    })?;
                    Ok(answers(&mut engine))
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    })
}

#[test]
fn ranks_equal_sharded_backend_bit_for_bit_on_every_rank() {
    let a = atoms();
    let offsets = even_split(N, 3).unwrap();
    let shards: Vec<Box<dyn Backend>> = offsets
        .windows(2)
        .map(|w| Box::new(CpuBackend::new(&a[w[0] * D..w[1] * D], D).unwrap()) as Box<dyn Backend>)
        .collect();
    let mut sharded = ShardedBackend::new(shards).unwrap();
    let (want_passes, want_products) = answers(&mut sharded);
    for (r, got) in on_ranks(3, |_| atoms()).into_iter().enumerate() {
        let (passes, products) = got.unwrap();
        for (p, q) in passes.iter().zip(&want_passes) {
            assert!(
                same(p, q),
                "rank {r}: a pass differs from the sharded backend's"
            );
        }
        for (p, q) in products.iter().zip(&want_products) {
            assert_eq!(
                bits(p),
                bits(q),
                "rank {r}: C·g differs from the sharded backend's"
            );
        }
    }
}

/// Independent of the merge code: the prior mean and log-normaliser of a two-rank pass against
/// Σ_i w_i a_i and log Σ_i e^{ℓ_i} summed naively in float64 over all atoms.
#[test]
fn two_ranks_match_a_float64_softmax_mean() {
    let a = atoms();
    // answers()' second pass: t = 0.1 on particles(0.1, 1).
    let (x, nz) = (particles(0.1, 1), noise(0.1));
    let results = on_ranks(2, |_| atoms());
    let (passes, _) = results.into_iter().next().unwrap().unwrap();
    let got = &passes[1];
    for b in 0..B {
        let row = &x[b * D..(b + 1) * D];
        let logits: Vec<f64> = (0..N)
            .map(|i| {
                -fslens::engine::direct_dist2(row, &a[i * D..(i + 1) * D], nz.s) / (2.0 * nz.v)
            })
            .collect();
        let m = logits.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
        let z: f64 = logits.iter().map(|l| (l - m).exp()).sum();
        let log_z = m + z.ln();
        assert!((got.sets[0].stats[b].log_norm - log_z).abs() < 1e-6 * log_z.abs().max(1.0));
        for j in 0..D {
            let mean: f64 = (0..N)
                .map(|i| (logits[i] - m).exp() / z * f64::from(a[i * D + j]))
                .sum();
            let g = f64::from(got.sets[0].means[b * D + j]);
            assert!((g - mean).abs() < 2e-5, "row {b} dim {j}: {g} vs {mean}");
        }
    }
}

/// A rank holding other atoms (one value changed) stops every rank with an error naming it.
#[test]
fn ranks_with_different_atoms_are_refused() {
    for (r, got) in on_ranks(2, |rank| {
        let mut a = atoms();
        if rank == 1 {
            a[5] += 0.5;
        }
        a
    })
    .into_iter()
    .enumerate()
    {
        let err = got
            .err()
            .unwrap_or_else(|| panic!("rank {r} accepted different atoms"));
        let text = err.to_string();
        assert!(
            text.contains("rank(s) 1 of 2") && text.contains("the atoms"),
            "{text}"
        );
    }
}

/// A transport is a plain trait object: the in-process group reports its layout.
#[test]
fn local_group_gathers_in_rank_order() {
    let worlds: Vec<Arc<dyn Transport>> = LocalGroup::ranks(3);
    let got: Vec<Vec<Vec<f64>>> = std::thread::scope(|scope| {
        let hs: Vec<_> = worlds
            .iter()
            .map(|w| {
                scope.spawn(move || w.all_gather(&vec![w.rank() as f64; w.rank() + 1]).unwrap())
            })
            .collect();
        hs.into_iter().map(|h| h.join().unwrap()).collect()
    });
    for g in got {
        assert_eq!(g, vec![vec![0.0], vec![1.0, 1.0], vec![2.0, 2.0, 2.0]]);
    }
}

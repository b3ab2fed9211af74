//! GPU backend vs the float64 reference, on fresh seeded random data and on Fashion-MNIST,
//! with the tolerance model of `common::engine` (direct f32 differences). u8 storage of 8-bit
//! data is exact (the decoded atoms equal the f32 atoms bit for bit), so the same tolerances
//! apply to every storage type. f16 storage changes the atoms: its reference is computed on the
//! atoms as stored (`stored_values`), which the kernel decodes exactly, so the same tolerances
//! apply to it too.
mod common;

use common::engine::{
    CacheCase, atoms8, bias, check_bias_removal, check_pass_cache, compare, noise, particles,
};
use common::fashion::train_and_test;
use common::gpu::{gpu_and_fashion, have_gpu};
use fslens::engine::gpu::{GpuBackend, GpuOptions, Storage, list_adapters, stored_values};
use fslens::engine::reference::ReferenceBackend;
use fslens::engine::{Backend, Noise, WeightSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, StandardNormal};

fn random_case(storage: Storage, max_binding: Option<u64>, seed: u64, expect_bindings: usize) {
    let opts = GpuOptions {
        storage,
        max_binding_bytes: max_binding,
        ..GpuOptions::default()
    };
    random_case_with(opts, 150, seed, expect_bindings);
}

fn random_case_with(opts: GpuOptions, n: usize, seed: u64, expect_bindings: usize) {
    let test = format!("random {opts:?}");
    if !have_gpu(&test) {
        return;
    }
    common::engine::random_case(&test, n, seed, &|atoms, d| {
        let stored = stored_values(atoms, opts.storage);
        let gpu = GpuBackend::new(atoms, d, opts.clone()).unwrap();
        assert_eq!(gpu.bindings(), expect_bindings, "{}", gpu.describe());
        (Box::new(gpu), stored)
    });
}

#[test]
fn f32_storage_matches_reference() {
    random_case(Storage::F32, None, 1, 1);
}

#[test]
fn u8_storage_matches_reference() {
    random_case(Storage::U8, None, 2, 1);
}

/// Forces 38-atom bindings (f32: rows padded to 32 values, 128 bytes) so the split-and-merge
/// path runs.
#[test]
fn multi_binding_f32_matches_reference() {
    random_case(Storage::F32, Some(38 * 128), 3, 4);
}

/// u8 rows of 19 (padded to 32) values are 8 words: at most 32 atoms per binding.
#[test]
fn multi_binding_u8_matches_reference() {
    random_case(Storage::U8, Some(32 * 8 * 4), 4, 5);
}

#[test]
fn f16_storage_matches_reference_on_stored_atoms() {
    random_case(Storage::F16, None, 12, 1);
}

/// f16 rows of 19 (padded to 32) values are 16 words: at most 30 atoms per binding.
#[test]
fn multi_binding_f16_matches_reference() {
    random_case(Storage::F16, Some(30 * 16 * 4), 13, 5);
}

/// A fixed case for comparing backend options bit for bit: seeded 8-bit atoms, a posterior
/// bias, particles at some times and a direction g for C·g.
struct BitCase {
    atoms: Vec<f32>,
    d: usize,
    bias: Vec<f64>,
    xs: Vec<(Noise, Vec<f32>)>,
    g: Vec<f32>,
}

type BitResult = Vec<(fslens::engine::PassOutput, Vec<f32>)>;

impl BitCase {
    fn new(seed: u64, n: usize, d: usize, rows: usize, times: &[f64]) -> BitCase {
        let mut rng = ChaCha8Rng::seed_from_u64(seed);
        let atoms = atoms8(&mut rng, n, d);
        let bias = bias(&mut rng, &atoms, d, 0.1);
        let g = (0..rows * d)
            .map(|_| rng.sample::<f32, _>(StandardNormal))
            .collect();
        let xs = times
            .iter()
            .map(|&t| (noise(t), particles(&mut rng, &atoms, d, rows, noise(t))))
            .collect();
        BitCase {
            atoms,
            d,
            bias,
            xs,
            g,
        }
    }

    /// A prior + posterior pass and the posterior's C·g at each time.
    fn run(&self, opts: GpuOptions) -> BitResult {
        let mut gpu = GpuBackend::new(&self.atoms, self.d, opts).unwrap();
        let set = WeightSet::Biased(gpu.add_bias(&self.bias).unwrap());
        self.xs
            .iter()
            .map(|(nz, x)| {
                let out = gpu
                    .weighted_means(x, *nz, &[WeightSet::Prior, set])
                    .unwrap();
                let cg = gpu
                    .covariance_products(x, *nz, set, &out.sets[1].means, &self.g)
                    .unwrap();
                (out, cg)
            })
            .collect()
    }
}

fn assert_bit_identical(a: &BitResult, b: &BitResult, label: &str) {
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for ((a, acg), (b, bcg)) in a.iter().zip(b) {
        for (sa, sb) in a.sets.iter().zip(&b.sets) {
            assert_eq!(bits(&sa.means), bits(&sb.means), "{label}: means");
            assert_eq!(sa.stats, sb.stats, "{label}: stats");
        }
        assert_eq!(a.nearest, b.nearest, "{label}: nearest");
        assert_eq!(bits(acg), bits(bcg), "{label}: C·g");
    }
}

/// u8 storage of 8-bit data changes nothing: the kernels decode the same f32 values and add
/// them in the same order, so every output equals the f32-storage output bit for bit.
#[test]
fn u8_storage_of_8bit_data_changes_nothing() {
    if !have_gpu("u8 vs f32") {
        return;
    }
    let case = BitCase::new(14, 257, 37, 5, &[1e-3, 0.5]);
    let run = |storage| {
        case.run(GpuOptions {
            storage,
            ..GpuOptions::default()
        })
    };
    assert_bit_identical(&run(Storage::F32), &run(Storage::U8), "u8 vs f32");
}

/// The `DK` tile size (dimensions staged per step) is a pipeline-overridable constant: other
/// values match the reference, give bit-identical results to the default (each distance is
/// the same ordered fma chain over d), and a size beyond the limits is a clear error.
#[test]
fn tile_dims_override() {
    if !have_gpu("tile dims") {
        return;
    }
    for dk in [32, 48] {
        let opts = GpuOptions {
            tile_dims: Some(dk),
            storage: Storage::F16,
            ..GpuOptions::default()
        };
        random_case_with(opts, 120, 15, 1);
    }
    let case = BitCase::new(16, 200, 45, 6, &[0.05]);
    let run = |tile_dims| {
        case.run(GpuOptions {
            tile_dims,
            ..GpuOptions::default()
        })
    };
    let base = run(None);
    for dk in [32, 48] {
        assert_bit_identical(&base, &run(Some(dk)), &format!("DK = {dk}"));
    }
    for dk in [0, 8, 24, 272] {
        let opts = GpuOptions {
            tile_dims: Some(dk),
            ..GpuOptions::default()
        };
        let err = GpuBackend::new(&case.atoms, case.d, opts).err().unwrap();
        assert!(err.to_string().contains("tile_dims"), "{err}");
    }
}

/// Long and many splits, many waves: one split per binding of up to 8192 atoms (the most one
/// invocation walks; llvmpipe stops an invocation after 65535 loop iterations and would
/// silently skip atoms past that), and a scratch of 16 KiB, so that every wave holds one split
/// and the scratch is reused wave after wave within one submission.
#[test]
fn long_splits_and_many_waves() {
    let long = GpuOptions {
        target_workgroups: Some(1),
        ..GpuOptions::default()
    };
    random_case_with(long, 9000, 6, 1);
    let waves = GpuOptions {
        scratch_bytes: Some(16 << 10),
        ..GpuOptions::default()
    };
    random_case_with(waves, 2000, 7, 1);
}

/// With keeping off, every pass writes its distances into the wave scratch instead of the
/// kept B × N buffer (the path of passes too large to keep), and C·g recomputes them.
#[test]
fn distances_in_the_scratch_match_reference() {
    let opts = GpuOptions {
        kept_bytes: Some(0),
        storage: Storage::U8,
        ..GpuOptions::default()
    };
    random_case_with(opts, 300, 9, 1);
}

/// Both row tiles (16 and 64 rows, the `TY` override constant) and both register blocks of
/// the weighted sums (4 or 8 rows per thread, `RY`) give bit-identical results: every sum runs
/// in the same order whatever the tile; and any other size is a clear error.
#[test]
fn row_tiles_agree() {
    if !have_gpu("row tiles") {
        return;
    }
    let case = BitCase::new(17, 300, 40, 21, &[0.05]);
    let run = |tile_rows, sums_block_rows| {
        case.run(GpuOptions {
            tile_rows: Some(tile_rows),
            sums_block_rows: Some(sums_block_rows),
            storage: Storage::U8,
            ..GpuOptions::default()
        })
    };
    assert_bit_identical(&run(16, 4), &run(64, 4), "row tiles 16 vs 64");
    assert_bit_identical(
        &run(16, 4),
        &run(16, 8),
        "sums block 4 vs 8 rows, 16-row tile",
    );
    assert_bit_identical(
        &run(16, 4),
        &run(64, 8),
        "sums block 4 vs 8 rows, 64-row tile",
    );
    let opts = GpuOptions {
        tile_rows: Some(32),
        ..GpuOptions::default()
    };
    let err = GpuBackend::new(&case.atoms, case.d, opts).err().unwrap();
    assert!(err.to_string().contains("tile_rows"), "{err}");
    let opts = GpuOptions {
        sums_block_rows: Some(6),
        ..GpuOptions::default()
    };
    let err = GpuBackend::new(&case.atoms, case.d, opts).err().unwrap();
    assert!(err.to_string().contains("sums_block_rows"), "{err}");
}

#[test]
fn more_sets_than_one_pass_holds() {
    if !have_gpu("more sets") {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(5);
    let (n, d) = (70, 9);
    let atoms = atoms8(&mut rng, n, d);
    let mut gpu = GpuBackend::new(&atoms, d, GpuOptions::default()).unwrap();
    let mut reference = ReferenceBackend::new(&atoms, d).unwrap();
    let mut sets = vec![];
    for sigma in [0.05, 0.1, 0.2, 0.3, 0.5, 1.0] {
        let bvec = bias(&mut rng, &atoms, d, sigma);
        sets.push(WeightSet::Biased(gpu.add_bias(&bvec).unwrap()));
        reference.add_bias(&bvec).unwrap();
    }
    sets.push(WeightSet::Prior);
    let nz = noise(0.3);
    let x = particles(&mut rng, &atoms, d, 3, nz);
    let all: Vec<usize> = (0..sets.len()).collect();
    compare(
        "7 sets", &gpu, &reference, &atoms, &x, nz, &sets, &all, &mut rng,
    );
}

#[test]
fn bad_input_is_an_error() {
    if !have_gpu("bad input") {
        return;
    }
    let atoms = vec![0.5f32; 12];
    let mut gpu = GpuBackend::new(&atoms, 4, GpuOptions::default()).unwrap();
    assert!(
        gpu.weighted_means(&[0.0; 5], noise(0.5), &[WeightSet::Prior])
            .is_err()
    );
    assert!(gpu.add_bias(&[0.0; 2]).is_err());
    let ghost = WeightSet::Biased(fslens::engine::BiasId(3));
    assert!(gpu.weighted_means(&[0.0; 4], noise(0.5), &[ghost]).is_err());
    assert!(GpuBackend::new(&atoms, 5, GpuOptions::default()).is_err());
    let opts = GpuOptions {
        adapter: Some("no such adapter name".into()),
        ..GpuOptions::default()
    };
    let err = GpuBackend::new(&atoms, 4, opts).err().unwrap().to_string();
    assert!(err.contains("no such adapter name"), "{err}");
}

/// All 60000 Fashion-MNIST training images as f32 atoms (188 MB: two bindings on an adapter
/// with the common 128 MiB binding limit) against the reference on 4 rows: two noisy test
/// images and two noisy training images, prior and two measurement biases, t = 1e-3 and 0.5.
#[test]
fn fashion_mnist_all_atoms_f32() {
    let Some((atoms, tests, d)) = gpu_and_fashion("fashion-mnist") else {
        return;
    };
    let n = atoms.len() / d;
    let start = std::time::Instant::now();
    let mut gpu = GpuBackend::new(&atoms, d, GpuOptions::default()).unwrap();
    let limit = list_adapters()
        .into_iter()
        .find(|a| a.preferred)
        .unwrap()
        .max_storage_buffer_binding_size;
    eprintln!("{} (set up in {:?})", gpu.describe(), start.elapsed());
    assert_eq!(gpu.bindings(), (n * d * 4).div_ceil(limit as usize).max(1));
    let mut reference = ReferenceBackend::new(&atoms, d).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let mut sets = vec![WeightSet::Prior];
    for (sigma, img) in [(0.01, 3usize), (0.5, 7)] {
        let y: Vec<f64> = tests[img * d..img * d + d / 2]
            .iter()
            .map(|&v| v as f64 + sigma * rng.sample::<f64, _>(StandardNormal))
            .collect();
        let bvec: Vec<f64> = atoms
            .chunks(d)
            .map(|a| {
                -y.iter()
                    .zip(a)
                    .map(|(y, &a)| (y - a as f64).powi(2))
                    .sum::<f64>()
                    / (2.0 * sigma * sigma)
            })
            .collect();
        sets.push(WeightSet::Biased(gpu.add_bias(&bvec).unwrap()));
        reference.add_bias(&bvec).unwrap();
    }
    for t in [1e-3, 0.5] {
        let nz = noise(t);
        let mut x = Vec::with_capacity(4 * d);
        for (src, i) in [
            (&tests, 3usize),
            (&tests, 100),
            (&atoms, 5),
            (&atoms, 59999),
        ] {
            for &a in &src[i * d..(i + 1) * d] {
                let e: f64 = StandardNormal.sample(&mut rng);
                x.push((nz.s * a as f64 + nz.v.sqrt() * e) as f32);
            }
        }
        // C·g of the posterior with σ = 0.5 (weights spread over several atoms).
        compare(
            &format!("fashion-mnist t={t}"),
            &gpu,
            &reference,
            &atoms,
            &x,
            nz,
            &sets,
            &[2],
            &mut rng,
        );
    }
}

/// Shaders created without runtime checks (`create_shader_module_trusted`) give bit-identical
/// results to the checked ones: every index is guarded in the kernels themselves.
#[test]
fn trusted_shaders_agree_with_checked() {
    if !have_gpu("trusted shaders") {
        return;
    }
    let case = BitCase::new(8, 300, 23, 9, &[0.05]);
    let run = |trusted_shaders| {
        case.run(GpuOptions {
            trusted_shaders,
            storage: Storage::U8,
            max_binding_bytes: Some(100 * 8 * 4),
            ..GpuOptions::default()
        })
    };
    assert_bit_identical(&run(false), &run(true), "trusted vs checked");
}

/// The adapter list marks exactly one preferred adapter, a hardware one when there is one,
/// else a Vulkan one over GL; and the backend opens that adapter.
#[test]
fn adapter_list_prefers_hardware_then_vulkan() {
    if !have_gpu("adapter list") {
        return;
    }
    let rows = list_adapters();
    for r in &rows {
        eprintln!(
            "{} | {} | {} | binding {} MiB | buffer {} MiB | wg mem {} B | f16 {} | timestamps {} | preferred {}",
            r.name,
            r.backend,
            r.device_type,
            r.max_storage_buffer_binding_size >> 20,
            r.max_buffer_size >> 20,
            r.max_compute_workgroup_storage_size,
            r.shader_f16,
            r.timestamp_query,
            r.preferred
        );
    }
    let preferred: Vec<_> = rows.iter().filter(|r| r.preferred).collect();
    assert_eq!(preferred.len(), 1);
    let p = preferred[0];
    let hardware = |r: &fslens::engine::gpu::AdapterInfoRow| {
        r.device_type == "DiscreteGpu" || r.device_type == "IntegratedGpu"
    };
    if rows.iter().any(hardware) {
        assert!(hardware(p), "{p:?}");
    } else if rows.iter().any(|r| r.backend == "Vulkan") {
        assert_eq!(p.backend, "Vulkan");
    }
    if std::env::var_os("FSLENS_ADAPTER").is_none() {
        let gpu = GpuBackend::new(&[0.0, 1.0], 1, GpuOptions::default()).unwrap();
        assert!(gpu.describe().contains(&p.name), "{}", gpu.describe());
    }
}

/// How much f16 storage changes the prior of 8-bit data, in float64 so that
/// only the storage rounding is measured: Fashion-MNIST atoms (the first 6000) as f32 and as
/// f16-stored, particles x = s a_j + √v ε around 16 training and 16 test images. Reports the
/// largest logit shift among atoms with weight > 1e-6, the shift of the logit gap between the
/// two most likely atoms, and the total-variation distance of the weights, at t ∈ {1e-3, 1e-2, 0.1}; checks each logit shift against its Cauchy–Schwarz bound
/// |Δℓ_i| ≤ s‖δa_i‖ (2‖x − s a_i‖ + s‖δa_i‖) / (2v) and that f16 rounding is ≤ 2⁻¹² per pixel.
#[test]
fn f16_prior_shift_on_8bit_data() {
    let Some((all, tests, d)) = train_and_test() else {
        return;
    };
    let n = 6000;
    let atoms = &all[..n * d];
    let half = stored_values(atoms, Storage::F16);
    let max_round = atoms
        .iter()
        .zip(&half)
        .fold(0.0f64, |m, (&a, &h)| m.max((a as f64 - h as f64).abs()));
    assert!(max_round <= 2f64.powi(-12), "f16 rounding {max_round}");
    let r32 = ReferenceBackend::new(atoms, d).unwrap();
    let r16 = ReferenceBackend::new(&half, d).unwrap();
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    eprintln!("f16 vs f32 storage, Fashion-MNIST N = {n}: max |a16 − a32| = {max_round:.3e}");
    for t in [1e-3, 1e-2, 0.1] {
        let nz = noise(t);
        let (mut worst_dl, mut worst_tv, mut mean_tv) = (0.0f64, 0.0f64, 0.0f64);
        let (mut worst_gap, mut mean_gap) = (0.0f64, 0.0f64);
        let rows = 32;
        for r in 0..rows {
            let src: &[f32] = if r % 2 == 0 { atoms } else { &tests };
            let j = rng.random_range(0..src.len() / d);
            let x: Vec<f32> = src[j * d..(j + 1) * d]
                .iter()
                .map(|&a| {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    (nz.s * a as f64 + nz.v.sqrt() * e) as f32
                })
                .collect();
            let l32 = r32.logits(&x, nz, WeightSet::Prior);
            let l16 = r16.logits(&x, nz, WeightSet::Prior);
            let w32 = r32.weights(&x, nz, WeightSet::Prior);
            let w16 = r16.weights(&x, nz, WeightSet::Prior);
            for i in 0..n {
                let dl = l16[i] - l32[i];
                let a = &atoms[i * d..(i + 1) * d];
                let h = &half[i * d..(i + 1) * d];
                let da = a
                    .iter()
                    .zip(h)
                    .map(|(&a, &h)| (a as f64 - h as f64).powi(2))
                    .sum::<f64>()
                    .sqrt();
                let dist = r32.dist2(&x, nz.s, i).sqrt();
                let bound = nz.s * da * (2.0 * dist + nz.s * da) / (2.0 * nz.v);
                assert!(
                    dl.abs() <= bound * (1.0 + 1e-9) + 1e-9,
                    "t={t} atom {i}: Δℓ {dl} > bound {bound}"
                );
                if w32[i] > 1e-6 {
                    worst_dl = worst_dl.max(dl.abs());
                }
            }
            // The shift of the logit gap between the two most likely atoms: what decides
            // whether f16 storage can change which atom a near-t = 0 particle goes to.
            let mut order: Vec<usize> = (0..n).collect();
            order.sort_by(|&a, &b| l32[b].total_cmp(&l32[a]));
            let (top, sec) = (order[0], order[1]);
            let gap = ((l16[top] - l16[sec]) - (l32[top] - l32[sec])).abs();
            worst_gap = worst_gap.max(gap);
            mean_gap += gap / rows as f64;
            let tv = 0.5
                * w32
                    .iter()
                    .zip(&w16)
                    .map(|(a, b)| (a - b).abs())
                    .sum::<f64>();
            worst_tv = worst_tv.max(tv);
            mean_tv += tv / rows as f64;
        }
        eprintln!(
            "t = {t}: max |Δ logit| (weight > 1e-6) = {worst_dl:.3e} nats; shift of the top-two \
             logit gap: mean {mean_gap:.3e}, max {worst_gap:.3e} nats; weights TV distance: \
             mean {mean_tv:.3e}, max {worst_tv:.3e}"
        );
    }
}

/// The pass-cache contract (C·g right after a pass over the same x reads the distances that
/// pass kept on the device instead of recomputing them; C·g on other particles or at another
/// noise level recomputes them), by the body shared with the CPU backend: against the float64
/// reference and a backend that keeps nothing, for the prior and a posterior set.
#[test]
fn kept_distances_give_the_same_covariance_products() {
    if !have_gpu("kept distances") {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(41);
    let (n, d, b) = (300, 24, 9);
    let atoms = atoms8(&mut rng, n, d);
    let mut gpu = GpuBackend::new(&atoms, d, GpuOptions::default()).unwrap();
    let no_keeping = GpuOptions {
        kept_bytes: Some(0),
        ..GpuOptions::default()
    };
    let mut full = GpuBackend::new(&atoms, d, no_keeping).unwrap();
    let mut reference = ReferenceBackend::new(&atoms, d).unwrap();
    let bvec = bias(&mut rng, &atoms, d, 0.5);
    let id = gpu.add_bias(&bvec).unwrap();
    assert_eq!(full.add_bias(&bvec).unwrap(), id);
    assert_eq!(reference.add_bias(&bvec).unwrap(), id);
    for t in [1e-3, 0.1, 0.5] {
        let nz = noise(t);
        let x = particles(&mut rng, &atoms, d, b, nz);
        let other = particles(&mut rng, &atoms, d, b, nz);
        let g: Vec<f32> = (0..b * d).map(|_| rng.sample(StandardNormal)).collect();
        let case = CacheCase {
            label: format!("gpu t={t}"),
            x: &x,
            other: &other,
            noise: nz,
            other_noise: noise(t * 0.5 + 0.05),
            g: &g,
        };
        check_pass_cache(
            &gpu,
            &full,
            &reference,
            &[WeightSet::Prior, WeightSet::Biased(id)],
            &case,
            true,
        );
    }
}

/// Removing a bias drops its values from the device buffer (the later biases move down),
/// refuses its id from then on, and leaves the other biases' results bit for bit as they
/// were (body shared with the CPU backend).
#[test]
fn removed_biases_are_refused_and_the_others_unchanged() {
    if !have_gpu("bias removal") {
        return;
    }
    check_bias_removal("gpu", &|atoms, d| {
        (
            Box::new(GpuBackend::new(atoms, d, GpuOptions::default()).unwrap()),
            atoms.to_vec(),
        )
    });
}

/// Adapters with timestamp queries time every pass on the device: the reading grows by a
/// positive amount per pass, no more than the pass's wall time (plus timer slack).
#[test]
fn passes_are_timed_on_the_device_where_timestamps_exist() {
    if !have_gpu("device time") {
        return;
    }
    let mut rng = ChaCha8Rng::seed_from_u64(8);
    let (n, d, b) = (400, 32, 8);
    let atoms = atoms8(&mut rng, n, d);
    let gpu = GpuBackend::new(&atoms, d, GpuOptions::default()).unwrap();
    let has_timestamps = list_adapters()
        .iter()
        .any(|a| a.preferred && a.timestamp_query);
    let Some(before) = gpu.device_seconds() else {
        assert!(
            !has_timestamps,
            "the adapter has timestamp queries but no device time"
        );
        eprintln!("device time: adapter without timestamp queries, nothing to check");
        return;
    };
    let nz = noise(0.3);
    let x = particles(&mut rng, &atoms, d, b, nz);
    let wall = std::time::Instant::now();
    gpu.weighted_means(&x, nz, &[WeightSet::Prior]).unwrap();
    let wall = wall.elapsed().as_secs_f64();
    let spent = gpu.device_seconds().unwrap() - before;
    assert!(spent > 0.0, "device time did not grow: {spent}");
    assert!(
        spent <= 1.5 * wall + 1e-3,
        "device time {spent} s exceeds the pass's wall time {wall} s"
    );
    // Per kernel: each of the four ran and took time, and together they fit in the pass's
    // device time (the gaps between the passes are the rest).
    let split = gpu.device_seconds_by_kernel();
    let names: Vec<&str> = split.iter().map(|&(k, _)| k).collect();
    for k in [
        "distances",
        "split_weights",
        "weighted_sums",
        "merge_partials",
    ] {
        assert!(names.contains(&k), "{k} missing from {split:?}");
    }
    assert!(split.iter().all(|&(_, s)| s > 0.0), "{split:?}");
    let sum: f64 = split.iter().map(|&(_, s)| s).sum();
    assert!(
        sum <= spent * (1.0 + 1e-9),
        "kernels {sum} s > pass {spent} s"
    );
}

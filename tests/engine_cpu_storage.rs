//! The CPU backend's compact atom stores: u8 gives every output bit for bit as the f32 store
//! on 8-bit data (random atoms and Fashion-MNIST), f16 gives bit for bit the f32 store of the
//! f16-rounded atoms and stays within the float64 reference of that prior; the errors name
//! `storage`.

mod common;

use common::engine::{assert_same_outputs, atoms8, bias, bits, compare, noise, particles};
use common::fashion::first_train_images;
use fslens::engine::cpu::CpuBackend;
use fslens::engine::gpu::{Storage, stored_values};
use fslens::engine::reference::ReferenceBackend;
use fslens::engine::{Backend, WeightSet};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use rand_distr::StandardNormal;

/// Two threads, short chunks and row blocks, so that several tasks merge and both GEMM
/// layouts (≤ 64 rows and more) run.
fn backend(atoms: &[f32], d: usize, storage: Storage, chunk: usize) -> CpuBackend {
    CpuBackend::with_storage(atoms, d, storage)
        .unwrap()
        .with_threads(2)
        .unwrap()
        .with_blocking(chunk, 96)
        .unwrap()
}

#[test]
fn u8_store_equals_f32_store_bit_for_bit_on_8_bit_data() {
    let mut rng = ChaCha8Rng::seed_from_u64(11);
    let (n, d) = (700, 37);
    let atoms = atoms8(&mut rng, n, d);
    let beta = bias(&mut rng, &atoms, d, 0.3);
    for t in [1e-3, 0.3, 0.8] {
        let nz = noise(t);
        for rows in [5, 130] {
            let x = particles(&mut rng, &atoms, d, rows, nz);
            let mut f = backend(&atoms, d, Storage::F32, 64);
            let mut u = backend(&atoms, d, Storage::U8, 64);
            assert_eq!(u.storage(), Storage::U8);
            assert_eq!(u.store_bytes(), n * d + 1024);
            assert_eq!(f.store_bytes(), 4 * n * d);
            assert!(u.describe().contains("u8"), "{}", u.describe());
            assert_eq!(u.atom_values(n - 1), atoms[(n - 1) * d..]);
            assert!(u.atom_store().is_none());
            assert_same_outputs(&format!("t {t}, B {rows}"), &mut f, &mut u, &x, nz, &beta);
        }
    }
}

#[test]
fn u8_store_equals_f32_store_on_fashion_mnist() {
    let Some((atoms, d)) = first_train_images(3000) else {
        return;
    };
    let mut rng = ChaCha8Rng::seed_from_u64(12);
    let beta = bias(&mut rng, &atoms, d, 0.2);
    for t in [1e-3, 0.3] {
        let nz = noise(t);
        let x = particles(&mut rng, &atoms, d, 16, nz);
        // Default blocking: the chunks the CLI runs with.
        let mut f = CpuBackend::new(&atoms, d).unwrap().with_threads(2).unwrap();
        let mut u = CpuBackend::with_storage(&atoms, d, Storage::U8)
            .unwrap()
            .with_threads(2)
            .unwrap();
        assert_same_outputs(&format!("fashion t {t}"), &mut f, &mut u, &x, nz, &beta);
    }
}

#[test]
fn f16_store_is_the_f32_store_of_the_rounded_atoms() {
    let mut rng = ChaCha8Rng::seed_from_u64(13);
    let (n, d) = (500, 29);
    // Not 8-bit: Gaussian atoms, with some below the f16 normal range (flushed to 0).
    let atoms: Vec<f32> = {
        use rand::Rng;
        (0..n * d)
            .map(|k| {
                let v = rng.sample::<f32, _>(StandardNormal);
                if k % 97 == 0 { v * 1e-6 } else { v }
            })
            .collect()
    };
    let rounded = stored_values(&atoms, Storage::F16);
    let beta = bias(&mut rng, &rounded, d, 0.5);
    let reference = {
        let mut r = ReferenceBackend::new(&rounded, d).unwrap();
        r.add_bias(&beta).unwrap();
        r
    };
    for t in [1e-3, 0.4] {
        let nz = noise(t);
        let x = particles(&mut rng, &rounded, d, 20, nz);
        let mut f = backend(&rounded, d, Storage::F32, 64);
        let mut h = backend(&atoms, d, Storage::F16, 64);
        assert_eq!(h.store_bytes(), 2 * n * d);
        assert_eq!(bits(&h.atom_values(0)), bits(&rounded[..d]));
        assert_same_outputs(&format!("f16 t {t}"), &mut f, &mut h, &x, nz, &beta);
        // Against the float64 reference of the f16 prior, within the f32 engine's tolerance.
        let mut h = backend(&atoms, d, Storage::F16, 64);
        let id = h.add_bias(&beta).unwrap();
        let sets = [WeightSet::Prior, WeightSet::Biased(id)];
        compare(
            &format!("f16 t {t}"),
            &h,
            &reference,
            &rounded,
            &x,
            nz,
            &sets,
            &[0, 1],
            &mut rng,
        );
    }
}

#[test]
fn u8_storage_of_non_8_bit_atoms_is_an_error_naming_storage() {
    let atoms: Vec<f32> = (0..600).map(|k| k as f32 * 0.01).collect();
    let err = CpuBackend::with_storage(&atoms, 3, Storage::U8)
        .err()
        .unwrap();
    assert_eq!(err.key(), Some("storage"), "{err}");
    let text = err.to_string();
    assert!(
        text.contains("more than 256") && text.contains("f32"),
        "{text}"
    );
    // The same through the engine factory a run config uses.
    let shared = std::sync::Arc::new(atoms);
    let err = fslens::engine::create_shared(
        fslens::engine::BackendKind::Cpu,
        fslens::engine::StorageChoice::Fixed(Storage::U8),
        fslens::engine::Devices::Best,
        false,
        &shared,
        3,
    )
    .err()
    .unwrap();
    assert_eq!(err.key(), Some("storage"), "{err}");
    // f16 takes any finite data; non-finite atoms are refused before encoding.
    assert!(CpuBackend::with_storage(&shared, 3, Storage::F16).is_ok());
    assert!(CpuBackend::with_storage(&[1.0, f32::NAN, 0.0], 3, Storage::U8).is_err());
}

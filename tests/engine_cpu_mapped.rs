//! The CPU backend over a memory-mapped data-cache entry (atom sets larger than RAM): every
//! output bit for bit that of the in-memory store of the same atoms (u8 entries against the
//! u8 and f32 stores, f32 entries against the f32 store), on random 8-bit data and on
//! Fashion-MNIST, and within the float64 reference's tolerance; damaged entries are errors
//! naming the file and the fix.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use common::engine::{assert_same_outputs, bias, bits, compare, noise, particles};
use common::fashion::first_train_images;
use fslens::data::ImageShape;
use fslens::data::mapped::{Encoding, EntryWriter, MappedAtoms};
use fslens::engine::cpu::CpuBackend;
use fslens::engine::gpu::Storage;
use fslens::engine::reference::ReferenceBackend;
use fslens::engine::{Backend, WeightSet};
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

fn scratch(tag: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("fslens-mapped-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes `codes` (N × d intensities) as a u8 entry, in blocks of 7 rows (streaming).
fn write_u8(path: &Path, codes: &[u8], d: usize) {
    let n = codes.len() / d;
    let mut w =
        EntryWriter::create(path, "k", ImageShape::new(1, d, 1), n, "test", Encoding::U8).unwrap();
    for block in codes.chunks(7 * d) {
        w.push_u8(block).unwrap();
    }
    w.finish().unwrap();
}

fn mapped(path: &Path) -> CpuBackend {
    let m = Arc::new(MappedAtoms::open(path, Some("k")).unwrap());
    CpuBackend::from_mapped(m).unwrap()
}

/// Two threads, short chunks and row blocks (several tasks merge; both GEMM layouts run).
fn tuned(b: CpuBackend, chunk: usize) -> CpuBackend {
    b.with_threads(2).unwrap().with_blocking(chunk, 96).unwrap()
}

#[test]
fn mapped_u8_entry_equals_the_in_memory_stores_bit_for_bit() {
    let dir = scratch("u8");
    let mut rng = ChaCha8Rng::seed_from_u64(21);
    let (n, d) = (700, 37);
    let codes: Vec<u8> = (0..n * d).map(|_| rng.random()).collect();
    let table = fslens::data::u8_pixel_table();
    let atoms: Vec<f32> = codes.iter().map(|&k| table[k as usize]).collect();
    let path = dir.join("dataset-k.bin");
    write_u8(&path, &codes, d);
    let beta = bias(&mut rng, &atoms, d, 0.3);
    let reference = {
        let mut r = ReferenceBackend::new(&atoms, d).unwrap();
        r.add_bias(&beta).unwrap();
        r
    };
    for t in [1e-3, 0.3, 0.8] {
        let nz = noise(t);
        for rows in [5, 130] {
            let x = particles(&mut rng, &atoms, d, rows, nz);
            let label = format!("t {t}, B {rows}");
            let mut m = tuned(mapped(&path), 64);
            assert!(m.is_mapped() && m.describe().contains("u8 mapped"));
            assert_eq!(m.storage(), Storage::U8);
            assert_eq!(m.store_bytes(), n * d);
            assert_eq!(bits(&m.atom_values(n - 1)), bits(&atoms[(n - 1) * d..]));
            let mut u = tuned(
                CpuBackend::with_storage(&atoms, d, Storage::U8).unwrap(),
                64,
            );
            assert_same_outputs(&format!("u8 {label}"), &mut u, &mut m, &x, nz, &beta);
            let mut m = tuned(mapped(&path), 64);
            let mut f = tuned(CpuBackend::new(&atoms, d).unwrap(), 64);
            assert_same_outputs(&format!("f32 {label}"), &mut f, &mut m, &x, nz, &beta);
            // And against the float64 reference (the prior and the biased set, with C·g).
            let mut m = tuned(mapped(&path), 64);
            let id = m.add_bias(&beta).unwrap();
            let sets = [WeightSet::Prior, WeightSet::Biased(id)];
            compare(
                &label,
                &m,
                &reference,
                &atoms,
                &x,
                nz,
                &sets,
                &[0, 1],
                &mut rng,
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mapped_f32_entry_equals_the_f32_store_bit_for_bit() {
    let dir = scratch("f32");
    let mut rng = ChaCha8Rng::seed_from_u64(22);
    let (n, d) = (300, 19);
    let atoms: Vec<f32> = (0..n * d).map(|_| rng.random_range(-1.5f32..1.5)).collect();
    let path = dir.join("dataset-k.bin");
    let mut w = EntryWriter::create(
        &path,
        "k",
        ImageShape::new(1, d, 1),
        n,
        "test",
        Encoding::F32,
    )
    .unwrap();
    for block in atoms.chunks(11 * d) {
        w.push_f32(block).unwrap();
    }
    w.finish().unwrap();
    let beta = bias(&mut rng, &atoms, d, 0.4);
    let nz = noise(0.2);
    let x = particles(&mut rng, &atoms, d, 40, nz);
    let mut m = tuned(mapped(&path), 32);
    assert_eq!(m.storage(), Storage::F32);
    let mut f = tuned(CpuBackend::new(&atoms, d).unwrap(), 32);
    assert_same_outputs("f32 entry", &mut f, &mut m, &x, nz, &beta);
    // A non-finite value in an f32 entry is refused when the backend is built, naming the file.
    let mut bad = atoms.clone();
    bad[5 * d + 3] = f32::NAN;
    let path2 = dir.join("dataset-nan.bin");
    let mut w = EntryWriter::create(
        &path2,
        "nan",
        ImageShape::new(1, d, 1),
        n,
        "t",
        Encoding::F32,
    )
    .unwrap();
    w.push_f32(&bad).unwrap();
    w.finish().unwrap();
    let e = CpuBackend::from_mapped(Arc::new(MappedAtoms::open(&path2, None).unwrap()))
        .err()
        .unwrap()
        .to_string();
    assert!(
        e.contains("dataset-nan.bin") && e.contains("atom 5") && e.contains("coordinate 3"),
        "{e}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn mapped_fashion_mnist_equals_the_in_memory_stores() {
    let Some((atoms, d)) = first_train_images(3000) else {
        return;
    };
    let dir = scratch("fashion");
    let codes: Vec<u8> = atoms
        .iter()
        .map(|&v| fslens::data::pixel_to_u8(v))
        .collect();
    let path = dir.join("dataset-k.bin");
    write_u8(&path, &codes, d);
    let mut rng = ChaCha8Rng::seed_from_u64(23);
    let beta = bias(&mut rng, &atoms, d, 0.2);
    for t in [1e-3, 0.3] {
        let nz = noise(t);
        let x = particles(&mut rng, &atoms, d, 16, nz);
        // Default blocking: the chunks the CLI runs with.
        let mut m = mapped(&path).with_threads(2).unwrap();
        let mut f = CpuBackend::new(&atoms, d).unwrap().with_threads(2).unwrap();
        assert_same_outputs(&format!("fashion t {t}"), &mut f, &mut m, &x, nz, &beta);
        let mut m = mapped(&path).with_threads(2).unwrap();
        let mut u = CpuBackend::with_storage(&atoms, d, Storage::U8)
            .unwrap()
            .with_threads(2)
            .unwrap();
        assert_same_outputs(&format!("fashion u8 t {t}"), &mut u, &mut m, &x, nz, &beta);
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn damaged_entries_are_errors_naming_the_file_and_the_fix() {
    let dir = scratch("bad");
    let (n, d) = (50, 16);
    let codes: Vec<u8> = (0..n * d).map(|i| (i * 31 % 256) as u8).collect();
    let path = dir.join("dataset-k.bin");
    write_u8(&path, &codes, d);
    let good = std::fs::read(&path).unwrap();
    assert!(MappedAtoms::open(&path, Some("k")).is_ok());
    let open_err = |bytes: &[u8]| {
        std::fs::write(&path, bytes).unwrap();
        let e = MappedAtoms::open(&path, Some("k")).unwrap_err().to_string();
        assert!(
            e.contains("dataset-k.bin") && e.contains("delete the file and run again"),
            "{e}"
        );
        e
    };
    // Truncated: refused from the length, before any map (no SIGBUS).
    let e = open_err(&good[..good.len() - 100]);
    assert!(e.contains("truncated"), "{e}");
    let e = open_err(&good[..20]);
    assert!(e.contains("truncated"), "{e}");
    let e = open_err(&good[..60]);
    assert!(e.contains("truncated"), "{e}");
    // One flipped payload bit: the streamed checksum.
    let mut flipped = good.clone();
    let last = flipped.len() - 3;
    flipped[last] ^= 0x04;
    let e = open_err(&flipped);
    assert!(e.contains("checksum"), "{e}");
    // Extra bytes, a bad magic, another key.
    let mut longer = good.clone();
    longer.extend([0u8; 8]);
    assert!(open_err(&longer).contains("promises"));
    let mut magic = good.clone();
    magic[0] = b'X';
    assert!(open_err(&magic).contains("magic"));
    std::fs::write(&path, &good).unwrap();
    let e = MappedAtoms::open(&path, Some("other"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("not this entry"), "{e}");
    // A writer dropped before finishing leaves neither the entry nor its temporary file.
    let unfinished = dir.join("dataset-u.bin");
    let mut w = EntryWriter::create(
        &unfinished,
        "u",
        ImageShape::new(1, d, 1),
        n,
        "t",
        Encoding::U8,
    )
    .unwrap();
    w.push_u8(&codes[..d]).unwrap();
    assert!(w.push_f32(&[0.0]).is_err());
    drop(w);
    let left: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, vec![std::ffi::OsString::from("dataset-k.bin")]);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// `fslens score` over mapped atoms: a uint8 and a float32 .npy, streamed into entries,
/// give the in-memory score bit for bit (prior and fsr with a matrix operator, whose bias
/// is computed block by block from the map), and the binary takes `--atom-store mapped`.
#[test]
fn score_over_mapped_atoms_equals_the_in_memory_score() {
    use fslens::diffusion::Schedule;
    use fslens::engine::BackendKind;
    use fslens::experiment::score::{Method, ScoreRequest, score, score_with};
    use fslens::plan::EngineChoice;
    use fslens::resources::AtomPlacement;
    use fslens::samplers::{SamplerKind, SamplerOptions};
    let dir = scratch("score");
    let cache = dir.join("cache");
    let mut rng = ChaCha8Rng::seed_from_u64(24);
    let (n, d, m) = (400, 16, 6);
    let codes: Vec<u8> = (0..n * d).map(|_| rng.random()).collect();
    let table = fslens::data::u8_pixel_table();
    let atoms: Vec<f32> = codes.iter().map(|&k| table[k as usize]).collect();
    fslens::arrays::write_npy(&dir.join("A8.npy"), &[n, d], &codes).unwrap();
    fslens::arrays::write_npy_f32(&dir.join("A.npy"), &[n, d], &atoms).unwrap();
    let matrix: Vec<f32> = (0..m * d).map(|_| rng.random_range(-0.5f32..0.5)).collect();
    fslens::arrays::write_npy_f32(&dir.join("M.npy"), &[m, d], &matrix).unwrap();
    let y: Vec<f32> = (0..m)
        .map(|r| {
            (0..d)
                .map(|c| matrix[r * d + c] * atoms[7 * d + c])
                .sum::<f32>()
                + 0.01
        })
        .collect();
    fslens::arrays::write_npy_f32(&dir.join("y.npy"), &[m], &y).unwrap();
    let nz = noise(0.4);
    let x = particles(&mut rng, &atoms, d, 5, nz);
    fslens::arrays::write_npy_f32(&dir.join("x.npy"), &[5, d], &x).unwrap();
    for atoms_file in ["A8.npy", "A.npy"] {
        for method in [Method::Prior, Method::Posterior(SamplerKind::Fsr)] {
            let req = ScoreRequest {
                atoms: dir.join(atoms_file),
                x: dir.join("x.npy"),
                t: 0.4,
                method,
                y: Some(dir.join("y.npy")),
                operator: Some(format!("matrix:{}", dir.join("M.npy").display())),
                sigma: Some(0.1),
                shape: None,
                engine: EngineChoice {
                    backend: BackendKind::Cpu,
                    ..Default::default()
                },
                schedule: Schedule::default(),
                options: SamplerOptions::default(),
            };
            let (_, _, want) = score(&req).unwrap();
            let (b, dd, got) = score_with(&req, AtomPlacement::Mapped, Some(&cache)).unwrap();
            assert_eq!((b, dd), (5, d));
            assert_eq!(
                bits(&got.values),
                bits(&want.values),
                "{atoms_file} {method:?}"
            );
        }
    }
    // One entry per source file, u8 for the uint8 array (1 byte a value).
    let mut sizes: Vec<u64> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .collect();
    sizes.sort();
    assert_eq!(sizes.len(), 2);
    assert!(sizes[0] < (n * d + 1024) as u64 && sizes[1] > (4 * n * d) as u64);
    // The binary, mapped: the same score file as in memory.
    let run = |store: &str, out: &str| {
        common::fslens(&[
            "score",
            "--atoms",
            common::s(&dir.join("A8.npy")),
            "--x",
            common::s(&dir.join("x.npy")),
            "--t",
            "0.4",
            "--method",
            "prior",
            "--backend",
            "cpu",
            "--atom-store",
            store,
            "--cache-dir",
            common::s(&cache),
            "--out",
            common::s(&dir.join(out)),
        ]);
        fslens::arrays::read_npy(&dir.join(out)).unwrap().data
    };
    assert_eq!(run("mapped", "sm.npy"), run("memory", "si.npy"));
    // A mapped store on the GPU is refused, naming the flag.
    common::fslens_fails(
        &[
            "score",
            "--atoms",
            common::s(&dir.join("A8.npy")),
            "--x",
            common::s(&dir.join("x.npy")),
            "--t",
            "0.4",
            "--method",
            "prior",
            "--backend",
            "gpu",
            "--atom-store",
            "mapped",
            "--cache-dir",
            common::s(&cache),
            "--out",
            common::s(&dir.join("g.npy")),
        ],
        &["--backend", "mapped atom store runs on the CPU"],
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

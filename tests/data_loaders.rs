//! The large-set loaders: downsampled ImageNet `.npz` batches (written here with the zip
//! crate and npyz, stored and deflated, and by numpy when it is installed) checked pixel by
//! pixel against a decode written in this file, their errors, and the folder loader's
//! parallel decoding against its serial one.

use std::io::Write;
use std::path::{Path, PathBuf};

use fslens::data::folder::{self, Decoding, FolderOptions};
use fslens::data::imagenet_npz::{self, Rows, Split};
use fslens::data::{DataConfig, ImageShape, preprocess};

fn scratch(tag: &str) -> PathBuf {
    let d = std::env::temp_dir().join(format!("fslens-loaders-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The bytes of an `.npy` of `data` with `shape`.
fn npy<T: npyz::Serialize + npyz::AutoSerialize + Copy>(shape: &[u64], data: &[T]) -> Vec<u8> {
    use npyz::WriterBuilder;
    let mut buf = Vec::new();
    let mut w = npyz::WriteOptions::<T>::new()
        .default_dtype()
        .shape(shape)
        .writer(&mut buf)
        .begin_nd()
        .unwrap();
    w.extend(data.iter().copied()).unwrap();
    w.finish().unwrap();
    buf
}

/// Writes a zip of `members` (name, bytes), each stored or deflated; zip64 headers on the
/// data member as numpy writes them (`force_zip64`).
fn write_npz(path: &Path, members: &[(&str, Vec<u8>)], deflated: bool) {
    use zip::write::SimpleFileOptions;
    let method = if deflated {
        zip::CompressionMethod::Deflated
    } else {
        zip::CompressionMethod::Stored
    };
    let mut z = zip::ZipWriter::new(std::fs::File::create(path).unwrap());
    for (name, bytes) in members {
        let opts = SimpleFileOptions::default()
            .compression_method(method)
            .large_file(*name == "data.npy");
        z.start_file(*name, opts).unwrap();
        z.write_all(bytes).unwrap();
    }
    z.finish().unwrap();
}

/// A batch of `n` images of side `s`: byte (i, j) = (i·131 + j·7 + seed) mod 256, labels
/// 1 + (i·37 + seed) mod 1000.
fn batch(n: usize, s: usize, seed: usize) -> (Vec<u8>, Vec<i64>) {
    let w = 3 * s * s;
    let data = (0..n * w)
        .map(|k| ((k / w) * 131 + (k % w) * 7 + seed) as u8)
        .collect();
    let labels = (0..n)
        .map(|i| 1 + ((i * 37 + seed) % 1000) as i64)
        .collect();
    (data, labels)
}

fn write_batch(
    path: &Path,
    n: usize,
    s: usize,
    seed: usize,
    deflated: bool,
) -> (Vec<u8>, Vec<i64>) {
    let (data, labels) = batch(n, s, seed);
    let mean: Vec<f64> = vec![0.5; 3 * s * s];
    write_npz(
        path,
        &[
            ("data.npy", npy(&[n as u64, (3 * s * s) as u64], &data)),
            ("labels.npy", npy(&[n as u64], &labels)),
            ("mean.npy", npy(&[(3 * s * s) as u64], &mean)),
        ],
        deflated,
    );
    (data, labels)
}

/// The expected data set, decoded independently: HWC pixel (r, c, k) of image i is row i's
/// byte k·S² + r·S + c (planar R, G, B), mapped to 2·byte/255 − 1 in float64.
fn reference(data: &[u8], s: usize) -> Vec<f32> {
    let w = 3 * s * s;
    let mut out = Vec::new();
    for row in data.chunks(w) {
        for r in 0..s {
            for c in 0..s {
                for k in 0..3 {
                    let byte = row[k * s * s + r * s + c];
                    out.push((2.0 * f64::from(byte) / 255.0 - 1.0) as f32);
                }
            }
        }
    }
    out
}

#[test]
fn imagenet_npz_stored_and_deflated_every_pixel_32_and_64() {
    let d = scratch("npz-ok");
    let (d1, l1) = write_batch(&d.join("train_data_batch_1.npz"), 5, 32, 0, false);
    let (d2, l2) = write_batch(&d.join("train_data_batch_2.npz"), 4, 32, 9, true);
    let (dv, lv) = write_batch(&d.join("val_data.npz"), 3, 32, 77, true);
    let train = imagenet_npz::load(&d, Split::Train, Rows::All).unwrap();
    assert_eq!((train.len(), train.shape), (9, ImageShape::new(32, 32, 3)));
    assert!(train.eight_bit);
    let mut all = d1.clone();
    all.extend(&d2);
    assert_eq!(train.images, reference(&all, 32));
    let want: Vec<u32> = l1.iter().chain(&l2).map(|&l| (l - 1) as u32).collect();
    assert_eq!(train.labels.as_deref(), Some(&want[..]));
    // Class name of label l is the file's id l + 1.
    let names = train.class_names.as_ref().unwrap();
    assert_eq!((names.len(), names[0].as_str()), (1000, "1"));
    let val = imagenet_npz::load(&d, Split::Val, Rows::All).unwrap();
    assert_eq!(val.images, reference(&dv, 32));
    assert_eq!(
        val.labels.unwrap(),
        lv.iter().map(|&l| (l - 1) as u32).collect::<Vec<_>>()
    );
    // One file.
    let one =
        imagenet_npz::load(&d.join("train_data_batch_2.npz"), Split::Train, Rows::All).unwrap();
    assert_eq!(one.images, reference(&d2, 32));

    // 64×64, deflated and stored.
    for deflated in [true, false] {
        let f = d.join(format!("b64-{deflated}.npz"));
        let (data, _) = write_batch(&f, 3, 64, 5, deflated);
        let ds = imagenet_npz::load(&f, Split::Train, Rows::All).unwrap();
        assert_eq!(ds.shape, ImageShape::new(64, 64, 3));
        assert_eq!(ds.images, reference(&data, 64));
    }
    std::fs::remove_dir_all(&d).unwrap();
}

fn parse(s: &str) -> DataConfig {
    toml::from_str(s).unwrap()
}

#[test]
fn imagenet_npz_through_the_spec_subset_and_expected_size() {
    let d = scratch("npz-spec");
    let (d1, _) = write_batch(&d.join("train_data_batch_1.npz"), 6, 32, 1, true);
    let (d2, _) = write_batch(&d.join("train_data_batch_2.npz"), 7, 32, 2, false);
    write_batch(&d.join("train_data_batch_3.npz"), 5, 32, 3, true);
    let base = fslens::data::load(&parse("kind = \"imagenet-npz\"\npath = \".\""), &d).unwrap();
    assert_eq!(base.len(), 18);
    // A random subset read while loading equals the subset of the whole set.
    for seed in [0u64, 7, 123] {
        let cfg = parse(&format!(
            "kind = \"imagenet-npz\"\npath = \".\"\nsplit = \"train\"\nsubset = 8\nsubset_seed = {seed}"
        ));
        let got = fslens::data::load(&cfg, &d).unwrap();
        let want = preprocess::subset_random(&base, 8, seed).unwrap();
        assert_eq!(got.images, want.images, "seed {seed}");
        assert_eq!(got.labels, want.labels, "seed {seed}");
        let e = cfg.expected_size(&d).unwrap();
        assert_eq!((e.read, e.images, e.shape), (8, 8, got.shape));
    }
    // Every batch header is checked before any image is read, even of a batch no kept row
    // lies in.
    std::fs::write(d.join("train_data_batch_3.npz"), b"damaged").unwrap();
    let first = fslens::data::load(
        &parse("kind = \"imagenet-npz\"\npath = \".\"\nsubset = 8"),
        &d,
    );
    let e = first.unwrap_err().to_string();
    assert!(
        e.contains("train_data_batch_3.npz") && e.contains("zip"),
        "{e}"
    );
    std::fs::remove_file(d.join("train_data_batch_3.npz")).unwrap();
    let first = fslens::data::load(
        &parse("kind = \"imagenet-npz\"\npath = \".\"\nsubset = 8\ncrop = [16, 16]"),
        &d,
    )
    .unwrap();
    let mut all = d1.clone();
    all.extend(&d2);
    let full = reference(&all[..8 * 3072], 32);
    let ds8 = fslens::data::Dataset {
        source: String::new(),
        shape: ImageShape::new(32, 32, 3),
        images: full,
        labels: None,
        class_names: None,
        eight_bit: true,
    };
    assert_eq!(
        first.images,
        preprocess::center_crop(&ds8, 16, 16).unwrap().images
    );
    let e = fslens::data::load(
        &parse("kind = \"imagenet-npz\"\npath = \".\"\nsubset = 14"),
        &d,
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("data.subset") && e.contains("1..=13"), "{e}");
    let e = parse("kind = \"imagenet-npz\"\npath = \".\"")
        .expected_size(&d)
        .unwrap();
    assert_eq!((e.read, e.read_shape), (13, ImageShape::new(32, 32, 3)));
    assert_eq!(
        fslens::data::DataKind::parse("imagenet-npz").unwrap(),
        fslens::data::DataKind::ImagenetNpz
    );
    std::fs::remove_dir_all(&d).unwrap();
}

#[test]
fn imagenet_npz_bad_inputs_name_file_member_and_fix() {
    let d = scratch("npz-bad");
    let err = |p: &Path| {
        imagenet_npz::load(p, Split::Train, Rows::All)
            .unwrap_err()
            .to_string()
    };
    let check = |e: String, words: &[&str]| {
        for w in words {
            assert!(e.contains(w), "{w:?} missing in: {e}");
        }
    };
    // Not a zip.
    std::fs::write(d.join("text.npz"), b"not a zip at all").unwrap();
    check(
        err(&d.join("text.npz")),
        &["text.npz", "zip", "re-download"],
    );
    // Missing data member.
    let (data, labels) = batch(2, 32, 0);
    write_npz(
        &d.join("nodata.npz"),
        &[("labels.npy", npy(&[2], &labels))],
        true,
    );
    check(
        err(&d.join("nodata.npz")),
        &["nodata.npz", "data.npy", "labels.npy"],
    );
    // Wrong width: rows of 1000 bytes.
    write_npz(
        &d.join("width.npz"),
        &[
            ("data.npy", npy(&[2, 1000], &vec![0u8; 2000])),
            ("labels.npy", npy(&[2], &labels)),
        ],
        false,
    );
    check(
        err(&d.join("width.npz")),
        &["width.npz", "data.npy", "1000", "3072"],
    );
    // Labels length mismatch.
    write_npz(
        &d.join("nlab.npz"),
        &[
            ("data.npy", npy(&[2, 3072], &data)),
            ("labels.npy", npy(&[3], &[1i64, 2, 3])),
        ],
        true,
    );
    check(
        err(&d.join("nlab.npz")),
        &["nlab.npz", "labels.npy", "2 images"],
    );
    // A 0 label (the files are 1-based), int32 labels otherwise fine.
    write_npz(
        &d.join("zero.npz"),
        &[
            ("data.npy", npy(&[2, 3072], &data)),
            ("labels.npy", npy(&[2], &[5i32, 0])),
        ],
        true,
    );
    check(
        err(&d.join("zero.npz")),
        &["zero.npz", "labels.npy", "index 1", "1-based"],
    );
    // Float images; a truncated data member (the header claims 3 rows, 2 are there).
    write_npz(
        &d.join("float.npz"),
        &[
            ("data.npy", npy(&[1, 3072], &vec![0f32; 3072])),
            ("labels.npy", npy(&[1], &[1i64])),
        ],
        true,
    );
    check(err(&d.join("float.npz")), &["float.npz", "uint8"]);
    let mut short = npy(&[3, 3072], &vec![0u8; 3 * 3072]);
    short.truncate(short.len() - 3072);
    write_npz(
        &d.join("short.npz"),
        &[("data.npy", short), ("labels.npy", npy(&[3], &[1i64; 3]))],
        true,
    );
    check(
        err(&d.join("short.npz")),
        &["short.npz", "data.npy", "truncated"],
    );
    // Folders: a gap in the batches, mixed sizes, no batches, no val file.
    let f = scratch("npz-bad-folder");
    write_batch(&f.join("train_data_batch_1.npz"), 2, 32, 0, true);
    write_batch(&f.join("train_data_batch_3.npz"), 2, 32, 0, true);
    check(err(&f), &["train_data_batch_2.npz", "missing"]);
    write_batch(&f.join("train_data_batch_2.npz"), 2, 64, 0, true);
    check(err(&f), &["train_data_batch_2.npz", "64×64", "32×32"]);
    let e = imagenet_npz::load(&f, Split::Val, Rows::All)
        .unwrap_err()
        .to_string();
    check(e, &["val_data.npz", "not found"]);
    let empty = scratch("npz-empty");
    check(err(&empty), &["train_data_batch", "unpack"]);
    // Config: the split must be train or val, and is for folders only.
    let e = fslens::data::load(
        &parse("kind = \"imagenet-npz\"\npath = \".\"\nsplit = \"test\""),
        &f,
    )
    .unwrap_err()
    .to_string();
    check(e, &["data.split", "\"val\""]);
    let e = fslens::data::load(
        &parse("kind = \"imagenet-npz\"\npath = \"train_data_batch_1.npz\"\nsplit = \"val\""),
        &f,
    )
    .unwrap_err()
    .to_string();
    check(e, &["data.split", "one batch file"]);
    let e = fslens::data::load(&parse("kind = \"imagenet-npz\""), &f)
        .unwrap_err()
        .to_string();
    check(e, &["data.path", "required"]);
    for dir in [d, f, empty] {
        std::fs::remove_dir_all(dir).unwrap();
    }
}

/// numpy.savez_compressed of the real layout (a list of labels, a mean), read back.
#[test]
fn imagenet_npz_written_by_numpy() {
    let d = scratch("npz-numpy");
    let script = r#"
import sys, numpy as np
n, s = 4, 32
i = np.arange(n)[:, None]; j = np.arange(3 * s * s)[None, :]
data = ((i * 131 + j * 7 + 11) % 256).astype(np.uint8)
labels = [int(1 + (k * 37 + 11) % 1000) for k in range(n)]
np.savez_compressed(sys.argv[1], data=data, labels=labels, mean=data.mean(axis=0))
"#;
    let out = std::process::Command::new("python3")
        .args(["-c", script, d.join("val_data.npz").to_str().unwrap()])
        .output();
    match out {
        Ok(o) if o.status.success() => {}
        Ok(o) => {
            println!(
                "skipped: python3 with numpy could not write the batch ({})",
                String::from_utf8_lossy(&o.stderr).trim()
            );
            return;
        }
        Err(e) => {
            println!("skipped: python3 is not available ({e})");
            return;
        }
    }
    let ds = imagenet_npz::load(&d, Split::Val, Rows::All).unwrap();
    let (data, labels) = batch(4, 32, 11);
    assert_eq!(ds.images, reference(&data, 32));
    let want: Vec<u32> = labels.iter().map(|&l| (l - 1) as u32).collect();
    assert_eq!(ds.labels.as_deref(), Some(&want[..]));
    std::fs::remove_dir_all(&d).unwrap();
}

/// More files than one decoding chunk, PNG and JPEG, gray and colour, in class folders:
/// parallel and serial decoding give the same set bit for bit, in sorted file order, and the
/// progress reaches the file count.
#[test]
fn folder_parallel_decoding_equals_serial() {
    let d = scratch("folder-par");
    let mut expected_files = Vec::new();
    for (c, class) in ["b-class", "a-class"].iter().enumerate() {
        std::fs::create_dir_all(d.join(class)).unwrap();
        for i in 0..170u32 {
            let seed = i * 3 + c as u32 * 1000;
            let name = match i % 3 {
                0 => format!("{i:03}.jpg"),
                _ => format!("{i:03}.png"),
            };
            let path = d.join(class).join(&name);
            if i % 5 == 0 {
                image::GrayImage::from_fn(8, 6, |x, y| {
                    image::Luma([((x * 29 + y * 13 + seed) % 256) as u8])
                })
                .save(&path)
                .unwrap();
            } else {
                image::RgbImage::from_fn(8, 6, |x, y| {
                    image::Rgb([
                        (x * 31 + seed) as u8,
                        (y * 17 + seed) as u8,
                        (seed * 7) as u8,
                    ])
                })
                .save(&path)
                .unwrap();
            }
            expected_files.push((class.to_string(), path));
        }
    }
    let mut calls = Vec::new();
    let par = folder::load_with(
        &d,
        &FolderOptions::default(),
        Decoding::Parallel,
        &mut |done, total| calls.push((done, total)),
    )
    .unwrap();
    let ser = folder::load_with(
        &d,
        &FolderOptions::default(),
        Decoding::Serial,
        &mut |_, _| {},
    )
    .unwrap();
    assert_eq!(par.len(), 340);
    assert_eq!(par.shape, ImageShape::new(6, 8, 3));
    assert_eq!(par.images.len(), ser.images.len());
    assert!(
        par.images
            .iter()
            .zip(&ser.images)
            .all(|(a, b)| a.to_bits() == b.to_bits())
    );
    assert_eq!(
        (&par.labels, &par.class_names),
        (&ser.labels, &ser.class_names)
    );
    assert_eq!(
        par.class_names.as_deref(),
        Some(&["a-class".to_string(), "b-class".to_string()][..])
    );
    // Sorted order, checked against the image crate directly: a-class files come first.
    expected_files.sort();
    for (i, (_, path)) in expected_files.iter().enumerate() {
        let img = image::open(path).unwrap();
        let rgb = img.to_rgb8();
        let want: Vec<f32> = rgb
            .as_raw()
            .iter()
            .map(|&k| (2.0 * f64::from(k) / 255.0 - 1.0) as f32)
            .collect();
        assert_eq!(par.image(i), &want[..], "{}", path.display());
        assert_eq!(par.labels.as_ref().unwrap()[i], u32::from(i >= 170));
    }
    // Progress: from 0, increasing, ending at the file count, more than one step.
    assert_eq!(calls.first(), Some(&(0, 340)));
    assert_eq!(calls.last(), Some(&(340, 340)));
    assert!(
        calls.len() >= 3 && calls.windows(2).all(|w| w[0].0 < w[1].0),
        "{calls:?}"
    );
    // With a resize, both still agree bit for bit.
    let opts = FolderOptions {
        crop: Some([6, 6]),
        resize: Some([3, 3]),
    };
    let a = folder::load_with(&d, &opts, Decoding::Parallel, &mut |_, _| {}).unwrap();
    let b = folder::load_with(&d, &opts, Decoding::Serial, &mut |_, _| {}).unwrap();
    assert!(
        a.images
            .iter()
            .zip(&b.images)
            .all(|(x, y)| x.to_bits() == y.to_bits())
    );
    assert_eq!(a.shape, ImageShape::new(3, 3, 3));
    std::fs::remove_dir_all(&d).unwrap();
}

/// A run config of kind imagenet-npz plans and sets up: the atoms are the subset less the
/// held-out images, 32×32×3, 8-bit.
#[test]
fn imagenet_npz_run_setup() {
    let d = scratch("npz-run");
    std::fs::create_dir_all(d.join("imagenet32")).unwrap();
    write_batch(
        &d.join("imagenet32/train_data_batch_1.npz"),
        30,
        32,
        4,
        true,
    );
    write_batch(
        &d.join("imagenet32/train_data_batch_2.npz"),
        30,
        32,
        5,
        true,
    );
    let cfg = d.join("run.toml");
    std::fs::write(
        &cfg,
        "seed = 1\nbackend = \"cpu\"\n[data]\nkind = \"imagenet-npz\"\npath = \"imagenet32\"\nsubset = 40\nsubset_seed = 2\n[truth]\nheld_out = 4\n[measurement]\noperator = \"downsample:4\"\nsigma = 0.1\n[sampling]\nsamplers = [\"exact\"]\nparticles = 8\nsteps = 20\n",
    )
    .unwrap();
    let plan = fslens::plan::RunPlan::load(&cfg, Default::default()).unwrap();
    let setup =
        fslens::experiment::setup::setup(&plan, &mut fslens::experiment::Silent, None).unwrap();
    assert_eq!(setup.atoms.len(), 36);
    assert_eq!(setup.atoms.shape, ImageShape::new(32, 32, 3));
    assert!(setup.atoms.eight_bit);
    assert_eq!(setup.y.len(), 8 * 8 * 3);
    std::fs::remove_dir_all(&d).unwrap();
}

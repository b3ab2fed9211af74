//! CIFAR-10 binary batches. Each record is 3073 bytes: one label byte, then 1024 red, 1024
//! green and 1024 blue bytes (channel-planar, rows of 32). fslens stores HWC, so pixel
//! (r, c) channel k of a record comes from byte 1 + 1024·k + 32·r + c.

use std::path::{Path, PathBuf};

use super::{Dataset, ImageShape, u8_pixel_table};
use crate::{Error, Result};

/// Bytes per record: one label and 3·32·32 pixels.
pub const RECORD_BYTES: usize = 1 + 3 * 32 * 32;

/// The standard CIFAR-10 class names, used when no `batches.meta.txt` lies beside the data.
pub const CIFAR10_CLASSES: [&str; 10] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Class names from `batches.meta.txt` in `dir` (one per non-empty line), else the
/// standard ten.
fn class_names(dir: &Path) -> Result<Vec<String>> {
    let meta = dir.join("batches.meta.txt");
    if meta.exists() {
        let text = std::fs::read_to_string(&meta).map_err(|e| Error::io(&meta, e))?;
        let names: Vec<String> = text
            .lines()
            .map(str::trim)
            .filter(|l| !l.is_empty())
            .map(String::from)
            .collect();
        if names.is_empty() {
            return Err(Error::data(
                &meta,
                "holds no class names; put one name per line or delete the file to use the standard CIFAR-10 names",
            ));
        }
        Ok(names)
    } else {
        Ok(CIFAR10_CLASSES.iter().map(|s| s.to_string()).collect())
    }
}

/// Loads the given batch files (in order) as one 32×32×3 [`Dataset`] with labels. Class
/// names come from `batches.meta.txt` beside the first file when present.
pub fn load_batches(files: &[PathBuf]) -> Result<Dataset> {
    let Some(first) = files.first() else {
        return Err(Error::input("no CIFAR-10 batch files given"));
    };
    let dir = first.parent().unwrap_or(Path::new("."));
    let names = class_names(dir)?;
    let table = u8_pixel_table();
    let mut images = Vec::new();
    let mut labels = Vec::new();
    for file in files {
        let bytes = std::fs::read(file).map_err(|e| Error::io(file, e))?;
        if bytes.is_empty() || bytes.len() % RECORD_BYTES != 0 {
            return Err(Error::data(
                file,
                format!(
                    "size {} bytes is not a positive multiple of the {RECORD_BYTES}-byte CIFAR-10 record (1 label + 3072 pixels); the file is truncated or not a CIFAR-10 binary batch (use the \"binary version\", not the python one)",
                    bytes.len()
                ),
            ));
        }
        for (r, rec) in bytes.chunks_exact(RECORD_BYTES).enumerate() {
            let label = rec[0] as usize;
            if label >= names.len() {
                return Err(Error::data(
                    file,
                    format!(
                        "record {r} has label {label} but there are {} class names",
                        names.len()
                    ),
                ));
            }
            labels.push(label as u32);
            let planes = &rec[1..];
            for p in 0..1024 {
                for k in 0..3 {
                    images.push(table[planes[1024 * k + p] as usize]);
                }
            }
        }
    }
    Ok(Dataset {
        source: files
            .iter()
            .map(|f| f.display().to_string())
            .collect::<Vec<_>>()
            .join(","),
        shape: ImageShape::new(32, 32, 3),
        images,
        labels: Some(labels),
        class_names: Some(names),
        eight_bit: true,
    })
}

/// CIFAR-10 from `path`: a folder of the binary version (`data_batch_1.bin` …
/// `data_batch_5.bin` for train, `test_batch.bin` for test) or a single batch file (then
/// `test` is ignored).
pub fn load(path: &Path, test: bool) -> Result<Dataset> {
    if path.is_dir() {
        let files: Vec<PathBuf> = if test {
            vec![path.join("test_batch.bin")]
        } else {
            (1..=5)
                .map(|i| path.join(format!("data_batch_{i}.bin")))
                .collect()
        };
        if let Some(missing) = files.iter().find(|f| !f.exists()) {
            return Err(Error::data(
                missing,
                format!(
                    "CIFAR-10 batch not found in {}; point data.path at the extracted cifar-10-batches-bin folder or at one .bin batch",
                    path.display()
                ),
            ));
        }
        let mut ds = load_batches(&files)?;
        ds.source = format!(
            "cifar10:{}:{}",
            if test { "test" } else { "train" },
            path.display()
        );
        Ok(ds)
    } else {
        load_batches(&[path.to_path_buf()])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::testutil::tmpdir;

    /// A record whose pixel (r, c, k) is (7r + 3c + 101k + seed) mod 256.
    fn record(label: u8, seed: usize) -> Vec<u8> {
        let mut v = vec![label];
        for k in 0..3 {
            for r in 0..32 {
                for c in 0..32 {
                    v.push(((7 * r + 3 * c + 101 * k + seed) % 256) as u8);
                }
            }
        }
        v
    }

    #[test]
    fn planar_to_hwc_every_pixel_and_names() {
        let d = tmpdir("cifar-ok");
        let mut b1 = record(3, 0);
        b1.extend(record(9, 5));
        std::fs::write(d.join("data_batch_1.bin"), &b1).unwrap();
        let ds = load(&d.join("data_batch_1.bin"), false).unwrap();
        assert_eq!(ds.shape, ImageShape::new(32, 32, 3));
        assert_eq!(ds.len(), 2);
        assert_eq!(ds.labels.as_deref(), Some(&[3u32, 9][..]));
        assert_eq!(ds.class_names.as_ref().unwrap()[9], "truck");
        assert!(ds.eight_bit);
        for (i, seed) in [(0usize, 0usize), (1, 5)] {
            let img = ds.image(i);
            for r in 0..32 {
                for c in 0..32 {
                    for k in 0..3 {
                        let byte = (7 * r + 3 * c + 101 * k + seed) % 256;
                        let want = (2.0 * byte as f64 / 255.0 - 1.0) as f32;
                        assert_eq!(img[(r * 32 + c) * 3 + k], want, "img {i} ({r},{c},{k})");
                    }
                }
            }
        }

        // A full folder with a meta file: train = 5 batches, test = 1.
        for i in 2..=5 {
            std::fs::write(d.join(format!("data_batch_{i}.bin")), record(i as u8, i)).unwrap();
        }
        std::fs::write(d.join("test_batch.bin"), record(1, 1)).unwrap();
        let names = "a\nb\nc\nd\ne\nf\ng\nh\ni\nj\n";
        std::fs::write(d.join("batches.meta.txt"), names).unwrap();
        let train = load(&d, false).unwrap();
        assert_eq!(train.len(), 6);
        assert_eq!(train.labels.as_deref(), Some(&[3u32, 9, 2, 3, 4, 5][..]));
        assert_eq!(train.class_names.as_ref().unwrap()[9], "j");
        let test = load(&d, true).unwrap();
        assert_eq!(test.len(), 1);
        // HWC index 5 = pixel (0, 1), blue: byte (3 + 202 + 1) mod 256 = 206.
        assert_eq!(test.image(0)[5], crate::data::pixel_from_u8(206));
        std::fs::remove_dir_all(&d).unwrap();
    }

    #[test]
    fn bad_sizes_and_labels_name_the_file() {
        let d = tmpdir("cifar-bad");
        let mut b = record(1, 0);
        b.pop();
        std::fs::write(d.join("short.bin"), &b).unwrap();
        let e = load(&d.join("short.bin"), false).unwrap_err().to_string();
        assert!(e.contains("short.bin") && e.contains("3073"), "{e}");
        std::fs::write(d.join("empty.bin"), b"").unwrap();
        let e = load(&d.join("empty.bin"), false).unwrap_err().to_string();
        assert!(e.contains("empty.bin"), "{e}");
        std::fs::write(d.join("label.bin"), record(10, 0)).unwrap();
        let e = load(&d.join("label.bin"), false).unwrap_err().to_string();
        assert!(e.contains("label.bin") && e.contains("label 10"), "{e}");
        let e = load(&d, false).unwrap_err().to_string();
        assert!(
            e.contains("data_batch_1.bin") && e.contains("data.path"),
            "{e}"
        );
        std::fs::remove_dir_all(&d).unwrap();
    }
}
